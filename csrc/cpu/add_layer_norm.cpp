// out = LayerNorm(x + dropout(h)) row by row, forward and backward (reactfast/add_layer_norm.h).
//
// Rows are short (64 wide in ReactFace), so a row's passes are written with 8-float vectors and
// a scalar tail: loops GCC vectorises itself spent more on their set-up and lane reductions
// (spilled to the stack and added one by one) than on the row (about 150 cycles a row of 64).
#include "reactfast/add_layer_norm.h"

#include <cmath>
#include <vector>

#include "isa.h"
#include "mask8.h"
#include "vec8.h"

namespace reactfast {
namespace {

constexpr index_t kChunk = 32;              // rows per work item (and per partial sum of dw, db)
constexpr index_t kParallel = 1 << 15;      // elements below which one thread does it all

RF_INLINE float hsum8(v8f v) {
  const float a = (v[0] + v[4]) + (v[2] + v[6]);
  const float b = (v[1] + v[5]) + (v[3] + v[7]);
  return a + b;
}

template <int Isa>
RF_INLINE void fwd_rows_body(const AddNormArgs& a, const float* x, const float* h, const float* w, const float* b,
                             float* out, float* sum, float* mean, float* rstd, std::uint8_t* keep, index_t r0,
                             index_t r1) {
  const index_t D = a.D, full = D & ~index_t{7};
  const v8f scale = RF_SPLAT8(a.scale);
  const v8u k0 = RF_SPLAT8U(a.key0), k1 = RF_SPLAT8U(a.key1), thr = RF_SPLAT8U(a.threshold);
  const float inv_d = 1.0f / static_cast<float>(D);
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * D;
    const float* hr = h + r * D;
    float* o = out + r * D;
    // The sum goes where the backward reads it, or into the output row, overwritten below.
    float* s = sum != nullptr ? sum + r * D : o;
    std::uint8_t* kr = keep != nullptr ? keep + r * keep_row_bytes(D) : nullptr;
    const auto base = static_cast<std::uint32_t>(r * D);
    v8f acc = RF_SPLAT8(0.0f);
    for (index_t j = 0; j < full; j += 8) {
      v8f hv = load8(hr + j);
      if (a.drop) {
        const v8i k = keep_lanes(base + static_cast<std::uint32_t>(j), k0, k1, thr);
        hv = select8(hv * scale, k);
        if (kr != nullptr) kr[j / 8] = mask_byte(k);
      }
      const v8f sv = load8(xr + j) + hv;
      store8(s + j, sv);
      acc += sv;
    }
    float tail = 0.0f;
    for (index_t j = full; j < D; ++j) {
      float hv = hr[j];
      if (a.drop) {
        const std::uint32_t k = dropout_bits(base + static_cast<std::uint32_t>(j), a.key0, a.key1) >= a.threshold;
        hv = keep_bits(hv * a.scale, 0u - k);
        if (kr != nullptr) kr[j / 8] = static_cast<std::uint8_t>((j % 8 == 0 ? 0u : kr[j / 8]) | (k << (j % 8)));
      }
      s[j] = xr[j] + hv;
      tail += s[j];
    }
    const float mu = (hsum8(acc) + tail) * inv_d;
    const v8f muv = RF_SPLAT8(mu);
    v8f vacc = RF_SPLAT8(0.0f);
    for (index_t j = 0; j < full; j += 8) {
      const v8f d = load8(s + j) - muv;
      vacc += d * d;
    }
    float vtail = 0.0f;
    for (index_t j = full; j < D; ++j) vtail += (s[j] - mu) * (s[j] - mu);
    const float rs = 1.0f / std::sqrt((hsum8(vacc) + vtail) * inv_d + a.eps);
    const v8f rsv = RF_SPLAT8(rs);
    for (index_t j = 0; j < full; j += 8) {
      v8f y = (load8(s + j) - muv) * rsv;
      if (w != nullptr) y *= load8(w + j);
      if (b != nullptr) y += load8(b + j);
      store8(o + j, y);
    }
    for (index_t j = full; j < D; ++j) {
      float y = (s[j] - mu) * rs;
      if (w != nullptr) y *= w[j];
      if (b != nullptr) y += b[j];
      o[j] = y;
    }
    if (mean != nullptr) mean[r] = mu;
    if (rstd != nullptr) rstd[r] = rs;
  }
}

RF_LANE_FUNCTION(void, fwd_rows,
                 (const AddNormArgs& a, const float* x, const float* h, const float* w, const float* b, float* out,
                  float* sum, float* mean, float* rstd, std::uint8_t* keep, index_t r0, index_t r1),
                 (a, x, h, w, b, out, sum, mean, rstd, keep, r0, r1))

// Rows [r0, r1): dx, dh, and this chunk's sums of dy * xhat and dy added into pw, pb (when not null).
template <int Isa>
RF_INLINE void bwd_rows_body(const AddNormArgs& a, const float* dy, const float* sum, const float* mean,
                             const float* rstd, const float* w, const std::uint8_t* keep, float* dx, float* dh,
                             float* pw, float* pb, index_t r0, index_t r1) {
  const index_t D = a.D, full = D & ~index_t{7};
  const float inv_d = 1.0f / static_cast<float>(D);
  const v8f scale = RF_SPLAT8(a.scale);
  for (index_t r = r0; r < r1; ++r) {
    const float* g = dy + r * D;
    const float* s = sum + r * D;
    const float mu = mean[r], rs = rstd[r];
    const v8f muv = RF_SPLAT8(mu), rsv = RF_SPLAT8(rs);
    float* o = dx + r * D;
    v8f sg = RF_SPLAT8(0.0f), sgx = RF_SPLAT8(0.0f);
    for (index_t j = 0; j < full; j += 8) {
      const v8f gw = w != nullptr ? load8(g + j) * load8(w + j) : load8(g + j);
      sg += gw;
      sgx += gw * ((load8(s + j) - muv) * rsv);
    }
    float sg_t = 0.0f, sgx_t = 0.0f;
    for (index_t j = full; j < D; ++j) {
      const float gw = w != nullptr ? g[j] * w[j] : g[j];
      sg_t += gw;
      sgx_t += gw * ((s[j] - mu) * rs);
    }
    const float c1 = (hsum8(sg) + sg_t) * inv_d, c2 = (hsum8(sgx) + sgx_t) * inv_d;
    const v8f c1v = RF_SPLAT8(c1), c2v = RF_SPLAT8(c2);
    float* oh = dh != nullptr ? dh + r * D : nullptr;
    const std::uint8_t* kr = keep != nullptr ? keep + r * keep_row_bytes(D) : nullptr;
    for (index_t j = 0; j < full; j += 8) {
      const v8f gv = load8(g + j);
      const v8f xhat = (load8(s + j) - muv) * rsv;
      const v8f gw = w != nullptr ? gv * load8(w + j) : gv;
      const v8f d = rsv * (gw - c1v - xhat * c2v);
      store8(o + j, d);
      if (oh != nullptr) {
        if (a.drop) {
          store8(oh + j, select8(d * scale, byte_lanes(kr[j / 8])));
        } else {
          store8(oh + j, d);
        }
      }
      if (pw != nullptr) store8(pw + j, load8(pw + j) + gv * xhat);
      if (pb != nullptr) store8(pb + j, load8(pb + j) + gv);
    }
    for (index_t j = full; j < D; ++j) {
      const float xhat = (s[j] - mu) * rs;
      const float gw = w != nullptr ? g[j] * w[j] : g[j];
      const float d = rs * (gw - c1 - xhat * c2);
      o[j] = d;
      if (oh != nullptr) {
        oh[j] = a.drop ? keep_bits(d * a.scale, 0u - ((static_cast<std::uint32_t>(kr[j / 8]) >> (j % 8)) & 1u)) : d;
      }
      if (pw != nullptr) pw[j] += g[j] * xhat;
      if (pb != nullptr) pb[j] += g[j];
    }
  }
}

RF_LANE_FUNCTION(void, bwd_rows,
                 (const AddNormArgs& a, const float* dy, const float* sum, const float* mean, const float* rstd,
                  const float* w, const std::uint8_t* keep, float* dx, float* dh, float* pw, float* pb, index_t r0,
                  index_t r1),
                 (a, dy, sum, mean, rstd, w, keep, dx, dh, pw, pb, r0, r1))

}  // namespace

