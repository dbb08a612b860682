// GELU followed by dropout, the middle of a transformer feed-forward: out = dropout(gelu(x)) with
// gelu(x) = x Phi(x) (Phi the standard normal CDF, the exact form, not the tanh one) and the mask of
// reactfast/dropout.h, so a fused call drops what a dropout call with the same key would.
//
// Phi comes from erfc: Phi(x) = erfc(|x| / sqrt 2) / 2 for x < 0 and 1 - that for x >= 0, with
// erfc(z) = t P(t) exp(-z^2), t = 1 / (1 + 0.3275911 z), P of degree 9 fitted to the scaled
// complementary error function erfcx(z) = exp(z^2) erfc(z) for minimal relative error on
// 0 <= z <= 10 (tools/fit_erfcx.py: 4.1e-9 in exact arithmetic). The tail keeps its relative
// accuracy, where 1 + erf(x / sqrt 2) would cancel: within 1.5e-6 of the exact value for x >= -4,
// 4e-6 for x >= -6, 1.5e-5 down to -12 (the rounding of x^2 / 2 inside exp).
#pragma once
#include <cstdint>

#include "reactfast/common.h"

namespace reactfast {

// For i < n (n < 2^32): out[i] = keep_i ? gelu(x[i]) * scale : 0 and, when dgelu is not null,
// dgelu[i] = keep_i ? gelu'(x[i]) * scale : 0 (the factor a backward multiplies the output
// gradient by). With drop false every element is kept (threshold and keys unused).
void gelu_dropout_fwd_cpu(const float* x, float* out, float* dgelu, index_t n, bool drop, std::uint32_t threshold,
                          std::uint32_t key0, std::uint32_t key1, float scale);

}  // namespace reactfast
