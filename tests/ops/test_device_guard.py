"""The package's own kernels run on the device of their tensors, not on whichever CUDA device is
current: Triton and the native CUDA kernels launch on the current device, so a model on cuda:1 (or
a torchrun process whose device was never set) would launch them on cuda:0. Every kernel entry
point and native CUDA call is made under ``_backend.device_guard``. On a machine with two GPUs
each op runs on cuda:1 while cuda:0 is current, against its reference; elsewhere the same calls run
on the CPU (their default backends against the reference) and the entry points are checked to be
guarded."""

import importlib
import inspect
import pkgutil

import pytest
import torch

from reactfast import _backend, kernels, ops
from reactfast.reference import biased_attention as ref_attention
from reactfast.reference import ccc as ref_ccc
from reactfast.reference import ddim as ref_ddim
from reactfast.reference import dtw as ref_dtw
from reactfast.reference import frame_diff as ref_frame_diff
from reactfast.reference import tlcc as ref_tlcc
from reactfast.reference import weight_shift as ref_weight_shift
from reactfast.testing import assert_rel_close

TWO_GPUS = torch.cuda.is_available() and torch.cuda.device_count() >= 2


def _kernel_entry_points():
    """Public functions of the Triton kernel modules that launch a kernel."""
    found = []
    for info in pkgutil.iter_modules(kernels.__path__):
        if info.name == "sm90":
            continue
        module = importlib.import_module(f"reactfast.kernels.{info.name}")
        for name, fn in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != module.__name__:
                continue
            source = inspect.getsource(inspect.unwrap(fn))
            if "](" in source or "launch(" in source:
                found.append((f"{info.name}.{name}", fn))
    return found


def test_every_kernel_entry_point_launches_on_its_tensors_device():
    entries = _kernel_entry_points()
    assert len(entries) >= 10, [name for name, _ in entries]
    unguarded = [name for name, fn in entries if not getattr(fn, "on_tensor_device", False)]
    assert not unguarded, f"kernel entry points without @on_tensor_device: {unguarded}"


def test_every_native_cuda_call_is_guarded():
    """Each call of a native CUDA kernel (``native().*_cuda(``) in the ops sits directly under a
    ``with _backend.device_guard(...)``."""
    import re

    calls, unguarded = 0, []
    for info in pkgutil.iter_modules(ops.__path__):
        module = importlib.import_module(f"reactfast.ops.{info.name}")
        lines = inspect.getsource(module).splitlines()
        for i, line in enumerate(lines):
            if re.search(r"native\(\)\.\w+_cuda\(", line):
                calls += 1
                if "with _backend.device_guard(" not in lines[i - 1]:
                    unguarded.append(f"ops/{info.name}.py:{i + 1}")
    assert calls >= 5 and not unguarded, (calls, unguarded)


def test_device_guard_leaves_cpu_tensors_alone():
    guard = _backend.device_guard(torch.zeros(1))
    with guard:
        pass
    assert not isinstance(guard, torch.cuda.device)


def _cases(device, fast):
    """(name, fast output, float64 reference, relative tolerance) for each op family on ``device``;
    ``fast`` maps an op to the backend to test (None: the device's default). The references are the
    ``reactfast.reference`` oracles on float64 copies of the same inputs."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape, requires_grad=False):
        return torch.randn(*shape, generator=g).to(device).requires_grad_(requires_grad)

    def f64(*inputs):
        return [t.detach().double().requires_grad_(t.requires_grad) for t in inputs]

    def grads(fn, *inputs):
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
        result = [out.detach()] + [t.grad.clone() for t in inputs]
        for t in inputs:
            t.grad = None
        return torch.cat([r.flatten() for r in result])

    x = rand(3, 20, 6)
    yield "frame_diff", ops.frame_diff(x, backend=fast.get("frame_diff")), ref_frame_diff.frame_diff(x.double()), 1e-5

    q, k, v = (rand(2, 4, 16, 16, requires_grad=True) for _ in range(3))
    fused = grads(lambda *t: ops.biased_attention(*t, backend=fast.get("biased_attention")), q, k, v)
    yield "biased_attention", fused, grads(ref_attention.biased_attention, *f64(q, k, v)), 1e-3

    xs, w, dw = (rand(*shape, requires_grad=True) for shape in ((4, 7, 16), (12, 16), (4, 12, 16)))
    fused = grads(lambda *t: ops.weight_shift_linear(*t, backend=fast.get("weight_shift")), xs, w, dw)
    yield "weight_shift", fused, grads(ref_weight_shift.weight_shift_linear, *f64(xs, w, dw)), 1e-3

    xt, eps, coef = rand(5, 9, 3), rand(5, 9, 3), torch.rand(5, 5, generator=g).to(device)
    yield ("ddim", torch.cat(ops.ddim_step(xt, eps, coef, backend=fast.get("ddim"))),
           torch.cat(ref_ddim.ddim_step(*f64(xt, eps, coef))), 1e-5)

    pred, gt = rand(4, 30, 25), rand(3, 30, 25)
    candidates = (torch.tensor([0, 2, 3, 5, 6], device=device), torch.tensor([0, 1, 2, 0, 2, 1], device=device))
    yield ("ccc_max", ops.ccc_max(pred, gt, candidates, backend=fast.get("ccc"))[0],
           ref_ccc.ccc_max(*f64(pred, gt), candidates)[0], 1e-5)
    yield ("tlcc", ops.tlcc(pred[:3], gt, 5, backend=fast.get("tlcc")), ref_tlcc.tlcc(*f64(pred[:3], gt), 5), 1e-5)
    yield "dtw", ops.dtw(pred[:3], gt, backend=fast.get("dtw")), ref_dtw.dtw(*f64(pred[:3], gt)), 1e-5
    yield ("weighted_dtw_min", ops.weighted_dtw_min(pred, gt, candidates, backend=fast.get("dtw"))[0],
           ref_dtw.weighted_dtw_min(*f64(pred, gt), candidates)[0], 1e-5)


def _check(device, fast):
    names = []
    for name, out, ref, tol in _cases(device, fast):
        assert out.device == torch.device(device), name
        assert_rel_close(name, ref, out, tol)
        names.append(name)
    assert len(names) == 8


def test_ops_on_the_cpu_with_their_default_backends():
    _check("cpu", {})


@pytest.mark.skipif(not TWO_GPUS, reason="needs two CUDA devices")
def test_ops_on_the_second_gpu_while_the_first_is_current():
    fast = {"frame_diff": "cuda", "biased_attention": "triton", "weight_shift": "triton", "ddim": "triton",
            "ccc": "triton", "tlcc": "triton", "dtw": "cuda"}
    with torch.cuda.device(0):
        _check("cuda:1", fast)
        _check("cuda:1", dict(fast, frame_diff="triton"))
