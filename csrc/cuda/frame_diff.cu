#include <cuda_runtime.h>

#include "reactfast/frame_diff.h"

namespace reactfast {
namespace {

__global__ void frame_diff_kernel(const float* x, float* out, index_t B, index_t T, index_t D) {
  const index_t n = B * (T - 1) * D;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t d = i % D;
    const index_t r = i / D;
    const index_t b = r / (T - 1);
    const index_t t = r % (T - 1);
    out[i] = frame_diff_at(x, b, t, d, T, D);
  }
}

}  // namespace

const char* frame_diff_cuda(const float* x, float* out, index_t B, index_t T, index_t D,
                            void* stream) {
  const index_t n = B * (T - 1) * D;
  if (n <= 0) return nullptr;
  const int threads = 256;
  const index_t blocks_needed = (n + threads - 1) / threads;
  const int blocks = static_cast<int>(blocks_needed < 65535 ? blocks_needed : 65535);
  frame_diff_kernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(x, out, B, T, D);
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace reactfast
