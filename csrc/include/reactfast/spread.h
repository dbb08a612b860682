// The sums of squared deviations behind REACT's spread metrics, for pred (N, S, T, D):
//   sums[0] = sum_k sum_{t,d} sum_i (x[k,i,t,d] - mean_i x[k,:,t,d])^2   (FRDiv: across samples)
//   sums[1] = sum_i sum_{t,d} sum_k (x[k,i,t,d] - mean_k x[:,i,t,d])^2   (FRDvs: across speakers)
//   sums[2] = sum_{k,i,d} sum_t (x[k,i,t,d] - mean_t x[k,i,:,d])^2       (FRVar: over time)
// Two-pass (centred) sums in float64; each speaker's part is summed by one thread and the parts in
// speaker order, so the result does not depend on the thread count.
#pragma once
#include "reactfast/common.h"

namespace reactfast {

// x: (N, S, T, D) float32; sums: 3 float64.
void spread_cpu(const float* x, double* sums, index_t N, index_t S, index_t T, index_t D);

}  // namespace reactfast
