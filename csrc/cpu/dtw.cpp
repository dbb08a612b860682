#include "reactfast/dtw.h"
#include "reactfast/dtw_bounds.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

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

// One DP row for three groups and eight lanes at once, in place (row holds each lane's D[t-1] on
// entry and D[t] on return; the previous row's value at s - 1 is carried in a register):
//   D_g[t][s] = cost_g(t, s) + min(D_g[t-1][s-1], D_g[t-1][s], D_g[t][s-1])
// with cost_g(t, s) = sum_{d in group g} (x[t][d] - y[s][d])^2 computed in float32 and accumulated
// in float64. Lanes may stand at different rows t of different pairs: `start` is 0 in a lane at its
// first row (D[-1] = +inf and the chain starts at 0) and +inf elsewhere.
// Vectors cross function boundaries only through memory (the target clones differ in vector ABI).
// Cost is a functor giving the three group costs at one s; the REACT layout gets a variant with
// compile-time group bounds (fully unrolled), any other layout the generic one.
template <typename Cost>
__attribute__((always_inline)) inline void dp_row_impl(Cost cost, const float* yB, index_t Ty, index_t D,
                                                       double* row, const double* start) {
  const index_t stride = Ty * kLanes;
  const v8d inf = kInf - v8d{};
  v8d r0 = load8d(start), r1 = r0, r2 = r0;
  v8d pp0 = inf, pp1 = inf, pp2 = inf;
  for (index_t s = 0; s < Ty; ++s) {
    v8f a0, a1, a2;
    cost(yB + s * D * kLanes, a0, a1, a2);
    const index_t o = s * kLanes;
    const v8d p0 = load8d(row + o), p1 = load8d(row + stride + o), p2 = load8d(row + 2 * stride + o);
    r0 = __builtin_convertvector(a0, v8d) + vmin(vmin(pp0, p0), r0);
    r1 = __builtin_convertvector(a1, v8d) + vmin(vmin(pp1, p1), r1);
    r2 = __builtin_convertvector(a2, v8d) + vmin(vmin(pp2, p2), r2);
    pp0 = p0;
    pp1 = p1;
    pp2 = p2;
    store8d(row + o, r0);
    store8d(row + stride + o, r1);
    store8d(row + 2 * stride + o, r2);
  }
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

// REACT's emotion layout: D = 25, groups [0, 15), [15, 17), [17, 25). xB: the lanes' x rows,
// xB[d][lane].
RF_CLONES void dp_row_react(const float* xB, const float* yB, index_t Ty, double* row, const double* start) {
  v8f xr[25];
  for (int d = 0; d < 25; ++d) xr[d] = load8f(xB + d * kLanes);
  dp_row_impl(
      [&](const float* ys, v8f& a0, v8f& a1, v8f& a2) {
        a0 = fixed_group_cost<0, 15>(xr, ys);
        a1 = fixed_group_cost<15, 17>(xr, ys);
        a2 = fixed_group_cost<17, 25>(xr, ys);
      },
      yB, Ty, 25, row, start);
}

RF_CLONES void dp_row(const float* xB, const float* yB, index_t Ty, index_t D, const int* gs, const int* ge,
                      double* row, const double* start) {
  dp_row_impl(
      [&](const float* ys, v8f& a0, v8f& a1, v8f& a2) {
        a0 = group_cost(xB, ys, gs[0], ge[0]);
        a1 = group_cost(xB, ys, gs[1], ge[1]);
        a2 = group_cost(xB, ys, gs[2], ge[2]);
      },
      yB, Ty, D, row, start);
}

// lb[g][lane] = min_s D_g[t][s] + max(rows[g][lane], cols[s][g][lane]): the lower bound of each
// lane's final D_g from its current row t on (rows: its row tail after t; cols[s]: its column tail
// after s, float, interleaved [s][g][lane]).
RF_CLONES void lane_bounds(const double* row, const double* rows, const float* cols, index_t Ty, double* lb) {
  const index_t stride = Ty * kLanes;
  for (int g = 0; g < 3; ++g) {
    const v8d r = load8d(rows + g * kLanes);
    v8d m = kInf - v8d{};
    for (index_t s = 0; s < Ty; ++s) {
      const v8d c = __builtin_convertvector(load8f(cols + (s * 3 + g) * kLanes), v8d);
      const v8d v = load8d(row + g * stride + s * kLanes) + (r > c ? r : c);
      m = vmin(m, v);
    }
    store8d(lb + g * kLanes, m);
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

// Eight DTWs in the SIMD lanes, each lane at its own row of its own pair, so that a lane whose pair
// finishes or is abandoned takes the next pair at once instead of idling until its batch ends
// (dynamic lane refill). Per-thread buffers: the lanes' candidates yB[s][d][lane], their current x
// rows xB[d][lane], one DP row [g][s][lane] updated in place, and for abandoning the lanes' row
// tails [t][g][lane] and column tails [s][g][lane]. At T = 750 yB and the row take about 0.75 MB,
// inside a core's L2.
class LaneDtw {
 public:
  LaneDtw(index_t Tx, index_t Ty, index_t D, const DtwGroups& groups)
      : Tx_(Tx), Ty_(Ty), D_(D), g3_(groups), yB_(static_cast<size_t>(Ty) * D * kLanes, 0.f),
        xB_(static_cast<size_t>(D) * kLanes, 0.f), row_(static_cast<size_t>(kMaxDtwGroups) * Ty * kLanes, kInf),
        row_tail_(static_cast<size_t>(Tx) * kMaxDtwGroups * kLanes, 0.f),
        col_tail_(static_cast<size_t>(Ty) * kMaxDtwGroups * kLanes, 0.f) {}

  // Puts the pair (x, y) in lane l from row 0. row_tail (Tx x 3) and col_tail (Ty x 3), from
  // dtw_tail_bounds, may be null (bounds of 0).
  void start(int l, const float* x, const float* y, const float* row_tail, const float* col_tail, index_t tag) {
    x_[l] = x;
    t_[l] = 0;
    tag_[l] = tag;
    busy_[l] = true;
    for (index_t s = 0; s < Ty_; ++s)
      for (index_t d = 0; d < D_; ++d) yB_[(s * D_ + d) * kLanes + l] = y[s * D_ + d];
    for (index_t i = 0; i < kMaxDtwGroups * Ty_; ++i) row_[i * kLanes + l] = kInf;
    for (index_t i = 0; i < kMaxDtwGroups * Tx_; ++i) row_tail_[i * kLanes + l] = row_tail ? row_tail[i] : 0.f;
    for (index_t i = 0; i < kMaxDtwGroups * Ty_; ++i) col_tail_[i * kLanes + l] = col_tail ? col_tail[i] : 0.f;
  }

  bool busy(int l) const { return busy_[l]; }
  bool any_busy() const {
    for (int l = 0; l < kLanes; ++l)
      if (busy_[l]) return true;
    return false;
  }
  index_t tag(int l) const { return tag_[l]; }

  // Advances every busy lane by one row; returns the number of busy lanes that computed a row.
  int step() {
    double start_lanes[kLanes];
    int count = 0, any = 0;
    for (int l = 0; l < kLanes; ++l)
      if (busy_[l]) any = l;
    for (int l = 0; l < kLanes; ++l) {
      start_lanes[l] = busy_[l] && t_[l] == 0 ? 0.0 : kInf;
      const float* xt = busy_[l] ? x_[l] + t_[l] * D_ : x_[any] + t_[any] * D_;
      for (index_t d = 0; d < D_; ++d) xB_[d * kLanes + l] = xt[d];
      count += busy_[l];
    }
    if (g3_.react_layout && D_ == 25)
      dp_row_react(xB_.data(), yB_.data(), Ty_, row_.data(), start_lanes);
    else
      dp_row(xB_.data(), yB_.data(), Ty_, D_, g3_.start, g3_.end, row_.data(), start_lanes);
    return count;
  }

  // After step(): whether lane l has finished its last row, and then its weighted DTW.
  bool finished(int l) const { return busy_[l] && t_[l] == Tx_ - 1; }
  double value(int l) const {
    double total = 0.0;
    for (int g = 0; g < 3; ++g) total += g3_.weight[g] * std::sqrt(row_[(g * Ty_ + Ty_ - 1) * kLanes + l]);
    return total;
  }
  // After step(): bound[l], the lower bound of each lane's final weighted DTW (busy lanes only).
  void bounds(double* bound) {
    double rows[3 * kLanes], lb[3 * kLanes];
    for (int g = 0; g < 3; ++g)
      for (int l = 0; l < kLanes; ++l) rows[g * kLanes + l] = row_tail_[(t_[l] * 3 + g) * kLanes + l];
    lane_bounds(row_.data(), rows, col_tail_.data(), Ty_, lb);
    for (int l = 0; l < kLanes; ++l) {
      bound[l] = 0.0;
      for (int g = 0; g < 3; ++g) bound[l] += g3_.weight[g] * std::sqrt(lb[g * kLanes + l]);
    }
  }
  void advance(int l) { ++t_[l]; }
  void stop(int l) { busy_[l] = false; }

 private:
  index_t Tx_, Ty_, D_;
  Groups3 g3_;
  std::vector<float> yB_, xB_;
  std::vector<double> row_;
  std::vector<float> row_tail_, col_tail_;
  const float* x_[kLanes] = {};
  index_t t_[kLanes] = {};
  index_t tag_[kLanes] = {};
  bool busy_[kLanes] = {};
};

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

}  // namespace

void dtw_pairs_cpu(const float* x, const float* y, double* out, index_t P, index_t Tx, index_t Ty, index_t D) {
  DtwGroups all{};
  all.count = 1;
  all.start[0] = 0;
  all.end[0] = static_cast<int>(D);
  all.weight[0] = 1.0;
  // Eight pairs per thread at a time, each lane refilled as its pair finishes.
  const index_t chunk = kLanes * 4;
#pragma omp parallel
  {
    LaneDtw lanes(Tx, Ty, D, all);
#pragma omp for schedule(dynamic, 1)
    for (index_t c0 = 0; c0 < P; c0 += chunk) {
      const index_t c1 = std::min(P, c0 + chunk);
      index_t next = c0;
      for (int l = 0; l < kLanes && next < c1; ++l, ++next)
        lanes.start(l, x + next * Tx * D, y + next * Ty * D, nullptr, nullptr, next);
      while (lanes.any_busy()) {
        lanes.step();
        for (int l = 0; l < kLanes; ++l) {
          if (!lanes.busy(l)) continue;
          if (!lanes.finished(l)) {
            lanes.advance(l);
            continue;
          }
          out[lanes.tag(l)] = lanes.value(l);
          lanes.stop(l);
          if (next < c1) {
            lanes.start(l, x + next * Tx * D, y + next * Ty * D, nullptr, nullptr, next);
            ++next;
          }
        }
      }
    }
  }
}

namespace {

// One query's search for its best candidate: candidates in order of their lower bound (bound,
// candidate, slot of its tails), their row and column tails, the best so far, and how many of its
// candidates are in the lanes.
struct QuerySearch {
  std::vector<std::tuple<double, index_t, index_t>> order;
  std::vector<float> tails;
  size_t next = 0;
  bool prepared = false, done = false;
  int in_lanes = 0;
  double best = kInf, threshold = kInf;
  index_t arg = -1;
};

// The UCR Suite's cascade for each query's minimum over its candidates:
//   1. an upper bound from the diagonal path (Tx == Ty) starts the best so far;
//   2. LB_Kim + LB_Keogh against block envelopes, rows and columns, of every candidate, with their
//      tails kept for step 4;
//   3. candidates in increasing bound order through the eight SIMD lanes, a lane refilled as soon
//      as its pair finishes or is abandoned, breadth first over the chunk's queries (every query's
//      first candidate before any query's second: its finished DTW then prunes the others); a
//      candidate whose bound exceeds its query's best so far is skipped without a DP;
//   4. every kCheckRows rows of the DP a lane is abandoned once min_s D[t][s] + max(row tail after
//      t, column tail after s) exceeds its query's best so far.
// Each step only drops candidates whose value is above the best, so the result is exact. The
// lanes run through a chunk of queries without draining between them, so no lane idles while a
// query's last candidates finish.
class CandidateSearch {
 public:
  static constexpr int kCheckRows = 4;

  CandidateSearch(const float* x, const float* y, const index_t* offset, const index_t* index, index_t Tx, index_t Ty,
                  index_t D, const DtwGroups& groups, bool abandon, const float* y_lo, const float* y_hi)
      : x_(x), y_(y), offset_(offset), index_(index), Tx_(Tx), Ty_(Ty), D_(D), groups_(groups), abandon_(abandon),
        y_lo_(y_lo), y_hi_(y_hi), env_(D * envelope_blocks(Ty, envelope_block(Ty))), lanes_(Tx, Ty, D, groups),
        x_lo_(D * envelope_blocks(Tx, envelope_block(Tx))), x_hi_(D * envelope_blocks(Tx, envelope_block(Tx))) {}

  // Queries [m0, m1); results in out_min / out_arg. Returns the DP cells computed.
  index_t run(index_t m0, index_t m1, double* out_min, index_t* out_arg) {
    m0_ = m0;
    queries_.assign(static_cast<size_t>(m1 - m0), QuerySearch());
    end_ = m1;
    out_min_ = out_min;
    out_arg_ = out_arg;
    index_t cells = 0;
    double bound[kLanes];
    for (int l = 0; l < kLanes; ++l) refill(l);
    for (index_t steps = 1; lanes_.any_busy(); ++steps) {
      cells += Ty_ * 3 * lanes_.step();
      const bool check = abandon_ && steps % kCheckRows == 0;
      if (check) lanes_.bounds(bound);
      for (int l = 0; l < kLanes; ++l) {
        if (!lanes_.busy(l)) continue;
        QuerySearch& q = queries_[query_[l] - m0_];
        if (lanes_.finished(l)) {
          const double v = lanes_.value(l);
          const index_t j = lanes_.tag(l);
          if (v < q.best || (v == q.best && j < q.arg)) {
            q.best = v;
            q.arg = j;
          }
          if (abandon_) q.threshold = std::min(q.threshold, v);
          release(l);
        } else if (check && bound[l] > q.threshold) {
          release(l);
        } else {
          lanes_.advance(l);
        }
      }
    }
    return cells;
  }

 private:
  void prepare(index_t m) {
    QuerySearch& q = queries_[m - m0_];
    q.prepared = true;
    const float* xm = x_ + m * Tx_ * D_;
    const index_t n = offset_[m + 1] - offset_[m];
    const index_t tail = (Tx_ + Ty_) * kMaxDtwGroups;
    if (abandon_) {
      envelope(xm, Tx_, D_, envelope_block(Tx_), x_lo_.data(), x_hi_.data());
      q.tails.resize(static_cast<size_t>(n * tail));
    }
    for (index_t c = 0; c < n; ++c) {
      const index_t j = index_[offset_[m] + c];
      double bound = 0.0;
      if (abandon_) {
        const float* yj = y_ + j * Ty_ * D_;
        float* rows = q.tails.data() + c * tail;
        double row_total[kMaxDtwGroups], col_total[kMaxDtwGroups];
        dtw_tail_bounds(xm, yj, Tx_, Ty_, D_, y_lo_ + j * env_, y_hi_ + j * env_, groups_, rows, row_total);
        dtw_tail_bounds(yj, xm, Ty_, Tx_, D_, x_lo_.data(), x_hi_.data(), groups_, rows + Tx_ * kMaxDtwGroups,
                        col_total);
        for (int g = 0; g < groups_.count; ++g)
          bound += groups_.weight[g] * std::sqrt(std::max(row_total[g], col_total[g]));
        // The DP sums float32 costs in another order than this upper bound: a small margin keeps
        // the candidate whose optimal path is the diagonal from being pruned by rounding.
        if (Tx_ == Ty_)
          q.threshold = std::min(q.threshold, diagonal_bound(xm, yj, Tx_, D_, groups_) * (1.0 + 1e-6) + 1e-12);
      }
      q.order.emplace_back(bound, j, c);
    }
    // Most promising candidates first: their values then prune the rest early.
    if (abandon_) std::stable_sort(q.order.begin(), q.order.end());
  }

  // Query m's result once every candidate has been started or skipped and none is left in the lanes.
  void maybe_finish(index_t m) {
    QuerySearch& q = queries_[m - m0_];
    if (q.done || !q.prepared || q.in_lanes > 0 || q.next < q.order.size()) return;
    q.done = true;
    out_min_[m] = q.best;
    out_arg_[m] = q.arg;
  }

  void release(int l) {
    const index_t m = query_[l];
    --queries_[m - m0_].in_lanes;
    refill(l);
    maybe_finish(m);
  }

  // Lane l takes the next candidate of the chunk's query that has started the fewest (ties: the
  // fewest in the lanes, then the first), skipping candidates whose bound exceeds their query's best
  // so far; with nothing left it stops. Breadth first: each query's most promising candidate runs
  // before any query's second, so that the later candidates meet a best so far that is already a
  // finished DTW and are skipped or abandoned early.
  void refill(int l) {
    index_t pick = -1;
    for (index_t m = m0_; m < end_; ++m) {
      QuerySearch& q = queries_[m - m0_];
      if (q.done) continue;
      if (!q.prepared) prepare(m);
      while (q.next < q.order.size() && std::get<0>(q.order[q.next]) > q.threshold) ++q.next;
      if (q.next == q.order.size()) {
        maybe_finish(m);
        continue;
      }
      if (pick < 0) {
        pick = m;
        continue;
      }
      const QuerySearch& p = queries_[pick - m0_];
      if (q.next < p.next || (q.next == p.next && q.in_lanes < p.in_lanes)) pick = m;
    }
    if (pick < 0) {
      lanes_.stop(l);
      return;
    }
    QuerySearch& q = queries_[pick - m0_];
    const auto& [bound, j, slot] = q.order[q.next++];
    const float* rows = abandon_ ? q.tails.data() + slot * (Tx_ + Ty_) * kMaxDtwGroups : nullptr;
    lanes_.start(l, x_ + pick * Tx_ * D_, y_ + j * Ty_ * D_, rows, rows ? rows + Tx_ * kMaxDtwGroups : nullptr, j);
    ++q.in_lanes;
    query_[l] = pick;
  }

  const float *x_, *y_;
  const index_t *offset_, *index_;
  index_t Tx_, Ty_, D_;
  DtwGroups groups_;
  bool abandon_;
  const float *y_lo_, *y_hi_;
  index_t env_;
  LaneDtw lanes_;
  std::vector<float> x_lo_, x_hi_;
  std::vector<QuerySearch> queries_;
  index_t query_[kLanes] = {};
  index_t m0_ = 0, end_ = 0;
  double* out_min_ = nullptr;
  index_t* out_arg_ = nullptr;
};

}  // namespace

void weighted_dtw_min_cpu(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index,
                          index_t M, index_t G, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups,
                          bool abandon, double* out_min, index_t* out_arg, index_t* cells) {
  // The envelope (sixteen blocks) of each target some query lists, once per call.
  const index_t env = D * envelope_blocks(Ty, envelope_block(Ty));
  std::vector<float> y_lo, y_hi;
  if (abandon) {
    std::vector<char> listed(static_cast<size_t>(G), 0);
    for (index_t c = 0; c < cand_offset[M]; ++c) listed[cand_index[c]] = 1;
    std::vector<index_t> targets;
    for (index_t j = 0; j < G; ++j)
      if (listed[j]) targets.push_back(j);
    y_lo.resize(static_cast<size_t>(G) * env);
    y_hi.resize(static_cast<size_t>(G) * env);
    const index_t n = static_cast<index_t>(targets.size());
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) {
      const index_t j = targets[i];
      envelope(y + j * Ty * D, Ty, D, envelope_block(Ty), y_lo.data() + j * env, y_hi.data() + j * env);
    }
  }
  // Chunks of up to eight queries per task (the lanes drain once per chunk), and enough chunks for
  // every thread.
#if defined(_OPENMP)
  const index_t threads = omp_get_max_threads();
#else
  const index_t threads = 1;
#endif
  const index_t chunk = std::max<index_t>(1, std::min<index_t>(8, M / (2 * threads)));
  index_t total_cells = 0;
#pragma omp parallel reduction(+ : total_cells)
  {
    CandidateSearch search(x, y, cand_offset, cand_index, Tx, Ty, D, groups, abandon, y_lo.data(), y_hi.data());
#pragma omp for schedule(dynamic, 1)
    for (index_t m0 = 0; m0 < M; m0 += chunk)
      total_cells += search.run(m0, std::min(M, m0 + chunk), out_min, out_arg);
  }
  if (cells != nullptr) *cells = total_cells;
}

}  // namespace reactfast
