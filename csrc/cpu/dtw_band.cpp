// FRDist's minimum over candidates: the UCR Suite's exact pruning cascade with banded DPs (PrunedDTW,
// Silva & Batista 2016). dtw.cpp's FullSearch is the same minimum with every DP in full.
#include "dtw_lanes.h"
#include "reactfast/dtw_bounds.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace reactfast {
namespace {

constexpr float kFInf = std::numeric_limits<float>::infinity();

// The candidates in windows for the strips, whose eight lanes take eight consecutive columns of one
// dim in one vector load: candidate j's columns, padded with kPad columns of +inf frames on each
// side (their costs and DP values are +inf), in blocks of eight, block b holding for each dim the
// sixteen columns from 8 b: yW[((j * blocks + b) * D + d) * 16 + m] = y[j][8 b + m - kPad][d]. The
// eight columns from any u = 8 b + o (o < 8) are then the contiguous yW[... b, d, o .. o + 7], at a
// stride between dims known at compile time. Twice the candidates' memory.
constexpr index_t kPad = 8, kWindow = 16;
inline index_t window_blocks(index_t Ty) { return (Ty + 2 * kPad + 7) / 8; }

// One strip of a banded DP: the rows [t, t + n) (n <= 8) of one pair, the eight SIMD lanes holding
// eight consecutive rows, lane j row t + 7 - j (lanes below 8 - n hold no row: rows past the pair's
// end), swept along the columns as a wavefront: at iteration i lane j stands at column
// s0 + i - (7 - j). The row above a lane's is the next lane's, which computed the cell above one
// iteration earlier and the diagonal cell two iterations earlier, so both come from the previous
// iteration's values shifted by one lane; lane 7's row above (row t - 1) is in `row`. The eight
// lanes' frames at one iteration are eight consecutive columns of the candidate: one vector load
// per dim from its windows (yW: the pair's candidate, block 0; D dims per block). Every cell is
// dtw_lanes.h's recurrence with the same group costs (cost_g in float32, accumulated in float64),
// so every value is the full DP's on its inputs.
//
// PrunedDTW: a value is live when it is at or below its lane's limit for its group (rl[g][lane]:
// the pair's limit less the row tail after the lane's row; -1 in lanes without a row). Row t - 1
// had live values only in columns [s0, e0] (none when e0 < s0: the first strip, whose lane 7 starts
// its chain at 0 at column 0); every lane starts at column s0 (the columns before count as +inf),
// lane 7 reads row t - 1 over [s0, e0] only, and past that the sweep goes on while some lane holds a live value
// (two iterations with none end it: every later value stems from dead ones). A neighbour taken as
// +inf could only have given a value above the limit, so every live value is exact.
//
// On return `row` holds the strip's last row (t + n - 1, lane 8 - n) over [s0, returned end), which
// is one past the last column computed; *first and *last: its first and last live columns (-1: none);
// *iterations: the iterations swept.
//
// Full: n == 8 known at compile time, so the last row is lane 0's, read from its register (a
// lane picked at run time goes through memory: a store and a reload per group and iteration).
template <int Isa, bool Full, typename Cost>
__attribute__((always_inline)) inline index_t strip_impl(const Cost& cost, const float* yW, index_t D, index_t Ty,
                                                         double* row, const double* rl, index_t s0, index_t e0, int n,
                                                         index_t* first, index_t* last, index_t* iterations) {
  if (Full) n = kLanes;
  using L = Lanes8d<Isa>;
  // The first strip's lane 7 (row 0) starts its chain through the diagonal: D[-1][-1] = 0, so that
  // D[0][0] = cost + 0 as in the full DP (a 0 in its left neighbour would reach lane 6 through the
  // shift).
  double start[kLanes];
  for (int j = 0; j < kLanes; ++j) start[j] = e0 < s0 && j == kLanes - 1 ? 0.0 : kInf;
  L r[3], pp[3], lim[3];
#pragma GCC unroll 3
  for (int g = 0; g < 3; ++g) {
    r[g] = L::inf();
    pp[g] = L::load(start);
    lim[g] = L::load(rl + g * kLanes);
  }
  const int out = kLanes - n;                             // the lane of the strip's last row
  const index_t end = Ty - s0 + (n - 1);                  // lane `out` reaches column Ty - 1
  const index_t above = std::min(e0 - s0 + 1, end);       // iterations whose lane 7 reads row t - 1
  double lanes[kLanes];
  index_t i = 0;
  const auto step = [&](double a0, double a1, double a2) __attribute__((always_inline)) {
    const index_t u = s0 + i - (kLanes - 1) + kPad;       // lane 0's column, padded
    v8f a[3];
    cost(yW + ((u >> 3) * D * kWindow + (u & 7)), a);
    const double up[3] = {a0, a1, a2};
#pragma GCC unroll 3
    for (int g = 0; g < 3; ++g) {
      const L p = shift_down(r[g], up[g]);
      r[g] = L::widen(a[g]) + lane_min(lane_min(pp[g], p), r[g]);
      pp[g] = p;
    }
    if (Full && i >= kLanes - 1) {
#pragma GCC unroll 3
      for (int g = 0; g < 3; ++g) row[g * Ty + u - kPad] = r[g].first();
    } else if (!Full && i >= n - 1) {
#pragma GCC unroll 3
      for (int g = 0; g < 3; ++g) {
        r[g].store(lanes);
        row[g * Ty + u - kPad + out] = lanes[out];
      }
    }
  };
  for (; i < above; ++i) step(row[s0 + i], row[Ty + s0 + i], row[2 * Ty + s0 + i]);
  for (int dead = 0; i < end;) {
    step(kInf, kInf, kInf);
    ++i;
    const bool live = any_le(r[0], lim[0]) || any_le(r[1], lim[1]) || any_le(r[2], lim[2]);
    dead = live ? 0 : dead + 1;
    if (dead == 2) break;
  }
  const index_t stop = s0 + std::max<index_t>(0, i - (n - 1));
  const auto live = [&](index_t s) {
    bool any = false;
    for (int g = 0; g < 3; ++g) any |= row[g * Ty + s] <= rl[g * kLanes + out];
    return any;
  };
  index_t f = s0;
  while (f < stop && !live(f)) ++f;
  index_t e = stop - 1;
  while (e >= f && !live(e)) --e;
  *first = f < stop ? f : -1;
  *last = f < stop ? e : -1;
  *iterations = i;
  return stop;
}

// REACT's emotion layout (D = 25, groups [0, 15), [15, 17), [17, 25)): dp_row_react's group costs.
template <int Isa>
__attribute__((always_inline)) inline index_t strip_react_body(const float* xB, const float* yW, index_t Ty,
                                                               double* row, const double* rl, index_t s0, index_t e0,
                                                               int n, index_t* first, index_t* last,
                                                               index_t* iterations) {
  v8f xr[25];
  for (int d = 0; d < 25; ++d) xr[d] = load8f(xB + d * kLanes);
  const auto cost = [&](const float* ys, v8f* a) __attribute__((always_inline)) {
    a[0] = fixed_group_cost<0, 15, kWindow>(xr, ys);
    a[1] = fixed_group_cost<15, 17, kWindow>(xr, ys);
    a[2] = fixed_group_cost<17, 25, kWindow>(xr, ys);
  };
  return n == kLanes ? strip_impl<Isa, true>(cost, yW, 25, Ty, row, rl, s0, e0, n, first, last, iterations)
                     : strip_impl<Isa, false>(cost, yW, 25, Ty, row, rl, s0, e0, n, first, last, iterations);
}
RF_LANE_FUNCTION(index_t, strip_react,
                 (const float* xB, const float* yW, index_t Ty, double* row, const double* rl, index_t s0, index_t e0,
                  int n, index_t* first, index_t* last, index_t* iterations),
                 (xB, yW, Ty, row, rl, s0, e0, n, first, last, iterations))

// Any layout of up to three groups [gs[g], ge[g]): dp_row's group costs.
template <int Isa>
__attribute__((always_inline)) inline index_t strip_body(const float* xB, const float* yW, index_t D, index_t Ty,
                                                         const int* gs, const int* ge, double* row, const double* rl,
                                                         index_t s0, index_t e0, int n, index_t* first, index_t* last,
                                                         index_t* iterations) {
  const auto cost = [&](const float* ys, v8f* a) __attribute__((always_inline)) {
    for (int g = 0; g < 3; ++g) a[g] = group_cost<kWindow>(xB, ys, gs[g], ge[g]);
  };
  return n == kLanes ? strip_impl<Isa, true>(cost, yW, D, Ty, row, rl, s0, e0, n, first, last, iterations)
                     : strip_impl<Isa, false>(cost, yW, D, Ty, row, rl, s0, e0, n, first, last, iterations);
}
RF_LANE_FUNCTION(index_t, strip,
                 (const float* xB, const float* yW, index_t D, index_t Ty, const int* gs, const int* ge, double* row,
                  const double* rl, index_t s0, index_t e0, int n, index_t* first, index_t* last, index_t* iterations),
                 (xB, yW, D, Ty, gs, ge, row, rl, s0, e0, n, first, last, iterations))

// Each group's cost along the diagonal path (Tx == Ty = T), an upper bound of that group's DTW:
// the cells' costs by the DP's group costs (eight rows at once), summed in float64 in row order as
// the DP sums a path. xT: the query's rows transposed in blocks of eight,
// xT[(b * D + d) * 8 + lane] = x[8 b + lane][d]; yW: the candidate's windows.
template <int Isa, typename Cost>
__attribute__((always_inline)) inline void diagonal_impl(const Cost& cost, const float* xT, const float* yW,
                                                         index_t T, index_t D, double* out) {
  double acc[3] = {0.0, 0.0, 0.0};
  for (index_t b = 0; 8 * b < T; ++b) {
    v8f a[3];
    cost(xT + b * D * kLanes, yW + (b + 1) * D * kWindow, a);  // columns 8 b .. 8 b + 7: padded 8 (b + 1)
    const index_t n = std::min<index_t>(kLanes, T - 8 * b);
    for (int g = 0; g < 3; ++g)
      for (index_t k = 0; k < n; ++k) acc[g] = static_cast<double>(a[g][k]) + acc[g];
  }
  for (int g = 0; g < 3; ++g) out[g] = acc[g];
}
template <int Isa>
__attribute__((always_inline)) inline void diagonal_react_body(const float* xT, const float* yW, index_t T,
                                                               double* out) {
  const auto cost = [](const float* xB, const float* ys, v8f* a) __attribute__((always_inline)) {
    v8f xr[25];
    for (int d = 0; d < 25; ++d) xr[d] = load8f(xB + d * kLanes);
    a[0] = fixed_group_cost<0, 15, kWindow>(xr, ys);
    a[1] = fixed_group_cost<15, 17, kWindow>(xr, ys);
    a[2] = fixed_group_cost<17, 25, kWindow>(xr, ys);
  };
  diagonal_impl<Isa>(cost, xT, yW, T, 25, out);
}
RF_LANE_FUNCTION(void, diagonal_react, (const float* xT, const float* yW, index_t T, double* out), (xT, yW, T, out))
template <int Isa>
__attribute__((always_inline)) inline void diagonal_body(const float* xT, const float* yW, index_t T, index_t D,
                                                         const int* gs, const int* ge, double* out) {
  const auto cost = [&](const float* xB, const float* ys, v8f* a) __attribute__((always_inline)) {
    for (int g = 0; g < 3; ++g) a[g] = group_cost<kWindow>(xB, ys, gs[g], ge[g]);
  };
  diagonal_impl<Isa>(cost, xT, yW, T, D, out);
}
RF_LANE_FUNCTION(void, diagonal, (const float* xT, const float* yW, index_t T, index_t D, const int* gs, const int* ge,
                                  double* out),
                 (xT, yW, T, D, gs, ge, out))

// The column costs behind the column tails (dtw_bounds.h): for each frame s of a candidate and
// each group g, cost[s * kMaxDtwGroups + g] = sum_{d in g} dist(y[s][d], [lo[d], hi[d]])^2, the
// distance to the query's envelope over all its frames, eight frames a vector from the windows
// (block b + 1 holds frames 8 b .. 8 b + 7). One envelope makes this a sweep of the candidate's
// frames. On FRDist's 48-speaker case (T = 750) the query's eight blocks pruned about the same
// (DP cells 775.8 M vs 778.8 M model-like, 410.6 M vs 411.1 M random) for about 4% more time in
// all; without column tails random queries took 1.6x as long.
template <int Isa>
__attribute__((always_inline)) inline void whole_envelope_costs_body(const float* yW, index_t Ty, index_t D,
                                                                     const float* lo, const float* hi, const int* gs,
                                                                     const int* ge, double* cost) {
  for (index_t b = 0; 8 * b < Ty; ++b) {
    const float* ys = yW + (b + 1) * D * kWindow;
    v8f acc[3];
    for (int g = 0; g < 3; ++g) {
      v8f a = v8f{};
      for (int d = gs[g]; d < ge[g]; ++d) {  // over d in order, as envelope_costs sums
        const v8f v = load8f(ys + d * kWindow), l = lo[d] - v8f{}, h = hi[d] - v8f{};
        v8f c = v > l ? v : l;
        c = c < h ? c : h;
        const v8f e = v - c;
        a += e * e;
      }
      acc[g] = a;
    }
    const index_t n = std::min<index_t>(kLanes, Ty - 8 * b);  // lanes past the end hold +inf frames
    for (index_t i = 0; i < n; ++i)
      for (int g = 0; g < 3; ++g) cost[(8 * b + i) * kMaxDtwGroups + g] = acc[g][i];
  }
}
RF_LANE_FUNCTION(void, whole_envelope_costs,
                 (const float* yW, index_t Ty, index_t D, const float* lo, const float* hi, const int* gs,
                  const int* ge, double* cost),
                 (yW, Ty, D, lo, hi, gs, ge, cost))

// min over s in [first, last] of d[s] + max(r, cols[s]), and in *low the min of d[s], four
// columns a vector (the scalar loop was bound by its min chain's latency). Minima are exact, so
// any order gives the same values.
template <int Isa>
__attribute__((always_inline)) inline double row_bound_body(const double* d, const float* cols, float r,
                                                            index_t first, index_t last, double* low) {
  typedef float v4f __attribute__((vector_size(16)));
  const v4f rv = r - v4f{};
  v4d lb = kInf - v4d{}, lo = lb;
  index_t s = first;
  for (; s + 3 <= last; s += 4) {
    v4f c;
    v4d v;
    std::memcpy(&c, cols + s, sizeof c);
    std::memcpy(&v, d + s, sizeof v);
    const v4d sum = v + __builtin_convertvector(c > rv ? c : rv, v4d);
    lb = sum < lb ? sum : lb;
    lo = v < lo ? v : lo;
  }
  double b = std::min(std::min(lb[0], lb[1]), std::min(lb[2], lb[3]));
  double l = std::min(std::min(lo[0], lo[1]), std::min(lo[2], lo[3]));
  for (; s <= last; ++s) {
    b = std::min(b, d[s] + static_cast<double>(std::max(r, cols[s])));
    l = std::min(l, d[s]);
  }
  *low = l;
  return b;
}
RF_LANE_FUNCTION(double, row_bound,
                 (const double* d, const float* cols, float r, index_t first, index_t last, double* low),
                 (d, cols, r, first, last, low))

// The UCR Suite's cascade for each query's minimum over its candidates, with banded DPs:
//   1. an upper bound from the diagonal path (Tx == Ty) starts the best so far;
//   2. LB_Kim + LB_Keogh of every candidate (dtw_bounds.h): its rows against its block envelopes,
//      its columns against the query's whole envelope (whole_envelope_costs), with their row and
//      column tails kept for step 4;
//   3. candidates in increasing bound order, breadth first over the chunk's queries (every
//      query's first candidate before any query's second: its finished DTW then prunes the
//      others); a candidate whose bound exceeds its query's best so far is skipped without a DP;
//   4. after every strip of eight rows a pair is abandoned once min_s D[t][s] + max(row tail
//      after t, column tail after s) exceeds its query's best so far, or a group has no live value
//      left;
//   5. PrunedDTW (Silva & Batista 2016): the pair has per group a limit, and each strip is swept
//      only over its rows' live band (strip_impl). The limit for group g is the smaller of the
//      pair's diagonal-path cost for g (Tx == Ty: no cell of g's optimal path exceeds it) and what
//      g may cost for the candidate to still reach its query's best so far given the other groups'
//      lower bounds, ((best - sum_{g' != g} w_g' sqrt(LB_g')) / w_g)^2, each with a relative margin
//      of 1e-5 over float rounding. In row t a value is live while it is at or below the limit less
//      the row tail after t (a lower bound of what any path pays after row t), as EAPrunedDTW
//      (Herrmann & Webb 2021) prunes with its cumulative lower bound. Every cell of an optimal path
//      whose value is within the limit then stays live, so each is computed from its exact
//      predecessor and the final value is exact. A candidate close to its query (a near-diagonal
//      path) keeps a narrow band; one that cannot win narrows and dies out.
// Each step only drops what cannot beat the best, and the values on an optimal path within the
// limit are the full DP's bit for bit, so the result is exact.
//
// One pair at a time, eight of its rows at once (strip_impl): the lanes hold rows of one pair, so
// the band they sweep is that pair's own. (The search before this one held eight pairs in the
// lanes, each at its own row, and swept the union of their bands: on model-like queries at T = 750
// about 1.7 times the cells of the pairs' own bands.)
class StripSearch {
 public:
  StripSearch(const float* x, const float* y, const float* yW, index_t blocks, const index_t* offset,
              const index_t* index, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups, const float* y_lo,
              const float* y_hi)
      : x_(x), y_(y), yW_(yW), blocks_(blocks), offset_(offset), index_(index), Tx_(Tx), Ty_(Ty), D_(D),
        groups_(groups), g3_(groups), y_lo_(y_lo), y_hi_(y_hi), env_(D * envelope_blocks(Ty, envelope_block(Ty))),
        x_lo_(D), x_hi_(D),
        xB_(static_cast<size_t>(D) * kLanes, 0.f), xT_(static_cast<size_t>((Tx + 7) / 8) * D * kLanes, 0.f),
        row_(static_cast<size_t>(kMaxDtwGroups) * Ty, kInf),
        cost_(static_cast<size_t>(kMaxDtwGroups) * std::max(Tx, Ty)) {}

