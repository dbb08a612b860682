// pybind11 module reactfast._C: raw pointers and sizes as Python ints, no torch headers.
// Python (ops/) validates every argument before calling in; these functions trust them.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "reactfast/ccc.h"
#include "reactfast/cuda_runtime_status.h"
#include "reactfast/dtw.h"
#include "reactfast/frame_diff.h"
#include "reactfast/tlcc.h"
#include "reactfast/weight_shift.h"

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

void check_cpu(const char* err) {
  if (err != nullptr) throw std::runtime_error(err);
}

[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string(what) +
                           ": reactfast._C was built without CUDA (REACTFAST_CUDA=OFF or no nvcc)");
}

reactfast::DtwGroups make_groups(const py::list& spec) {
  reactfast::DtwGroups g{};
  if (spec.size() == 0 || spec.size() > static_cast<size_t>(reactfast::kMaxDtwGroups))
    throw std::invalid_argument("groups: between 1 and 3 (start, end, weight) triples are needed");
  g.count = static_cast<int>(spec.size());
  for (size_t i = 0; i < spec.size(); ++i) {
    auto t = spec[i].cast<py::tuple>();
    g.start[i] = t[0].cast<int>();
    g.end[i] = t[1].cast<int>();
    g.weight[i] = t[2].cast<double>();
  }
  return g;
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

  m.def("dtw_pairs_cpu", [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t out, index_t P, index_t Tx,
                            index_t Ty, index_t D) {
    py::gil_scoped_release release;
    reactfast::dtw_pairs_cpu(ptr<const float>(x), ptr<const float>(y), ptr<double>(out), P, Tx, Ty, D);
  });

  m.def("weighted_dtw_min_cpu", [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t cand_offset,
                                   std::uintptr_t cand_index, index_t M, index_t G, index_t Tx, index_t Ty,
                                   index_t D, const py::list& groups, bool abandon, std::uintptr_t out_min,
                                   std::uintptr_t out_arg) {
    const auto g = make_groups(groups);
    index_t cells = 0;
    {
      py::gil_scoped_release release;
      reactfast::weighted_dtw_min_cpu(ptr<const float>(x), ptr<const float>(y), ptr<const index_t>(cand_offset),
                                      ptr<const index_t>(cand_index), M, G, Tx, Ty, D, g, abandon,
                                      ptr<double>(out_min), ptr<index_t>(out_arg), &cells);
    }
    return cells;
  }, "min over candidates of the weighted group DTW; returns the number of DP cells computed");

  m.def("group_dtw_pairs_cuda", [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t qi, std::uintptr_t ci,
                                   index_t P, index_t Tx, index_t Ty, index_t D, const py::list& groups,
                                   std::uintptr_t out, std::uintptr_t stream) {
#if defined(REACTFAST_WITH_CUDA)
    const auto g = make_groups(groups);
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::group_dtw_pairs_cuda(ptr<const float>(x), ptr<const float>(y), ptr<const index_t>(qi),
                                            ptr<const index_t>(ci), P, Tx, Ty, D, g, ptr<double>(out),
                                            reinterpret_cast<void*>(stream));
    }
    check_cuda(err, "group_dtw_pairs_cuda");
#else
    no_cuda("group_dtw_pairs_cuda");
#endif
  });

  m.def("ccc_pairs_cpu", [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t out, index_t P, index_t T,
                            index_t D) {
    py::gil_scoped_release release;
    reactfast::ccc_pairs_cpu(ptr<const float>(x), ptr<const float>(y), ptr<double>(out), P, T, D);
  });

  m.def("ccc_max_cpu", [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t cand_offset, std::uintptr_t cand_index,
                          index_t M, index_t G, index_t T, index_t D, std::uintptr_t out_max, std::uintptr_t out_arg) {
    py::gil_scoped_release release;
    reactfast::ccc_max_cpu(ptr<const float>(x), ptr<const float>(y), ptr<const index_t>(cand_offset),
                           ptr<const index_t>(cand_index), M, G, T, D, ptr<double>(out_max), ptr<index_t>(out_arg));
  });

  m.def("tlcc_cpu", [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t rs, index_t M, index_t T, index_t D,
                       index_t L) {
    py::gil_scoped_release release;
    reactfast::tlcc_cpu(ptr<const float>(x), ptr<const float>(y), ptr<float>(rs), M, T, D, L);
  });
  m.def("weight_shift_cpu_supported", &reactfast::weight_shift_cpu_supported,
        "whether the AVX-512 weight-shift kernels can run on this processor");

  m.def("weight_shift_fwd_cpu", [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t dw, std::uintptr_t bias,
                                   std::uintptr_t y, index_t B, index_t L, index_t K, index_t N) {
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::weight_shift_fwd_cpu(ptr<const float>(x), ptr<const float>(w), ptr<const float>(dw),
                                            ptr<const float>(bias), ptr<float>(y), B, L, K, N);
    }
    check_cpu(err);
  }, "y[b] = x[b] (W + dW[b])^T + bias; bias may be 0 (none)");

  m.def("weight_shift_bwd_dx_cpu", [](std::uintptr_t dy, std::uintptr_t w, std::uintptr_t dw, std::uintptr_t dx,
                                      index_t B, index_t L, index_t K, index_t N) {
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::weight_shift_bwd_dx_cpu(ptr<const float>(dy), ptr<const float>(w), ptr<const float>(dw),
                                               ptr<float>(dx), B, L, K, N);
    }
    check_cpu(err);
  }, "dx[b] = dy[b] (W + dW[b])");

  m.def("weight_shift_bwd_dshift_cpu", [](std::uintptr_t dy, std::uintptr_t x, std::uintptr_t ddw, index_t B,
                                          index_t L, index_t K, index_t N) {
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::weight_shift_bwd_dshift_cpu(ptr<const float>(dy), ptr<const float>(x), ptr<float>(ddw), B, L,
                                                   K, N);
    }
    check_cpu(err);
  }, "d(dW)[b] = dy[b]^T x[b]");
}
