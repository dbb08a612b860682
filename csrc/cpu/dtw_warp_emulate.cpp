// The CUDA warp-wavefront DTW's schedule (reactfast/dtw_warp.h) run on the CPU: the 32 lanes of a
// warp in lockstep in one thread, the warps of a query's block one candidate at a time in list
// order (one of the interleavings the GPU may take). Slow; it exists so that the tests check the
// GPU kernel's strips, passes, border rows, bounds and tie-breaking where no GPU is at hand.
#include <cmath>
#include <memory>
#include <vector>

#include "reactfast/dtw_warp.h"

namespace reactfast {
namespace {

using warp_dtw::kGroups;
using warp_dtw::kWarp;
using warp_dtw::Lane;

template <class L>
struct EmulatedWarp {
  Lane<L> lanes[kWarp];
  double best_value = INFINITY;

  int lo() const { return 0; }
  int hi() const { return kWarp; }
  Lane<L>& lane(int l) { return lanes[l]; }
  void shift_up() {
    for (int l = kWarp - 1; l > 0; --l)
      for (int g = 0; g < kGroups; ++g) lanes[l].up[g] = lanes[l - 1].bot[g];
  }
  void sync() {}
  double from_lane(double v, int) const { return v; }
  double best() const { return best_value; }
};

template <class L>
index_t emulate(const float* x, const float* y, const index_t* offset, const index_t* index, index_t M, index_t Tx,
             index_t Ty, index_t D, const DtwGroups& groups, bool abandon, int warps, double* out_min,
             index_t* out_arg) {
  index_t abandoned = 0;
#pragma omp parallel reduction(+ : abandoned)
  {
    auto w = std::make_unique<EmulatedWarp<L>>();
    std::vector<double> border(static_cast<size_t>(kGroups) * Ty);
    std::vector<float> ring(warp_dtw::ring_bytes(D) / sizeof(float));
    std::vector<double> warp_best(warps);
    std::vector<index_t> warp_pos(warps);
#pragma omp for schedule(dynamic, 1)
    for (index_t m = 0; m < M; ++m) {
      w->best_value = INFINITY;
      for (int k = 0; k < warps; ++k) {
        warp_best[k] = INFINITY;
        warp_pos[k] = -1;
      }
      for (index_t c = offset[m]; c < offset[m + 1]; ++c) {
        const int k = static_cast<int>((c - offset[m]) % warps);
        const double v = warp_dtw::pair_value<L>(*w, x + m * Tx * D, y + index[c] * Ty * D, Tx, Ty, D, groups,
                                                 border.data(), ring.data(), abandon);
        abandoned += v == INFINITY;
        if (v < warp_best[k]) {
          warp_best[k] = v;
          warp_pos[k] = c;
        }
        if (v < w->best_value) w->best_value = v;
      }
      // The block's reduction, as the kernel's.
      const index_t pos = warp_dtw::least_first(warp_best.data(), warp_pos.data(), warps, &out_min[m]);
      out_arg[m] = pos < 0 ? -1 : index[pos];
    }
  }
  return abandoned;
}

}  // namespace

index_t weighted_dtw_min_warp_emulated(const float* x, const float* y, const index_t* cand_offset,
                                    const index_t* cand_index, index_t M, index_t Tx, index_t Ty, index_t D,
                                    const DtwGroups& groups, bool abandon, int warps, double* out_min,
                                    index_t* out_arg) {
  if (warp_dtw::is_react_layout(groups, D))
    return emulate<warp_dtw::ReactLayout>(x, y, cand_offset, cand_index, M, Tx, Ty, D, groups, abandon, warps, out_min,
                                          out_arg);
  return emulate<warp_dtw::AnyLayout>(x, y, cand_offset, cand_index, M, Tx, Ty, D, groups, abandon, warps, out_min,
                                      out_arg);
}

}  // namespace reactfast
