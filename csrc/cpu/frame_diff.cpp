#include "reactfast/frame_diff.h"

namespace reactfast {

void frame_diff_cpu(const float* x, float* out, index_t B, index_t T, index_t D) {
  const index_t rows = B * (T - 1);
#pragma omp parallel for schedule(static) if (rows * D > 65536)
  for (index_t r = 0; r < rows; ++r) {
    const index_t b = r / (T - 1);
    const index_t t = r % (T - 1);
    const float* src = x + (b * T + t) * D;
    float* dst = out + r * D;
#pragma omp simd
    for (index_t d = 0; d < D; ++d) dst[d] = src[D + d] - src[d];
  }
}

}  // namespace reactfast
