// Internal to the CPU dropout kernels (dropout.cpp, add_layer_norm.cpp): the keyed-hash mask of
// reactfast/dropout.h on 8 lanes, branch-free selects, and the bitmask add_layer_norm's backward
// reads (bit l of a byte per 8 elements).
#pragma once
#include <cstdint>
#include <cstring>

#include "reactfast/dropout.h"
#include "vec8.h"

namespace reactfast {

typedef std::uint32_t v8u __attribute__((vector_size(32)));

#define RF_SPLAT8U(x) (__extension__({                                                      \
  const std::uint32_t rf_splat_u_ = (x);                                                    \
  ::reactfast::v8u{rf_splat_u_, rf_splat_u_, rf_splat_u_, rf_splat_u_, rf_splat_u_,         \
                   rf_splat_u_, rf_splat_u_, rf_splat_u_};                                  \
}))

// All ones in the lanes of elements first, first + 1, ... first + 7 that the key keeps, else zero.
RF_INLINE v8i keep_lanes(std::uint32_t first, v8u k0, v8u k1, v8u threshold) {
  const v8u iota = {0, 1, 2, 3, 4, 5, 6, 7};
  const v8u idx = RF_SPLAT8U(first) + iota;
  return reinterpret_cast<v8i>(dropout_bits(idx, k0, k1) >= threshold);
}

// v where mask is all ones, +0 where it is zero (a select without a branch; dropped NaNs give 0).
RF_INLINE v8f select8(v8f v, v8i mask) { return reinterpret_cast<v8f>(reinterpret_cast<v8i>(v) & mask); }

// The scalar select: v where mask is all ones, +0 where it is zero. A ternary here made GCC branch,
// and an AVX2 loop over it, with no masked loads to if-convert with, stayed scalar (4.5 ns an
// element in dropout.cpp).
inline float keep_bits(float v, std::uint32_t mask) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  u &= mask;
  std::memcpy(&v, &u, sizeof u);
  return v;
}

// Lane l of the mask (all ones or zero) as bit l of a byte, by shuffles (no instruction-set
// intrinsics: the kernels' bodies are built for every instruction set).
RF_INLINE std::uint8_t mask_byte(v8i k) {
  const v8i bit = {1, 2, 4, 8, 16, 32, 64, 128};
  v8i u = k & bit;
  u |= __builtin_shufflevector(u, u, 4, 5, 6, 7, 0, 1, 2, 3);
  u |= __builtin_shufflevector(u, u, 2, 3, 0, 1, 6, 7, 4, 5);
  u |= __builtin_shufflevector(u, u, 1, 0, 3, 2, 5, 4, 7, 6);
  return static_cast<std::uint8_t>(u[0]);
}

// The byte's bits as lanes: all ones where set.
RF_INLINE v8i byte_lanes(std::uint8_t byte) {
  const v8i bit = {1, 2, 4, 8, 16, 32, 64, 128};
  const std::int32_t b = byte;
  return (v8i{b, b, b, b, b, b, b, b} & bit) != 0;
}

}  // namespace reactfast
