#include "reactfast/spread.h"

#include <algorithm>
#include <vector>

namespace reactfast {
namespace {

// Positions summed together: 32 float64 sums are four 64-byte vectors, enough independent chains
// to hide the adds' latency, and few enough to stay in registers.
constexpr index_t kLanes = 32;

// sum over the w <= W positions j0 + j of sum_r (x[r * stride + j0 + j] - mean_r)^2 over rows r < R:
// the two-pass (centred) sum of squares across rows, per position, each in row order. Called with
// w = W, the loops have a constant trip count and the W sums stay in registers.
template <index_t W>
__attribute__((always_inline)) inline double centred_lanes(const float* x, index_t R, index_t stride, index_t j0,
                                                           index_t w) {
  double mean[W] = {}, ss[W] = {};
  for (index_t r = 0; r < R; ++r)
    for (index_t j = 0; j < w; ++j) mean[j] += x[r * stride + j0 + j];
  for (index_t j = 0; j < w; ++j) mean[j] /= static_cast<double>(R);
  for (index_t r = 0; r < R; ++r)
    for (index_t j = 0; j < w; ++j) {
      const double a = x[r * stride + j0 + j] - mean[j];
      ss[j] += a * a;
    }
  double total = 0.0;
  for (index_t j = 0; j < w; ++j) total += ss[j];
  return total;
}

// The centred sums of squares across rows of positions [lo, lo + n), W positions at a time; only
// the total over positions reassociates (per W).
template <index_t W>
__attribute__((always_inline)) inline double across_rows(const float* x, index_t R, index_t stride, index_t lo,
                                                         index_t n) {
  double total = 0.0;
  index_t j0 = lo;
  for (; j0 + W <= lo + n; j0 += W) total += centred_lanes<W>(x, R, stride, j0, W);
  if (j0 < lo + n) total += centred_lanes<W>(x, R, stride, j0, lo + n - j0);
  return total;
}

// FRDvs's part of positions [lo, lo + n) of the (S, T, D) slabs: deviations from the mean over
// the N speakers.
RF_CLONES double across_speakers(const float* x, index_t N, index_t stride, index_t lo, index_t n) {
  return across_rows<kLanes>(x, N, stride, lo, n);
}

// One speaker's slab (S, T, D): its FRDiv part (per position (t, d), deviations from the mean over
// the S samples) and its FRVar part (per (i, d), deviations from the mean over the T frames).
template <index_t DC>
__attribute__((always_inline)) inline void within_speaker(const float* slab, double* part, index_t S, index_t T,
                                                          index_t D_) {
  const index_t D = DC > 0 ? DC : D_;
  const index_t TD = T * D;
  const double div = across_rows<kLanes>(slab, S, TD, 0, TD);
  double var = 0.0;
  constexpr index_t kDims = DC > 0 ? DC : 1;
  std::vector<double> buf(DC > 0 ? 0 : 2 * D);
  for (index_t i = 0; i < S; ++i) {
    const float* seq = slab + i * TD;
    double fixed_mean[kDims] = {}, fixed_ss[kDims] = {};
    double* mean = DC > 0 ? fixed_mean : buf.data();
    double* ss = DC > 0 ? fixed_ss : buf.data() + D;
    if (DC == 0)
      for (index_t d = 0; d < D; ++d) mean[d] = ss[d] = 0.0;
    for (index_t t = 0; t < T; ++t)
      for (index_t d = 0; d < D; ++d) mean[d] += seq[t * D + d];
    for (index_t d = 0; d < D; ++d) mean[d] /= static_cast<double>(T);
    for (index_t t = 0; t < T; ++t)
      for (index_t d = 0; d < D; ++d) {
        const double a = seq[t * D + d] - mean[d];
        ss[d] += a * a;
      }
    for (index_t d = 0; d < D; ++d) var += ss[d];
  }
  part[0] = div;
  part[1] = var;
}

// REACT's 25 emotion dims as a compile-time size (the sums over time stay in registers), and any
// other width.
RF_CLONES void within_speaker_25(const float* slab, double* part, index_t S, index_t T) {
  within_speaker<25>(slab, part, S, T, 25);
}

RF_CLONES void within_speaker_any(const float* slab, double* part, index_t S, index_t T, index_t D) {
  within_speaker<0>(slab, part, S, T, D);
}

}  // namespace

void spread_cpu(const float* x, double* sums, index_t N, index_t S, index_t T, index_t D) {
  const index_t stride = S * T * D;
  // Position blocks of FRDvs: 2 KB of every speaker's slab, in L2 between its two passes.
  constexpr index_t kBlock = 512;
  const index_t blocks = (stride + kBlock - 1) / kBlock;
  std::vector<double> dvs(blocks), within(2 * N);
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (index_t b = 0; b < blocks; ++b)
      dvs[b] = across_speakers(x, N, stride, b * kBlock, std::min(kBlock, stride - b * kBlock));
#pragma omp for schedule(dynamic, 1)
    for (index_t k = 0; k < N; ++k) {
      if (D == 25)
        within_speaker_25(x + k * stride, within.data() + 2 * k, S, T);
      else
        within_speaker_any(x + k * stride, within.data() + 2 * k, S, T, D);
    }
  }
  // The parts in a fixed order: the same sums whatever the thread count.
  sums[0] = sums[1] = sums[2] = 0.0;
  for (index_t k = 0; k < N; ++k) {
    sums[0] += within[2 * k];
    sums[2] += within[2 * k + 1];
  }
  for (index_t b = 0; b < blocks; ++b) sums[1] += dvs[b];
}

}  // namespace reactfast