  // Queries [m0, m1); results in out_min / out_arg. Returns the DP cells computed (iterations
  // swept times the strips' rows).
  index_t run(index_t m0, index_t m1, double* out_min, index_t* out_arg) {
    queries_.assign(static_cast<size_t>(m1 - m0), Query());
    for (index_t m = m0; m < m1; ++m) prepare(m, queries_[m - m0]);
    index_t cells = 0;
    for (bool any = true; any;) {
      any = false;
      for (index_t m = m0; m < m1; ++m) {
        Query& q = queries_[m - m0];
        while (q.next < q.order.size() && q.order[q.next].bound > q.threshold) ++q.next;
        if (q.next == q.order.size()) continue;
        any = true;
        cells += run_pair(m, q, q.order[q.next++]);
      }
    }
    for (index_t m = m0; m < m1; ++m) {
      out_min[m] = queries_[m - m0].best;
      out_arg[m] = queries_[m - m0].arg;
    }
    return cells;
  }

 private:
  struct Candidate {
    double bound;
    index_t j, slot;
    double lb[kMaxDtwGroups], diag[kMaxDtwGroups];
  };
  struct Query {
    std::vector<Candidate> order;
    std::vector<float> tails;
    size_t next = 0;
    double best = kInf, threshold = kInf;
    index_t arg = -1;
  };

