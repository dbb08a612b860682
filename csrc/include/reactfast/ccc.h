// Concordance correlation coefficient as the REACT challenge computes it (FRCorr): for one dim,
// r = Pearson correlation in float64 (NaN -> 0, clipped to [-1, 1]); means, variances and
// standard deviations as float32 values (ddof = 0);
// ccc = 2 r sx sy / (sx^2 + sy^2 + (mx - my)^2 + 1e-8). The CCC of two clips is the mean over dims.
#pragma once
#include "reactfast/common.h"

namespace reactfast {

// out[p * D + d] = CCC of dim d of x[p] and y[p]; x, y: (P, T, D) float32.
void ccc_pairs_cpu(const float* x, const float* y, double* out, index_t P, index_t T, index_t D);

// For each query x[m] the maximum over its candidates y[cand_index[cand_offset[m] ..
// cand_offset[m+1])] of the dim-mean CCC, and the candidate attaining it (first on ties).
void ccc_max_cpu(const float* x, const float* y, const index_t* cand_offset, const index_t* cand_index, index_t M,
                 index_t G, index_t T, index_t D, double* out_max, index_t* out_arg);

}  // namespace reactfast
