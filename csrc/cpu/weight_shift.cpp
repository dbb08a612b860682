// Per-listener weight-shift linear on the CPU (SPEC 3.2): AVX-512F intrinsics on x86-64-v4 (below),
// else the 8-float vector kernels of weight_shift_lanes.cpp (AVX2 or baseline builds); the
// pick follows the CPU lane build (isa.h: REACTFAST_CPU_ISA caps it).
//
// Forward, y[b] = x[b] (W + dW[b])^T + bias, is computed transposed: y[b]^T = (W + dW[b]) x[b]^T.
// A chunk of up to 112 rows of x[b] is packed once as x^T (K x 16 NV, zero-padded); the
// micro-kernel holds 3 rows of W + dW[b] x NV vectors of 16 tokens in 3 NV accumulators, and each
// element of W + dW[b] is formed by one scalar add right before it is broadcast. The depth is
// blocked (256) so the packed x^T block stays in cache; the next rows of W and dW[b] are prefetched.
//
// Backward, dx[b] = dy[b] (W + dW[b]), needs no packing: 6 rows of dy[b] x 64 columns of W + dW[b]
// (4 vectors, summed in registers once per row of W and shared by the 6 rows of dy). The shift's
// gradient d(dW)[b] = dy[b]^T x[b] runs on the same tile: 6 rows of dW x 64 columns of x[b].
//
// OpenMP tasks: forward (sample, token chunk, row range), dx (sample, 64-column block), d(dW)
// (sample, 96-row slab). Outside x86-64 with GCC only the portable kernels are built.
#include "reactfast/weight_shift.h"

#include <cstdlib>
#include <cstring>

#if defined(REACTFAST_OPENMP)
#include <omp.h>
#endif

#include "isa.h"
#include "weight_shift_lanes.h"

// GCC's target pragma scopes the AVX-512 code; other compilers build without these kernels.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RF_WS_AVX512 1
#include <immintrin.h>
#endif

