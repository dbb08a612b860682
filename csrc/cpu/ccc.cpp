#include "reactfast/ccc.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace reactfast {
namespace {

// Per-dim statistics of one clip: float64 mean and centred sum of squares; float32 mean, variance
// and standard deviation as numpy computes them on float32 data.
struct ClipStats {
  std::vector<double> mean, sxx;
  std::vector<float> mean32, var32, sd32;

  void compute(const float* x, index_t T, index_t D) {
    mean.assign(D, 0.0);
    sxx.assign(D, 0.0);
    mean32.resize(D);
    var32.resize(D);
    sd32.resize(D);
    for (index_t t = 0; t < T; ++t)
      for (index_t d = 0; d < D; ++d) mean[d] += x[t * D + d];
    for (index_t d = 0; d < D; ++d) mean[d] /= static_cast<double>(T);
    for (index_t t = 0; t < T; ++t)
      for (index_t d = 0; d < D; ++d) {
        const double c = x[t * D + d] - mean[d];
        sxx[d] += c * c;
      }
    for (index_t d = 0; d < D; ++d) {
      mean32[d] = static_cast<float>(mean[d]);
      var32[d] = static_cast<float>(sxx[d] / static_cast<double>(T));
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

// cross[d] = sum_t xc[t, d] * y[t, d] with xc the centred query (float64): equals the centred
// cross product because sum_t xc[t, d] = 0. Vectorised over d.
RF_CLONES void cross_sums(const double* xc, const float* y, index_t T, index_t D, double* cross) {
  for (index_t d = 0; d < D; ++d) cross[d] = 0.0;
  for (index_t t = 0; t < T; ++t) {
    const double* xr = xc + t * D;
    const float* yr = y + t * D;
    for (index_t d = 0; d < D; ++d) cross[d] += xr[d] * static_cast<double>(yr[d]);
  }
}

void centre(const float* x, const ClipStats& st, index_t T, index_t D, double* xc) {
  for (index_t t = 0; t < T; ++t)
    for (index_t d = 0; d < D; ++d) xc[t * D + d] = x[t * D + d] - st.mean[d];
}

}  // namespace

void ccc_pairs_cpu(const float* x, const float* y, double* out, index_t P, index_t T, index_t D) {
#pragma omp parallel
  {
    ClipStats sx, sy;
    std::vector<double> xc(T * D), cross(D);
#pragma omp for schedule(static)
    for (index_t p = 0; p < P; ++p) {
      const float* xp = x + p * T * D;
      const float* yp = y + p * T * D;
      sx.compute(xp, T, D);
      sy.compute(yp, T, D);
      centre(xp, sx, T, D, xc.data());
      cross_sums(xc.data(), yp, T, D, cross.data());
      for (index_t d = 0; d < D; ++d) out[p * D + d] = ccc_from(cross[d], sx, sy, d);
    }
  }
}

void ccc_max_cpu(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index, index_t M,
                 index_t G, index_t T, index_t D, double* out_max, index_t* out_arg) {
  std::vector<ClipStats> gstats(G);
#pragma omp parallel for schedule(static)
  for (index_t j = 0; j < G; ++j) gstats[j].compute(y + j * T * D, T, D);
#pragma omp parallel
  {
    ClipStats sx;
    std::vector<double> xc(T * D), cross(D);
#pragma omp for schedule(dynamic, 4)
    for (index_t m = 0; m < M; ++m) {
      const float* xm = x + m * T * D;
      sx.compute(xm, T, D);
      centre(xm, sx, T, D, xc.data());
      double best = -INFINITY;
      index_t arg = -1;
      for (index_t c = cand_offset[m]; c < cand_offset[m + 1]; ++c) {
        const index_t j = cand_index[c];
        cross_sums(xc.data(), y + j * T * D, T, D, cross.data());
        double acc = 0.0;
        for (index_t d = 0; d < D; ++d) acc += ccc_from(cross[d], sx, gstats[j], d);
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
