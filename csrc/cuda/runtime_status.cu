#include <cuda_runtime.h>

#include <string>

#include "reactfast/cuda_runtime_status.h"

namespace reactfast {

bool cuda_runtime_status(std::string& reason) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice) {
    cudaGetLastError();
    reason = err == cudaErrorNoDevice
                 ? "no CUDA device is visible (cudaErrorNoDevice)"
                 : "no usable NVIDIA driver (cudaErrorInsufficientDriver): this machine has no GPU "
                   "driver, or one older than the CUDA runtime the extension was built with";
    return false;
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    reason = std::string("CUDA runtime error: ") + cudaGetErrorString(err);
    return false;
  }
  if (count == 0) {
    reason = "no CUDA device is visible";
    return false;
  }
  reason = "ok";
  return true;
}

int cuda_device_count() {
  std::string reason;
  if (!cuda_runtime_status(reason)) return 0;
  int count = 0;
  cudaGetDeviceCount(&count);
  return count;
}

}  // namespace reactfast
