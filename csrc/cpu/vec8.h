// Internal to the CPU kernels: 8-float GCC vectors and their helpers, shared by the kernels that
// build one body per instruction set (isa.h): biased_attention.cpp, weight_shift_lanes.cpp.
#pragma once
#include <cstdint>
#include <cstring>

namespace reactfast {

typedef float v8f __attribute__((vector_size(32)));
typedef std::int32_t v8i __attribute__((vector_size(32)));

#define RF_INLINE __attribute__((always_inline)) inline

// Every lane x. A macro, not a function: GCC 12 builds a vector from a scalar argument of an
// always_inline helper without the caller's target lane by lane (a load, 7 inserts and a 128-bit
// insert) rather than with one broadcast; written in the caller, it is one vbroadcastss.
#define RF_SPLAT8(x) (__extension__({              \
  const float rf_splat_x_ = (x);                   \
  ::reactfast::v8f{rf_splat_x_, rf_splat_x_,       \
                   rf_splat_x_, rf_splat_x_,       \
                   rf_splat_x_, rf_splat_x_,       \
                   rf_splat_x_, rf_splat_x_};      \
}))

RF_INLINE v8f load8(const float* p) {
  v8f r;
  std::memcpy(&r, p, sizeof r);
  return r;
}

RF_INLINE void store8(float* p, v8f x) { std::memcpy(p, &x, sizeof x); }

}  // namespace reactfast
