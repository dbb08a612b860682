// FRDist's weighted group DTW on the GPU, one warp per (query, candidate) pair, after cuDTW++
// (Schmidt & Hundt, 2020): a warp-level wavefront over the DP.
//
// Lane l holds a strip of S consecutive query rows, their local features in registers and their DP
// values of the current column (all groups at once, float64). At step t, lane l computes column
// j = t - l of its rows: the row above its strip comes from lane l - 1, which computed column j at
// step t - 1, by a warp shuffle; the corner (the row above, column j - 1) is what lane l received
// at the step before. The candidate's rows reach the lanes through a ring of 64 rows in shared
// memory that the warp refills every 32 steps with coalesced loads (the lanes read 32 consecutive
// rows at once, at an odd stride: no bank conflicts). A warp covers 32 S rows per pass; a longer
// query takes several passes, the last row of one pass kept in a border row (shared memory) that
// lane 0 of the next pass reads.
// Every path from (0, 0) to (Tx - 1, Ty - 1) crosses each border row, and DP values only grow
// along a path, so sum_g w_g sqrt(min_j border_g[j]) bounds the pair's value from below: a pair
// whose bound exceeds the best value its query already has is abandoned (exact: the minimum and
// the first candidate attaining it are unchanged).
//
// The schedule is written once, over a warp policy: the CUDA kernel (csrc/cuda/dtw.cu) runs it
// with one lane per thread and shuffles; the CPU emulation (csrc/cpu/dtw_warp_emulate.cpp) runs the
// 32 lanes in lockstep in one thread, so the tests check the kernel's schedule (strips, passes,
// borders, bounds, tie-breaking) without a GPU.
#pragma once
#include <cmath>

#include "reactfast/dtw.h"

