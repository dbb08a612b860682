// Internal to the CPU kernels: 8-float GCC vectors and their helpers, shared by the kernels that
// build one body per instruction set (isa.h): biased_attention.cpp, gelu_dropout.cpp,
// weight_shift_lanes.cpp.
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

// exp(x) for x <= 0 (-inf gives 0): 2^n e^r with n = round(x log2 e) and Cephes' expf polynomial
// for e^r (about 1 ulp); below -87 the result is 0 (e^-87 is 1.6e-38).
RF_INLINE v8f vexp(v8f x) {
  const v8i tiny = x < RF_SPLAT8(-87.0f);
  x = tiny ? RF_SPLAT8(-87.0f) : x;
  const v8f magic = RF_SPLAT8(12582912.0f);  // 1.5 2^23: adding and subtracting it rounds to an integer
  const v8f n = (x * RF_SPLAT8(1.44269504088896341f) + magic) - magic;
  const v8f r = x - n * RF_SPLAT8(0.693359375f) + n * RF_SPLAT8(2.12194440e-4f);
  v8f y = RF_SPLAT8(1.9875691500e-4f);
  y = y * r + RF_SPLAT8(1.3981999507e-3f);
  y = y * r + RF_SPLAT8(8.3334519073e-3f);
  y = y * r + RF_SPLAT8(4.1665795894e-2f);
  y = y * r + RF_SPLAT8(1.6666665459e-1f);
  y = y * r + RF_SPLAT8(5.0000001201e-1f);
  y = y * (r * r) + r + RF_SPLAT8(1.0f);
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  return tiny ? RF_SPLAT8(0.0f) : y * (v8f)bits;
}

}  // namespace reactfast
