#include "reactfast/tlcc.h"

#include "columns.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace reactfast {
namespace {

typedef double v4d __attribute__((vector_size(32)));

inline v4d load4(const double* p) {
  v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// out[m - m0] = sum_{t < T - m} s[t] o[m + t] for m = m0..m1: the lagged cross sums of two columns.
// Four lags at a time share the loads of s (five loads for four vector products, two steps of t
// in flight), then each lag's last few terms in order.
__attribute__((always_inline)) inline void lagged_dots(const double* s, const double* o, index_t T, index_t m0,
                                                       index_t m1, double* out) {
  index_t m = m0;
  for (; m + 3 <= m1; m += 4) {
    const index_t n = T - m - 3;        // the terms all four lags have
    const double* om = o + m;
    v4d a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    index_t t = 0;
    for (; t + 8 <= n; t += 8) {
      const v4d u = load4(s + t), w = load4(s + t + 4);
      a0 += u * load4(om + t), b0 += w * load4(om + t + 4);
      a1 += u * load4(om + t + 1), b1 += w * load4(om + t + 5);
      a2 += u * load4(om + t + 2), b2 += w * load4(om + t + 6);
      a3 += u * load4(om + t + 3), b3 += w * load4(om + t + 7);
    }
    const v4d acc[4] = {a0 + b0, a1 + b1, a2 + b2, a3 + b3};
    for (index_t j = 0; j < 4; ++j) {
      double v = (acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3]);
      for (index_t u = t; u < T - m - j; ++u) v += s[u] * om[j + u];
      out[m - m0 + j] = v;
    }
  }
  for (; m <= m1; ++m) {      // the last one to three lags one at a time
    const index_t n = T - m;
    v4d a0 = {0, 0, 0, 0}, a1 = a0;
    index_t t = 0;
    for (; t + 8 <= n; t += 8) {
      a0 += load4(s + t) * load4(o + m + t);
      a1 += load4(s + t + 4) * load4(o + m + t + 4);
    }
    const v4d a = a0 + a1;
    double v = (a[0] + a[1]) + (a[2] + a[3]);
    for (; t < n; ++t) v += s[t] * o[m + t];
    out[m - m0] = v;
  }
}

// sum_t a[t] and sum_t a[t]^2 over n doubles, in vector accumulators.
__attribute__((always_inline)) inline void sums(const double* a, index_t n, double& s, double& ss) {
  v4d s0 = {0, 0, 0, 0}, s1 = s0, q0 = s0, q1 = s0;
  index_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const v4d u = load4(a + t), w = load4(a + t + 4);
    s0 += u, s1 += w, q0 += u * u, q1 += w * w;
  }
  const v4d sv = s0 + s1, qv = q0 + q1;
  s = (sv[0] + sv[1]) + (sv[2] + sv[3]);
  ss = (qv[0] + qv[1]) + (qv[2] + qv[3]);
  for (; t < n; ++t) s += a[t], ss += a[t] * a[t];
}

// One clip (T frames of D dims) for the lag loop: every dim's values in float64 less the dim's
// mean over the clip (so that a segment's mean is small beside its spread and the sums below lose
// little to cancellation), dim-major; per dim the sums and sums of squares of those values over
// the prefixes [0, k) and the suffixes [T - k, T) for k = 0..K (the segments of lags up to K start
// at 0 or end at T and leave out at most K frames) and over the whole clip; and per dim the first
// frame that differs from its predecessor and the last (T and 0 when the dim is constant).
struct Clip {
  index_t T = 0, D = 0, K = 0;
  std::vector<double> v, mean, total, total_sq, head, head_sq, tail, tail_sq;   // head/tail: D x (K + 1)
  std::vector<index_t> first_change, last_change;

  __attribute__((always_inline)) void load(const float* x, index_t T_, index_t D_, index_t K_) {
    T = T_, D = D_, K = K_;
    v.resize(T * D);
    mean.assign(D, 0.0);
    for (auto* a : {&total, &total_sq}) a->resize(D);
    for (auto* a : {&head, &head_sq, &tail, &tail_sq}) a->resize(D * (K + 1));
    first_change.resize(D);
    last_change.resize(D);
    for (index_t t = 0; t < T; ++t)
      for (index_t d = 0; d < D; ++d) mean[d] += x[t * D + d];
    for (index_t d = 0; d < D; ++d) mean[d] /= static_cast<double>(T);
    to_columns(x, T, D, mean.data(), v.data());
    for (index_t d = 0; d < D; ++d) {
      const double* c = v.data() + d * T;
      sums(c, T, total[d], total_sq[d]);
      double* h = head.data() + d * (K + 1);
      double* hq = head_sq.data() + d * (K + 1);
      double* e = tail.data() + d * (K + 1);
      double* eq = tail_sq.data() + d * (K + 1);
      h[0] = hq[0] = e[0] = eq[0] = 0.0;
      for (index_t k = 0; k < K; ++k) {
        h[k + 1] = h[k] + c[k];
        hq[k + 1] = hq[k] + c[k] * c[k];
        e[k + 1] = e[k] + c[T - 1 - k];
        eq[k + 1] = eq[k] + c[T - 1 - k] * c[T - 1 - k];
      }
      index_t first = 1, last = T - 1;
      while (first < T && x[first * D + d] == x[(first - 1) * D + d]) ++first;
      while (last > 0 && x[last * D + d] == x[(last - 1) * D + d]) --last;
      first_change[d] = first;
      last_change[d] = last;
    }
  }