  void prepare(index_t m, Query& q) {
    const float* xm = x_ + m * Tx_ * D_;
    const index_t n = offset_[m + 1] - offset_[m];
    const index_t tail = (Tx_ + Ty_) * kMaxDtwGroups;
    for (index_t d = 0; d < D_; ++d) {  // the query's envelope over all its frames, for the column costs
      float lo = xm[d], hi = xm[d];
      for (index_t t = 1; t < Tx_; ++t) {
        lo = std::min(lo, xm[t * D_ + d]);
        hi = std::max(hi, xm[t * D_ + d]);
      }
      x_lo_[d] = lo;
      x_hi_[d] = hi;
    }
    if (Tx_ == Ty_)
      for (index_t t = 0; t < Tx_; ++t)
        for (index_t d = 0; d < D_; ++d) xT_[((t / 8) * D_ + d) * kLanes + t % 8] = xm[t * D_ + d];
    q.tails.resize(static_cast<size_t>(n * tail));
    for (index_t c = 0; c < n; ++c) {
      Candidate k{};
      k.j = index_[offset_[m] + c];
      k.slot = c;
      const float* yj = y_ + k.j * Ty_ * D_;
      float* rows = q.tails.data() + c * tail;
      double row_total[kMaxDtwGroups], col_total[kMaxDtwGroups];
      envelope_row_costs(xm, Tx_, D_, y_lo_ + k.j * env_, y_hi_ + k.j * env_, env_ / D_, groups_, cost_.data());
      dtw_tails(xm, yj, Tx_, Ty_, D_, groups_, cost_.data(), rows, kMaxDtwGroups, 1, row_total);
      whole_envelope_costs(yW_ + k.j * blocks_ * D_ * kWindow, Ty_, D_, x_lo_.data(), x_hi_.data(), g3_.start,
                           g3_.end, cost_.data());
      // The column tails group by group, for row_bound's vectors.
      dtw_tails(yj, xm, Ty_, Tx_, D_, groups_, cost_.data(), rows + Tx_ * kMaxDtwGroups, 1, Ty_, col_total);
      for (int g = 0; g < groups_.count; ++g) {
        k.lb[g] = std::max(row_total[g], col_total[g]);
        k.bound += groups_.weight[g] * std::sqrt(k.lb[g]);
      }
      for (int g = 0; g < kMaxDtwGroups; ++g) k.diag[g] = kInf;
      if (Tx_ == Ty_) {
        const float* yW = yW_ + k.j * blocks_ * D_ * kWindow;
        if (g3_.react_layout && D_ == 25)
          diagonal_react(xT_.data(), yW, Tx_, k.diag);
        else
          diagonal(xT_.data(), yW, Tx_, D_, g3_.start, g3_.end, k.diag);
        double diag = 0.0;
        for (int g = 0; g < groups_.count; ++g) diag += groups_.weight[g] * std::sqrt(k.diag[g]);
        // A small margin over the diagonal path's value, as over every limit.
        q.threshold = std::min(q.threshold, diag * (1.0 + 1e-6) + 1e-12);
      }
      q.order.push_back(k);
    }
    std::stable_sort(q.order.begin(), q.order.end(), [](const Candidate& a, const Candidate& b) {
      return std::tie(a.bound, a.j, a.slot) < std::tie(b.bound, b.j, b.slot);
    });
  }