namespace reactfast {
namespace warp_dtw {

constexpr int kWarp = 32;
constexpr int kGroups = kMaxDtwGroups;
constexpr int kRingRows = 2 * kWarp;  // the candidate rows a warp's lanes read: the last two batches

// The ring's row stride in floats: D made odd, so that 32 lanes reading 32 consecutive rows hit 32
// different banks.
RF_HOST_DEVICE inline int ring_stride(index_t D) { return static_cast<int>(D | 1); }

// Paths only grow: min without fmin's NaN handling (the inputs are finite).
RF_HOST_DEVICE inline double min2(double a, double b) { return a < b ? a : b; }

// REACT's layout, fixed at compile time: dims [0, 15), [15, 17), [17, 25), four rows per lane
// (100 registers of query features).
struct ReactLayout {
  static constexpr int kDims = 25;
  static constexpr int kStrip = 4;
  RF_HOST_DEVICE static void costs(const float* x, const float* y, const DtwGroups&, float c[kGroups]) {
    float a = 0.f, b = 0.f, e = 0.f;
#pragma unroll
    for (int d = 0; d < 15; ++d) {
      const float u = x[d] - y[d];
      a += u * u;
    }
#pragma unroll
    for (int d = 15; d < 17; ++d) {
      const float u = x[d] - y[d];
      b += u * u;
    }
#pragma unroll
    for (int d = 17; d < 25; ++d) {
      const float u = x[d] - y[d];
      e += u * u;
    }
    c[0] = a;
    c[1] = b;
    c[2] = e;
  }
};

// Any layout of up to 32 dims and 3 groups (dims past D are zero in both sequences), two rows per
// lane.
struct AnyLayout {
  static constexpr int kDims = 32;
  static constexpr int kStrip = 2;
  RF_HOST_DEVICE static void costs(const float* x, const float* y, const DtwGroups& groups, float c[kGroups]) {
#pragma unroll
    for (int g = 0; g < kGroups; ++g) c[g] = 0.f;
#pragma unroll
    for (int d = 0; d < kDims; ++d) {
      const float u = x[d] - y[d];
      const float sq = u * u;
#pragma unroll
      for (int g = 0; g < kGroups; ++g)
        if (g < groups.count && d >= groups.start[g] && d < groups.end[g]) c[g] += sq;
    }
  }
};

RF_HOST_DEVICE inline bool is_react_layout(const DtwGroups& g, index_t D) {
  return D == 25 && g.count == 3 && g.start[0] == 0 && g.end[0] == 15 && g.start[1] == 15 && g.end[1] == 17 &&
         g.start[2] == 17 && g.end[2] == 25;
}

// One lane's state.
template <class L>
struct Lane {
  float x[L::kStrip][L::kDims];     // the strip's query rows
  double col[kGroups][L::kStrip];   // DP at the strip's rows, the lane's current column
  double up[kGroups];               // in: DP at the row above the strip, this column
  double corner[kGroups];           // DP at the row above the strip, the previous column
  double bot[kGroups];              // out: DP at the strip's last row, this column
  double border_min[kGroups];       // the last lane: min over the border row it writes
};

// Before a pass over rows [r0, r0 + 32 S): the lane's rows (zeros past Tx), an empty column.
template <class L>
RF_HOST_DEVICE inline void begin_pass(Lane<L>& s, const float* xq, index_t Tx, index_t D, index_t r0, int lane,
                                      bool first_pass) {
#pragma unroll
  for (int r = 0; r < L::kStrip; ++r) {
    const index_t i = r0 + static_cast<index_t>(lane) * L::kStrip + r;
#pragma unroll
    for (int d = 0; d < L::kDims; ++d) s.x[r][d] = (i < Tx && d < D) ? xq[i * D + d] : 0.f;
  }
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
#pragma unroll
    for (int r = 0; r < L::kStrip; ++r) s.col[g][r] = INFINITY;
    s.up[g] = INFINITY;
    s.bot[g] = INFINITY;
    s.border_min[g] = INFINITY;
    // D[-1][-1] = 0 starts the path at (0, 0); everything else outside the matrix is unreachable.
    s.corner[g] = (first_pass && lane == 0) ? 0.0 : static_cast<double>(INFINITY);
  }
}

// One column of the strip, from the candidate's row y (D floats), s.up and s.corner.
template <class L>
RF_HOST_DEVICE inline void step_column(Lane<L>& s, const float* y, index_t D, const DtwGroups& groups) {
  float yr[L::kDims];
#pragma unroll
  for (int d = 0; d < L::kDims; ++d) yr[d] = d < D ? y[d] : 0.f;
  double up[kGroups], diag[kGroups];
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    up[g] = s.up[g];
    diag[g] = s.corner[g];
  }
#pragma unroll
  for (int r = 0; r < L::kStrip; ++r) {
    float c[kGroups];
    L::costs(s.x[r], yr, groups, c);
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      const double left = s.col[g][r];
      const double v = static_cast<double>(c[g]) + min2(min2(left, up[g]), diag[g]);
      s.col[g][r] = v;
      up[g] = v;
      diag[g] = left;
    }
  }
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    s.bot[g] = up[g];
    s.corner[g] = s.up[g];
  }
}

// sum_g w_g sqrt(v_g).
RF_HOST_DEVICE inline double weighted(const double v[kGroups], const DtwGroups& groups) {
  double total = 0.0;
#pragma unroll
  for (int g = 0; g < kGroups; ++g)  // a fixed trip count keeps v in registers
    if (g < groups.count) total += groups.weight[g] * sqrt(v[g]);
  return total;
}

