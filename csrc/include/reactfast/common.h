// Shared helpers for CPU and CUDA code. No torch headers anywhere in csrc/.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define RF_HOST_DEVICE __host__ __device__
#else
#define RF_HOST_DEVICE
#endif

namespace reactfast {
using index_t = std::int64_t;
}  // namespace reactfast