  // Groups that weigh in the value; the others (padding, weight 0) never hold a live value.
  bool relevant(int g) const { return g < groups_.count && groups_.weight[g] > 0.0; }

  // The pair's limits before its DP (see the class comment): each group's diagonal-path cost, then
  // what the best so far leaves it given the other groups' bounds; -1 for groups that do not weigh.
  void limits(const Candidate& k, double best, double* limit) const {
    for (int g = 0; g < 3; ++g)
      limit[g] = !relevant(g) ? -1.0 : k.diag[g] < kInf ? k.diag[g] * (1.0 + 1e-5) + 1e-12 : kInf;
    tighten(k.lb, best, limit);
  }

  // The limits lowered to what the best so far leaves each group given the other groups' lower
  // bounds lb (the pair's before its DP, the current row's during it: they only grow).
  void tighten(const double* lb, double best, double* limit) const {
    if (!(best < kInf)) return;
    for (int g = 0; g < 3; ++g) {
      if (!relevant(g)) continue;
      double rest = best;
      for (int h = 0; h < 3; ++h)
        if (h != g && relevant(h)) rest -= groups_.weight[h] * std::sqrt(lb[h]);
      const double share = std::max(rest, 0.0) / groups_.weight[g];
      limit[g] = std::min(limit[g], share * share * (1.0 + 1e-5) + 1e-12);
    }
  }