void add_layer_norm_fwd_cpu(const AddNormArgs& a, const float* x, const float* h, const float* w, const float* b,
                            float* out, float* sum, float* mean, float* rstd, std::uint8_t* keep) {
  const index_t chunks = (a.rows + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (a.rows * a.D > kParallel)
  for (index_t c = 0; c < chunks; ++c) {
    const index_t r0 = c * kChunk, r1 = r0 + kChunk < a.rows ? r0 + kChunk : a.rows;
    fwd_rows(a, x, h, w, b, out, sum, mean, rstd, keep, r0, r1);
  }
}

void add_layer_norm_bwd_cpu(const AddNormArgs& a, const float* dy, const float* sum, const float* mean,
                            const float* rstd, const float* w, const std::uint8_t* keep, float* dx, float* dh,
                            float* dw, float* db) {
  const index_t D = a.D;
  const index_t chunks = (a.rows + kChunk - 1) / kChunk;
  // One partial sum per chunk of rows, added up in chunk order afterwards: the same result on any
  // number of threads.
  std::vector<float> partial_w(dw != nullptr ? static_cast<std::size_t>(chunks * D) : 0, 0.0f);
  std::vector<float> partial_b(db != nullptr ? static_cast<std::size_t>(chunks * D) : 0, 0.0f);
#pragma omp parallel for schedule(static) if (a.rows * D > kParallel)
  for (index_t c = 0; c < chunks; ++c) {
    const index_t r0 = c * kChunk, r1 = r0 + kChunk < a.rows ? r0 + kChunk : a.rows;
    bwd_rows(a, dy, sum, mean, rstd, w, keep, dx, dh, dw != nullptr ? partial_w.data() + c * D : nullptr,
             db != nullptr ? partial_b.data() + c * D : nullptr, r0, r1);
  }
  for (index_t j = 0; j < D; ++j) {
    double tw = 0.0, tb = 0.0;
    for (index_t c = 0; c < chunks; ++c) {
      if (dw != nullptr) tw += partial_w[static_cast<std::size_t>(c * D + j)];
      if (db != nullptr) tb += partial_b[static_cast<std::size_t>(c * D + j)];
    }
    if (dw != nullptr) dw[j] = static_cast<float>(tw);
    if (db != nullptr) db[j] = static_cast<float>(tb);
  }
}

}  // namespace reactfast
