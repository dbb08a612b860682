// pybind11 module reactfast._C over raw buffers, no torch headers. A buffer argument is any object
// with a data_ptr() method (a torch tensor), a Python int address, or None (no buffer); sizes are
// Python ints. Python (reactfast.ops) validates every argument before calling in; these functions
// trust them. python/reactfast/_C.pyi lists the signatures.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "reactfast/add_layer_norm.h"
#include "reactfast/biased_attention.h"
#include "reactfast/ccc.h"
#include "cpu/isa.h"
#include "reactfast/cuda_runtime_status.h"
#include "reactfast/dropout.h"
#include "reactfast/dtw.h"
#include "reactfast/emotion_range.h"
#include "reactfast/frame_diff.h"
#include "reactfast/gelu_dropout.h"
#include "reactfast/spread.h"
#include "reactfast/tlcc.h"
#include "reactfast/weight_shift.h"

#if defined(REACTFAST_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;
using reactfast::index_t;

namespace {

// Pointers are read while the GIL is held, before it is released for the work. A buffer that says
// its element size (a tensor's element_size()) must hold elements of T's size: a kernel reading a
// bfloat16 tensor as float would read past its end (the Python layer checks dtypes; this is the
// last line).
template <typename T>
T* ptr(const py::handle& h) {
  if (h.is_none()) return nullptr;
  if (py::isinstance<py::int_>(h)) return reinterpret_cast<T*>(h.cast<std::uintptr_t>());
  if (py::hasattr(h, "element_size")) {
    const auto size = h.attr("element_size")().cast<std::size_t>();
    if (size != sizeof(T))
      throw std::invalid_argument("a buffer of " + std::to_string(size) + "-byte elements where the kernel reads " +
                                  std::to_string(sizeof(T)) + "-byte ones");
  }
  return reinterpret_cast<T*>(h.attr("data_ptr")().cast<std::uintptr_t>());
}

void* stream_of(std::uintptr_t stream) { return reinterpret_cast<void*>(stream); }

void check(const char* err, const char* what) {
  if (err != nullptr) throw std::runtime_error(std::string(what) + ": " + err);
}

#if !defined(REACTFAST_WITH_CUDA)
[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string(what) +
                           ": reactfast._C was built without CUDA (REACTFAST_CUDA=OFF or no nvcc)");
}
#endif

reactfast::AttnStrides strides_of(const py::handle& t) {
  auto s = t.cast<py::tuple>();
  if (s.size() != 3) throw std::invalid_argument("strides: (batch, head, time) element strides are needed");
  return reactfast::AttnStrides{s[0].cast<index_t>(), s[1].cast<index_t>(), s[2].cast<index_t>()};
}

