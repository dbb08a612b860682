// Per-listener weight-shift linear (PerFRDiff weight editing, SPEC 3.2) on the CPU:
// y[b] = x[b] (W + dW[b])^T + bias and dx[b] = dy[b] (W + dW[b]), with the tiles of W and dW[b]
// summed in registers (AVX-512) or in a per-thread panel of 16 rows (AVX2 and baseline builds), so
// W + dW[b] is never written out whole. float32, row-major, contiguous.
#pragma once
#include "reactfast/common.h"

namespace reactfast {

// The build the kernels below run: "avx512", "avx2" or "baseline" (follows the CPU lane build,
// so REACTFAST_CPU_ISA caps it).
const char* weight_shift_cpu_build();

// x (B, L, K), w (N, K), dw (B, N, K), bias (N) or null -> y (B, L, N).
// Returns null on success, else a message (out of memory).
const char* weight_shift_fwd_cpu(const float* x, const float* w, const float* dw, const float* bias, float* y,
                                 index_t B, index_t L, index_t K, index_t N);

// dy (B, L, N), w (N, K), dw (B, N, K) -> dx (B, L, K).
const char* weight_shift_bwd_dx_cpu(const float* dy, const float* w, const float* dw, float* dx, index_t B,
                                    index_t L, index_t K, index_t N);

// dy (B, L, N), x (B, L, K) -> ddw (B, N, K) = dy[b]^T x[b].
const char* weight_shift_bwd_dshift_cpu(const float* dy, const float* x, float* ddw, index_t B, index_t L, index_t K,
                                        index_t N);

}  // namespace reactfast
