// Internal to the CPU DTW kernels (dtw.cpp, dtw_band.cpp): the SIMD lanes' vector types and the
// group costs. Eight candidates are computed
// side by side, one per SIMD lane: the DP recurrence along a row is a serial add + min chain, and
// eight candidates in the lanes and the three groups as independent chains turn it from
// latency-bound into throughput-bound work, the local costs of all eight coming from one vector
// subtract + multiply-add per dim.
#pragma once
#include "reactfast/dtw.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace reactfast {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

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

// sum_{d in [start, end)} (xB[d] - ys[d])^2 for eight lanes (xB[d][lane]: each lane's own x value),
// with four partial sums so the additions do not form one long dependency chain.
__attribute__((always_inline)) inline v8f group_cost(const float* xB, const float* ys, int start, int end) {
  v8f c0 = v8f{}, c1 = v8f{}, c2 = v8f{}, c3 = v8f{};
  int d = start;
  for (; d + 4 <= end; d += 4) {
    const v8f e0 = load8f(xB + d * kLanes) - load8f(ys + d * kLanes);
    const v8f e1 = load8f(xB + (d + 1) * kLanes) - load8f(ys + (d + 1) * kLanes);
    const v8f e2 = load8f(xB + (d + 2) * kLanes) - load8f(ys + (d + 2) * kLanes);
    const v8f e3 = load8f(xB + (d + 3) * kLanes) - load8f(ys + (d + 3) * kLanes);
    c0 += e0 * e0;
    c1 += e1 * e1;
    c2 += e2 * e2;
    c3 += e3 * e3;
  }
  for (; d < end; ++d) {
    const v8f e = load8f(xB + d * kLanes) - load8f(ys + d * kLanes);
    c0 += e * e;
  }
  return (c0 + c1) + (c2 + c3);
}

template <int Start, int End>
__attribute__((always_inline)) inline v8f fixed_group_cost(const v8f* xr, const float* ys) {
  v8f c[4] = {v8f{}, v8f{}, v8f{}, v8f{}};
#pragma GCC unroll 16
  for (int d = Start; d < End; ++d) {
    const v8f e = xr[d] - load8f(ys + d * kLanes);
    c[(d - Start) & 3] += e * e;
  }
  return (c[0] + c[1]) + (c[2] + c[3]);
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

}  // namespace

// FRDist's minimum with the banded search (dtw_band.cpp), for groups with at least one positive
// weight; arguments as weighted_dtw_min_cpu, plus the candidates' envelopes (y_lo, y_hi) and the
// chunk of queries per task. Returns the DP cells computed.
index_t weighted_dtw_min_banded(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index,
                                index_t M, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups,
                                const float* y_lo, const float* y_hi, index_t chunk, double* out_min, index_t* out_arg);

}  // namespace reactfast
