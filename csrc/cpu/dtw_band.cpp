// FRDist's minimum over candidates: the UCR Suite's exact pruning cascade with banded DPs (PrunedDTW,
// Silva & Batista 2016). dtw.cpp's FullSearch is the same minimum with every DP in full.
#include "dtw_lanes.h"
#include "reactfast/dtw_bounds.h"

#include <algorithm>
#include <tuple>
#include <vector>

namespace reactfast {
namespace {

// lb[g][lane] = min_s D_g[t][s] + max(rows[g][lane], cols[s][g][lane]): the lower bound of each
// lane's final D_g from its current row t on (rows: its row tail after t; cols[s]: its column tail
// after s, float, interleaved [s][g][lane]), over columns [s_begin, s_end); low[g][lane], if given:
// min_s D_g[t][s] alone.
template <int Isa>
__attribute__((always_inline)) inline void lane_bounds_body(const double* row, const double* rows, const float* cols,
                                                            index_t Ty, double* lb, index_t s_begin, index_t s_end,
                                                            double* low) {
  const index_t stride = Ty * kLanes;
  if (s_end < 0) s_end = Ty;
  using L = Lanes8d<Isa>;
  for (int g = 0; g < 3; ++g) {
    const L r = L::load(rows + g * kLanes);
    L m = L::inf(), n = m;
    for (index_t s = s_begin; s < s_end; ++s) {
      const L c = L::widen(load8f(cols + (s * 3 + g) * kLanes));
      const L d = L::load(row + g * stride + s * kLanes);
      m = lane_min(m, d + lane_max(r, c));
      n = lane_min(n, d);
    }
    m.store(lb + g * kLanes);
    if (low != nullptr) n.store(low + g * kLanes);
  }
}
RF_LANE_FUNCTION(void, lane_bounds,
                 (const double* row, const double* rows, const float* cols, index_t Ty, double* lb,
                  index_t s_begin = 0, index_t s_end = -1, double* low = nullptr),
                 (row, rows, cols, Ty, lb, s_begin, s_end, low))

// Each group's cost along the diagonal path (Tx == Ty): an upper bound of that group's DTW.
inline void diagonal_costs(const float* x, const float* y, index_t T, index_t D, const DtwGroups& groups, double* out) {
  for (int g = 0; g < kMaxDtwGroups; ++g) {
    double acc = 0.0;
    if (g < groups.count)
      for (index_t t = 0; t < T; ++t) acc += dtw_local_cost(x + t * D, y + t * D, groups.start[g], groups.end[g]);
    out[g] = acc;
  }
}

// The UCR Suite's cascade for each query's minimum over its candidates, with banded DPs:
//   1. an upper bound from the diagonal path (Tx == Ty) starts the best so far;
//   2. LB_Kim + LB_Keogh against block envelopes, rows and columns, of every candidate
//      (dtw_bounds.h), with their row and column tails kept for step 4;
//   3. candidates in increasing bound order through the eight SIMD lanes, breadth first over the
//      chunk's queries (every query's first candidate before any query's second: its finished DTW
//      then prunes the others); a candidate whose bound exceeds its query's best so far is
//      skipped without a DP;
//   4. every kCheckRows steps a lane is abandoned once min_s D[t][s] + max(row tail after t,
//      column tail after s) exceeds its query's best so far, or a group has no live value left;
//   5. PrunedDTW (Silva & Batista 2016): each lane has per group a limit, and each row is swept
//      only over the union of the lanes' live bands (dp_row_impl in dtw_lanes.h). A lane's limit
//      for group g is the smaller of its pair's diagonal-path cost for g (Tx == Ty: no cell of g's
//      optimal path exceeds it) and what g may cost for the candidate to still reach its query's
//      best so far given the other groups' lower bounds,
//      ((best - sum_{g' != g} w_g' sqrt(LB_g')) / w_g)^2, each with a relative margin of 1e-5 over
//      float rounding. In row t a value is live while it is at or below the limit less the lane's
//      row tail after t (a lower bound of what any path pays after row t), as EAPrunedDTW (Herrmann
//      & Webb 2021) prunes with its cumulative lower bound. Every cell of an optimal path whose
//      value is within the limit then stays live, so each is computed from its exact predecessor
//      and the final value is exact. A candidate close to its query (a near-diagonal path) keeps
//      a narrow band; one that cannot win narrows and dies out.
// Each step only drops what cannot beat the best, and the values on an optimal path within the
// limit are the full DP's bit for bit, so the result is exact. Lanes stand at their own rows. A lane that frees up takes the next
// candidate only while the union band is wide anyway (at least half the columns) or once every
// lane is free: a fresh pair's band starts at column 0 and would widen a narrow sweep for all.
class BandSearch {
 public:
  static constexpr int kCheckRows = 4;