  // Sums of the values and of their squares over the segment [a, a + n) of dim d, which starts at
  // 0 or ends at T and leaves out at most K frames; whether it is constant.
  void segment(index_t d, index_t a, index_t n, double& s, double& ss, bool& constant) const {
    const index_t row = d * (K + 1);
    if (a == 0) {       // [0, n): the clip less its last T - n frames
      s = total[d] - tail[row + T - n], ss = total_sq[d] - tail_sq[row + T - n];
      constant = n <= first_change[d];
    } else {            // [a, T): the clip less its first a frames
      s = total[d] - head[row + a], ss = total_sq[d] - head_sq[row + a];
      constant = a >= last_change[d];
    }
  }
};

// Pearson r of dim d over the segments [a, a + n) of one clip (x) and [b, b + n) of the other (y)
// in float64, as numpy.corrcoef gives it (two passes) to about 1e-14, from the prefix sums and the
// cross sum sxy0 = sum x y of the centred values: Sxx = sum x^2 - (sum x)^2 / n and
// Sxy = sxy0 - (sum x)(sum y) / n. Where the first form would cancel more than kCancel of its size
// (a segment far from its clip's mean for its spread), the pair's r is taken in two passes over the
// float32 inputs instead. NaN when either segment is constant (the two-pass sum of squares is
// then exactly 0, and only then), clipped to [-1, 1].
constexpr double kCancel = 64.0;

__attribute__((always_inline)) inline double pearson(const Clip& cx, const float* x, index_t a, const Clip& cy,
                                                     const float* y, index_t b, index_t n, index_t d, double sxy0) {
  double sx, sxx, sy, syy;
  bool const_x, const_y;
  cx.segment(d, a, n, sx, sxx, const_x);
  cy.segment(d, b, n, sy, syy, const_y);
  if (const_x || const_y) return std::numeric_limits<double>::quiet_NaN();
  const double nn = static_cast<double>(n);
  const double px = sx * (sx / nn), py = sy * (sy / nn);
  sxx -= px;
  syy -= py;
  double sxy = sxy0 - sx * (sy / nn);
  if (!(sxx * kCancel > px && syy * kCancel > py)) {
    const index_t D = cx.D;
    const float* xs = x + a * D + d;
    const float* ys = y + b * D + d;
    double mx = 0.0, my = 0.0;
    for (index_t t = 0; t < n; ++t) mx += xs[t * D], my += ys[t * D];
    mx /= nn, my /= nn;
    sxx = syy = sxy = 0.0;
    for (index_t t = 0; t < n; ++t) {
      const double p = xs[t * D] - mx, q = ys[t * D] - my;
      sxy += p * q;
      sxx += p * p;
      syy += q * q;
    }
  }
  const double r = sxy / std::sqrt(sxx * syy);
  return r > 1.0 ? 1.0 : (r < -1.0 ? -1.0 : r);
}

// rs of one pair: r for every lag and dim into r (lags x D), then the float32 mean over dims.
RF_CLONES void tlcc_item(const float* x, const float* y, float* rs, index_t T, index_t D, index_t L, Clip& cx,
                         Clip& cy, double* r, double* cross, double* lower) {
  const index_t lags = 2 * L + 1;
  if (T >= 2) {
    const index_t K = L < T - 2 ? L : T - 2;       // lags beyond T - 2 leave fewer than 2 frames
    cx.load(x, T, D, K);
    cy.load(y, T, D, K);
    for (index_t d = 0; d < D; ++d) {
      // cross[K + l]: lag l pairs x[l + t] with y[t] (l >= 0), x[t] with y[-l + t] (l < 0).
      const double* xd = cx.v.data() + d * T;
      const double* yd = cy.v.data() + d * T;
      lagged_dots(yd, xd, T, 0, K, cross + K);
      if (K > 0) lagged_dots(xd, yd, T, 1, K, lower + 1);
      for (index_t l = 1; l <= K; ++l) cross[K - l] = lower[l];
      for (index_t l = -K; l <= K; ++l)
        r[(l + L) * D + d] = pearson(cx, x, l > 0 ? l : 0, cy, y, l < 0 ? -l : 0, T - (l < 0 ? -l : l), d,
                                     cross[K + l]);
    }
  }
  for (index_t li = 0; li < lags; ++li) {
    const index_t l = li - L;
    float out = std::numeric_limits<float>::quiet_NaN();
    if (T - (l < 0 ? -l : l) >= 2) {
      // float32 mean over dims, accumulated in dim order (as the reference).
      float acc = 0.f;
      for (index_t d = 0; d < D; ++d) acc += static_cast<float>(r[li * D + d]);
      out = acc / static_cast<float>(D);
    }
    rs[li] = out;
  }
}

}  // namespace

void tlcc_cpu(const float* x, const float* y, float* rs, index_t M, index_t T, index_t D, index_t L) {
  const index_t lags = 2 * L + 1;
#pragma omp parallel
  {
    Clip cx, cy;
    std::vector<double> r(lags * D), cross(lags), lower(L + 1);
#pragma omp for schedule(dynamic)
    for (index_t m = 0; m < M; ++m) tlcc_item(x + m * T * D, y + m * T * D, rs + m * lags, T, D, L, cx, cy, r.data(),
                                      cross.data(), lower.data());
  }
}

}  // namespace reactfast
