#include "reactfast/emotion_range.h"

#include <cmath>

namespace reactfast {
namespace {

constexpr index_t kDims = 25, kAus = 15, kVa = 15, kExpression = 17;

RF_CLONES void count_rows(const float* x, index_t lo, index_t hi, float below, float above, double tol,
                          std::int64_t* c) {
  std::int64_t au_low = 0, au_high = 0, va = 0, ex_low = 0, rows = 0;
  for (index_t r = lo; r < hi; ++r) {
    const float* v = x + r * kDims;
    for (index_t d = 0; d < kAus; ++d) {
      au_low += v[d] < below;
      au_high += v[d] > above;
    }
    va += std::fabs(v[kVa]) > above;
    va += std::fabs(v[kVa + 1]) > above;
    double sum = 0.0;
    for (index_t d = kExpression; d < kDims; ++d) {
      ex_low += v[d] < below;
      sum += v[d];
    }
    rows += std::fabs(sum - 1.0) > tol;
  }
  c[0] = au_low;
  c[1] = au_high;
  c[2] = va;
  c[3] = ex_low;
  c[4] = rows;
}

}  // namespace

void emotion_range_cpu(const float* x, index_t rows, double tol, std::int64_t* counts) {
  const float below = static_cast<float>(-tol), above = static_cast<float>(1.0 + tol);
  for (int i = 0; i < 5; ++i) counts[i] = 0;
  constexpr index_t kChunk = 4096;
  const index_t chunks = (rows + kChunk - 1) / kChunk;
#pragma omp parallel
  {
    std::int64_t mine[5] = {0, 0, 0, 0, 0};
#pragma omp for schedule(static)
    for (index_t b = 0; b < chunks; ++b) {
      std::int64_t part[5];
      const index_t hi = (b + 1) * kChunk < rows ? (b + 1) * kChunk : rows;
      count_rows(x, b * kChunk, hi, below, above, tol, part);
      for (int i = 0; i < 5; ++i) mine[i] += part[i];
    }
#pragma omp critical
    for (int i = 0; i < 5; ++i) counts[i] += mine[i];
  }
}

}  // namespace reactfast
