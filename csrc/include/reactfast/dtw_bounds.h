// Lower bounds of the group DTW for exact pruning of FRDist's minimum over candidates, in the
// manner of the UCR Suite (Rakthanmanon et al. 2012), adapted to unconstrained DTW:
//   - LB_Kim: every warping path contains (0, 0) and (Tx-1, Ty-1);
//   - LB_Keogh: every row t of the path holds at least one cell (t, s), whose cost is at least the
//     distance of x[t] to the envelope (per-dim min and max) of the frames around y[s]. With no
//     warping window s can be anywhere, so the row bound is the minimum over eight blocks of
//     frames of y of the distance to each block's envelope (one whole-sequence envelope would be
//     far looser on smooth candidates). The same holds for columns against x; the banded search
//     takes x's whole-sequence envelope there (dtw_band.cpp).
//   - During the DP, a path through cell (t, s) still pays at least the larger of the row bounds
//     after t and the column bounds after s, so min_s D[t][s] + max(rows after t, columns after s)
//     bounds the final value from row t on.
// Each group of dims is its own DTW with its own path, so bounds are per group. They bound the
// accumulated squared cost D_g[Tx-1, Ty-1] before the sqrt and are scaled by kBoundSafety, so that
// float32 rounding of the DP's local costs can never make a bound exceed what the DP computes.
#pragma once
#include "reactfast/common.h"
#include "reactfast/dtw.h"

namespace reactfast {

constexpr double kBoundSafety = 1.0 - 1e-5;

// Eight blocks per sequence, one 8-float SIMD vector of them: blocks of ceil(T / 8) frames (94 at
// T = 750). Finer blocks give tighter bounds at a proportional cost: on FRDist's 48-speaker
// model-like case (T = 750), 16 blocks swept 4.6% fewer DP cells than 8 but took 12% longer in all,
// and 4 blocks swept 2% more cells than 8 in about the same time.
constexpr index_t kEnvelopeBlocks = 8;
inline index_t envelope_block(index_t T) { return (T + kEnvelopeBlocks - 1) / kEnvelopeBlocks; }

// Blocks per dim in an envelope of a length-T sequence in blocks of `block` frames, padded to a
// multiple of 8 (the bounds take eight blocks per vector; a padding block holds no frame:
// lo = +inf, hi = -inf, infinitely far from everything).
inline index_t envelope_blocks(index_t T, index_t block) { return ((T + block - 1) / block + 7) / 8 * 8; }

// lo[d * blocks + b], hi[d * blocks + b]: min and max of y[t, d] over the frames t of block b.
void envelope(const float* y, index_t T, index_t D, index_t block, float* lo, float* hi);

// Row costs of a (Ta, D) against b's envelope lo/hi in blocks (stride: envelope_blocks of b):
// cost[t * kMaxDtwGroups + g] = min over b's blocks of the squared distance of a[t]'s dims in group
// g to the block's envelope (LB_Keogh of row t), 0 for groups past groups.count.
void envelope_row_costs(const float* a, index_t Ta, index_t D, const float* b_lo, const float* b_hi, index_t stride,
                        const DtwGroups& groups, double* cost);

// Tail bounds of a (Ta, D) against b (Tb, D) from row costs (LB_Keogh of each row, as from
// envelope_row_costs; LB_Kim is added here in the first and last rows, in place):
// tail[t * t_stride + g * g_stride] = a lower bound of what the optimal path of group g pays in the
// rows of a after t, as float rounded down; total[g] the bound over all rows. Called with (x, y) it
// gives the row tails, with (y, x) and costs against x's envelope the column tails. Groups past
// groups.count get 0.
void dtw_tails(const float* a, const float* b, index_t Ta, index_t Tb, index_t D, const DtwGroups& groups,
               double* cost, float* tail, index_t t_stride, index_t g_stride, double* total);

}  // namespace reactfast
