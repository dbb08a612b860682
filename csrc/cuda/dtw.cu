// Group DTW on the GPU: one block per (pair, group), anti-diagonal wavefront over the DP with
// three rotating diagonals in shared memory; many pairs per launch.
#include <cuda_runtime.h>

#include <cmath>

#include "reactfast/dtw.h"

namespace reactfast {
namespace {

constexpr int kThreads = 256;

__global__ void group_dtw_kernel(const float* __restrict__ x, const float* __restrict__ y,
                                 const index_t* __restrict__ qi, const index_t* __restrict__ ci, index_t Tx,
                                 index_t Ty, index_t D, DtwGroups groups, double* __restrict__ out) {
  extern __shared__ double diag[];  // 3 x Tx: diagonals k - 2, k - 1, k
  const index_t pair = blockIdx.x;
  const int g = blockIdx.y;
  const float* xp = x + qi[pair] * Tx * D;
  const float* yp = y + ci[pair] * Ty * D;
  const int start = groups.start[g], end = groups.end[g];
  double* d2 = diag;
  double* d1 = diag + Tx;
  double* d0 = diag + 2 * Tx;
  const double inf = INFINITY;
  for (index_t k = 0; k < Tx + Ty - 1; ++k) {
    const index_t i_lo = k - Ty + 1 > 0 ? k - Ty + 1 : 0;
    const index_t i_hi = k < Tx - 1 ? k : Tx - 1;
    for (index_t i = i_lo + threadIdx.x; i <= i_hi; i += blockDim.x) {
      const index_t j = k - i;
      const double c = dtw_local_cost(xp + i * D, yp + j * D, start, end);
      double best;
      if (i == 0 && j == 0) {
        best = 0.0;
      } else {
        const double up = i > 0 ? d1[i - 1] : inf;                // (i-1, j) on diagonal k-1
        const double left = j > 0 ? d1[i] : inf;                  // (i, j-1) on diagonal k-1
        const double corner = (i > 0 && j > 0) ? d2[i - 1] : inf;  // (i-1, j-1) on diagonal k-2
        best = fmin(fmin(up, left), corner);
      }
      d0[i] = c + best;
    }
    __syncthreads();
    double* tmp = d2;
    d2 = d1;
    d1 = d0;
    d0 = tmp;
  }
  if (threadIdx.x == 0) out[pair * groups.count + g] = sqrt(d1[Tx - 1]);
}

}  // namespace

const char* group_dtw_pairs_cuda(const float* x, const float* y, const index_t* qi, const index_t* ci, index_t P,
                                 index_t Tx, index_t Ty, index_t D, const DtwGroups& groups, double* out,
                                 void* stream) {
  if (P == 0) return nullptr;
  const size_t shared = 3 * static_cast<size_t>(Tx) * sizeof(double);
  if (shared > 48 * 1024) return "group_dtw_pairs_cuda: sequences longer than 2048 frames are not supported";
  dim3 grid(static_cast<unsigned>(P), static_cast<unsigned>(groups.count));
  group_dtw_kernel<<<grid, kThreads, shared, static_cast<cudaStream_t>(stream)>>>(x, y, qi, ci, Tx, Ty, D, groups,
                                                                                   out);
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace reactfast
