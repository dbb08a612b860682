// Time-lagged cross-correlation (FRSyn). For lag l in [-L, L]: l > 0 pairs x[l:] with y[:T-l],
// l < 0 pairs x[:T+l] with y[-l:]. Per dim the Pearson r in float64 (numpy's two-pass value to
// about 1e-14: the segments' sums from prefix sums and one lagged dot product per lag, NaN when
// either segment is constant or shorter than 2 frames), then rs(l) = float32 mean over dims
// accumulated in dim order (NaN propagates).
#pragma once
#include "reactfast/common.h"

namespace reactfast {

// rs: (M, 2L + 1) float32, column L + l holds lag l. x, y: (M, T, D) float32.
void tlcc_cpu(const float* x, const float* y, float* rs, index_t M, index_t T, index_t D, index_t L);

}  // namespace reactfast
