// GELU then dropout on a CPU (see reactfast/gelu_dropout.h): eight elements a vector, the keyed
// mask of mask8.h, one body per instruction set (isa.h); the last n % 8 elements go through the
// same vector code from a padded copy, so every element gets the same arithmetic.
#include "reactfast/gelu_dropout.h"

#include <cstring>

#include "blocks.h"
#include "isa.h"
#include "mask8.h"
#include "vec8.h"

namespace reactfast {
namespace {

constexpr index_t kBlock = 4096;     // elements per OpenMP work item (a multiple of 8)
constexpr index_t kParallel = 1 << 15;

// gelu(x) = x Phi(x) and its slope Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi), with
// Phi from erfc(|x| / sqrt 2) = t P(t) exp(-x^2 / 2) (the header). NaN stays NaN; gelu(+inf) is
// +inf, gelu(-inf) and the slopes at +-inf NaN, as torch's GELU gives them.
RF_INLINE void gelu8(v8f x, v8f& g, v8f& slope) {
  const v8i negative = x < RF_SPLAT8(0.0f);
  const v8f z = (negative ? -x : x) * RF_SPLAT8(0.70710678118654752f);
  const v8f t = RF_SPLAT8(1.0f) / (RF_SPLAT8(1.0f) + RF_SPLAT8(0.3275911f) * z);
  v8f p = RF_SPLAT8(5.667582527e-02f);
  p = p * t + RF_SPLAT8(-3.171246350e-01f);
  p = p * t + RF_SPLAT8(6.273435354e-01f);
  p = p * t + RF_SPLAT8(-5.600386262e-01f);
  p = p * t + RF_SPLAT8(5.013614893e-01f);
  p = p * t + RF_SPLAT8(-5.037735775e-02f);
  p = p * t + RF_SPLAT8(2.059503198e-01f);
  p = p * t + RF_SPLAT8(1.656360179e-01f);
  p = p * t + RF_SPLAT8(1.857943833e-01f);
  p = p * t + RF_SPLAT8(1.847790331e-01f);
  const v8f e = vexp(-(z * z));                       // exp(-x^2 / 2)
  const v8f half_erfc = RF_SPLAT8(0.5f) * (t * p * e);
  const v8f cdf = negative ? half_erfc : RF_SPLAT8(1.0f) - half_erfc;
  g = x * cdf;
  slope = cdf + x * (e * RF_SPLAT8(0.39894228040143268f));
}

template <int Isa>
RF_INLINE void fwd_range_body(const float* x, float* out, float* dgelu, index_t begin, index_t end, bool drop,
                              std::uint32_t threshold, std::uint32_t key0, std::uint32_t key1, float scale) {
  const v8u k0 = RF_SPLAT8U(key0), k1 = RF_SPLAT8U(key1), thr = RF_SPLAT8U(threshold);
  const v8f sc = RF_SPLAT8(scale);
  const v8i all = RF_SPLAT8(0.0f) == RF_SPLAT8(0.0f);
  for (index_t i = begin; i < end; i += 8) {
    const index_t m = end - i < 8 ? end - i : 8;
    float xin[8] = {0, 0, 0, 0, 0, 0, 0, 0}, o[8], d[8];
    const bool full = m == 8;
    if (!full) std::memcpy(xin, x + i, m * sizeof(float));
    v8f g, slope;
    gelu8(full ? load8(x + i) : load8(xin), g, slope);
    const v8i keep = drop ? keep_lanes(static_cast<std::uint32_t>(i), k0, k1, thr) : all;
    const v8f gv = select8(g * sc, keep);
    if (full) {
      store8(out + i, gv);
      if (dgelu != nullptr) store8(dgelu + i, select8(slope * sc, keep));
    } else {
      store8(o, gv);
      std::memcpy(out + i, o, m * sizeof(float));
      if (dgelu != nullptr) {
        store8(d, select8(slope * sc, keep));
        std::memcpy(dgelu + i, d, m * sizeof(float));
      }
    }
  }
}

RF_LANE_FUNCTION(void, fwd_range,
                 (const float* x, float* out, float* dgelu, index_t begin, index_t end, bool drop,
                  std::uint32_t threshold, std::uint32_t key0, std::uint32_t key1, float scale),
                 (x, out, dgelu, begin, end, drop, threshold, key0, key1, scale))

}  // namespace

void gelu_dropout_fwd_cpu(const float* x, float* out, float* dgelu, index_t n, bool drop, std::uint32_t threshold,
                          std::uint32_t key0, std::uint32_t key1, float scale) {
  for_blocks(n, kBlock, kParallel, [&](index_t begin, index_t end) {
    fwd_range(x, out, dgelu, begin, end, drop, threshold, key0, key1, scale);
  });
}

}  // namespace reactfast
