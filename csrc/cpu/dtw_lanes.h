// Internal to the CPU DTW kernels (dtw.cpp, dtw_band.cpp): the SIMD lanes' vector types and the
// group costs. The full DPs compute eight candidates side by side, one per SIMD lane: the DP
// recurrence along a row is a serial add + min chain, and eight candidates in the lanes and the
// three groups as independent chains turn it from latency-bound into throughput-bound work, the
// local costs of all eight coming from one vector subtract + multiply-add per dim. The banded
// search holds eight rows of one pair in the lanes instead (dtw_band.cpp), with the same costs.
#pragma once
#include "reactfast/dtw.h"
#include "isa.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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
typedef double v4d __attribute__((vector_size(32)));

// Eight float64 lanes, for the build of instruction set Isa (4: AVX-512, 3: AVX2, 0: baseline;
// isa.h). With AVX-512, one 64-byte vector: a zmm register, its selects through mask registers.
// Otherwise two 32-byte halves: GCC lowers 64-byte vectors without AVX-512 poorly (selects became
// scalar compares and blends, values went through the stack in 16-byte pieces), so the AVX2 build's
// DP rows ran at a fraction of their speed; the halves map to one ymm register each. Both forms do
// the same IEEE operations lane by lane and give the same bits.
template <int Isa>
struct Lanes8d {
  v4d lo, hi;
  static Lanes8d load(const double* p) {
    Lanes8d r;
    std::memcpy(&r.lo, p, sizeof r.lo);
    std::memcpy(&r.hi, p + 4, sizeof r.hi);
    return r;
  }
  void store(double* p) const {
    std::memcpy(p, &lo, sizeof lo);
    std::memcpy(p + 4, &hi, sizeof hi);
  }
  static Lanes8d inf() { return {kInf - v4d{}, kInf - v4d{}}; }
  double first() const { return lo[0]; }
  static Lanes8d widen(v8f a) {
    // Whole, then halved: GCC 12 converts each 4-float half on its own in two 2-wide steps and a
    // shuffle, but the whole 8-float conversion in two 4-wide ones (AVX2: vcvtps2pd x2, vextractf128).
    const v8d w = __builtin_convertvector(a, v8d);
    return {v4d{w[0], w[1], w[2], w[3]}, v4d{w[4], w[5], w[6], w[7]}};
  }
  friend Lanes8d operator+(Lanes8d a, Lanes8d b) { return {a.lo + b.lo, a.hi + b.hi}; }
  friend Lanes8d lane_min(Lanes8d a, Lanes8d b) { return {a.lo < b.lo ? a.lo : b.lo, a.hi < b.hi ? a.hi : b.hi}; }
  friend Lanes8d lane_max(Lanes8d a, Lanes8d b) { return {a.lo > b.lo ? a.lo : b.lo, a.hi > b.hi ? a.hi : b.hi}; }
  // Lane j takes lane j + 1's value, lane 7 takes m.
  friend Lanes8d shift_down(Lanes8d a, double m) {
    typedef long long v4i __attribute__((vector_size(32)));
    return {__builtin_shuffle(a.lo, a.hi, v4i{1, 2, 3, 4}), __builtin_shuffle(a.hi, m - v4d{}, v4i{1, 2, 3, 4})};
  }
  // Whether a <= b in some lane.
  friend bool any_le(Lanes8d a, Lanes8d b) {
    typedef long long v4i __attribute__((vector_size(32)));
    const v4i m = (a.lo <= b.lo) | (a.hi <= b.hi);
    return (m[0] | m[1] | m[2] | m[3]) != 0;
  }
};

