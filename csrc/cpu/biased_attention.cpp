// Biased attention on a CPU: see reactfast/biased_attention.h.
//
// Per (b, h): the keys that any query of the call can see, [lo, hi_max), are copied transposed
// (d rows of keys) in reverse order: column u holds key j = hi_max - 1 - u. A query's visible keys
// are then the columns [u_lo, n), and its bias, -slope floor((pos - j) / (ratio period)), reads a
// table of step counts at (pos - pos_min) + u, contiguous in u. Queries go four at a time: their
// dot products with eight keys share the loads of the transposed keys; the weighted sums of key or
// value rows (out, dq) and the key-side sums (dk, dv) run over d in vectors of 8.
#include "reactfast/biased_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "isa.h"
#include "vec8.h"

namespace reactfast {
namespace {

constexpr int kTile = 4;  // query rows per tile

RF_INLINE float hmax(v8f x) {
  float m = x[0];
  for (int i = 1; i < 8; ++i) m = std::max(m, x[i]);
  return m;
}

RF_INLINE float hsum(v8f x) {
  float s = 0.0f;
  for (int i = 0; i < 8; ++i) s += x[i];
  return s;
}

RF_INLINE float dot(const float* x, const float* y, index_t d) {
  float s = 0.0f;
  for (index_t c = 0; c < d; ++c) s += x[c] * y[c];
  return s;
}

// The keys every query of one (b, h) may see, and where things sit in the per-thread scratch.
struct Geometry {
  index_t lo = 0, hi_max = 0, n = 0, npad = 0, len = 0, pos_min = 0;
};

// false when no query of row b sees any key.
bool geometry(const BiasedAttentionArgs& a, index_t b, Geometry& g) {
  const index_t q0 = a.q0[b];
  g.lo = std::max<index_t>(a.start[b], 0);
  g.len = std::min<index_t>(a.length[b], a.Tk);
  g.pos_min = static_cast<index_t>(a.ratio) * q0;
  const index_t pos_max = static_cast<index_t>(a.ratio) * (q0 + std::min<index_t>(a.qperiod, a.Tq) - 1);
  g.hi_max = std::min<index_t>(g.len, pos_max + a.extra + 1);
  g.n = g.hi_max - g.lo;
  if (g.n <= 0) return false;
  g.npad = (g.n + 15) / 16 * 16;
  return true;
}

index_t query_pos(const BiasedAttentionArgs& a, index_t b, index_t i) {
  return static_cast<index_t>(a.ratio) * (a.q0[b] + i % a.qperiod);
}

// First visible column of a query at pos, or n (none).
index_t first_column(const BiasedAttentionArgs& a, const Geometry& g, index_t pos) {
  const index_t hi = std::min<index_t>(g.len, pos + a.extra + 1);
  return hi <= g.lo ? g.n : g.hi_max - hi;
}

// steps[x] = floor(t / kp) for t = pos_min - hi_max + 1 + x (the step count of query pos at
// column u is steps[pos - pos_min + u]).
void fill_steps(const BiasedAttentionArgs& a, const Geometry& g, float* steps, index_t count) {
  const index_t kp = static_cast<index_t>(a.ratio) * a.period;
  const index_t t0 = g.pos_min - g.hi_max + 1;
  index_t f = t0 >= 0 ? t0 / kp : -((-t0 + kp - 1) / kp);  // floor(t / kp) and t - kp floor(t / kp), stepped
  index_t rem = t0 - f * kp;
  for (index_t x = 0; x < count; ++x) {
    steps[x] = static_cast<float>(f);
    if (++rem == kp) {
      rem = 0;
      ++f;
    }
  }
}

index_t steps_count(const BiasedAttentionArgs& a, const Geometry& g) {
  return static_cast<index_t>(a.ratio) * (std::min<index_t>(a.qperiod, a.Tq) - 1) + g.npad;
}

// Rows [lo, hi_max) of a (T, d) operand (row stride st), transposed and reversed: T[c npad + u] is
// row hi_max - 1 - u, column c; columns n .. npad are zero.
void transpose_keys(const float* x, index_t st, const Geometry& g, index_t d, float* t) {
  for (index_t c = 0; c < d; ++c) std::fill(t + c * g.npad + g.n, t + (c + 1) * g.npad, 0.0f);
  for (index_t u = 0; u < g.n; ++u) {
    const float* row = x + (g.hi_max - 1 - u) * st;
    for (index_t c = 0; c < d; ++c) t[c * g.npad + u] = row[c];
  }
}

// Rows r < kTile of a kTile x 16 register tile (columns 0-7 in lo[r], 8-15 in hi[r]) to p + r stride.
RF_INLINE void store_tile(float* p, index_t stride, const v8f* lo, const v8f* hi) {
  for (int r = 0; r < kTile; ++r) {
    store8(p + r * stride, lo[r]);
    store8(p + r * stride + 8, hi[r]);
  }
}

// S[r npad + u] = rows[r] . column u of the transposed keys, for u in [u0, npad) (u0 a multiple of 16).
RF_INLINE void tile_dots(const float* const* rows, const float* t, index_t npad, index_t d, index_t u0, float* S) {
  for (index_t u = u0; u < npad; u += 16) {
    v8f lo[kTile] = {}, hi[kTile] = {};
    for (index_t c = 0; c < d; ++c) {
      const v8f k0 = load8(t + c * npad + u), k1 = load8(t + c * npad + u + 8);
#pragma GCC unroll 4
      for (int r = 0; r < kTile; ++r) {
        const v8f x = RF_SPLAT8(rows[r][c]);
        lo[r] += x * k0;
        hi[r] += x * k1;
      }
    }
    store_tile(S + u, npad, lo, hi);
  }
}

// The biased, masked scores of one query row in place: s = scale s + nslope steps, -inf outside
// the visible columns [u_lo, n); returns their maximum.
RF_INLINE float bias_row(float* s, const float* steps, float scale, float nslope, index_t u0, index_t u_lo,
                         index_t n, index_t npad) {
  const v8i iota{0, 1, 2, 3, 4, 5, 6, 7};
  const v8f ninf = RF_SPLAT8(-std::numeric_limits<float>::infinity());
  v8f m = ninf;
  for (index_t u = u0; u < npad; u += 8) {
    const v8i col = iota + static_cast<std::int32_t>(u);
    const v8i visible = (col >= static_cast<std::int32_t>(u_lo)) & (col < static_cast<std::int32_t>(n));
    v8f x = load8(s + u) * RF_SPLAT8(scale) + RF_SPLAT8(nslope) * load8(steps + u);
    x = visible ? x : ninf;
    store8(s + u, x);
    m = x > m ? x : m;
  }
  return hmax(m);
}

// out[r d + c] = sum_{u in [u0, u1)} w[r npad + u] row(u)[c], row(u) = x + (hi_max - 1 - u) st.
RF_INLINE void combine(const float* w, index_t npad, const float* x, index_t st, index_t hi_max, index_t u0,
                       index_t u1, index_t d, float* out) {
  index_t c = 0;
  for (; c + 16 <= d; c += 16) {
    v8f lo[kTile] = {}, hi[kTile] = {};
    for (index_t u = u0; u < u1; ++u) {
      const float* row = x + (hi_max - 1 - u) * st + c;
      const v8f r0 = load8(row), r1 = load8(row + 8);
#pragma GCC unroll 4
      for (int r = 0; r < kTile; ++r) {
        const v8f wr = RF_SPLAT8(w[r * npad + u]);
        lo[r] += wr * r0;
        hi[r] += wr * r1;
      }
    }
    store_tile(out + c, d, lo, hi);
  }
  for (; c + 8 <= d; c += 8) {
    v8f a0{}, a1{}, a2{}, a3{};
    for (index_t u = u0; u < u1; ++u) {
      const v8f r0 = load8(x + (hi_max - 1 - u) * st + c);
      a0 += RF_SPLAT8(w[u]) * r0;
      a1 += RF_SPLAT8(w[npad + u]) * r0;
      a2 += RF_SPLAT8(w[2 * npad + u]) * r0;
      a3 += RF_SPLAT8(w[3 * npad + u]) * r0;
    }
    store8(out + c, a0);
    store8(out + d + c, a1);
    store8(out + 2 * d + c, a2);
    store8(out + 3 * d + c, a3);
  }
  for (; c < d; ++c) {
    for (int r = 0; r < kTile; ++r) {
      float s = 0.0f;
      for (index_t u = u0; u < u1; ++u) s += w[r * npad + u] * x[(hi_max - 1 - u) * st + c];
      out[r * d + c] = s;
    }
  }
}

// acc[u d + c] += sum_r w[r npad + u] rows[r][c] for u in [u0, u1): eight columns of the four rows
// stay in registers while the keys stream past.
RF_INLINE void scatter(const float* w, index_t npad, const float* const* rows, index_t u0, index_t u1, index_t d,
                       float* __restrict acc) {
  index_t c = 0;
  for (; c + 8 <= d; c += 8) {
    const v8f x0 = load8(rows[0] + c), x1 = load8(rows[1] + c), x2 = load8(rows[2] + c), x3 = load8(rows[3] + c);
    for (index_t u = u0; u < u1; ++u) {
      float* out = acc + u * d + c;
      store8(out, load8(out) + RF_SPLAT8(w[u]) * x0 + RF_SPLAT8(w[npad + u]) * x1 + RF_SPLAT8(w[2 * npad + u]) * x2 +
                     RF_SPLAT8(w[3 * npad + u]) * x3);
    }
  }
  for (; c < d; ++c) {
    for (index_t u = u0; u < u1; ++u)
      acc[u * d + c] += w[u] * rows[0][c] + w[npad + u] * rows[1][c] + w[2 * npad + u] * rows[2][c] +
                        w[3 * npad + u] * rows[3][c];
  }
}

float* scratch(std::size_t n) {
  static thread_local std::vector<float> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

struct FwdJob {
  const BiasedAttentionArgs* a;
  const float *q, *k, *v;
  AttnStrides qs, ks, vs, os;
  float *out, *lse;
};

struct BwdJob {
  const BiasedAttentionArgs* a;
  const float *dout, *q, *k, *v, *out, *lse;
  AttnStrides dos, qs, ks, vs, os, dqs, dks, dvs;
  float *dq, *dk, *dv;
};

// The tile of query rows i0 .. i0 + 3 (rows past Tq repeat the last one and count as empty): their
// positions, first visible columns, and the first column any of them sees.
struct Tile {
  index_t rows = 0, pos[kTile] = {}, u_lo[kTile] = {}, u_min = 0;
};

RF_INLINE Tile make_tile(const BiasedAttentionArgs& a, const Geometry& g, index_t b, index_t i0) {
  Tile t;
  t.rows = std::min<index_t>(kTile, a.Tq - i0);
  t.u_min = g.n;
  for (int r = 0; r < kTile; ++r) {
    const index_t i = std::min<index_t>(i0 + r, a.Tq - 1);
    t.pos[r] = query_pos(a, b, i);
    t.u_lo[r] = r < t.rows ? first_column(a, g, t.pos[r]) : g.n;
    t.u_min = std::min(t.u_min, t.u_lo[r]);
  }
  return t;
}

template <int Isa>
RF_INLINE void fwd_head_body(const FwdJob& job, index_t b, index_t h) {
  const BiasedAttentionArgs& a = *job.a;
  const index_t d = a.d, Tq = a.Tq;
  const float* q = job.q + b * job.qs.b + h * job.qs.h;
  float* out = job.out + b * job.os.b + h * job.os.h;
  float* lse = job.lse + (b * a.H + h) * Tq;
  const float inf = std::numeric_limits<float>::infinity();
  Geometry g;
  if (!geometry(a, b, g)) {
    for (index_t i = 0; i < Tq; ++i) {
      std::fill(out + i * job.os.t, out + i * job.os.t + d, 0.0f);
      lse[i] = inf;
    }
    return;
  }
  const float* k = job.k + b * job.ks.b + h * job.ks.h;
  const float* v = job.v + b * job.vs.b + h * job.vs.h;
  const index_t nsteps = steps_count(a, g);
  float* kt = scratch(d * g.npad + nsteps + kTile * g.npad + kTile * d);
  float* steps = kt + d * g.npad;
  float* S = steps + nsteps;
  float* o = S + kTile * g.npad;
  transpose_keys(k, job.ks.t, g, d, kt);
  fill_steps(a, g, steps, nsteps);
  const float nslope = -a.slopes[h];
  for (index_t i0 = 0; i0 < Tq; i0 += kTile) {
    const Tile t = make_tile(a, g, b, i0);
    if (t.u_min >= g.n) {
      for (index_t r = 0; r < t.rows; ++r) {
        std::fill(out + (i0 + r) * job.os.t, out + (i0 + r) * job.os.t + d, 0.0f);
        lse[i0 + r] = inf;
      }
      continue;
    }
    const float* rows[kTile];
    for (int r = 0; r < kTile; ++r) rows[r] = q + std::min<index_t>(i0 + r, Tq - 1) * job.qs.t;
    const index_t u0 = t.u_min / 16 * 16;
    tile_dots(rows, kt, g.npad, d, u0, S);
    float inv[kTile];
    for (int r = 0; r < kTile; ++r) {
      float* s = S + r * g.npad;
      if (t.u_lo[r] >= g.n) {  // empty (or past Tq): weight 0
        std::fill(s + u0, s + g.npad, 0.0f);
        inv[r] = 0.0f;
        if (r < t.rows) lse[i0 + r] = inf;
        continue;
      }
      const float mx = bias_row(s, steps + (t.pos[r] - g.pos_min), a.scale, nslope, u0, t.u_lo[r], g.n, g.npad);
      v8f sum{};
      for (index_t u = u0; u < g.npad; u += 8) {
        const v8f p = vexp(load8(s + u) - RF_SPLAT8(mx));
        store8(s + u, p);
        sum += p;
      }
      const float l = hsum(sum);
      inv[r] = 1.0f / l;
      lse[i0 + r] = mx + std::log(l);
    }
    combine(S, g.npad, v, job.vs.t, g.hi_max, t.u_min, g.n, d, o);
    for (index_t r = 0; r < t.rows; ++r) {
      float* dst = out + (i0 + r) * job.os.t;
      for (index_t c = 0; c < d; ++c) dst[c] = o[r * d + c] * inv[r];
    }
  }
}

RF_LANE_FUNCTION(void, fwd_head, (const FwdJob& job, index_t b, index_t h), (job, b, h))

template <int Isa>
RF_INLINE void bwd_head_body(const BwdJob& job, index_t b, index_t h) {
  const BiasedAttentionArgs& a = *job.a;
  const index_t d = a.d, Tq = a.Tq, Tk = a.Tk;
  const float* q = job.q + b * job.qs.b + h * job.qs.h;
  const float* dout = job.dout + b * job.dos.b + h * job.dos.h;
  const float* out = job.out + b * job.os.b + h * job.os.h;
  const float* lse = job.lse + (b * a.H + h) * Tq;
  float* dq = job.dq + b * job.dqs.b + h * job.dqs.h;
  float* dk = job.dk + b * job.dks.b + h * job.dks.h;
  float* dv = job.dv + b * job.dvs.b + h * job.dvs.h;
  Geometry g;
  const bool any = geometry(a, b, g);
  // Key rows no query sees get zero gradients.
  for (index_t j = 0; j < Tk; ++j) {
    if (any && j >= g.lo && j < g.hi_max) continue;
    std::fill(dk + j * job.dks.t, dk + j * job.dks.t + d, 0.0f);
    std::fill(dv + j * job.dvs.t, dv + j * job.dvs.t + d, 0.0f);
  }
  if (!any) {
    for (index_t i = 0; i < Tq; ++i) std::fill(dq + i * job.dqs.t, dq + i * job.dqs.t + d, 0.0f);
    return;
  }
  const float* k = job.k + b * job.ks.b + h * job.ks.h;
  const float* v = job.v + b * job.vs.b + h * job.vs.h;
  const index_t nsteps = steps_count(a, g);
  float* kt = scratch(2 * d * g.npad + nsteps + 2 * kTile * g.npad + kTile * d + 2 * g.npad * d);
  float* vt = kt + d * g.npad;
  float* steps = vt + d * g.npad;
  float* P = steps + nsteps;
  float* DS = P + kTile * g.npad;
  float* dqt = DS + kTile * g.npad;
  float* dk_acc = dqt + kTile * d;
  float* dv_acc = dk_acc + g.npad * d;
  transpose_keys(k, job.ks.t, g, d, kt);
  transpose_keys(v, job.vs.t, g, d, vt);
  fill_steps(a, g, steps, nsteps);
  std::fill(dk_acc, dk_acc + 2 * g.npad * d, 0.0f);
  const float nslope = -a.slopes[h];
  for (index_t i0 = 0; i0 < Tq; i0 += kTile) {
    const Tile t = make_tile(a, g, b, i0);
    if (t.u_min >= g.n) {
      for (index_t r = 0; r < t.rows; ++r) std::fill(dq + (i0 + r) * job.dqs.t, dq + (i0 + r) * job.dqs.t + d, 0.0f);
      continue;
    }
    const float *qrows[kTile], *drows[kTile];
    for (int r = 0; r < kTile; ++r) {
      const index_t i = std::min<index_t>(i0 + r, Tq - 1);
      qrows[r] = q + i * job.qs.t;
      drows[r] = dout + i * job.dos.t;
    }
    const index_t u0 = t.u_min / 16 * 16;
    tile_dots(qrows, kt, g.npad, d, u0, P);
    tile_dots(drows, vt, g.npad, d, u0, DS);
    for (int r = 0; r < kTile; ++r) {
      float* p = P + r * g.npad;
      float* ds = DS + r * g.npad;
      if (t.u_lo[r] >= g.n) {
        std::fill(p + u0, p + g.npad, 0.0f);
        std::fill(ds + u0, ds + g.npad, 0.0f);
        continue;
      }
      const index_t i = i0 + r;
      const float D = dot(dout + i * job.dos.t, out + i * job.os.t, d);
      bias_row(p, steps + (t.pos[r] - g.pos_min), a.scale, nslope, u0, t.u_lo[r], g.n, g.npad);
      const v8f m = RF_SPLAT8(lse[i]), Dv = RF_SPLAT8(D), sc = RF_SPLAT8(a.scale);
      for (index_t u = u0; u < g.npad; u += 8) {
        const v8f pu = vexp(load8(p + u) - m);
        store8(p + u, pu);
        store8(ds + u, pu * (load8(ds + u) - Dv) * sc);  // scale folded in: dq and dk both carry it
      }
    }
    combine(DS, g.npad, k, job.ks.t, g.hi_max, t.u_min, g.n, d, dqt);
    for (index_t r = 0; r < t.rows; ++r) std::copy(dqt + r * d, dqt + (r + 1) * d, dq + (i0 + r) * job.dqs.t);
    scatter(DS, g.npad, qrows, t.u_min, g.n, d, dk_acc);
    scatter(P, g.npad, drows, t.u_min, g.n, d, dv_acc);
  }
  for (index_t u = 0; u < g.n; ++u) {
    const index_t j = g.hi_max - 1 - u;
    std::copy(dk_acc + u * d, dk_acc + (u + 1) * d, dk + j * job.dks.t);
    std::copy(dv_acc + u * d, dv_acc + (u + 1) * d, dv + j * job.dvs.t);
  }
}

RF_LANE_FUNCTION(void, bwd_head, (const BwdJob& job, index_t b, index_t h), (job, b, h))

// Parallel over (b, h) pairs once the call is big enough to pay for waking the threads.
bool parallel_worth_it(const BiasedAttentionArgs& a) {
  return a.B * a.H > 1 && static_cast<double>(a.B * a.H) * a.Tq * a.Tk * a.d > 2.0e5;
}

}  // namespace

void biased_attention_fwd_cpu(const BiasedAttentionArgs& a, const float* q, AttnStrides qs, const float* k,
                              AttnStrides ks, const float* v, AttnStrides vs, float* out, AttnStrides os,
                              float* lse) {
  const FwdJob job{&a, q, k, v, qs, ks, vs, os, out, lse};
  const index_t tasks = a.B * a.H;
#pragma omp parallel for schedule(dynamic, 1) if (parallel_worth_it(a))
  for (index_t t = 0; t < tasks; ++t) fwd_head(job, t / a.H, t % a.H);
}

void biased_attention_bwd_cpu(const BiasedAttentionArgs& a, const float* dout, AttnStrides dos, const float* q,
                              AttnStrides qs, const float* k, AttnStrides ks, const float* v, AttnStrides vs,
                              const float* out, AttnStrides os, const float* lse, float* dq, AttnStrides dqs,
                              float* dk, AttnStrides dks, float* dv, AttnStrides dvs) {
  const BwdJob job{&a, dout, q, k, v, out, lse, dos, qs, ks, vs, os, dqs, dks, dvs, dq, dk, dv};
  const index_t tasks = a.B * a.H;
#pragma omp parallel for schedule(dynamic, 1) if (parallel_worth_it(a))
  for (index_t t = 0; t < tasks; ++t) bwd_head(job, t / a.H, t % a.H);
}

}  // namespace reactfast
