// Internal to the CPU kernels: the weight-shift kernels without AVX-512 (weight_shift_lanes.cpp).
#pragma once
#include "reactfast/common.h"

namespace reactfast {
namespace ws_lanes {

// One call's operands, float32, row-major, contiguous: x (B, L, K), w (N, K), dw (B, N, K),
// bias (N) or null, y (B, L, N); dy (B, L, N), dx (B, L, K), ddw (B, N, K). Unused ones null.
struct Problem {
  index_t B = 0, L = 0, K = 0, N = 0;
  const float *x = nullptr, *w = nullptr, *dw = nullptr, *bias = nullptr, *dy = nullptr;
  float *y = nullptr, *dx = nullptr, *ddw = nullptr;
};

void forward(const Problem& p);          // y
void backward_dx(const Problem& p);      // dx
void backward_dshift(const Problem& p);  // ddw

}  // namespace ws_lanes
}  // namespace reactfast