namespace reactfast {
namespace {

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

inline int max_threads() {
#if defined(REACTFAST_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace
}  // namespace reactfast

#if defined(RF_WS_AVX512)
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
namespace reactfast {
namespace ws512 {
namespace {

constexpr int kLanes = 16;
constexpr int kMaxVec = 7;      // tokens per forward chunk: 7 x 16 = 112
constexpr int kRows = 3;        // rows of W + dW per forward micro-kernel
constexpr index_t kDepth = 256; // forward depth block (d_in)
constexpr int kVecK = 4;        // backward: 64 columns of W + dW per task
constexpr int kRowsM = 6;       // backward: rows of dy per micro-kernel
constexpr index_t kDepthN = 256;

// ct[r][16 NV] (+)= sum_k (w[r, k] + dw[r, k]) xt[k][16 NV] over k < kc.
template <int R, int NV>
inline void fwd_tile(const float* xt, const float* w, const float* dw, index_t kc, index_t ldw, float* ct,
                     bool first) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j)
      acc[r][j] = first ? _mm512_setzero_ps() : _mm512_load_ps(ct + (r * NV + j) * kLanes);
  // The next rows of W and dW[b]: they are streamed from memory, one short segment per row.
  for (int r = 0; r < R; ++r)
    for (index_t k = 0; k < kc; k += kLanes) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (R + r) * ldw + k), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(dw + (R + r) * ldw + k), _MM_HINT_T0);
    }
  for (index_t k = 0; k < kc; ++k) {
    __m512 xv[NV];
    for (int j = 0; j < NV; ++j) {
      xv[j] = _mm512_load_ps(xt + (k * NV + j) * kLanes);
      // Keep the token vectors in registers rather than re-loading them for every row.
      __asm__ volatile("" : "+v"(xv[j]));
    }
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(w[r * ldw + k] + dw[r * ldw + k]);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(a, xv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) _mm512_store_ps(ct + (r * NV + j) * kLanes, acc[r][j]);
}

// yt[n - n_lo][16 NV] = sum_k (W + dW)[n, k] xt[k][16 NV] for n in [n_lo, n_hi).
template <int NV>
void fwd_rows(const float* xt, const float* w, const float* dw, index_t K, index_t n_lo, index_t n_hi, float* yt) {
  const index_t ld = NV * kLanes;
  for (index_t k0 = 0; k0 < K; k0 += kDepth) {
    const index_t kc = K - k0 < kDepth ? K - k0 : kDepth;
    index_t n = n_lo;
    for (; n + kRows <= n_hi; n += kRows)
      fwd_tile<kRows, NV>(xt + k0 * ld, w + n * K + k0, dw + n * K + k0, kc, K, yt + (n - n_lo) * ld, k0 == 0);
    for (; n < n_hi; ++n)
      fwd_tile<1, NV>(xt + k0 * ld, w + n * K + k0, dw + n * K + k0, kc, K, yt + (n - n_lo) * ld, k0 == 0);
  }
}

void fwd_rows_any(int nv, const float* xt, const float* w, const float* dw, index_t K, index_t n_lo, index_t n_hi,
                  float* yt) {
  switch (nv) {
    case 1: return fwd_rows<1>(xt, w, dw, K, n_lo, n_hi, yt);
    case 2: return fwd_rows<2>(xt, w, dw, K, n_lo, n_hi, yt);
    case 3: return fwd_rows<3>(xt, w, dw, K, n_lo, n_hi, yt);
    case 4: return fwd_rows<4>(xt, w, dw, K, n_lo, n_hi, yt);
    case 5: return fwd_rows<5>(xt, w, dw, K, n_lo, n_hi, yt);
    case 6: return fwd_rows<6>(xt, w, dw, K, n_lo, n_hi, yt);
    default: return fwd_rows<7>(xt, w, dw, K, n_lo, n_hi, yt);
  }
}

bool forward(const float* x, const float* w, const float* dw, const float* bias, float* y, index_t B, index_t L,
             index_t K, index_t N) {
  // Token chunks of at most 112 rows, balanced (L = 102 -> one chunk of 7 vectors).
  const index_t nvec = ceil_div(L, kLanes);
  const index_t nchunks = ceil_div(nvec, kMaxVec);
  const index_t chunk = ceil_div(nvec, nchunks) * kLanes;
  // Split the output rows too when samples x chunks would leave threads idle.
  const index_t threads = max_threads();
  index_t nsplit = B * nchunks >= 2 * threads ? 1 : ceil_div(2 * threads, B * nchunks);
  nsplit = nsplit > ceil_div(N, 8 * kRows) ? ceil_div(N, 8 * kRows) : nsplit;
  const index_t rows = ceil_div(ceil_div(N, nsplit), kRows) * kRows;
  const index_t tasks = B * nchunks * nsplit;
  bool ok = true;
#pragma omp parallel
  {
    float* xt = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * K * kMaxVec * kLanes));
    float* yt = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * rows * kMaxVec * kLanes));
    if (xt == nullptr || yt == nullptr) {
#pragma omp atomic write
      ok = false;
    }
#pragma omp for schedule(dynamic, 1)
    for (index_t t = 0; t < tasks; ++t) {
      if (xt == nullptr || yt == nullptr) continue;
      const index_t b = t / (nchunks * nsplit), c = (t / nsplit) % nchunks, s = t % nsplit;
      const index_t m0 = c * chunk;
      const index_t mc = L - m0 < chunk ? L - m0 : chunk;
      const index_t n_lo = s * rows, n_hi = n_lo + rows < N ? n_lo + rows : N;
      if (mc <= 0 || n_lo >= n_hi) continue;
      const int nv = static_cast<int>(ceil_div(mc, kLanes));
      const index_t ld = nv * kLanes;
      std::memset(xt, 0, sizeof(float) * K * ld);
      for (index_t m = 0; m < mc; ++m) {
        const float* xr = x + (b * L + m0 + m) * K;
        for (index_t k = 0; k < K; ++k) xt[k * ld + m] = xr[k];
      }
      fwd_rows_any(nv, xt, w, dw + b * N * K, K, n_lo, n_hi, yt);
      for (index_t m = 0; m < mc; ++m) {
        float* yr = y + (b * L + m0 + m) * N;
        for (index_t n = n_lo; n < n_hi; ++n) yr[n] = yt[(n - n_lo) * ld + m] + (bias ? bias[n] : 0.0f);
      }
    }
    std::free(xt);
    std::free(yt);
  }
  return ok;
}

