#include "reactfast/dtw_bounds.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "isa.h"

namespace reactfast {
namespace {

constexpr float kFInf = std::numeric_limits<float>::infinity();

inline double cell_cost(const float* a, const float* b, int start, int end) {
  double acc = 0.0;
  for (int d = start; d < end; ++d) {
    const float e = a[d] - b[d];
    acc += static_cast<double>(e) * e;
  }
  return acc;
}

typedef float v8f __attribute__((vector_size(32)));

template <typename V>
inline V load_vec(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// out[r * 3 + g] = min over blocks b of sum_{d in g} dist(a[r][d], [lo[d][b], hi[d][b]])^2 for R
// rows of a (row stride D) and the groups, eight blocks per vector (stride is a multiple of 8;
// padding blocks are empty and infinitely far). R rows at once give R
// independent accumulation chains and reuse each envelope load. The differences are rounded to
// float32 as the DP rounds x - y (rounding is monotone, so each is at most |x[d] - y[d]| as the DP
// computes it). Every lane width gives the same result: sums run over d in order, and minima are exact.
template <int R, int Isa>
__attribute__((always_inline)) inline void envelope_costs_impl(const float* a, index_t D, const float* lo,
                                                               const float* hi, index_t stride,
                                                               const DtwGroups& groups, double* out) {
  using V = v8f;  // on AVX-512 too: a 16-float vector costs two 8-float ones on AMD Zen 4
  constexpr int N = sizeof(V) / sizeof(float);
  const V zero = V{};
  for (int g = 0; g < groups.count; ++g) {
    V best[R];
    for (int r = 0; r < R; ++r) best[r] = kFInf - zero;
    for (index_t b = 0; b < stride; b += N) {
      V acc[R];
      for (int r = 0; r < R; ++r) acc[r] = zero;
      for (int d = groups.start[g]; d < groups.end[g]; ++d) {
        const V h = load_vec<V>(hi + d * stride + b), l = load_vec<V>(lo + d * stride + b);
        for (int r = 0; r < R; ++r) {
          // v less its nearest point of [l, h]: v - h above, v - l below (l - v rounded and
          // negated), 0 inside.
          const V v = a[r * D + d] - zero;
          V c = v > l ? v : l;
          c = c < h ? c : h;
          const V e = v - c;
          acc[r] += e * e;
        }
      }
      for (int r = 0; r < R; ++r) best[r] = acc[r] < best[r] ? acc[r] : best[r];
    }
    for (int r = 0; r < R; ++r) {
      float m = best[r][0];
      for (int i = 1; i < N; ++i) m = std::min(m, best[r][i]);
      out[r * kMaxDtwGroups + g] = m;
    }
  }
}

// Rows [0, n) of a (n <= 4): four at once when there are four, else one by one.
template <int Isa>
__attribute__((always_inline)) inline void envelope_costs_body(const float* a, index_t D, int n, const float* lo,
                                                               const float* hi, index_t stride,
                                                               const DtwGroups& groups, double* out) {
  if (n == 4) return envelope_costs_impl<4, Isa>(a, D, lo, hi, stride, groups, out);
  for (int r = 0; r < n; ++r)
    envelope_costs_impl<1, Isa>(a + r * D, D, lo, hi, stride, groups, out + r * kMaxDtwGroups);
}
RF_LANE_FUNCTION(void, envelope_costs,
                 (const float* a, index_t D, int n, const float* lo, const float* hi, index_t stride,
                  const DtwGroups& groups, double* out),
                 (a, D, n, lo, hi, stride, groups, out))

}  // namespace

void envelope(const float* y, index_t T, index_t D, index_t block, float* lo, float* hi) {
  const index_t blocks = envelope_blocks(T, block);  // padding blocks: no frames, lo +inf, hi -inf
  for (index_t d = 0; d < D; ++d)
    for (index_t b = 0; b < blocks; ++b) {
      float l = kFInf, h = -kFInf;
      for (index_t t = b * block; t < std::min(T, (b + 1) * block); ++t) {
        l = std::min(l, y[t * D + d]);
        h = std::max(h, y[t * D + d]);
      }
      lo[d * blocks + b] = l;
      hi[d * blocks + b] = h;
    }
}

void envelope_row_costs(const float* a, index_t Ta, index_t D, const float* b_lo, const float* b_hi, index_t stride,
                        const DtwGroups& groups, double* cost) {
  for (index_t i = 0; i < Ta * kMaxDtwGroups; ++i) cost[i] = 0.0;
  for (index_t t = 0; t < Ta; t += 4)
    envelope_costs(a + t * D, D, static_cast<int>(std::min<index_t>(4, Ta - t)), b_lo, b_hi, stride, groups,
                   cost + t * kMaxDtwGroups);
}

void dtw_tails(const float* a, const float* b, index_t Ta, index_t Tb, index_t D, const DtwGroups& groups,
               double* cost, float* tail, index_t t_stride, index_t g_stride, double* total) {
  for (int g = 0; g < kMaxDtwGroups; ++g) total[g] = 0.0;
  // Rows from the last one up, so that tail[t] is the sum over the rows already done.
  for (index_t t = Ta - 1; t >= 0; --t) {
    const float* at = a + t * D;
    double* ct = cost + t * kMaxDtwGroups;
    for (int g = 0; g < kMaxDtwGroups; ++g) {
      // What the rows after t pay, rounded down to float with room to spare.
      tail[t * t_stride + g * g_stride] = static_cast<float>(total[g] * (1.0 - 1e-6));
      if (g >= groups.count) continue;
      const int s = groups.start[g], e = groups.end[g];
      if (t == 0) ct[g] = std::max(ct[g], cell_cost(at, b, s, e));
      if (t == Ta - 1 && Ta > 1) ct[g] = std::max(ct[g], cell_cost(at, b + (Tb - 1) * D, s, e));
      total[g] += ct[g] * kBoundSafety;
    }
  }
}

}  // namespace reactfast