  // The banded DP of query m against candidate k, strip by strip, abandoned as soon as it cannot
  // beat the query's best so far; a finished value updates the query. Returns the cells swept.
  index_t run_pair(index_t m, Query& q, const Candidate& k) {
    double limit[3];
    limits(k, q.threshold, limit);
    const float* xm = x_ + m * Tx_ * D_;
    const float* yW = yW_ + k.j * blocks_ * D_ * kWindow;
    // Row tails (row by row), then column tails (group by group).
    const float* rows = q.tails.data() + k.slot * (Tx_ + Ty_) * kMaxDtwGroups;
    const float* cols = rows + Tx_ * kMaxDtwGroups;
    index_t cells = 0, s0 = 0, e0 = -1, stop = 0;
    double rl[3 * kLanes];
    for (index_t t = 0; t < Tx_; t += kLanes) {
      const int n = static_cast<int>(std::min<index_t>(kLanes, Tx_ - t));
      for (int j = 0; j < kLanes; ++j) {
        const bool has_row = j >= kLanes - n;
        const index_t tj = t + kLanes - 1 - j;
        const float* xt = xm + (has_row ? tj : t) * D_;
        for (index_t d = 0; d < D_; ++d) xB_[d * kLanes + j] = xt[d];
        for (int g = 0; g < 3; ++g)
          rl[g * kLanes + j] = has_row ? limit[g] - rows[tj * kMaxDtwGroups + g] : -1.0;
      }
      index_t first, last, iterations;
      stop = g3_.react_layout && D_ == 25
                 ? strip_react(xB_.data(), yW, Ty_, row_.data(), rl, s0, e0, n, &first, &last, &iterations)
                 : strip(xB_.data(), yW, D_, Ty_, g3_.start, g3_.end, row_.data(), rl, s0, e0, n, &first, &last,
                         &iterations);
      cells += iterations * 3 * n;
      if (first < 0) return cells;  // no live value: the candidate cannot reach its query's best
      const index_t tn = t + n - 1;
      if (tn < Tx_ - 1) {
        // From row tn on group g pays at least lb[g] = min_s D_g[tn][s] + max(row tail, column tail
        // at s), and the pair at least their weighted sum.
        double lb[3] = {0.0, 0.0, 0.0}, bound = 0.0;
        for (int g = 0; g < 3; ++g) {
          if (!relevant(g)) continue;
          double low;
          lb[g] = row_bound(row_.data() + g * Ty_, cols + g * Ty_, rows[tn * kMaxDtwGroups + g], first, last, &low);
          // A group with no live value left in the row: the candidate cannot win.
          if (low > rl[g * kLanes + kLanes - n]) return cells;
          bound += g3_.weight[g] * std::sqrt(lb[g]);
        }
        if (bound > q.threshold) return cells;
        tighten(lb, q.threshold, limit);
      }
      s0 = first;
      e0 = last;
    }
    // The last cell counts only if the sweep reached it and it is live: a value above its limit is
    // not exact (it may stem from cells outside the band) and its true value is above the query's
    // best so far anyway.
    double v = 0.0;
    for (int g = 0; g < 3; ++g) {
      if (!relevant(g)) continue;
      const double last_cell = stop == Ty_ ? row_[g * Ty_ + Ty_ - 1] : kInf;
      v += g3_.weight[g] * std::sqrt(last_cell <= limit[g] ? last_cell : kInf);
    }
    if (v < q.best || (v == q.best && k.j < q.arg)) {
      q.best = v;
      q.arg = k.j;
    }
    q.threshold = std::min(q.threshold, v);
    return cells;
  }

