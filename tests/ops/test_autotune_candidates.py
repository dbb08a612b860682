"""On a GPU: every autotuning candidate of the attention and weight-shift kernels (block sizes, warps
and pipeline stages together) against float64 in bfloat16, the matrix-unit path models train in,
and one autotuned launch of each family through the public ops.

The rest of the suite runs on a GPU with REACTFAST_AUTOTUNE=0 (conftest): each kernel launches
with its first candidate, so a test compiles one configuration per kernel instead of timing every
candidate for every new shape class. Under the interpreter warps and stages mean nothing; the
block sizes of every candidate run there in test_biased_attention.py and test_weight_shift.py."""

import pytest
import torch

from reactfast.ops import biased_attention, weight_shift_linear
from reactfast.reference import biased_attention as ref_attention
from reactfast.reference import weight_shift as ref_ws
from reactfast.testing import assert_rel_close
from tests.conftest import HAS_CUDA

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="warps and stages are GPU settings (the interpreter ignores "
                                                     "them); the block sizes run in the op tests")


def _full(configs):
    return sorted({(c.kwargs["BM"], c.kwargs["BN"], c.kwargs.get("BK"), c.num_warps, c.num_stages) for c in configs})


def _attention_candidates():
    from reactfast.kernels import biased_attention as kern
    return _full(kern.FWD_CONFIGS + kern.DKDV_CONFIGS + kern.DQ_CONFIGS) if HAS_CUDA else []


@pytest.mark.parametrize("BM,BN,BK,warps,stages", _attention_candidates())
def test_attention_candidate(BM, BN, BK, warps, stages):
    """Forward, log-sum-exp and every gradient with one candidate in all three kernels: row blocks of
    16 on the decode regime (8 queries over 300 keys, split across programs), the others on 97
    queries over a right-aligned window with a key start and a length cutting blocks."""
    from tests.ops.test_biased_attention import _kernel_case

    config = dict(BM=BM, BN=BN, num_warps=warps, num_stages=stages)
    if BM == 16:
        _kernel_case(config, 2, 2, 8, 300, 64, q0=[292, 150], dtype=torch.bfloat16)
    else:
        _kernel_case(config, 2, 2, 97, 300, 64, q0=[203, 260], starts=torch.tensor([5, 0]),
                     lengths=torch.tensor([300, 270]), dtype=torch.bfloat16)


def _weight_shift_candidates():
    from reactfast.kernels import weight_shift as kern
    kinds = {"fwd": kern.FWD_CONFIGS, "low_rank": kern.FWD_CONFIGS, "dx": kern.DX_CONFIGS, "dshift": kern.DDW_CONFIGS}
    return [(kind,) + c for kind, configs in kinds.items() for c in _full(configs)] if HAS_CUDA else []


@pytest.mark.parametrize("kind,BM,BN,BK,warps,stages", _weight_shift_candidates())
def test_weight_shift_candidate(kind, BM, BN, BK, warps, stages):
    from reactfast.kernels import weight_shift as kern

    config = dict(BM=BM, BN=BN, BK=BK, num_warps=warps, num_stages=stages)
    g = torch.Generator(device="cuda").manual_seed(BM + BN + BK + warps)
    mk = lambda *s: torch.randn(*s, device="cuda", generator=g).to(torch.bfloat16)  # noqa: E731
    x, w, shift, b = mk(2, 102, 80), mk(150, 80), mk(2, 150, 80), mk(150)
    x64, w64, s64, b64 = (t.double() for t in (x, w, shift, b))
    if kind == "fwd":
        got, want = kern.weight_shift_fwd(x, w, shift, b, config=config), ref_ws.weight_shift_linear(x64, w64, s64, b64)
    elif kind == "low_rank":
        u, v = mk(2, 150, 5), mk(2, 80, 5)
        got = kern.low_rank_fwd(x, w, u, v, b, config=config)
        want = ref_ws.low_rank_shift_linear(x64, w64, u.double(), v.double(), b64)
    elif kind == "dx":
        dy = mk(2, 102, 150)
        got, want = kern.weight_shift_bwd_dx(dy, w, shift, config=config), dy.double() @ w64 + dy.double() @ s64
    else:
        dy = mk(2, 102, 150)
        got, want = kern.weight_shift_bwd_dshift(dy, x, config=config), dy.double().transpose(1, 2) @ x64
    assert_rel_close(f"{kind} {config}", want, got, torch.bfloat16)


def test_autotuned_launches_match_float64(monkeypatch):
    """The autotuner's own launches (REACTFAST_AUTOTUNE=1) in bfloat16, whose candidates the tests
    above compile (float32 would compile every candidate again: over two minutes on an H100 machine):
    biased attention forward and backward on the full and the decode regime, and the weight-shift
    linear, against float64."""
    monkeypatch.setenv("REACTFAST_AUTOTUNE", "1")
    dtype = tol = torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(11)
    for Tq, Tk, q0 in ((97, 300, 203), (8, 300, 292)):
        q, k, v = (torch.randn(2, 4, T, 64, device="cuda", generator=g).to(dtype).requires_grad_()
                   for T in (Tq, Tk, Tk))
        out = biased_attention(q, k, v, q_offset=q0, backend="triton")
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        want = ref_attention.biased_attention(q64, k64, v64, q_offset=q0)
        assert_rel_close(f"attention Tq{Tq} out", want, out, tol)
        grad = torch.randn(want.shape, device="cuda", generator=g, dtype=torch.float64)
        for name, a, b in zip(("dq", "dk", "dv"), torch.autograd.grad(want, (q64, k64, v64), grad),
                              torch.autograd.grad(out, (q, k, v), grad.to(dtype))):
            assert_rel_close(f"attention Tq{Tq} {name}", a, b, tol)
    x, w, shift = (torch.randn(*s, device="cuda", generator=g).to(dtype).requires_grad_()
                   for s in ((4, 102, 64), (96, 64), (4, 96, 64)))
    y = weight_shift_linear(x, w, shift, backend="triton")
    x64, w64, s64 = (t.detach().double().requires_grad_() for t in (x, w, shift))
    want = ref_ws.weight_shift_linear(x64, w64, s64)
    assert_rel_close("weight shift y", want, y, tol)
    grad = torch.randn(want.shape, device="cuda", generator=g, dtype=torch.float64)
    for name, a, b in zip(("dx", "dW", "ddW"), torch.autograd.grad(want, (x64, w64, s64), grad),
                          torch.autograd.grad(y, (x, w, shift), grad.to(dtype))):
        assert_rel_close(f"weight shift {name}", a, b, tol)
