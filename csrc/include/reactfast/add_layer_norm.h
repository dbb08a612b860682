// Post-norm residual step of a transformer block, fused: out = LayerNorm(x + dropout(h)) over the
// last dimension (D), with the dropout mask of reactfast/dropout.h (element i of h, in row-major
// order, kept when dropout_bits(i, key0, key1) >= threshold), so the fused call drops exactly what
// a separate dropout call with the same key would.
#pragma once
#include <cstdint>

#include "reactfast/common.h"

namespace reactfast {

struct AddNormArgs {
  index_t rows = 0, D = 0;
  bool drop = false;            // false: h is added as is (p = 0 or evaluation)
  std::uint32_t threshold = 0, key0 = 0, key1 = 0;
  float scale = 1.0f;           // 1 / (1 - p)
  float eps = 1e-5f;
};

// Bytes of the kept-element bitmask per row: bit j % 8 of byte j / 8 of row r is element (r, j).
inline index_t keep_row_bytes(index_t D) { return (D + 7) / 8; }

// x, h (rows, D) contiguous; w, b (D) or null (no affine); out (rows, D). When sum is not null the
// forward also writes what the backward reads: sum = x + dropout(h) (rows, D), mean and rstd (rows),
// and, when a.drop and keep is not null, the kept elements' bitmask (rows, keep_row_bytes(D)).
void add_layer_norm_fwd_cpu(const AddNormArgs& a, const float* x, const float* h, const float* w, const float* b,
                            float* out, float* sum, float* mean, float* rstd, std::uint8_t* keep);

// From dy (rows, D) and the saved sum, mean, rstd (and keep when a.drop): dx = d out / d x (rows, D);
// dh (rows, D) = dx masked and scaled when a.drop (null: not wanted); dw and db (D) the affine
// gradients (null: not wanted). Reductions over rows run in a fixed order: results do not depend
// on the number of threads.
void add_layer_norm_bwd_cpu(const AddNormArgs& a, const float* dy, const float* sum, const float* mean,
                            const float* rstd, const float* w, const std::uint8_t* keep, float* dx, float* dh,
                            float* dw, float* db);

}  // namespace reactfast
