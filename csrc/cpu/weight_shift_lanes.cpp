// The weight-shift kernels (SPEC 3.2) for processors without AVX-512F: one body over 8-float GCC
// vectors, built for x86-64-v3 (AVX2 + FMA) and for baseline x86-64 (or any other target) and
// picked at run time (isa.h). weight_shift.cpp keeps its AVX-512 intrinsics for x86-64-v4.
//
// Every product runs on one micro-kernel: 6 rows x 16 columns (12 vector accumulators, with the two
// panel vectors and a broadcast that is the 16 registers of AVX2), over a panel of 16 columns packed
// once per task (K or N or L rows of 16 floats, zero past the last column):
// - forward, y[b] = x[b] (W + dW[b])^T + bias, per (sample, 16 output columns): the panel is
//   (W + dW[b])^T of those columns, each sum formed once as it is packed (a per-thread panel of
//   16 K floats; W + dW[b] itself is never formed), then 6 tokens at a time over it;
// - dx[b] = dy[b] (W + dW[b]), per (sample, 16 input columns): the panel is those columns of
//   W + dW[b] (N x 16), then 6 tokens at a time;
// - d(dW)[b] = dy[b]^T x[b], per (sample, 16 input columns): the panel is those columns of x[b]
//   (L x 16), then 6 rows of d(dW)[b] at a time, each written once.
#include "weight_shift_lanes.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "isa.h"
#include "vec8.h"

