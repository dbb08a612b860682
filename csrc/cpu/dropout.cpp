#include "reactfast/dropout.h"

#include "blocks.h"
#include "mask8.h"

namespace reactfast {
namespace {

constexpr index_t kBlock = 4096;     // elements per OpenMP work item
constexpr index_t kParallel = 1 << 16;

RF_CLONES void fwd_block(const float* x, float* out, std::uint8_t* keep, index_t begin, index_t end,
                         std::uint32_t threshold, std::uint32_t key0, std::uint32_t key1, float scale) {
#pragma omp simd
  for (index_t i = begin; i < end; ++i) {
    const std::uint32_t k = dropout_bits(static_cast<std::uint32_t>(i), key0, key1) >= threshold;
    out[i] = keep_bits(x[i] * scale, 0u - k);
    keep[i] = static_cast<std::uint8_t>(k);
  }
}

RF_CLONES void bwd_block(const float* dy, const std::uint8_t* keep, float* dx, index_t begin, index_t end,
                         float scale) {
#pragma omp simd
  for (index_t i = begin; i < end; ++i) dx[i] = keep_bits(dy[i] * scale, 0u - static_cast<std::uint32_t>(keep[i]));
}

}  // namespace

void dropout_fwd_cpu(const float* x, float* out, std::uint8_t* keep, index_t n, std::uint32_t threshold,
                     std::uint32_t key0, std::uint32_t key1, float scale) {
  for_blocks(n, kBlock, kParallel, [&](index_t begin, index_t end) {
    fwd_block(x, out, keep, begin, end, threshold, key0, key1, scale);
  });
}

void dropout_bwd_cpu(const float* dy, const std::uint8_t* keep, float* dx, index_t n, float scale) {
  for_blocks(n, kBlock, kParallel, [&](index_t begin, index_t end) { bwd_block(dy, keep, dx, begin, end, scale); });
}

}  // namespace reactfast
