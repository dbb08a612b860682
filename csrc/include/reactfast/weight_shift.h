// Per-listener weight-shift linear (PerFRDiff weight editing, SPEC 3.2) on the CPU:
// y[b] = x[b] (W + dW[b])^T + bias and dx[b] = dy[b] (W + dW[b]), with the tiles of W and dW[b]
// summed in registers, so W + dW[b] is never written to memory. float32, row-major, contiguous.
#pragma once
#include "reactfast/common.h"

namespace reactfast {

// Whether this build and this processor can run the kernels below (they need AVX-512F).
bool weight_shift_cpu_supported();

// x (B, L, K), w (N, K), dw (B, N, K), bias (N) or null -> y (B, L, N).
// Returns null on success, else a message (unsupported processor).
const char* weight_shift_fwd_cpu(const float* x, const float* w, const float* dw, const float* bias, float* y,
                                 index_t B, index_t L, index_t K, index_t N);

// dy (B, L, N), w (N, K), dw (B, N, K) -> dx (B, L, K).
const char* weight_shift_bwd_dx_cpu(const float* dy, const float* w, const float* dw, float* dx, index_t B,
                                    index_t L, index_t K, index_t N);

// dy (B, L, N), x (B, L, K) -> ddw (B, N, K) = dy[b]^T x[b].
const char* weight_shift_bwd_dshift_cpu(const float* dy, const float* x, float* ddw, index_t B, index_t L, index_t K,
                                        index_t N);

}  // namespace reactfast
