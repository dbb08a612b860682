import pytest
import torch

from reactfast import _backend
from reactfast.ops import frame_diff
from reactfast.ops.frame_diff import IMPLEMENTED
from reactfast.reference.frame_diff import frame_diff as frame_diff_ref
from reactfast.testing import assert_close, assert_rel_close
from tests.conftest import HAS_CUDA, TRITON_DEVICE, usable_backends

CASES = [(1, 2, 1), (3, 7, 25), (2, 63, 58), (1, 97, 7), (2, 751, 25)]


@pytest.mark.parametrize("shape", CASES)
def test_every_backend_matches_reference(device, shape):
    x = torch.randn(*shape, device=device)
    ref = frame_diff_ref(x)
    backends = usable_backends(IMPLEMENTED, device)
    assert "reference" in backends
    for backend in backends:
        assert_close(f"frame_diff[{backend}]", ref, frame_diff(x, backend=backend), atol=1e-6, rtol=0)


def test_compiled_tiers_run_here():
    """The compiled tiers must actually run in every test session, not silently fall back: C++ on
    CPU tensors, Triton on CUDA tensors (or the interpreter's CPU ones), CUDA where a GPU is."""
    assert _backend.backend_status("cpp", "cpu")[0], _backend.cpp_status()[1]
    tdev = torch.device(TRITON_DEVICE)
    assert _backend.backend_status("triton", tdev.type)[0], _backend.triton_status(tdev.type)[1]
    x = torch.randn(2, 9, 5)
    assert_close("cpp", frame_diff_ref(x), frame_diff(x, backend="cpp"), atol=0, rtol=0)
    xt = x.to(tdev)
    assert_close("triton", frame_diff_ref(x), frame_diff(xt, backend="triton"), atol=0, rtol=0)
    if HAS_CUDA:
        assert _backend.cuda_status()[0], _backend.cuda_status()[1]
        assert_close("cuda", frame_diff_ref(x), frame_diff(x.cuda(), backend="cuda"), atol=0, rtol=0)


@pytest.mark.parametrize("triton_version, numpy_version, fails", [
    ("3.6.0", "2.4.6", True), ("3.6.0", "2.4.0rc1", True), ("3.5.1", "3.0.0", True), ("3.6.0", "2.3.5", False),
    ("3.6.0", "1.26.4", False), ("3.7.1", "2.4.6", False), ("3.10.0", "2.4.6", False), ("4.0.0+git1a2b", "2.4", False)])
def test_interpreter_version_problem_named(triton_version, numpy_version, fails):
    """Triton 3.6's interpreter with numpy 2.4 (every kernel with a loop fails inside the
    interpreter): the kernels are reported unavailable with both versions and the fix named."""
    from reactfast.kernels import _interpreter_problem

    problem = _interpreter_problem(triton_version, numpy_version)
    assert (problem is not None) == fails
    if fails:
        assert triton_version in problem and numpy_version in problem and "triton>=3.7" in problem


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_triton(dtype):
    x = torch.randn(2, 33, 25, device=TRITON_DEVICE).to(dtype)
    out = frame_diff(x, backend="triton")
    assert out.dtype == dtype
    assert_rel_close("triton", frame_diff_ref(x.double()), out, dtype)


def test_gradient_matches_reference():
    x = torch.randn(2, 11, 4, dtype=torch.float32, requires_grad=True)
    g = torch.randn(2, 10, 4)
    (gx,) = torch.autograd.grad(frame_diff(x, backend="cpp"), x, g)
    x2 = x.detach().clone().requires_grad_()
    (gx2,) = torch.autograd.grad(frame_diff_ref(x2), x2, g)
    assert_close("grad", gx2, gx, atol=1e-6, rtol=0)


def test_opcheck():
    torch.library.opcheck(torch.ops.reactfast.frame_diff.default, (torch.randn(2, 5, 3), "cpp"))


def test_torch_compile_fullgraph():
    fn = torch.compile(lambda x: frame_diff(x) * 2.0, fullgraph=True, backend="eager")
    x = torch.randn(2, 6, 3)
    assert_close("compiled", frame_diff_ref(x) * 2, fn(x), atol=1e-6, rtol=0)


def test_forced_backend_env(monkeypatch):
    monkeypatch.setenv("REACTFAST_BACKEND", "frame_diff:reference")
    assert _backend.select("frame_diff", torch.device("cpu"), IMPLEMENTED) == "reference"
    monkeypatch.setenv("REACTFAST_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="forced but cannot run"):
        frame_diff(torch.randn(1, 3, 2))
    monkeypatch.setenv("REACTFAST_BACKEND", "warp")
    with pytest.raises(ValueError, match="unknown backend 'warp'"):
        frame_diff(torch.randn(1, 3, 2))


@pytest.mark.parametrize("bad,err,match", [
    (lambda: frame_diff([1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
    (lambda: frame_diff(torch.randn(3, 4)), ValueError, "x must have 3 dimensions"),
    (lambda: frame_diff(torch.randn(1, 1, 4)), ValueError, "at least 2 frames"),
    (lambda: frame_diff(torch.zeros(1, 3, 2, dtype=torch.int64)), TypeError, "x must have dtype"),
    (lambda: frame_diff(torch.randn(0, 3, 2)), ValueError, "x must not be empty"),
    (lambda: frame_diff(torch.randn(1, 3, 2), backend="fast"), ValueError, "backend must be one of"),
])
def test_bad_input(bad, err, match):
    with pytest.raises(err, match=match):
        bad()
