#include "reactfast/dtw.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace reactfast {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Candidates computed side by side, one per SIMD lane. The DP recurrence along a row is a serial
// add + min chain; eight candidates in the lanes and the three groups as independent chains turn
// it from latency-bound into throughput-bound work, and the local costs of all eight come from
// one vector subtract + multiply-add per dim.
constexpr int kLanes = 8;
typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

inline v8f load8f(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v8d load8d(const double* p) {
  v8d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8d(double* p, v8d v) { std::memcpy(p, &v, sizeof v); }
inline v8d vmin(v8d a, v8d b) { return a < b ? a : b; }

// sum_{d in [start, end)} (x_row[d] - ys[d])^2 for eight lanes, with four partial sums so the
// additions do not form one long dependency chain.
__attribute__((always_inline)) inline v8f group_cost(const float* x_row, const float* ys, int start, int end) {
  v8f c0 = v8f{}, c1 = v8f{}, c2 = v8f{}, c3 = v8f{};
  int d = start;
  for (; d + 4 <= end; d += 4) {
    const v8f e0 = x_row[d] - load8f(ys + d * kLanes);
    const v8f e1 = x_row[d + 1] - load8f(ys + (d + 1) * kLanes);
    const v8f e2 = x_row[d + 2] - load8f(ys + (d + 2) * kLanes);
    const v8f e3 = x_row[d + 3] - load8f(ys + (d + 3) * kLanes);
    c0 += e0 * e0;
    c1 += e1 * e1;
    c2 += e2 * e2;
    c3 += e3 * e3;
  }
  for (; d < end; ++d) {
    const v8f e = x_row[d] - load8f(ys + d * kLanes);
    c0 += e * e;
  }
  return (c0 + c1) + (c2 + c3);
}

// Per-thread buffers: yB[s][d][lane] (candidates interleaved), DP rows [g][s][lane].
struct Scratch {
  std::vector<float> yB;
  std::vector<double> prev, cur;
  void resize(index_t Ty, index_t D) {
    yB.assign(static_cast<size_t>(Ty) * D * kLanes, 0.f);
    prev.assign(static_cast<size_t>(kMaxDtwGroups) * Ty * kLanes, kInf);
    cur.assign(static_cast<size_t>(kMaxDtwGroups) * Ty * kLanes, 0.0);
  }
};

// One DP row for three groups and eight candidates at once:
//   cur[g][s] = cost_g(t, s) + min(prev[g][s-1], prev[g][s], cur[g][s-1])
// with cost_g(t, s) = sum_{d in group g} (x_row[d] - yB[s][d])^2 computed in float32 and
// accumulated in float64. `first` rows see prev = +inf and start the chain at 0.
// row_min[g] receives the minimum of each group's new row (the abandoning bound).
// Cost is a functor giving the three group costs at one s; the REACT layout gets a variant with
// compile-time group bounds (fully unrolled), any other layout the generic one.
template <typename Cost>
__attribute__((always_inline)) inline void dp_row_impl(Cost cost, const float* yB, index_t Ty, index_t D,
                                                       const double* prev, double* cur, bool first, v8d* row_min) {
  const index_t stride = Ty * kLanes;
  const v8d inf = kInf - v8d{};
  v8d r0 = first ? v8d{} : inf, r1 = r0, r2 = r0;
  v8d pp0 = inf, pp1 = inf, pp2 = inf;
  v8d lo0 = inf, lo1 = inf, lo2 = inf;
  for (index_t s = 0; s < Ty; ++s) {
    v8f a0, a1, a2;
    cost(yB + s * D * kLanes, a0, a1, a2);
    const index_t o = s * kLanes;
    const v8d p0 = load8d(prev + o), p1 = load8d(prev + stride + o), p2 = load8d(prev + 2 * stride + o);
    r0 = __builtin_convertvector(a0, v8d) + vmin(vmin(pp0, p0), r0);
    r1 = __builtin_convertvector(a1, v8d) + vmin(vmin(pp1, p1), r1);
    r2 = __builtin_convertvector(a2, v8d) + vmin(vmin(pp2, p2), r2);
    pp0 = p0;
    pp1 = p1;
    pp2 = p2;
    store8d(cur + o, r0);
    store8d(cur + stride + o, r1);
    store8d(cur + 2 * stride + o, r2);
    lo0 = vmin(lo0, r0);
    lo1 = vmin(lo1, r1);
    lo2 = vmin(lo2, r2);
  }
  row_min[0] = lo0;
  row_min[1] = lo1;
  row_min[2] = lo2;
}

template <int Start, int End>
__attribute__((always_inline)) inline v8f fixed_group_cost(const v8f* xb, const float* ys) {
  v8f c[4] = {v8f{}, v8f{}, v8f{}, v8f{}};
#pragma GCC unroll 16
  for (int d = Start; d < End; ++d) {
    const v8f e = xb[d] - load8f(ys + d * kLanes);
    c[(d - Start) & 3] += e * e;
  }
  return (c[0] + c[1]) + (c[2] + c[3]);
}

// REACT's emotion layout: D = 25, groups [0, 15), [15, 17), [17, 25).
RF_CLONES void dp_row_react(const float* x_row, const float* yB, index_t Ty, const double* prev, double* cur,
                            bool first, v8d* row_min) {
  v8f xb[25];
  for (int d = 0; d < 25; ++d) xb[d] = x_row[d] - v8f{};
  dp_row_impl(
      [&](const float* ys, v8f& a0, v8f& a1, v8f& a2) {
        a0 = fixed_group_cost<0, 15>(xb, ys);
        a1 = fixed_group_cost<15, 17>(xb, ys);
        a2 = fixed_group_cost<17, 25>(xb, ys);
      },
      yB, Ty, 25, prev, cur, first, row_min);
}

RF_CLONES void dp_row(const float* x_row, const float* yB, index_t Ty, index_t D, const int* start, const int* end,
                      const double* prev, double* cur, bool first, v8d* row_min) {
  dp_row_impl(
      [&](const float* ys, v8f& a0, v8f& a1, v8f& a2) {
        a0 = group_cost(x_row, ys, start[0], end[0]);
        a1 = group_cost(x_row, ys, start[1], end[1]);
        a2 = group_cost(x_row, ys, start[2], end[2]);
      },
      yB, Ty, D, prev, cur, first, row_min);
}

// Interleave up to kLanes candidates into yB[s][d][lane]; missing lanes repeat the first.
void load_batch(const float* y, const index_t* cand, int count, index_t Ty, index_t D, float* yB) {
  for (int l = 0; l < kLanes; ++l) {
    const float* yj = y + cand[l < count ? l : 0] * Ty * D;
    for (index_t s = 0; s < Ty; ++s)
      for (index_t d = 0; d < D; ++d) yB[(s * D + d) * kLanes + l] = yj[s * D + d];
  }
}

// Groups padded to three (empty groups cost nothing and weigh 0).
struct Groups3 {
  int start[3], end[3];
  double weight[3];
  bool react_layout;
  explicit Groups3(const DtwGroups& g) {
    for (int i = 0; i < 3; ++i) {
      start[i] = i < g.count ? g.start[i] : 0;
      end[i] = i < g.count ? g.end[i] : 0;
      weight[i] = i < g.count ? g.weight[i] : 0.0;
    }
    react_layout = g.count == 3 && start[0] == 0 && end[0] == 15 && start[1] == 15 && end[1] == 17 &&
                   start[2] == 17 && end[2] == 25;
  }
};

// Weighted group DTW of x (Tx, D) against a batch of candidates: out[l] for l < count, +inf for
// a lane abandoned because its lower bound exceeded `threshold`.
void batch_dtw(const float* x, const float* y, const index_t* cand, int count, index_t Tx, index_t Ty, index_t D,
               const Groups3& groups, double threshold, Scratch& sc, double* out, index_t* cells) {
  const index_t stride = Ty * kLanes;
  load_batch(y, cand, count, Ty, D, sc.yB.data());
  double* prev = sc.prev.data();
  double* cur = sc.cur.data();
  v8d row_min[3];
  bool alive[kLanes];
  for (int l = 0; l < kLanes; ++l) alive[l] = l < count;
  for (index_t t = 0; t < Tx; ++t) {
    if (groups.react_layout && D == 25)
      dp_row_react(x + t * D, sc.yB.data(), Ty, prev, cur, t == 0, row_min);
    else
      dp_row(x + t * D, sc.yB.data(), Ty, D, groups.start, groups.end, prev, cur, t == 0, row_min);
    *cells += Ty * 3 * count;
    if (std::isfinite(threshold) && t + 1 < Tx) {
      bool any = false;
      for (int l = 0; l < kLanes; ++l) {
        if (!alive[l]) continue;
        double lb = 0.0;
        for (int g = 0; g < 3; ++g) lb += groups.weight[g] * std::sqrt(row_min[g][l]);
        if (lb > threshold) alive[l] = false;
        any = any || alive[l];
      }
      if (!any) {
        for (int l = 0; l < count; ++l) out[l] = kInf;
        return;
      }
    }
    std::swap(prev, cur);
  }
  for (int l = 0; l < count; ++l) {
    double total = 0.0;
    for (int g = 0; g < 3; ++g) total += groups.weight[g] * std::sqrt(prev[g * stride + (Ty - 1) * kLanes + l]);
    out[l] = alive[l] ? total : kInf;
  }
}

// Weighted distance along the diagonal path: an upper bound of the weighted DTW when Tx == Ty.
double diagonal_bound(const float* x, const float* y, index_t T, index_t D, const DtwGroups& groups) {
  double total = 0.0;
  for (int g = 0; g < groups.count; ++g) {
    double acc = 0.0;
    for (index_t t = 0; t < T; ++t) acc += dtw_local_cost(x + t * D, y + t * D, groups.start[g], groups.end[g]);
    total += groups.weight[g] * std::sqrt(acc);
  }
  return total;
}

// The first row reads prev = +inf; each batch starts from that state.
void reset_prev(Scratch& sc) { std::fill(sc.prev.begin(), sc.prev.end(), kInf); }

}  // namespace

void dtw_pairs_cpu(const float* x, const float* y, double* out, index_t P, index_t Tx, index_t Ty, index_t D) {
  DtwGroups all{};
  all.count = 1;
  all.start[0] = 0;
  all.end[0] = static_cast<int>(D);
  all.weight[0] = 1.0;
  const Groups3 groups(all);
#pragma omp parallel
  {
    Scratch sc;
    sc.resize(Ty, D);
    index_t cells = 0;
    double vals[kLanes];
    index_t idx[1];
    // Pairs share no query here: one lane each.
#pragma omp for schedule(dynamic, 1)
    for (index_t p = 0; p < P; ++p) {
      idx[0] = p;
      reset_prev(sc);
      batch_dtw(x + p * Tx * D, y, idx, 1, Tx, Ty, D, groups, kInf, sc, vals, &cells);
      out[p] = vals[0];
    }
  }
}

void weighted_dtw_min_cpu(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index,
                          index_t M, index_t G, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups,
                          bool abandon, double* out_min, index_t* out_arg, index_t* cells) {
  const Groups3 groups3(groups);
  index_t total_cells = 0;
#pragma omp parallel reduction(+ : total_cells)
  {
    Scratch sc;
    sc.resize(Ty, D);
    std::vector<std::pair<double, index_t>> order;
    std::vector<index_t> sorted;
    double vals[kLanes];
#pragma omp for schedule(dynamic, 1)
    for (index_t m = 0; m < M; ++m) {
      const float* xm = x + m * Tx * D;
      const index_t lo = cand_offset[m], hi = cand_offset[m + 1];
      order.clear();
      double threshold = kInf;
      for (index_t c = lo; c < hi; ++c) {
        const index_t j = cand_index[c];
        double bound = 0.0;
        if (abandon && Tx == Ty) {
          bound = diagonal_bound(xm, y + j * Ty * D, Tx, D, groups);
          // The DP sums float32 costs in another order than the bound: a small margin keeps the
          // candidate whose optimal path is the diagonal from being pruned by rounding.
          threshold = std::min(threshold, bound * (1.0 + 1e-6) + 1e-12);
        }
        order.emplace_back(bound, j);
      }
      // Most promising candidates first: their values then prune the rest early.
      if (abandon) std::stable_sort(order.begin(), order.end());
      sorted.clear();
      for (const auto& o : order) sorted.push_back(o.second);
      double best = kInf;
      index_t arg = -1;
      for (size_t b = 0; b < sorted.size(); b += kLanes) {
        const int count = static_cast<int>(std::min<size_t>(kLanes, sorted.size() - b));
        reset_prev(sc);
        batch_dtw(xm, y, sorted.data() + b, count, Tx, Ty, D, groups3, abandon ? threshold : kInf, sc, vals,
                  &total_cells);
        for (int l = 0; l < count; ++l) {
          const index_t j = sorted[b + l];
          if (vals[l] < best || (vals[l] == best && j < arg)) {
            best = vals[l];
            arg = j;
          }
          if (abandon) threshold = std::min(threshold, vals[l]);
        }
      }
      out_min[m] = best;
      out_arg[m] = arg;
    }
  }
  if (cells != nullptr) *cells = total_cells;
}

}  // namespace reactfast