// out[r][:64] (+)= sum_{n < nc} g[r g_row + n g_red] (a[n lda + :64] (+ a2[n lda + :64])): RM output
// rows x 64 columns; with SUM the two row panels are added in registers, once per reduction step
// and shared by the RM rows. Masks cut the last columns.
template <int RM, bool SUM>
inline void rows_tile(const float* g, index_t g_row, index_t g_red, const float* a, const float* a2, index_t lda,
                      index_t nc, float* out, index_t ldo, const __mmask16* mask, bool first) {
  __m512 acc[RM][kVecK];
  for (int r = 0; r < RM; ++r)
    for (int j = 0; j < kVecK; ++j)
      acc[r][j] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[j], out + r * ldo + j * kLanes);
  for (index_t n = 0; n < nc; ++n) {
    __m512 v[kVecK];
    for (int j = 0; j < kVecK; ++j) {
      v[j] = _mm512_maskz_loadu_ps(mask[j], a + n * lda + j * kLanes);
      if (SUM) v[j] = _mm512_add_ps(v[j], _mm512_maskz_loadu_ps(mask[j], a2 + n * lda + j * kLanes));
    }
    for (int r = 0; r < RM; ++r) {
      const __m512 s = _mm512_set1_ps(g[r * g_row + n * g_red]);
      for (int j = 0; j < kVecK; ++j) acc[r][j] = _mm512_fmadd_ps(s, v[j], acc[r][j]);
    }
  }
  for (int r = 0; r < RM; ++r)
    for (int j = 0; j < kVecK; ++j) _mm512_mask_storeu_ps(out + r * ldo + j * kLanes, mask[j], acc[r][j]);
}

inline void column_masks(index_t valid, __mmask16* mask) {
  for (int j = 0; j < kVecK; ++j) {
    const index_t lanes = valid - j * kLanes;
    mask[j] = lanes >= kLanes ? static_cast<__mmask16>(0xFFFF)
                              : static_cast<__mmask16>(lanes <= 0 ? 0 : (1u << lanes) - 1u);
  }
}

// body(b, k0, mask) for every sample b and 64-column block k0 of d_in, in parallel.
template <typename Body>
void column_blocks(index_t B, index_t K, Body body) {
  const index_t width = kVecK * kLanes;
  const index_t kblocks = ceil_div(K, width);
  const index_t tasks = B * kblocks;
#pragma omp parallel for schedule(dynamic, 1)
  for (index_t t = 0; t < tasks; ++t) {
    const index_t b = t / kblocks, k0 = (t % kblocks) * width;
    __mmask16 mask[kVecK];
    column_masks(K - k0, mask);
    body(b, k0, mask);
  }
}

// dx[b] = dy[b] (W + dW[b]): rows of dy x 64 columns of W + dW[b], reduction over d_out.
void backward_dx(const float* dy, const float* w, const float* dw, float* dx, index_t B, index_t L, index_t K,
                 index_t N) {
  column_blocks(B, K, [=](index_t b, index_t k0, const __mmask16* mask) {
    const float* dwb = dw + b * N * K;
    for (index_t n0 = 0; n0 < N; n0 += kDepthN) {
      const index_t nc = N - n0 < kDepthN ? N - n0 : kDepthN;
      index_t m = 0;
      for (; m + kRowsM <= L; m += kRowsM)
        rows_tile<kRowsM, true>(dy + (b * L + m) * N + n0, N, 1, w + n0 * K + k0, dwb + n0 * K + k0, K, nc,
                                dx + (b * L + m) * K + k0, K, mask, n0 == 0);
      for (; m < L; ++m)
        rows_tile<1, true>(dy + (b * L + m) * N + n0, N, 1, w + n0 * K + k0, dwb + n0 * K + k0, K, nc,
                           dx + (b * L + m) * K + k0, K, mask, n0 == 0);
    }
  });
}

