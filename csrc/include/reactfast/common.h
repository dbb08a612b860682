// Shared helpers for CPU and CUDA code. No torch headers anywhere in csrc/.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define RF_HOST_DEVICE __host__ __device__
#else
#define RF_HOST_DEVICE
#endif

// CPU hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time, so one
// wheel runs everywhere and uses the widest vectors the machine has.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RF_CLONES
#endif

namespace reactfast {
using index_t = std::int64_t;
}  // namespace reactfast
