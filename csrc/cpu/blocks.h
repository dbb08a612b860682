// Internal to the CPU kernels: an elementwise pass split into fixed blocks of elements, one OpenMP
// work item each (dropout.cpp, gelu_dropout.cpp). Blocks are the same on any number of threads, so
// a kernel whose elements depend only on their index gives the same result on any of them.
#pragma once
#include "reactfast/common.h"

namespace reactfast {

// body(begin, end) for [0, n) in blocks of `block` elements, on OpenMP threads when n > min_parallel.
template <typename Body>
inline void for_blocks(index_t n, index_t block, index_t min_parallel, const Body& body) {
  const index_t blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) if (n > min_parallel)
  for (index_t b = 0; b < blocks; ++b) {
    const index_t begin = b * block;
    body(begin, begin + block < n ? begin + block : n);
  }
}

}  // namespace reactfast
