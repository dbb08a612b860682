// Dropout with a counter-based mask: element i of a call keyed by (key0, key1) is kept when
// dropout_bits(i, key0, key1) >= threshold (threshold = round(p 2^32)), so the mask is a pure
// function of the index and the key: any tier (the PyTorch reference, this CPU kernel) draws the
// same mask, in any order and on any number of threads, and nothing but the key is stored to
// redraw it. The mixer is a keyed double round of the "lowbias32" integer hash (C. Wellons,
// hash-prospector; bias about 0.17 in its avalanche measure).
#pragma once
#include <cstdint>

#include "reactfast/common.h"

namespace reactfast {

// Word: std::uint32_t, or a GCC vector of them (the CPU kernels' 8 lanes): the same arithmetic,
// lane by lane.
template <typename Word>
RF_HOST_DEVICE inline Word lowbias32(Word x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

template <typename Word>
RF_HOST_DEVICE inline Word dropout_bits(Word i, Word key0, Word key1) {
  return lowbias32(lowbias32(i ^ key0) ^ key1);
}

// out[i] = keep ? x[i] * scale : 0 and keep[i] = 0/1 for i < n (n < 2^32).
void dropout_fwd_cpu(const float* x, float* out, std::uint8_t* keep, index_t n, std::uint32_t threshold,
                     std::uint32_t key0, std::uint32_t key1, float scale);

// dx[i] = keep[i] ? dy[i] * scale : 0.
void dropout_bwd_cpu(const float* dy, const std::uint8_t* keep, float* dx, index_t n, float scale);

}  // namespace reactfast