  const float *x_, *y_, *yW_;
  index_t blocks_;
  const index_t *offset_, *index_;
  index_t Tx_, Ty_, D_;
  DtwGroups groups_;
  Groups3 g3_;
  const float *y_lo_, *y_hi_;
  index_t env_;
  std::vector<float> x_lo_, x_hi_;
  std::vector<float> xB_, xT_;
  std::vector<double> row_;
  std::vector<double> cost_;
  std::vector<Query> queries_;
};

}  // namespace

index_t weighted_dtw_min_banded(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index,
                                index_t M, index_t G, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups,
                                const float* y_lo, const float* y_hi, index_t chunk, double* out_min,
                                index_t* out_arg) {
  // The listed candidates' windows, once per call (the others' are never touched).
  const index_t blocks = window_blocks(Ty), per = blocks * D * kWindow;
  std::unique_ptr<float[]> yW(new float[static_cast<size_t>(G) * per]);
  std::vector<char> listed(static_cast<size_t>(G), 0);
  for (index_t c = 0; c < cand_offset[M]; ++c) listed[cand_index[c]] = 1;
#pragma omp parallel for schedule(static)
  for (index_t j = 0; j < G; ++j) {
    if (!listed[j]) continue;
    float* out = yW.get() + j * per;
    for (index_t b = 0; b < blocks; ++b)
      for (index_t m = 0; m < kWindow; ++m) {
        const index_t s = 8 * b + m - kPad;
        for (index_t d = 0; d < D; ++d)
          out[(b * D + d) * kWindow + m] = s >= 0 && s < Ty ? y[(j * Ty + s) * D + d] : kFInf;
      }
  }
  index_t total_cells = 0;
#pragma omp parallel reduction(+ : total_cells)
  {
    StripSearch search(x, y, yW.get(), blocks, cand_offset, cand_index, Tx, Ty, D, groups, y_lo, y_hi);
#pragma omp for schedule(dynamic, 1)
    for (index_t m0 = 0; m0 < M; m0 += chunk)
      total_cells += search.run(m0, std::min(M, m0 + chunk), out_min, out_arg);
  }
  return total_cells;
}

}  // namespace reactfast
