#include "dtw_lanes.h"
#include "reactfast/dtw_bounds.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace reactfast {
namespace {

// Eight DTWs in the SIMD lanes, each lane at its own row of its own pair, so that a lane whose pair
// finishes takes the next pair at once instead of idling until its batch ends (dynamic lane
// refill). Per-thread buffers: the lanes' candidates yB[s][d][lane], their current x rows
// xB[d][lane] and one DP row [g][s][lane] updated in place. At T = 750 yB and the row take about
// 0.75 MB, inside a core's L2.
class LaneDtw {
 public:
  LaneDtw(index_t Tx, index_t Ty, index_t D, const DtwGroups& groups)
      : Tx_(Tx), Ty_(Ty), D_(D), g3_(groups), yB_(static_cast<size_t>(Ty) * D * kLanes, 0.f),
        xB_(static_cast<size_t>(D) * kLanes, 0.f), row_(static_cast<size_t>(kMaxDtwGroups) * Ty * kLanes, kInf) {}

  // Puts the pair (x, y) in lane l from row 0.
  void start(int l, const float* x, const float* y, index_t tag) {
    x_[l] = x;
    t_[l] = 0;
    tag_[l] = tag;
    busy_[l] = true;
    for (index_t s = 0; s < Ty_; ++s)
      for (index_t d = 0; d < D_; ++d) yB_[(s * D_ + d) * kLanes + l] = y[s * D_ + d];
    for (index_t i = 0; i < kMaxDtwGroups * Ty_; ++i) row_[i * kLanes + l] = kInf;
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
  void advance(int l) { ++t_[l]; }
  void stop(int l) { busy_[l] = false; }

 private:
  index_t Tx_, Ty_, D_;
  Groups3 g3_;
  std::vector<float> yB_, xB_;
  std::vector<double> row_;
  const float* x_[kLanes] = {};
  index_t t_[kLanes] = {};
  index_t tag_[kLanes] = {};
  bool busy_[kLanes] = {};
};

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
        lanes.start(l, x + next * Tx * D, y + next * Ty * D, next);
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
            lanes.start(l, x + next * Tx * D, y + next * Ty * D, next);
            ++next;
          }
        }
      }
    }
  }
}

namespace {

// Each query's minimum over its candidates with every DP computed in full (no pruning: the
// reference point of the banded search's cell counts, and the path for groups that all weigh 0):
// the (query, candidate) pairs of a chunk of queries through the eight lanes, each lane refilled as
// soon as its pair finishes. Ties go to the smallest candidate index.
class FullSearch {
 public:
  FullSearch(const float* x, const float* y, const index_t* offset, const index_t* index, index_t Tx, index_t Ty,
             index_t D, const DtwGroups& groups)
      : x_(x), y_(y), offset_(offset), index_(index), Tx_(Tx), Ty_(Ty), D_(D), lanes_(Tx, Ty, D, groups) {}

  // Queries [m0, m1); results in out_min / out_arg. Returns the DP cells computed.
  index_t run(index_t m0, index_t m1, double* out_min, index_t* out_arg) {
    for (index_t m = m0; m < m1; ++m) {
      out_min[m] = kInf;
      out_arg[m] = -1;
    }
    m_ = m0;
    m1_ = m1;
    c_ = offset_[m0];
    index_t cells = 0;
    for (int l = 0; l < kLanes; ++l) refill(l);
    while (lanes_.any_busy()) {
      cells += Ty_ * 3 * lanes_.step();
      for (int l = 0; l < kLanes; ++l) {
        if (!lanes_.busy(l)) continue;
        if (!lanes_.finished(l)) {
          lanes_.advance(l);
          continue;
        }
        const double v = lanes_.value(l);
        const index_t j = lanes_.tag(l), m = query_[l];
        if (v < out_min[m] || (v == out_min[m] && j < out_arg[m])) {
          out_min[m] = v;
          out_arg[m] = j;
        }
        refill(l);
      }
    }
    return cells;
  }

 private:
  // Lane l takes the next (query, candidate) pair of the chunk, or stops.
  void refill(int l) {
    while (m_ < m1_ && c_ == offset_[m_ + 1]) ++m_;
    if (m_ == m1_) {
      lanes_.stop(l);
      return;
    }
    const index_t j = index_[c_++];
    lanes_.start(l, x_ + m_ * Tx_ * D_, y_ + j * Ty_ * D_, j);
    query_[l] = m_;
  }

  const float *x_, *y_;
  const index_t *offset_, *index_;
  index_t Tx_, Ty_, D_;
  LaneDtw lanes_;
  index_t query_[kLanes] = {};
  index_t m_ = 0, m1_ = 0, c_ = 0;
};

}  // namespace

void weighted_dtw_min_cpu(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index,
                          index_t M, index_t G, index_t Tx, index_t Ty, index_t D, const DtwGroups& groups,
                          bool abandon, double* out_min, index_t* out_arg, index_t* cells) {
  // The envelope (eight blocks) of each target some query lists, once per call.
  // The banded search needs a group that weighs in the value (all weights 0: every value is 0).
  bool banded = false;
  for (int g = 0; g < groups.count; ++g) banded = banded || (abandon && groups.weight[g] > 0.0);
  const index_t env = D * envelope_blocks(Ty, envelope_block(Ty));
  std::vector<float> y_lo, y_hi;
  if (banded) {
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
  if (banded) {
    total_cells = weighted_dtw_min_banded(x, y, cand_offset, cand_index, M, G, Tx, Ty, D, groups, y_lo.data(),
                                          y_hi.data(), chunk, out_min, out_arg);
  } else {
#pragma omp parallel reduction(+ : total_cells)
    {
      FullSearch search(x, y, cand_offset, cand_index, Tx, Ty, D, groups);
#pragma omp for schedule(dynamic, 1)
      for (index_t m0 = 0; m0 < M; m0 += chunk)
        total_cells += search.run(m0, std::min(M, m0 + chunk), out_min, out_arg);
    }
  }
  if (cells != nullptr) *cells = total_cells;
}

}  // namespace reactfast