// d(dW)[b] = dy[b]^T x[b]: rows of dW (d_out) x 64 columns (d_in), reduction over tokens. Each task
// writes one contiguous slab of 96 rows, so the (usually freshly allocated) output is first touched
// in order rather than in strips by every thread at once.
void backward_dshift(const float* dy, const float* x, float* ddw, index_t B, index_t L, index_t K, index_t N) {
  constexpr index_t kSlab = 16 * kRowsM;
  const index_t width = kVecK * kLanes;
  const index_t slabs = ceil_div(N, kSlab);
  const index_t tasks = B * slabs;
#pragma omp parallel for schedule(dynamic, 1)
  for (index_t t = 0; t < tasks; ++t) {
    const index_t b = t / slabs, n_lo = (t % slabs) * kSlab;
    const index_t n_hi = n_lo + kSlab < N ? n_lo + kSlab : N;
    const float* dyb = dy + b * L * N;
    for (index_t k0 = 0; k0 < K; k0 += width) {
      __mmask16 mask[kVecK];
      column_masks(K - k0, mask);
      const float* xb = x + b * L * K + k0;
      float* out = ddw + b * N * K + k0;
      for (index_t m0 = 0; m0 < L; m0 += kDepthN) {
        const index_t mc = L - m0 < kDepthN ? L - m0 : kDepthN;
        index_t n = n_lo;
        for (; n + kRowsM <= n_hi; n += kRowsM)
          rows_tile<kRowsM, false>(dyb + m0 * N + n, 1, N, xb + m0 * K, nullptr, K, mc, out + n * K, K, mask,
                                   m0 == 0);
        for (; n < n_hi; ++n)
          rows_tile<1, false>(dyb + m0 * N + n, 1, N, xb + m0 * K, nullptr, K, mc, out + n * K, K, mask, m0 == 0);
      }
    }
  }
}

}  // namespace
}  // namespace ws512
}  // namespace reactfast
#pragma GCC pop_options
#endif  // RF_WS_AVX512

namespace reactfast {
namespace {

// The AVX-512 kernels where they are built and the lane build in use is x86-64-v4.
bool use_avx512() {
#if defined(RF_WS_AVX512)
  return lane_isa() == 4;
#else
  return false;
#endif
}

ws_lanes::Problem problem(index_t B, index_t L, index_t K, index_t N) {
  ws_lanes::Problem p;
  p.B = B;
  p.L = L;
  p.K = K;
  p.N = N;
  return p;
}

}  // namespace

const char* weight_shift_cpu_build() { return use_avx512() ? "avx512" : lane_isa() == 3 ? "avx2" : "baseline"; }

const char* weight_shift_fwd_cpu(const float* x, const float* w, const float* dw, const float* bias, float* y,
                                 index_t B, index_t L, index_t K, index_t N) {
  if (B <= 0 || L <= 0 || N <= 0) return nullptr;
  if (K <= 0) {
    for (index_t i = 0; i < B * L; ++i)
      for (index_t n = 0; n < N; ++n) y[i * N + n] = bias ? bias[n] : 0.0f;
    return nullptr;
  }
#if defined(RF_WS_AVX512)
  if (use_avx512()) {
    if (!ws512::forward(x, w, dw, bias, y, B, L, K, N))
      return "weight_shift_fwd_cpu: out of memory for the packing buffers";
    return nullptr;
  }
#endif
  ws_lanes::Problem p = problem(B, L, K, N);
  p.x = x;
  p.w = w;
  p.dw = dw;
  p.bias = bias;
  p.y = y;
  ws_lanes::forward(p);
  return nullptr;
}

const char* weight_shift_bwd_dshift_cpu(const float* dy, const float* x, float* ddw, index_t B, index_t L, index_t K,
                                        index_t N) {
  if (B <= 0 || N <= 0 || K <= 0) return nullptr;
  if (L <= 0) {
    for (index_t i = 0; i < B * N * K; ++i) ddw[i] = 0.0f;
    return nullptr;
  }
#if defined(RF_WS_AVX512)
  if (use_avx512()) {
    ws512::backward_dshift(dy, x, ddw, B, L, K, N);
    return nullptr;
  }
#endif
  ws_lanes::Problem p = problem(B, L, K, N);
  p.dy = dy;
  p.x = x;
  p.ddw = ddw;
  ws_lanes::backward_dshift(p);
  return nullptr;
}

const char* weight_shift_bwd_dx_cpu(const float* dy, const float* w, const float* dw, float* dx, index_t B,
                                    index_t L, index_t K, index_t N) {
  if (B <= 0 || L <= 0 || K <= 0) return nullptr;
  if (N <= 0) {
    for (index_t i = 0; i < B * L * K; ++i) dx[i] = 0.0f;
    return nullptr;
  }
#if defined(RF_WS_AVX512)
  if (use_avx512()) {
    ws512::backward_dx(dy, w, dw, dx, B, L, K, N);
    return nullptr;
  }
#endif
  ws_lanes::Problem p = problem(B, L, K, N);
  p.dy = dy;
  p.w = w;
  p.dw = dw;
  p.dx = dx;
  ws_lanes::backward_dx(p);
  return nullptr;
}

}  // namespace reactfast
