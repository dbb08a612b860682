// First temporal difference of a (B, T, D) sequence: out[b, t, d] = x[b, t + 1, d] - x[b, t, d].
#pragma once
#include "reactfast/common.h"

namespace reactfast {

RF_HOST_DEVICE inline float frame_diff_at(const float* x, index_t b, index_t t, index_t d,
                                          index_t T, index_t D) {
  const float* row = x + (b * T + t) * D + d;
  return row[D] - row[0];
}

// CPU launcher (csrc/cpu/frame_diff.cpp).
void frame_diff_cpu(const float* x, float* out, index_t B, index_t T, index_t D);

// CUDA launcher (csrc/cuda/frame_diff.cu); returns nullptr on success, else an error string.
const char* frame_diff_cuda(const float* x, float* out, index_t B, index_t T, index_t D,
                            void* stream);

}  // namespace reactfast