namespace reactfast {
namespace ws_lanes {
namespace {

constexpr int kRows = 6;    // rows of the micro-kernel
constexpr int kCols = 16;   // columns: two vectors

float* scratch(std::size_t n) {
  static thread_local std::vector<float> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// out[r ldo + c] = sum_{t < depth} a[r][t step] panel[t 16 + c] (+ bias[c]) for r < rows, c < cols.
// Rows past `rows` repeat row 0 and are not stored.
RF_INLINE void tile(const float* const* a, index_t step, const float* panel, index_t depth, float* out, index_t ldo,
                    int rows, index_t cols, const float* bias) {
  v8f acc0[kRows] = {}, acc1[kRows] = {};
  for (index_t t = 0; t < depth; ++t) {
    const v8f p0 = load8(panel + t * kCols), p1 = load8(panel + t * kCols + 8);
#pragma GCC unroll 6
    for (int r = 0; r < kRows; ++r) {
      const v8f s = RF_SPLAT8(a[r][t * step]);
      acc0[r] += s * p0;
      acc1[r] += s * p1;
    }
  }
  const v8f b0 = bias ? load8(bias) : v8f{}, b1 = bias ? load8(bias + 8) : v8f{};
  for (int r = 0; r < rows; ++r) {
    if (cols == kCols) {
      store8(out + r * ldo, acc0[r] + b0);
      store8(out + r * ldo + 8, acc1[r] + b1);
    } else {
      float tmp[kCols];
      store8(tmp, acc0[r] + b0);
      store8(tmp + 8, acc1[r] + b1);
      std::memcpy(out + r * ldo, tmp, sizeof(float) * cols);
    }
  }
}

// rows_of(r0, r) points at row r0 + r of the left operand; out row r0 + r at out + (r0 + r) ldo.
template <typename RowsOf>
RF_INLINE void tiles(index_t count, RowsOf rows_of, index_t step, const float* panel, index_t depth, float* out,
                     index_t ldo, index_t cols, const float* bias) {
  for (index_t r0 = 0; r0 < count; r0 += kRows) {
    const int rows = static_cast<int>(std::min<index_t>(kRows, count - r0));
    const float* a[kRows];
    for (int r = 0; r < kRows; ++r) a[r] = rows_of(r < rows ? r0 + r : r0);
    tile(a, step, panel, depth, out + r0 * ldo, ldo, rows, cols, bias);
  }
}

template <int Isa>
RF_INLINE void forward_task_body(const Problem& p, index_t b, index_t n0) {
  const index_t K = p.K, N = p.N, cols = std::min<index_t>(kCols, N - n0);
  float* panel = scratch(K * kCols + kCols);
  float* bias = panel + K * kCols;
  std::fill(panel, panel + K * kCols, 0.0f);
  for (index_t c = 0; c < cols; ++c) {
    const float* w = p.w + (n0 + c) * K;
    const float* dw = p.dw + (b * N + n0 + c) * K;
    for (index_t k = 0; k < K; ++k) panel[k * kCols + c] = w[k] + dw[k];
  }
  for (index_t c = 0; c < kCols; ++c) bias[c] = p.bias && c < cols ? p.bias[n0 + c] : 0.0f;
  const float* x = p.x + b * p.L * K;
  tiles(p.L, [=](index_t m) { return x + m * K; }, 1, panel, K, p.y + b * p.L * N + n0, N, cols, bias);
}

RF_LANE_FUNCTION(void, forward_task, (const Problem& p, index_t b, index_t n0), (p, b, n0))

template <int Isa>
RF_INLINE void dx_task_body(const Problem& p, index_t b, index_t k0) {
  const index_t K = p.K, N = p.N, cols = std::min<index_t>(kCols, K - k0);
  float* panel = scratch(N * kCols);
  for (index_t n = 0; n < N; ++n) {
    const float* w = p.w + n * K + k0;
    const float* dw = p.dw + (b * N + n) * K + k0;
    float* row = panel + n * kCols;
    if (cols == kCols) {
      store8(row, load8(w) + load8(dw));
      store8(row + 8, load8(w + 8) + load8(dw + 8));
    } else {
      for (index_t c = 0; c < kCols; ++c) row[c] = c < cols ? w[c] + dw[c] : 0.0f;
    }
  }
  const float* dy = p.dy + b * p.L * N;
  tiles(p.L, [=](index_t m) { return dy + m * N; }, 1, panel, N, p.dx + b * p.L * K + k0, K, cols, nullptr);
}

RF_LANE_FUNCTION(void, dx_task, (const Problem& p, index_t b, index_t k0), (p, b, k0))

template <int Isa>
RF_INLINE void dshift_task_body(const Problem& p, index_t b, index_t k0) {
  const index_t K = p.K, N = p.N, L = p.L, cols = std::min<index_t>(kCols, K - k0);
  float* panel = scratch(L * kCols);
  const float* x = p.x + b * L * K + k0;
  for (index_t m = 0; m < L; ++m)
    for (index_t c = 0; c < kCols; ++c) panel[m * kCols + c] = c < cols ? x[m * K + c] : 0.0f;
  // Row n of d(dW)[b] reduces column n of dy[b] (stride N) against the panel.
  const float* dy = p.dy + b * L * N;
  tiles(N, [=](index_t n) { return dy + n; }, N, panel, L, p.ddw + b * N * K + k0, K, cols, nullptr);
}

RF_LANE_FUNCTION(void, dshift_task, (const Problem& p, index_t b, index_t k0), (p, b, k0))

template <typename Task>
void over_blocks(index_t B, index_t width, Task task) {
  const index_t blocks = (width + kCols - 1) / kCols;
  const index_t tasks = B * blocks;
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1)
  for (index_t t = 0; t < tasks; ++t) task(t / blocks, (t % blocks) * kCols);
}

}  // namespace

void forward(const Problem& p) {
  over_blocks(p.B, p.N, [&](index_t b, index_t n0) { forward_task(p, b, n0); });
}

void backward_dx(const Problem& p) {
  over_blocks(p.B, p.K, [&](index_t b, index_t k0) { dx_task(p, b, k0); });
}

void backward_dshift(const Problem& p) {
  over_blocks(p.B, p.K, [&](index_t b, index_t k0) { dshift_task(p, b, k0); });
}

}  // namespace ws_lanes
}  // namespace reactfast
