#include "reactfast/ccc.h"

#include "columns.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace reactfast {
namespace {

// Per-dim statistics of one clip from its dims as rows: float64 mean and centred sum of squares
// (SIMD reductions over the frames); float32 mean, variance and standard deviation as numpy
// computes them on float32 data. ``centre``: subtract the mean from the rows (the query).
struct ClipStats {
  std::vector<double> mean, sxx;
  std::vector<float> mean32, var32, sd32;

  template <typename V>
  __attribute__((always_inline)) void compute(V* cols, index_t T, index_t D, bool centre) {
    for (auto* a : {&mean, &sxx}) a->resize(D);
    for (auto* a : {&mean32, &var32, &sd32}) a->resize(D);
    for (index_t d = 0; d < D; ++d) {
      V* c = cols + d * T;
      double sum = 0.0, sq = 0.0;
#pragma omp simd reduction(+ : sum)
      for (index_t t = 0; t < T; ++t) sum += c[t];
      const double m = sum / static_cast<double>(T);
#pragma omp simd reduction(+ : sq)
      for (index_t t = 0; t < T; ++t) sq += (c[t] - m) * (c[t] - m);
      if (centre)
        for (index_t t = 0; t < T; ++t) c[t] = static_cast<V>(c[t] - m);
      mean[d] = m;
      sxx[d] = sq;
      mean32[d] = static_cast<float>(m);
      var32[d] = static_cast<float>(sq / static_cast<double>(T));
      sd32[d] = std::sqrt(var32[d]);
    }
  }
};

inline double ccc_from(double cross, const ClipStats& a, const ClipStats& b, index_t d) {
  const double denom_r = std::sqrt(a.sxx[d] * b.sxx[d]);
  double r = cross / denom_r;
  if (std::isnan(r) || denom_r == 0.0) r = 0.0;
  r = std::min(1.0, std::max(-1.0, r));
  const double dm = static_cast<double>(a.mean32[d]) - static_cast<double>(b.mean32[d]);
  const double num = 2.0 * r * static_cast<double>(a.sd32[d]) * static_cast<double>(b.sd32[d]);
  return num / (static_cast<double>(a.var32[d]) + static_cast<double>(b.var32[d]) + dm * dm + 1e-8);
}

// cross[d] = sum_t xc[d, t] * y[d, t] over the dims-as-rows centred query xc (float64) and
// candidate y (float32): equals the centred cross product because sum_t xc[d, t] = 0. A SIMD
// reduction over the frames of each dim.
__attribute__((always_inline)) inline void cross_sums(const double* xc, const float* y, index_t T, index_t D,
                                                      double* cross) {
  for (index_t d = 0; d < D; ++d) {
    const double* a = xc + d * T;
    const float* b = y + d * T;
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (index_t t = 0; t < T; ++t) acc += a[t] * static_cast<double>(b[t]);
    cross[d] = acc;
  }
}

// A candidate clip: its statistics and its dims as rows (float32).
RF_CLONES void prepare_candidate(const float* y, index_t T, index_t D, ClipStats& st, float* cols) {
  to_columns(y, T, D, static_cast<const double*>(nullptr), cols);
  st.compute(cols, T, D, false);
}

// A query clip: its statistics and its centred dims as rows (float64).
RF_CLONES void prepare_query(const float* x, index_t T, index_t D, ClipStats& st, double* xc) {
  to_columns(x, T, D, static_cast<const double*>(nullptr), xc);
  st.compute(xc, T, D, true);
}

RF_CLONES void pair_cross_sums(const double* xc, const float* y, index_t T, index_t D, double* cross) {
  cross_sums(xc, y, T, D, cross);
}

}  // namespace

void ccc_pairs_cpu(const float* x, const float* y, double* out, index_t P, index_t T, index_t D) {
#pragma omp parallel
  {
    ClipStats sx, sy;
    std::vector<double> xc(T * D), cross(D);
    std::vector<float> ycols(T * D);
#pragma omp for schedule(static)
    for (index_t p = 0; p < P; ++p) {
      const float* xp = x + p * T * D;
      const float* yp = y + p * T * D;
      prepare_query(xp, T, D, sx, xc.data());
      prepare_candidate(yp, T, D, sy, ycols.data());
      pair_cross_sums(xc.data(), ycols.data(), T, D, cross.data());
      for (index_t d = 0; d < D; ++d) out[p * D + d] = ccc_from(cross[d], sx, sy, d);
    }
  }
}

void ccc_max_cpu(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index, index_t M,
                 index_t G, index_t T, index_t D, double* out_max, index_t* out_arg) {
  // The candidates any query names (a chunk of queries names a few of the G clips): their
  // statistics and dims-as-rows copies, once.
  std::vector<index_t> slot(G, -1), used;
  for (index_t c = cand_offset[0]; c < cand_offset[M]; ++c) {
    const index_t j = cand_index[c];
    if (slot[j] < 0) {
      slot[j] = static_cast<index_t>(used.size());
      used.push_back(j);
    }
  }
  const index_t U = static_cast<index_t>(used.size());
  std::vector<ClipStats> gstats(U);
  std::vector<float> gcols(U * T * D);
#pragma omp parallel for schedule(static)
  for (index_t u = 0; u < U; ++u) {
    prepare_candidate(y + used[u] * T * D, T, D, gstats[u], gcols.data() + u * T * D);
  }
#pragma omp parallel
  {
    ClipStats sx;
    std::vector<double> xc(T * D), cross(D);
#pragma omp for schedule(dynamic, 4)
    for (index_t m = 0; m < M; ++m) {
      const float* xm = x + m * T * D;
      prepare_query(xm, T, D, sx, xc.data());
      double best = -INFINITY;
      index_t arg = -1;
      for (index_t c = cand_offset[m]; c < cand_offset[m + 1]; ++c) {
        const index_t j = cand_index[c], u = slot[j];
        pair_cross_sums(xc.data(), gcols.data() + u * T * D, T, D, cross.data());
        double acc = 0.0;
        for (index_t d = 0; d < D; ++d) acc += ccc_from(cross[d], sx, gstats[u], d);
        const double v = acc / static_cast<double>(D);
        if (v > best) {
          best = v;
          arg = j;
        }
      }
      out_max[m] = best;
      out_arg[m] = arg;
    }
  }
}

}  // namespace reactfast