  BandSearch(const float* x, const float* y, const index_t* offset, const index_t* index, index_t Tx, index_t Ty,
             index_t D, const DtwGroups& groups, const float* y_lo, const float* y_hi)
      : x_(x), y_(y), offset_(offset), index_(index), Tx_(Tx), Ty_(Ty), D_(D), groups_(groups), g3_(groups),
        y_lo_(y_lo), y_hi_(y_hi), env_(D * envelope_blocks(Ty, envelope_block(Ty))),
        x_lo_(D * envelope_blocks(Tx, envelope_block(Tx))), x_hi_(D * envelope_blocks(Tx, envelope_block(Tx))),
        yB_(static_cast<size_t>(Ty) * D * kLanes, 0.f), xB_(static_cast<size_t>(D) * kLanes, 0.f),
        row_(static_cast<size_t>(kMaxDtwGroups) * Ty * kLanes, kInf),
        row_tail_(static_cast<size_t>(Tx) * kMaxDtwGroups * kLanes, 0.f),
        col_tail_(static_cast<size_t>(Ty) * kMaxDtwGroups * kLanes, 0.f) {
    for (int l = 0; l < kLanes; ++l) stop(l);
  }

  // Queries [m0, m1); results in out_min / out_arg. Returns the DP cells computed (swept cells of
  // busy lanes).
  index_t run(index_t m0, index_t m1, double* out_min, index_t* out_arg) {
    m0_ = m0;
    end_ = m1;
    queries_.assign(static_cast<size_t>(m1 - m0), Query());
    for (index_t m = m0; m < m1; ++m) prepare(m);
    index_t cells = 0, s0 = 0, e0 = -1;
    double start[kLanes], bound[kLanes];
    for (int l = 0; l < kLanes; ++l) refill(l);
    for (index_t steps = 1;; ++steps) {
      int busy = 0, any = -1;
      bool fresh = false;
      for (int l = 0; l < kLanes; ++l)
        if (busy_[l]) {
          any = l;
          ++busy;
          fresh = fresh || t_[l] == 0;
        }
      if (busy == 0) break;
      for (int l = 0; l < kLanes; ++l) {
        const int k = busy_[l] ? l : any;
        start[l] = busy_[l] && t_[l] == 0 ? 0.0 : kInf;
        const float* xt = x_ + query_[k] * Tx_ * D_ + t_[k] * D_;
        for (index_t d = 0; d < D_; ++d) xB_[d * kLanes + l] = xt[d];
      }
      if (fresh) s0 = 0;  // a pair at its first row starts at column 0
      // This row's limits: what a value may hold for its path to still end at or below the lane's
      // limit, given what the rows after each lane's row t must add (their tail bound).
      double row_limit[3 * kLanes];
      for (int g = 0; g < 3; ++g)
        for (int l = 0; l < kLanes; ++l) {
          const double u = limit_[g * kLanes + l];
          row_limit[g * kLanes + l] = busy_[l] ? u - row_tail_[(t_[l] * 3 + g) * kLanes + l] : u;
        }
      index_t first, last;
      const index_t end =
          g3_.react_layout && D_ == 25
              ? dp_row_react(xB_.data(), yB_.data(), Ty_, row_.data(), start, row_limit, s0, e0, &first, &last)
              : dp_row(xB_.data(), yB_.data(), Ty_, D_, g3_.start, g3_.end, row_.data(), start, row_limit, s0, e0,
                       &first, &last);
      cells += (end - s0) * 3 * busy;
      const bool check = steps % kCheckRows == 0 && first >= 0;
      if (check) {
        double rows[3 * kLanes], lb[3 * kLanes], low[3 * kLanes];
        for (int g = 0; g < 3; ++g)
          for (int l = 0; l < kLanes; ++l) rows[g * kLanes + l] = row_tail_[(t_[l] * 3 + g) * kLanes + l];
        lane_bounds(row_.data(), rows, col_tail_.data(), Ty_, lb, first, last + 1, low);
        for (int l = 0; l < kLanes; ++l) {
          bound[l] = 0.0;
          for (int g = 0; g < 3; ++g) {
            if (!relevant(g)) continue;
            bound[l] += g3_.weight[g] * std::sqrt(lb[g * kLanes + l]);
            // A group with no live value left in this lane's row: the candidate cannot win.
            if (low[g * kLanes + l] > row_limit[g * kLanes + l]) bound[l] = kInf;
          }
        }
      }
      int freed = 0;
      for (int l = 0; l < kLanes; ++l) {
        if (!busy_[l]) continue;
        Query& q = queries_[query_[l] - m0_];
        if (t_[l] == Tx_ - 1) {
          // The last cell counts only if this row's sweep reached it and it is live: a value above
          // its limit is not exact (it may stem from cells outside the band) and its true value
          // is above the query's best so far anyway.
          double v = 0.0;
          for (int g = 0; g < 3; ++g) {
            if (!relevant(g)) continue;
            const double last_cell = end == Ty_ ? row_[(g * Ty_ + Ty_ - 1) * kLanes + l] : kInf;
            v += g3_.weight[g] * std::sqrt(last_cell <= limit_[g * kLanes + l] ? last_cell : kInf);
          }
          if (v < q.best || (v == q.best && cand_[l]->j < q.arg)) {
            q.best = v;
            q.arg = cand_[l]->j;
          }
          q.threshold = std::min(q.threshold, v);
          stop(l);
          ++freed;
        } else if (first < 0 || (check && bound[l] > q.threshold)) {
          stop(l);  // its band is empty (it cannot reach its query's best) or its bound exceeds it
          ++freed;
        } else {
          if (check) set_limits(l);  // the best so far may have dropped since the lane started
          ++t_[l];
        }
      }
      s0 = first < 0 ? 0 : first;
      e0 = last;
      if (freed > 0) {
        const bool wide = 2 * (e0 - s0 + 1) >= Ty_;
        bool idle = true;
        for (int l = 0; l < kLanes; ++l) idle = idle && !busy_[l];
        if (wide || idle)
          for (int l = 0; l < kLanes; ++l)
            if (!busy_[l]) refill(l);
        if (idle) {
          s0 = 0;
          e0 = -1;
        }
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

  void prepare(index_t m) {
    Query& q = queries_[m - m0_];
    const float* xm = x_ + m * Tx_ * D_;
    const index_t n = offset_[m + 1] - offset_[m];
    const index_t tail = (Tx_ + Ty_) * kMaxDtwGroups;
    envelope(xm, Tx_, D_, envelope_block(Tx_), x_lo_.data(), x_hi_.data());
    q.tails.resize(static_cast<size_t>(n * tail));
    for (index_t c = 0; c < n; ++c) {
      Candidate k{};
      k.j = index_[offset_[m] + c];
      k.slot = c;
      const float* yj = y_ + k.j * Ty_ * D_;
      float* rows = q.tails.data() + c * tail;
      double row_total[kMaxDtwGroups], col_total[kMaxDtwGroups];
      dtw_tail_bounds(xm, yj, Tx_, Ty_, D_, y_lo_ + k.j * env_, y_hi_ + k.j * env_, groups_, rows, row_total);
      dtw_tail_bounds(yj, xm, Ty_, Tx_, D_, x_lo_.data(), x_hi_.data(), groups_, rows + Tx_ * kMaxDtwGroups,
                      col_total);
      for (int g = 0; g < groups_.count; ++g) {
        k.lb[g] = std::max(row_total[g], col_total[g]);
        k.bound += groups_.weight[g] * std::sqrt(k.lb[g]);
      }
      for (int g = 0; g < kMaxDtwGroups; ++g) k.diag[g] = kInf;
      if (Tx_ == Ty_) {
        diagonal_costs(xm, yj, Tx_, D_, groups_, k.diag);
        double diag = 0.0;
        for (int g = 0; g < groups_.count; ++g) diag += groups_.weight[g] * std::sqrt(k.diag[g]);
        // The DP sums float32 costs in another order than this upper bound: a small margin keeps
        // the candidate whose optimal path is the diagonal from being pruned by rounding.
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

  // Lane l's limits (see the class comment).
  void set_limits(int l) {
    const Candidate& k = *cand_[l];
    const double best = queries_[query_[l] - m0_].threshold;
    for (int g = 0; g < 3; ++g) {
      double u = -1.0;
      if (relevant(g)) {
        u = kInf;
        if (k.diag[g] < kInf) u = k.diag[g] * (1.0 + 1e-5) + 1e-12;
        if (best < kInf) {
          double rest = best;
          for (int h = 0; h < groups_.count; ++h)
            if (h != g) rest -= groups_.weight[h] * std::sqrt(k.lb[h]);
          const double share = std::max(rest, 0.0) / groups_.weight[g];
          u = std::min(u, share * share * (1.0 + 1e-5) + 1e-12);
        }
      }
      limit_[g * kLanes + l] = u;
    }
  }

  // Lane l takes the next candidate of the chunk's query that has started the fewest, skipping
  // candidates whose bound exceeds their query's best so far; with none left it stays free.
  void refill(int l) {
    index_t pick = -1;
    for (index_t m = m0_; m < end_; ++m) {
      Query& q = queries_[m - m0_];
      while (q.next < q.order.size() && q.order[q.next].bound > q.threshold) ++q.next;
      if (q.next < q.order.size() && (pick < 0 || q.next < queries_[pick - m0_].next)) pick = m;
    }
    if (pick < 0) return;
    Query& q = queries_[pick - m0_];
    const Candidate& k = q.order[q.next++];
    query_[l] = pick;
    cand_[l] = &k;
    busy_[l] = true;
    t_[l] = 0;
    set_limits(l);
    const float* y = y_ + k.j * Ty_ * D_;
    for (index_t s = 0; s < Ty_; ++s)
      for (index_t d = 0; d < D_; ++d) yB_[(s * D_ + d) * kLanes + l] = y[s * D_ + d];
    for (index_t i = 0; i < kMaxDtwGroups * Ty_; ++i) row_[i * kLanes + l] = kInf;
    const float* tails = q.tails.data() + k.slot * (Tx_ + Ty_) * kMaxDtwGroups;
    for (index_t i = 0; i < kMaxDtwGroups * Tx_; ++i) row_tail_[i * kLanes + l] = tails[i];
    for (index_t i = 0; i < kMaxDtwGroups * Ty_; ++i) col_tail_[i * kLanes + l] = tails[Tx_ * kMaxDtwGroups + i];
  }

  // A free lane: every value it computes is pruned, so it never widens the band.
  void stop(int l) {
    busy_[l] = false;
    t_[l] = 0;
    for (int g = 0; g < 3; ++g) limit_[g * kLanes + l] = -1.0;
  }

  const float *x_, *y_;
  const index_t *offset_, *index_;
  index_t Tx_, Ty_, D_;
  DtwGroups groups_;
  Groups3 g3_;
  const float *y_lo_, *y_hi_;
  index_t env_;
  std::vector<float> x_lo_, x_hi_;
  std::vector<float> yB_, xB_;
  std::vector<double> row_;
  std::vector<float> row_tail_, col_tail_;
  double limit_[3 * kLanes] = {};
  index_t query_[kLanes] = {}, t_[kLanes] = {};
  const Candidate* cand_[kLanes] = {};
  bool busy_[kLanes] = {};
  std::vector<Query> queries_;
  index_t m0_ = 0, end_ = 0;
};

}  // namespace

index_t weighted_dtw_min_banded(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index,
                                index_t M, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups,
                                const float* y_lo, const float* y_hi, index_t chunk, double* out_min,
                                index_t* out_arg) {
  index_t total_cells = 0;
#pragma omp parallel reduction(+ : total_cells)
  {
    BandSearch search(x, y, cand_offset, cand_index, Tx, Ty, D, groups, y_lo, y_hi);
#pragma omp for schedule(dynamic, 1)
    for (index_t m0 = 0; m0 < M; m0 += chunk)
      total_cells += search.run(m0, std::min(M, m0 + chunk), out_min, out_arg);
  }
  return total_cells;
}

}  // namespace reactfast
