// Speaker-listener biased attention on a CPU (SPEC 3.1), float32, forward and backward.
//
// For batch row b, head h, query i (frame q0[b] + i mod P, pos = ratio (q0[b] + i mod P)) and key j:
//   s_ij = scale q_i . k_j - slopes[h] floor((pos - j) / (ratio period))
// where start[b] <= j < min(length[b], pos + extra + 1), and -inf elsewhere; out_i = softmax_j(s_i) V,
// lse_i = log sum_j exp(s_ij) (+inf for a row with no visible key, whose output is zeros).
//
// A query's visible keys are one contiguous range, so the kernels read nothing else: no bias or mask
// tensor is built, and the keys a causal bound or an empty buffer slot hides cost no work. Exact
// float32 arithmetic (no reduced-precision products); the step count floor((pos - j) / (ratio
// period)) comes from an integer table, exact for any offsets.
//
// Operands are (B, H, T, d) with any strides on the first three dims and the last dim contiguous:
// element (b, h, t, c) at b sb + h sh + t st + c. Work is split over (b, h) pairs, each written by one
// thread, so results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "reactfast/common.h"

namespace reactfast {

struct AttnStrides {
  index_t b, h, t;
};

struct BiasedAttentionArgs {
  index_t B, H, Tq, Tk, d;
  int period, ratio, extra, qperiod;
  float scale;
  const float* slopes;         // (H,)
  const std::int32_t* q0;      // (B,) frame of query row 0
  const std::int32_t* start;   // (B,) first valid key
  const std::int32_t* length;  // (B,) end of the valid keys
};

// out (B, H, Tq, d), lse (B, H, Tq) contiguous.
void biased_attention_fwd_cpu(const BiasedAttentionArgs& a, const float* q, AttnStrides qs, const float* k,
                              AttnStrides ks, const float* v, AttnStrides vs, float* out, AttnStrides os,
                              float* lse);

// Gradients of the forward above given dout (the output's gradient), out and lse from it.
void biased_attention_bwd_cpu(const BiasedAttentionArgs& a, const float* dout, AttnStrides dos, const float* q,
                              AttnStrides qs, const float* k, AttnStrides ks, const float* v, AttnStrides vs,
                              const float* out, AttnStrides os, const float* lse, float* dq, AttnStrides dqs,
                              float* dk, AttnStrides dks, float* dv, AttnStrides dvs);

}  // namespace reactfast