reactfast::BiasedAttentionArgs attention_args(const py::tuple& shape, const py::handle& slopes, const py::handle& q0,
                                              const py::handle& start, const py::handle& length,
                                              int period, int ratio, int extra, int qperiod, float scale) {
  if (shape.size() != 5) throw std::invalid_argument("shape: (B, H, Tq, Tk, d) is needed");
  return reactfast::BiasedAttentionArgs{shape[0].cast<index_t>(), shape[1].cast<index_t>(), shape[2].cast<index_t>(),
                                        shape[3].cast<index_t>(), shape[4].cast<index_t>(), period, ratio, extra,
                                        qperiod, scale, ptr<const float>(slopes), ptr<const std::int32_t>(q0),
                                        ptr<const std::int32_t>(start), ptr<const std::int32_t>(length)};
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

using Buf = const py::object&;

// The buffers of a search over each query's candidates (CSR lists): queries x, targets y, and per
// query its best value and the candidate attaining it.
struct CandidateSearch {
  const float* x;
  const float* y;
  const index_t* offset;
  const index_t* index;
  double* best;
  index_t* arg;
  CandidateSearch(Buf x_, Buf y_, Buf offset_, Buf index_, Buf best_, Buf arg_)
      : x(ptr<const float>(x_)), y(ptr<const float>(y_)), offset(ptr<const index_t>(offset_)),
        index(ptr<const index_t>(index_)), best(ptr<double>(best_)), arg(ptr<index_t>(arg_)) {}
};

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

  m.def("cpu_isa", []() {
    const int isa = reactfast::lane_isa();
    return std::string(isa == 4 ? "x86-64-v4" : isa == 3 ? "x86-64-v3" : "baseline");
  }, "the instruction set of the CPU lane kernels in use (REACTFAST_CPU_ISA caps it)");

  m.def("biased_attention_fwd_cpu", [](Buf q, Buf k, Buf v, Buf out, Buf lse, Buf slopes, Buf q0, Buf start,
                                       Buf length, const py::tuple& shape, const py::tuple& strides, int period,
                                       int ratio, int extra, int qperiod, float scale) {
    const auto a = attention_args(shape, slopes, q0, start, length, period, ratio, extra, qperiod, scale);
    if (strides.size() != 4) throw std::invalid_argument("strides: one triple for each of q, k, v, out");
    const auto qs = strides_of(strides[0]), ks = strides_of(strides[1]), vs = strides_of(strides[2]),
               os = strides_of(strides[3]);
    auto pq = ptr<const float>(q), pk = ptr<const float>(k), pv = ptr<const float>(v);
    auto po = ptr<float>(out), pl = ptr<float>(lse);
    py::gil_scoped_release release;
    reactfast::biased_attention_fwd_cpu(a, pq, qs, pk, ks, pv, vs, po, os, pl);
  }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("slopes"), py::arg("q0"),
     py::arg("start"), py::arg("length"), py::arg("shape"), py::arg("strides"), py::arg("period"), py::arg("ratio"),
     py::arg("extra"), py::arg("qperiod"), py::arg("scale"));

  m.def("biased_attention_bwd_cpu", [](Buf dout, Buf q, Buf k, Buf v, Buf out, Buf lse, Buf dq, Buf dk, Buf dv,
                                       Buf slopes, Buf q0, Buf start, Buf length, const py::tuple& shape,
                                       const py::tuple& strides, int period, int ratio, int extra, int qperiod,
                                       float scale) {
    const auto a = attention_args(shape, slopes, q0, start, length, period, ratio, extra, qperiod, scale);
    if (strides.size() != 8)
      throw std::invalid_argument("strides: one triple for each of dout, q, k, v, out, dq, dk, dv");
    reactfast::AttnStrides st[8];
    for (int i = 0; i < 8; ++i) st[i] = strides_of(strides[i]);
    auto pd = ptr<const float>(dout), pq = ptr<const float>(q), pk = ptr<const float>(k), pv = ptr<const float>(v);
    auto po = ptr<const float>(out), pl = ptr<const float>(lse);
    auto pdq = ptr<float>(dq), pdk = ptr<float>(dk), pdv = ptr<float>(dv);
    py::gil_scoped_release release;
    reactfast::biased_attention_bwd_cpu(a, pd, st[0], pq, st[1], pk, st[2], pv, st[3], po, st[4], pl, pdq, st[5], pdk,
                                        st[6], pdv, st[7]);
  }, py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dq"),
     py::arg("dk"), py::arg("dv"), py::arg("slopes"), py::arg("q0"), py::arg("start"), py::arg("length"),
     py::arg("shape"), py::arg("strides"), py::arg("period"), py::arg("ratio"), py::arg("extra"), py::arg("qperiod"),
     py::arg("scale"));

  m.def("dropout_fwd_cpu", [](Buf x, Buf out, Buf keep, index_t n, std::uint32_t threshold, std::uint32_t key0,
                              std::uint32_t key1, float scale) {
    auto px = ptr<const float>(x);
    auto po = ptr<float>(out);
    auto pk = ptr<std::uint8_t>(keep);
    py::gil_scoped_release release;
    reactfast::dropout_fwd_cpu(px, po, pk, n, threshold, key0, key1, scale);
  }, py::arg("x"), py::arg("out"), py::arg("keep"), py::arg("n"), py::arg("threshold"), py::arg("key0"),
     py::arg("key1"), py::arg("scale"));

  m.def("dropout_bwd_cpu", [](Buf dy, Buf keep, Buf dx, index_t n, float scale) {
    auto pd = ptr<const float>(dy);
    auto pk = ptr<const std::uint8_t>(keep);
    auto po = ptr<float>(dx);
    py::gil_scoped_release release;
    reactfast::dropout_bwd_cpu(pd, pk, po, n, scale);
  }, py::arg("dy"), py::arg("keep"), py::arg("dx"), py::arg("n"), py::arg("scale"));

  m.def("gelu_dropout_fwd_cpu", [](Buf x, Buf out, Buf dgelu, index_t n, bool drop, std::uint32_t threshold,
                                   std::uint32_t key0, std::uint32_t key1, float scale) {
    auto px = ptr<const float>(x);
    auto po = ptr<float>(out), pg = ptr<float>(dgelu);
    py::gil_scoped_release release;
    reactfast::gelu_dropout_fwd_cpu(px, po, pg, n, drop, threshold, key0, key1, scale);
  }, py::arg("x"), py::arg("out"), py::arg("dgelu"), py::arg("n"), py::arg("drop"), py::arg("threshold"),
     py::arg("key0"), py::arg("key1"), py::arg("scale"));

  m.def("add_layer_norm_fwd_cpu", [](Buf x, Buf h, Buf w, Buf b, Buf out, Buf sum, Buf mean, Buf rstd, Buf keep,
                                     index_t rows, index_t D, bool drop, std::uint32_t threshold, std::uint32_t key0,
                                     std::uint32_t key1, float scale, float eps) {
    reactfast::AddNormArgs a;
    a.rows = rows, a.D = D, a.drop = drop, a.threshold = threshold, a.key0 = key0, a.key1 = key1, a.scale = scale;
    a.eps = eps;
    auto px = ptr<const float>(x), ph = ptr<const float>(h), pw = ptr<const float>(w), pb = ptr<const float>(b);
    auto po = ptr<float>(out), ps = ptr<float>(sum), pm = ptr<float>(mean), pr = ptr<float>(rstd);
    auto pk = ptr<std::uint8_t>(keep);
    py::gil_scoped_release release;
    reactfast::add_layer_norm_fwd_cpu(a, px, ph, pw, pb, po, ps, pm, pr, pk);
  }, py::arg("x"), py::arg("h"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("sum"), py::arg("mean"),
     py::arg("rstd"), py::arg("keep"), py::arg("rows"), py::arg("D"), py::arg("drop"), py::arg("threshold"),
     py::arg("key0"), py::arg("key1"), py::arg("scale"), py::arg("eps"));

  m.def("add_layer_norm_bwd_cpu", [](Buf dy, Buf sum, Buf mean, Buf rstd, Buf w, Buf keep, Buf dx, Buf dh, Buf dw,
                                     Buf db, index_t rows, index_t D, bool drop, float scale) {
    reactfast::AddNormArgs a;
    a.rows = rows, a.D = D, a.drop = drop, a.scale = scale;
    auto pd = ptr<const float>(dy), ps = ptr<const float>(sum), pm = ptr<const float>(mean);
    auto pr = ptr<const float>(rstd), pw = ptr<const float>(w);
    auto pk = ptr<const std::uint8_t>(keep);
    auto pdx = ptr<float>(dx), pdh = ptr<float>(dh), pdw = ptr<float>(dw), pdb = ptr<float>(db);
    py::gil_scoped_release release;
    reactfast::add_layer_norm_bwd_cpu(a, pd, ps, pm, pr, pw, pk, pdx, pdh, pdw, pdb);
  }, py::arg("dy"), py::arg("sum"), py::arg("mean"), py::arg("rstd"), py::arg("weight"), py::arg("keep"),
     py::arg("dx"), py::arg("dh"), py::arg("dweight"), py::arg("dbias"), py::arg("rows"), py::arg("D"),
     py::arg("drop"), py::arg("scale"));

  m.def("frame_diff_cpu", [](Buf x, Buf out, index_t B, index_t T, index_t D) {
    auto px = ptr<const float>(x);
    auto po = ptr<float>(out);
    py::gil_scoped_release release;
    reactfast::frame_diff_cpu(px, po, B, T, D);
  }, py::arg("x"), py::arg("out"), py::arg("B"), py::arg("T"), py::arg("D"));

  m.def("frame_diff_cuda", [](Buf x, Buf out, index_t B, index_t T, index_t D, std::uintptr_t stream) {
#if defined(REACTFAST_WITH_CUDA)
    auto px = ptr<const float>(x);
    auto po = ptr<float>(out);
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::frame_diff_cuda(px, po, B, T, D, stream_of(stream));
    }
    check(err, "frame_diff_cuda");
#else
    no_cuda("frame_diff_cuda");
#endif
  }, py::arg("x"), py::arg("out"), py::arg("B"), py::arg("T"), py::arg("D"), py::arg("stream") = 0);

  m.def("dtw_pairs_cpu", [](Buf x, Buf y, Buf out, index_t P, index_t Tx, index_t Ty, index_t D) {
    auto px = ptr<const float>(x);
    auto py_ = ptr<const float>(y);
    auto po = ptr<double>(out);
    py::gil_scoped_release release;
    reactfast::dtw_pairs_cpu(px, py_, po, P, Tx, Ty, D);
  }, "DTW of each pair (x[p], y[p])");

  m.def("weighted_dtw_min_cpu", [](Buf x, Buf y, Buf cand_offset, Buf cand_index, index_t M, index_t G, index_t Tx,
                                   index_t Ty, index_t D, const py::list& groups, bool abandon, Buf out_min,
                                   Buf out_arg) {
    const auto g = make_groups(groups);
    const CandidateSearch c(x, y, cand_offset, cand_index, out_min, out_arg);
    index_t cells = 0;
    {
      py::gil_scoped_release release;
      reactfast::weighted_dtw_min_cpu(c.x, c.y, c.offset, c.index, M, G, Tx, Ty, D, g, abandon, c.best, c.arg,
                                      &cells);
    }
    return cells;
  }, "min over candidates of the weighted group DTW; returns the number of DP cells computed");

  m.def("weighted_dtw_min_warp_emulated_cpu", [](Buf x, Buf y, Buf cand_offset, Buf cand_index, index_t M, index_t Tx,
                                                 index_t Ty, index_t D, const py::list& groups, bool abandon,
                                                 int warps, Buf out_min, Buf out_arg) {
    const auto g = make_groups(groups);
    if (D > 32 || warps < 1 || warps > 8) throw std::invalid_argument("D must be <= 32 and warps in [1, 8]");
    const CandidateSearch c(x, y, cand_offset, cand_index, out_min, out_arg);
    py::gil_scoped_release release;
    return reactfast::weighted_dtw_min_warp_emulated(c.x, c.y, c.offset, c.index, M, Tx, Ty, D, g, abandon, warps,
                                                     c.best, c.arg);
  }, "the CUDA warp-wavefront DTW's schedule emulated on the CPU (for tests); returns the pairs abandoned");

  m.def("weighted_dtw_min_cuda", [](Buf x, Buf y, Buf cand_offset, Buf cand_index, index_t M, index_t Tx, index_t Ty,
                                    index_t D, const py::list& groups, bool abandon, int warps, Buf out_min,
                                    Buf out_arg, std::uintptr_t stream) {
#if defined(REACTFAST_WITH_CUDA)
    const auto g = make_groups(groups);
    const CandidateSearch c(x, y, cand_offset, cand_index, out_min, out_arg);
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::weighted_dtw_min_cuda(c.x, c.y, c.offset, c.index, M, Tx, Ty, D, g, abandon, warps, c.best,
                                             c.arg, stream_of(stream));
    }
    check(err, "weighted_dtw_min_cuda");
#else
    no_cuda("weighted_dtw_min_cuda");
#endif
  }, "min over candidates of the weighted group DTW on the GPU (warp wavefront, D <= 32)");

  m.def("group_dtw_pairs_cuda", [](Buf x, Buf y, Buf qi, Buf ci, index_t P, index_t Tx, index_t Ty, index_t D,
                                   const py::list& groups, Buf out, std::uintptr_t stream) {
#if defined(REACTFAST_WITH_CUDA)
    const auto g = make_groups(groups);
    auto px = ptr<const float>(x);
    auto py_ = ptr<const float>(y);
    auto pq = ptr<const index_t>(qi);
    auto pc = ptr<const index_t>(ci);
    auto po = ptr<double>(out);
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::group_dtw_pairs_cuda(px, py_, pq, pc, P, Tx, Ty, D, g, po, stream_of(stream));
    }
    check(err, "group_dtw_pairs_cuda");
#else
    no_cuda("group_dtw_pairs_cuda");
#endif
  }, "per-group DTW of the pairs (x[qi[p]], y[ci[p]]) on the GPU");

  m.def("ccc_pairs_cpu", [](Buf x, Buf y, Buf out, index_t P, index_t T, index_t D) {
    auto px = ptr<const float>(x);
    auto py_ = ptr<const float>(y);
    auto po = ptr<double>(out);
    py::gil_scoped_release release;
    reactfast::ccc_pairs_cpu(px, py_, po, P, T, D);
  }, "per-dim CCC of each pair (x[p], y[p])");

  m.def("ccc_max_cpu", [](Buf x, Buf y, Buf cand_offset, Buf cand_index, index_t M, index_t G, index_t T, index_t D,
                          Buf out_max, Buf out_arg) {
    const CandidateSearch c(x, y, cand_offset, cand_index, out_max, out_arg);
    py::gil_scoped_release release;
    reactfast::ccc_max_cpu(c.x, c.y, c.offset, c.index, M, G, T, D, c.best, c.arg);
  }, "max over candidates of the mean-over-dims CCC");

  m.def("tlcc_cpu", [](Buf x, Buf y, Buf rs, index_t M, index_t T, index_t D, index_t L) {
    auto px = ptr<const float>(x);
    auto py_ = ptr<const float>(y);
    auto pr = ptr<float>(rs);
    py::gil_scoped_release release;
    reactfast::tlcc_cpu(px, py_, pr, M, T, D, L);
  }, "lagged correlation curves rs (M, 2L + 1)");

  m.def("emotion_range_cpu", [](Buf x, index_t rows, double tol, Buf counts) {
    auto px = ptr<const float>(x);
    auto pc = ptr<std::int64_t>(counts);
    py::gil_scoped_release release;
    reactfast::emotion_range_cpu(px, rows, tol, pc);
  }, "counts of REACT emotion values outside their ranges (AU low, AU high, VA, expression low, row sums)");

  m.def("spread_cpu", [](Buf x, Buf sums, index_t N, index_t S, index_t T, index_t D) {
    auto px = ptr<const float>(x);
    auto ps = ptr<double>(sums);
    py::gil_scoped_release release;
    reactfast::spread_cpu(px, ps, N, S, T, D);
  }, "the spread metrics' sums of squared deviations (FRDiv, FRDvs, FRVar)");

  m.def("weight_shift_cpu_build", &reactfast::weight_shift_cpu_build,
        "the build the weight-shift kernels run here: avx512, avx2 or baseline");

  m.def("weight_shift_fwd_cpu", [](Buf x, Buf w, Buf dw, Buf bias, Buf y, index_t B, index_t L, index_t K,
                                   index_t N) {
    auto px = ptr<const float>(x);
    auto pw = ptr<const float>(w);
    auto pdw = ptr<const float>(dw);
    auto pb = ptr<const float>(bias);
    auto py_ = ptr<float>(y);
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::weight_shift_fwd_cpu(px, pw, pdw, pb, py_, B, L, K, N);
    }
    check(err, "weight_shift_fwd_cpu");
  }, "y[b] = x[b] (W + dW[b])^T + bias; bias may be None");

  m.def("weight_shift_bwd_dx_cpu", [](Buf dy, Buf w, Buf dw, Buf dx, index_t B, index_t L, index_t K, index_t N) {
    auto pdy = ptr<const float>(dy);
    auto pw = ptr<const float>(w);
    auto pdw = ptr<const float>(dw);
    auto pdx = ptr<float>(dx);
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::weight_shift_bwd_dx_cpu(pdy, pw, pdw, pdx, B, L, K, N);
    }
    check(err, "weight_shift_bwd_dx_cpu");
  }, "dx[b] = dy[b] (W + dW[b])");

  m.def("weight_shift_bwd_dshift_cpu", [](Buf dy, Buf x, Buf ddw, index_t B, index_t L, index_t K, index_t N) {
    auto pdy = ptr<const float>(dy);
    auto px = ptr<const float>(x);
    auto pddw = ptr<float>(ddw);
    const char* err;
    {
      py::gil_scoped_release release;
      err = reactfast::weight_shift_bwd_dshift_cpu(pdy, px, pddw, B, L, K, N);
    }
    check(err, "weight_shift_bwd_dshift_cpu");
  }, "d(dW)[b] = dy[b]^T x[b]");
}