template <>
struct Lanes8d<4> {
  v8d v;
  static Lanes8d load(const double* p) { return {load8d(p)}; }
  void store(double* p) const { store8d(p, v); }
  static Lanes8d inf() { return {kInf - v8d{}}; }
  double first() const { return v[0]; }
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  // One vcvtps2pd ymm -> zmm: GCC 12 splits __builtin_convertvector here into two 4-wide
  // conversions, an extract and an insert (the v4 builds prefer 256-bit vectors).
  __attribute__((target("avx512f"))) static Lanes8d widen(v8f a) {
    return {reinterpret_cast<v8d>(_mm512_cvtps_pd(reinterpret_cast<__m256>(a)))};
  }
#else
  static Lanes8d widen(v8f a) { return {__builtin_convertvector(a, v8d)}; }
#endif
  friend Lanes8d operator+(Lanes8d a, Lanes8d b) { return {a.v + b.v}; }
  friend Lanes8d lane_min(Lanes8d a, Lanes8d b) { return {a.v < b.v ? a.v : b.v}; }
  friend Lanes8d lane_max(Lanes8d a, Lanes8d b) { return {a.v > b.v ? a.v : b.v}; }
  friend Lanes8d shift_down(Lanes8d a, double m) {
    typedef long long v8i __attribute__((vector_size(64)));
    return {__builtin_shuffle(a.v, m - v8d{}, v8i{1, 2, 3, 4, 5, 6, 7, 8})};
  }
  friend bool any_le(Lanes8d a, Lanes8d b) {
    typedef long long v8i __attribute__((vector_size(64)));
    const v8i m = a.v <= b.v;
    bool any = false;
    for (int i = 0; i < 8; ++i) any |= m[i] != 0;
    return any;
  }
};

// The lane functions below are built per instruction set: RF_LANE_FUNCTION (isa.h).

// sum_{d in [start, end)} (xB[d] - ys[d])^2 for eight lanes (xB[d][lane]: each lane's own x value;
// ys[d * ystride + lane]: each lane's own y value), with four partial sums so the additions do not
// form one long dependency chain.
template <index_t ystride = kLanes>
__attribute__((always_inline)) inline v8f group_cost(const float* xB, const float* ys, int start, int end) {
  v8f c0 = v8f{}, c1 = v8f{}, c2 = v8f{}, c3 = v8f{};
  int d = start;
  for (; d + 4 <= end; d += 4) {
    const v8f e0 = load8f(xB + d * kLanes) - load8f(ys + d * ystride);
    const v8f e1 = load8f(xB + (d + 1) * kLanes) - load8f(ys + (d + 1) * ystride);
    const v8f e2 = load8f(xB + (d + 2) * kLanes) - load8f(ys + (d + 2) * ystride);
    const v8f e3 = load8f(xB + (d + 3) * kLanes) - load8f(ys + (d + 3) * ystride);
    c0 += e0 * e0;
    c1 += e1 * e1;
    c2 += e2 * e2;
    c3 += e3 * e3;
  }
  for (; d < end; ++d) {
    const v8f e = load8f(xB + d * kLanes) - load8f(ys + d * ystride);
    c0 += e * e;
  }
  return (c0 + c1) + (c2 + c3);
}

template <int Start, int End, index_t ystride = kLanes>
__attribute__((always_inline)) inline v8f fixed_group_cost(const v8f* xr, const float* ys) {
  v8f c[4] = {v8f{}, v8f{}, v8f{}, v8f{}};
#pragma GCC unroll 16
  for (int d = Start; d < End; ++d) {
    const v8f e = xr[d] - load8f(ys + d * ystride);
    c[(d - Start) & 3] += e * e;
  }
  return (c[0] + c[1]) + (c[2] + c[3]);
}

// One DP cell (t, s) of the three groups, in place: r[g] holds D_g[t][s-1] on entry and D_g[t][s]
// on return, pp[g] holds D_g[t-1][s-1] on entry and D_g[t-1][s] on return (the next cell's
// diagonal); the row holds D_g[t-1][s].
template <int Isa>
__attribute__((always_inline)) inline void dp_cell(const v8f* a, Lanes8d<Isa>* r, Lanes8d<Isa>* pp, double* row,
                                                   index_t stride, index_t o) {
  using L = Lanes8d<Isa>;
#pragma GCC unroll 3
  for (int g = 0; g < 3; ++g) {  // unrolled, so r and pp stay in registers
    const L p = L::load(row + g * stride + o);
    r[g] = L::widen(a[g]) + lane_min(lane_min(pp[g], p), r[g]);
    pp[g] = p;
    r[g].store(row + g * stride + o);
  }
}

