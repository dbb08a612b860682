// Lower bounds of the group DTW for exact pruning of FRDist's minimum over candidates, in the
// manner of the UCR Suite (Rakthanmanon et al. 2012), adapted to unconstrained DTW:
//   - LB_Kim: every warping path contains (0, 0) and (Tx-1, Ty-1);
//   - LB_Keogh: every row t of the path holds at least one cell (t, s), whose cost is at least the
//     distance of x[t] to the envelope (per-dim min and max) of the frames around y[s]. With no
//     warping window s can be anywhere, so the row bound is the minimum over sixteen blocks of
//     frames of y of the distance to each block's envelope (one whole-sequence
//     envelope would be far looser). The same holds for columns against x's blocks.
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

// Sixteen blocks per sequence, one SIMD vector of them: blocks of ceil(T / 16) frames (47 at T =
// 750). Finer blocks give tighter bounds at a proportional cost; measured at T = 750, 16 to 64
// blocks pruned about the same.
constexpr index_t kEnvelopeBlocks = 16;
inline index_t envelope_block(index_t T) { return (T + kEnvelopeBlocks - 1) / kEnvelopeBlocks; }

// Blocks per dim in an envelope of a length-T sequence in blocks of `block` frames, padded to a
// multiple of 16 (the bounds take sixteen blocks per vector; a padding block holds no frame:
// lo = +inf, hi = -inf, infinitely far from everything).
inline index_t envelope_blocks(index_t T, index_t block) { return ((T + block - 1) / block + 15) / 16 * 16; }

// lo[d * blocks + b], hi[d * blocks + b]: min and max of y[t, d] over the frames t of block b.
void envelope(const float* y, index_t T, index_t D, index_t block, float* lo, float* hi);

// Tail bounds of a (Ta, D) against b (Tb, D) with b's envelope in blocks of envelope_block(Tb) frames:
// tail[t * kMaxDtwGroups + g] = a lower bound of what the optimal path of group g pays in the rows
// of a after t (LB_Keogh of each row against b's blocks, LB_Kim in the last row), as float rounded
// down; total[g] the bound over all rows (LB_Kim in the first row too). Called with (x, y) it gives
// the row tails, with (y, x) and x's envelope the column tails. Groups past groups.count get 0.
void dtw_tail_bounds(const float* a, const float* b, index_t Ta, index_t Tb, index_t D, const float* b_lo,
                     const float* b_hi, const DtwGroups& groups, float* tail, double* total);

}  // namespace reactfast
