#include "reactfast/tlcc.h"

#include <cmath>
#include <limits>
#include <vector>

namespace reactfast {
namespace {

// Two-pass Pearson r per dim of the segments xs[0:n] and ys[0:n] (rows of D floats), as
// numpy.corrcoef: NaN when a segment has zero variance. DC > 0: D is DC, known at compile time,
// and the sums stay in registers (REACT's 25 emotion dims: about 2x faster); DC = 0: any D, the
// sums in ``scratch`` (5 D doubles). The same operations in the same order per dim either way.
template <index_t DC>
__attribute__((always_inline)) inline void pearson(const float* xs, const float* ys, index_t n, index_t D_,
                                                   double* scratch, double* r) {
  const index_t D = DC > 0 ? DC : D_;
  constexpr index_t kFixed = DC > 0 ? DC : 1;
  double fixed[5][kFixed];
  double* mx = DC > 0 ? fixed[0] : scratch;
  double* my = DC > 0 ? fixed[1] : scratch + D;
  double* sxy = DC > 0 ? fixed[2] : scratch + 2 * D;
  double* sxx = DC > 0 ? fixed[3] : scratch + 3 * D;
  double* syy = DC > 0 ? fixed[4] : scratch + 4 * D;
  for (index_t d = 0; d < D; ++d) mx[d] = my[d] = sxy[d] = sxx[d] = syy[d] = 0.0;
  for (index_t t = 0; t < n; ++t)
    for (index_t d = 0; d < D; ++d) {
      mx[d] += xs[t * D + d];
      my[d] += ys[t * D + d];
    }
  for (index_t d = 0; d < D; ++d) {
    mx[d] /= static_cast<double>(n);
    my[d] /= static_cast<double>(n);
  }
  for (index_t t = 0; t < n; ++t)
    for (index_t d = 0; d < D; ++d) {
      const double a = xs[t * D + d] - mx[d];
      const double b = ys[t * D + d] - my[d];
      sxy[d] += a * b;
      sxx[d] += a * a;
      syy[d] += b * b;
    }
  for (index_t d = 0; d < D; ++d) {
    double v = sxy[d] / std::sqrt(sxx[d] * syy[d]);
    if (sxx[d] == 0.0 || syy[d] == 0.0) v = std::numeric_limits<double>::quiet_NaN();
    r[d] = v > 1.0 ? 1.0 : (v < -1.0 ? -1.0 : v);
  }
}

RF_CLONES void pearson_25(const float* xs, const float* ys, index_t n, double* r) {
  pearson<25>(xs, ys, n, 25, nullptr, r);
}

RF_CLONES void pearson_any(const float* xs, const float* ys, index_t n, index_t D, double* scratch, double* r) {
  pearson<0>(xs, ys, n, D, scratch, r);
}

}  // namespace

void tlcc_cpu(const float* x, const float* y, float* rs, index_t M, index_t T, index_t D, index_t L) {
  const index_t lags = 2 * L + 1;
#pragma omp parallel
  {
    std::vector<double> buf(6 * D);
    double* scratch = buf.data();
    double* r = scratch + 5 * D;
#pragma omp for collapse(2) schedule(static)
    for (index_t m = 0; m < M; ++m)
      for (index_t li = 0; li < lags; ++li) {
        const index_t l = li - L;
        const index_t n = T - (l < 0 ? -l : l);
        float out = std::numeric_limits<float>::quiet_NaN();
        if (n >= 2) {
          const float* xs = x + m * T * D + (l > 0 ? l : 0) * D;
          const float* ys = y + m * T * D + (l < 0 ? -l : 0) * D;
          if (D == 25)
            pearson_25(xs, ys, n, r);
          else
            pearson_any(xs, ys, n, D, scratch, r);
          // float32 mean over dims, accumulated in dim order (as the reference).
          float acc = 0.f;
          for (index_t d = 0; d < D; ++d) acc += static_cast<float>(r[d]);
          out = acc / static_cast<float>(D);
        }
        rs[m * lags + li] = out;
      }
  }
}

}  // namespace reactfast