// One whole DP row for three groups and eight lanes at once, in place (row holds each lane's D[t-1]
// on entry and D[t] on return; the previous row's value at s - 1 is carried in a register):
//   D_g[t][s] = cost_g(t, s) + min(D_g[t-1][s-1], D_g[t-1][s], D_g[t][s-1])
// with cost_g(t, s) = sum_{d in group g} (x[t][d] - y[s][d])^2 computed in float32 and accumulated
// in float64. Lanes may stand at different rows t of different pairs: `start` is 0 in a lane at its
// first row (D[-1] = +inf and the chain starts at 0) and +inf elsewhere. Cost gives the three group
// costs at one column (ys: its frames, ys[d][lane]). The banded search (dtw_band.cpp) computes the
// same cells with the same group costs (group_cost and fixed_group_cost's order of additions).
// Vectors cross function boundaries only through memory (the target clones differ in vector ABI).
template <int Isa, typename Cost>
__attribute__((always_inline)) inline void dp_row_impl(const Cost& cost, const float* yB, index_t Ty, index_t D,
                                                       double* row, const double* start) {
  const index_t stride = Ty * kLanes;
  Lanes8d<Isa> r[3], pp[3];
#pragma GCC unroll 3
  for (int g = 0; g < 3; ++g) {
    r[g] = Lanes8d<Isa>::load(start);
    pp[g] = Lanes8d<Isa>::inf();
  }
  for (index_t s = 0; s < Ty; ++s) {
    v8f a[3];
    cost(yB + s * D * kLanes, a);
    dp_cell<Isa>(a, r, pp, row, stride, s * kLanes);
  }
}

// REACT's emotion layout: D = 25, groups [0, 15), [15, 17), [17, 25). xB: the lanes' x rows,
// xB[d][lane].
template <int Isa>
__attribute__((always_inline)) inline void dp_row_react_body(const float* xB, const float* yB, index_t Ty,
                                                             double* row, const double* start) {
  v8f xr[25];
  for (int d = 0; d < 25; ++d) xr[d] = load8f(xB + d * kLanes);
  const auto cost = [&](const float* ys, v8f* a) {
    a[0] = fixed_group_cost<0, 15>(xr, ys);
    a[1] = fixed_group_cost<15, 17>(xr, ys);
    a[2] = fixed_group_cost<17, 25>(xr, ys);
  };
  dp_row_impl<Isa>(cost, yB, Ty, 25, row, start);
}
RF_LANE_FUNCTION(void, dp_row_react, (const float* xB, const float* yB, index_t Ty, double* row, const double* start),
                 (xB, yB, Ty, row, start))

// Any layout of up to three groups [gs[g], ge[g]).
template <int Isa>
__attribute__((always_inline)) inline void dp_row_body(const float* xB, const float* yB, index_t Ty, index_t D,
                                                       const int* gs, const int* ge, double* row, const double* start) {
  const auto cost = [&](const float* ys, v8f* a) {
    for (int g = 0; g < 3; ++g) a[g] = group_cost(xB, ys, gs[g], ge[g]);
  };
  dp_row_impl<Isa>(cost, yB, Ty, D, row, start);
}
RF_LANE_FUNCTION(void, dp_row,
                 (const float* xB, const float* yB, index_t Ty, index_t D, const int* gs, const int* ge, double* row,
                  const double* start),
                 (xB, yB, Ty, D, gs, ge, row, start))

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
                                index_t M, index_t G, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups,
                                const float* y_lo, const float* y_hi, index_t chunk, double* out_min, index_t* out_arg);

}  // namespace reactfast