// The weighted group DTW of one (query, candidate) pair on warp w, or +inf when abandoned because a
// border row's bound exceeds w.best(). border: kGroups * Ty doubles the warp owns; ring:
// kRingRows * ring_stride(D) floats it owns.
//
// The warp policy W provides: lo(), hi() (the lanes this thread runs), lane(l) (their state),
// shift_up() (lanes 1..31: up <- bot of the lane before, as computed at the previous step), sync(),
// from_lane(v, l) (lane l's v to every lane) and best() (the query's best value so far).
template <class L, class W>
RF_HOST_DEVICE double pair_value(W& w, const float* xq, const float* yc, index_t Tx, index_t Ty, index_t D,
                                 const DtwGroups& groups, double* border, float* ring, bool abandon) {
  constexpr index_t rows = static_cast<index_t>(kWarp) * L::kStrip;
  const int stride = ring_stride(D);
  const index_t passes = (Tx + rows - 1) / rows;
  for (index_t p = 0; p < passes; ++p) {
    const index_t r0 = p * rows;
    const bool last = p == passes - 1;
    for (int l = w.lo(); l < w.hi(); ++l) begin_pass<L>(w.lane(l), xq, Tx, D, r0, l, p == 0);
    w.sync();
    for (index_t t = 0; t < Ty + kWarp - 1; ++t) {
      if (t % kWarp == 0 && t < Ty) {  // rows [t, t + 32) into the ring, over rows [t - 64, t - 32)
        const index_t n = Ty - t < kWarp ? Ty - t : kWarp;
        float* slot = ring + (t % kRingRows) * stride;
        for (int l = w.lo(); l < w.hi(); ++l)  // lane d copies dim d of each row: one row a load
          if (l < D)
            for (index_t r = 0; r < n; ++r) slot[r * stride + l] = yc[(t + r) * D + l];
        w.sync();
      }
      w.shift_up();
      for (int l = w.lo(); l < w.hi(); ++l) {
        Lane<L>& s = w.lane(l);
        const index_t j = t - l;
        if (j < 0 || j >= Ty) {
          for (int g = 0; g < kGroups; ++g) s.bot[g] = INFINITY;
          continue;
        }
        if (l == 0)
          for (int g = 0; g < kGroups; ++g) s.up[g] = p == 0 ? static_cast<double>(INFINITY) : border[g * Ty + j];
        step_column<L>(s, ring + (j % kRingRows) * stride, D, groups);
        if (l == kWarp - 1 && !last) {
          for (int g = 0; g < kGroups; ++g) {
            border[g * Ty + j] = s.bot[g];
            s.border_min[g] = min2(s.border_min[g], s.bot[g]);
          }
        }
      }
      w.sync();
    }
    if (!last && abandon) {
      double bound = 0.0;
      for (int l = w.lo(); l < w.hi(); ++l)
        if (l == kWarp - 1) bound = weighted(w.lane(l).border_min, groups);
      bound = w.from_lane(bound, kWarp - 1);
      if (bound > w.best()) return INFINITY;
    }
  }
  // The lane holding row Tx - 1 holds D[Tx - 1][Ty - 1] of every group.
  const index_t r0 = (passes - 1) * rows;
  const int owner = static_cast<int>((Tx - 1 - r0) / L::kStrip);
  const int row = static_cast<int>((Tx - 1 - r0) % L::kStrip);
  double value = 0.0;
  for (int l = w.lo(); l < w.hi(); ++l) {
    if (l != owner) continue;
    double v[kGroups];
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      v[g] = 0.0;
#pragma unroll
      for (int r = 0; r < L::kStrip; ++r)
        if (r == row) v[g] = w.lane(l).col[g][r];
    }
    value = weighted(v, groups);
  }
  return w.from_lane(value, owner);
}

// A query's block result from its warps' bests: the least value, ties to the candidate listed
// first (position -1: a warp that had no candidate). Returns the position, -1 when none.
RF_HOST_DEVICE inline index_t least_first(const double* value, const index_t* pos, int warps, double* best) {
  index_t at = -1;
  *best = INFINITY;
  for (int k = 0; k < warps; ++k)
    if (pos[k] >= 0 && (at < 0 || value[k] < *best || (value[k] == *best && pos[k] < at))) {
      *best = value[k];
      at = pos[k];
    }
  return at;
}

// Shared memory (bytes) of one warp: its border rows (only for queries longer than one pass), then
// its candidate ring.
template <class L>
RF_HOST_DEVICE inline size_t border_bytes(index_t Tx, index_t Ty) {
  const index_t rows = static_cast<index_t>(kWarp) * L::kStrip;
  return Tx > rows ? kGroups * static_cast<size_t>(Ty) * sizeof(double) : 0;
}
RF_HOST_DEVICE inline size_t ring_bytes(index_t D) {
  return static_cast<size_t>(kRingRows) * ring_stride(D) * sizeof(float);
}

}  // namespace warp_dtw
}  // namespace reactfast
