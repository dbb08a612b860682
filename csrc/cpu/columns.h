// Internal to the CPU metric kernels (ccc.cpp, tlcc.cpp): a clip of T frames of D dims with its
// dims as rows, so that sums over frames run over contiguous memory.
#pragma once
#include "reactfast/common.h"

namespace reactfast {

// out[d * T + t] = x[t * D + d], less shift[d] in float64 when ``shift`` is given. A block of
// frames at a time, which stays in L1 while every dim reads it.
template <typename Out>
__attribute__((always_inline)) inline void to_columns(const float* x, index_t T, index_t D, const double* shift,
                                                      Out* out) {
  constexpr index_t kBlock = 16;
  for (index_t t0 = 0; t0 < T; t0 += kBlock) {
    const index_t t1 = t0 + kBlock < T ? t0 + kBlock : T;
    for (index_t d = 0; d < D; ++d)
      for (index_t t = t0; t < t1; ++t)
        out[d * T + t] = shift != nullptr ? static_cast<Out>(x[t * D + d] - shift[d]) : static_cast<Out>(x[t * D + d]);
  }
}

}  // namespace reactfast
