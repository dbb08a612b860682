// Group DTW on the GPU. The FRDist path (D <= 32) is the warp-wavefront kernel of
// reactfast/dtw_warp.h, further down; for wider features, one block per (pair, group), an
// anti-diagonal wavefront over the DP with three rotating diagonals in shared memory.
#include <cuda_runtime.h>

#include <cmath>

#include "reactfast/dtw.h"
#include "reactfast/dtw_warp.h"

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

// The warp-wavefront kernel (reactfast/dtw_warp.h): one block per query, each warp taking the
// query's candidates in turn; the query's best value in shared memory for abandoning; the block's
// least (value, list position) written once.
namespace reactfast {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxWarps = 8;

template <class L>
struct CudaWarp {
  warp_dtw::Lane<L> s;
  int id;
  const volatile double* best_value;

  __device__ int lo() const { return id; }
  __device__ int hi() const { return id + 1; }
  __device__ warp_dtw::Lane<L>& lane(int) { return s; }
  __device__ void shift_up() {
#pragma unroll
    for (int g = 0; g < warp_dtw::kGroups; ++g) s.up[g] = __shfl_up_sync(kFullMask, s.bot[g], 1);
  }
  __device__ void sync() { __syncwarp(); }
  __device__ double from_lane(double v, int l) const { return __shfl_sync(kFullMask, v, l); }
  // Lane 0's reading for every lane, so that the warp decides as one.
  __device__ double best() const { return __shfl_sync(kFullMask, *best_value, 0); }
};

// Non-negative doubles order as their bit patterns, so atomicMin on the bits is a min on values.
__device__ void atomic_min_nonneg(double* address, double v) {
  atomicMin(reinterpret_cast<unsigned long long*>(address), static_cast<unsigned long long>(__double_as_longlong(v)));
}

template <class L>
__global__ void __launch_bounds__(warp_dtw::kWarp* kMaxWarps)
    weighted_dtw_min_warp_kernel(const float* __restrict__ x, const float* __restrict__ y,
                                 const index_t* __restrict__ offset, const index_t* __restrict__ index, index_t Tx,
                                 index_t Ty, index_t D, DtwGroups groups, bool abandon, double* __restrict__ out_min,
                                 index_t* __restrict__ out_arg) {
  // Each warp's border rows (kGroups x Ty doubles, when the query takes several passes), then each
  // warp's candidate ring.
  extern __shared__ double shared[];
  __shared__ double best;
  __shared__ double warp_best[kMaxWarps];
  __shared__ index_t warp_pos[kMaxWarps];
  const index_t m = blockIdx.x;
  const int warps = blockDim.x / warp_dtw::kWarp;
  const int k = threadIdx.x / warp_dtw::kWarp;
  const int lane = threadIdx.x % warp_dtw::kWarp;
  if (threadIdx.x == 0) best = INFINITY;
  __syncthreads();
  CudaWarp<L> w;
  w.id = lane;
  w.best_value = &best;
  double* border = shared + k * (warp_dtw::border_bytes<L>(Tx, Ty) / sizeof(double));
  float* ring = reinterpret_cast<float*>(shared + warps * (warp_dtw::border_bytes<L>(Tx, Ty) / sizeof(double))) +
                k * (warp_dtw::ring_bytes(D) / sizeof(float));
  double mine = INFINITY;
  index_t pos = -1;
  const index_t c1 = offset[m + 1];
  for (index_t c = offset[m] + k; c < c1; c += warps) {
    const double v = warp_dtw::pair_value<L>(w, x + m * Tx * D, y + index[c] * Ty * D, Tx, Ty, D, groups,
                                             border, ring, abandon);
    if (v < mine) {  // a warp's candidates come in list order: the first of equal values stays
      mine = v;
      pos = c;
    }
    if (lane == 0 && v < INFINITY) atomic_min_nonneg(&best, v);
  }
  if (lane == 0) {
    warp_best[k] = mine;
    warp_pos[k] = pos;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const index_t at = warp_dtw::least_first(warp_best, warp_pos, warps, &out_min[m]);
    out_arg[m] = at < 0 ? -1 : index[at];
  }
}

template <class L>
const char* launch_warp_kernel(const float* x, const float* y, const index_t* offset, const index_t* index, index_t M,
                               index_t Tx, index_t Ty, index_t D, const DtwGroups& groups, bool abandon, int warps,
                               double* out_min, index_t* out_arg, cudaStream_t stream) {
  // As many warps as the shared memory allows (the border rows take 24 bytes a candidate frame).
  constexpr size_t kSharedLimit = 200 * 1024;
  const size_t per_warp = warp_dtw::border_bytes<L>(Tx, Ty) + warp_dtw::ring_bytes(D);
  while (warps > 1 && warps * per_warp > kSharedLimit) --warps;
  const size_t shared = warps * per_warp;
  if (shared > kSharedLimit)
    return "weighted_dtw_min_cuda: candidates longer than about 8,000 frames are not supported";
  auto kernel = weighted_dtw_min_warp_kernel<L>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(shared));
  if (err != cudaSuccess) return cudaGetErrorString(err);
  kernel<<<static_cast<unsigned>(M), warp_dtw::kWarp * warps, shared, stream>>>(x, y, offset, index, Tx, Ty, D,
                                                                               groups, abandon, out_min, out_arg);
  err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* weighted_dtw_min_cuda(const float* x, const float* y, const index_t* cand_offset,
                                  const index_t* cand_index, index_t M, index_t Tx, index_t Ty, index_t D,
                                  const DtwGroups& groups, bool abandon, int warps, double* out_min,
                                  index_t* out_arg, void* stream) {
  if (M == 0) return nullptr;
  if (D > warp_dtw::AnyLayout::kDims) return "weighted_dtw_min_cuda: at most 32 feature dims";
  if (warps < 1 || warps > kMaxWarps) return "weighted_dtw_min_cuda: warps must be in [1, 8]";
  if (M > 0x7fffffff) return "weighted_dtw_min_cuda: at most 2^31 - 1 queries per launch";
  auto s = static_cast<cudaStream_t>(stream);
  if (warp_dtw::is_react_layout(groups, D))
    return launch_warp_kernel<warp_dtw::ReactLayout>(x, y, cand_offset, cand_index, M, Tx, Ty, D, groups, abandon,
                                                     warps, out_min, out_arg, s);
  return launch_warp_kernel<warp_dtw::AnyLayout>(x, y, cand_offset, cand_index, M, Tx, Ty, D, groups, abandon, warps,
                                                 out_min, out_arg, s);
}

}  // namespace reactfast
