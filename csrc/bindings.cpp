// pybind11 module reactfast._C: raw pointers and sizes as Python ints, no torch headers.
// Python (ops/) validates every argument before calling in; these functions trust them.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "reactfast/cuda_runtime_status.h"
#include "reactfast/frame_diff.h"

#if defined(REACTFAST_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;
using reactfast::index_t;

namespace {

template <typename T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

#if defined(REACTFAST_WITH_CUDA)
void check_cuda(const char* err, const char* what) {
  if (err != nullptr) throw std::runtime_error(std::string(what) + ": " + err);
}
#endif

[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string(what) +
                           ": reactfast._C was built without CUDA (REACTFAST_CUDA=OFF or no nvcc)");
}

}  // namespace

#if !defined(REACTFAST_WITH_CUDA)
namespace reactfast {
bool cuda_runtime_status(std::string& reason) {
  reason = "reactfast._C was built without CUDA kernels (REACTFAST_CUDA=OFF or nvcc not found)";
  return false;
}
int cuda_device_count() { return 0; }
}  // namespace reactfast
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "reactfast native kernels (CPU/OpenMP and CUDA) over raw buffers";

#if defined(REACTFAST_WITH_CUDA)
  m.attr("compiled_with_cuda") = true;
#else
  m.attr("compiled_with_cuda") = false;
#endif
#if defined(REACTFAST_OPENMP)
  m.attr("compiled_with_openmp") = true;
#else
  m.attr("compiled_with_openmp") = false;
#endif

  m.def("cuda_status", []() {
    std::string reason;
    bool ok = reactfast::cuda_runtime_status(reason);
    return py::make_tuple(ok, reason);
  }, "(available, reason): whether the CUDA kernels can run on this machine");
  m.def("cuda_device_count", &reactfast::cuda_device_count);
  m.def("openmp_max_threads", []() {
#if defined(REACTFAST_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
  });

  m.def("frame_diff_cpu", [](std::uintptr_t x, std::uintptr_t out, index_t B, index_t T, index_t D) {
    py::gil_scoped_release release;
    reactfast::frame_diff_cpu(ptr<const float>(x), ptr<float>(out), B, T, D);
  }, py::arg("x"), py::arg("out"), py::arg("B"), py::arg("T"), py::arg("D"));

  m.def("frame_diff_cuda", [](std::uintptr_t x, std::uintptr_t out, index_t B, index_t T, index_t D,
                              std::uintptr_t stream) {
#if defined(REACTFAST_WITH_CUDA)
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::frame_diff_cuda(ptr<const float>(x), ptr<float>(out), B, T, D,
                                       reinterpret_cast<void*>(stream));
    }
    check_cuda(err, "frame_diff_cuda");
#else
    no_cuda("frame_diff_cuda");
#endif
  }, py::arg("x"), py::arg("out"), py::arg("B"), py::arg("T"), py::arg("D"), py::arg("stream") = 0);
}
