"""The metric ops (CCC, DTW, TLCC, the spread sums) with inputs that require grad: their kernels
compute values only, so such a call raises unless the reference is asked for. Before, the kernels
ran and returned a result with no graph: a loss term built on ``ops.ccc`` trained silently without
its gradient (only ``backend="reference"`` gave one)."""

import importlib

import pytest
import torch

from reactfast import ops
from reactfast.reference import ccc as ref_ccc
from reactfast.reference import dtw as ref_dtw
from reactfast.reference import spread as ref_spread
from reactfast.reference import tlcc as ref_tlcc
from reactfast.testing import assert_close, assert_rel_close
from tests.conftest import usable_backends
from tests.ops._metric_cases import cases

def _implemented(family, attr="IMPLEMENTED"):
    return getattr(importlib.import_module(f"reactfast.ops.{family}"), attr)


CALLS = {   # name: (op call, reference call, op family, implemented backends)
    "ccc": (lambda p, g, c, b: ops.ccc(p, g[:p.shape[0]], backend=b),
            lambda p, g, c: ref_ccc.ccc(p, g[:p.shape[0]]), "ccc", _implemented("ccc", "PAIR_IMPLEMENTED")),
    "ccc_max": (lambda p, g, c, b: ops.ccc_max(p, g, c, backend=b)[0],
                lambda p, g, c: ref_ccc.ccc_max(p, g, c)[0], "ccc", _implemented("ccc")),
    "dtw": (lambda p, g, c, b: ops.dtw(p, g[:p.shape[0]], backend=b),
            lambda p, g, c: ref_dtw.dtw(p, g[:p.shape[0]]), "dtw", _implemented("dtw")),
    "weighted_dtw_min": (lambda p, g, c, b: ops.weighted_dtw_min(p, g, c, backend=b)[0],
                         lambda p, g, c: ref_dtw.weighted_dtw_min(p, g, c, ops.REACT_GROUPS)[0], "dtw",
                         _implemented("dtw")),
    "tlcc": (lambda p, g, c, b: ops.tlcc(p, g[:p.shape[0]], max_lag=6, backend=b),
             lambda p, g, c: ref_tlcc.tlcc(p, g[:p.shape[0]], 6), "tlcc", _implemented("tlcc")),
    "spread_sums": (lambda p, g, c, b: ops.spread_sums(p.reshape(2, 2, *p.shape[1:]), backend=b),
                    lambda p, g, c: ref_spread.spread_sums(p.reshape(2, 2, *p.shape[1:])), "spread",
                    _implemented("spread")),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_inputs_that_require_grad_are_refused_unless_the_reference_is_asked_for(device, name, monkeypatch):
    call, reference, family, implemented = CALLS[name]
    pred, gt, cand, _ = cases(11, 4, 6, 20, device=device)
    live = pred.clone().requires_grad_()
    for backend in [None] + [b for b in usable_backends(implemented, device, family) if b != "reference"]:
        with pytest.raises(RuntimeError, match=f"{family}: the inputs require grad, but its kernels compute values "
                                               "only"):
            call(live, gt, cand, backend)
    monkeypatch.setenv("REACTFAST_BACKEND", f"{family}:reference")    # forced by the environment: allowed
    assert call(live, gt, cand, None).requires_grad
    monkeypatch.delenv("REACTFAST_BACKEND")
    with torch.no_grad():                       # evaluation: the kernels run, as the metric suite runs them
        values = call(live, gt, cand, None)
    assert_rel_close(name, reference(pred, gt, cand), values, torch.float32)   # the float64 reference, relative norm
    assert_close(name, values.double(), call(live.detach(), gt, cand, None).double(), atol=0, rtol=0)
    # The reference, named, is differentiated: its gradient is autograd's through the same formula.
    smooth = pred.double().clone()
    smooth[..., :15] += 0.1 * torch.rand_like(smooth[..., :15])   # no constant series: a finite gradient
    gt = gt.clone()
    gt[..., 3] += 0.1 * torch.rand_like(gt[..., 3])
    x = smooth.clone().requires_grad_()
    grad, = torch.autograd.grad(call(x, gt, cand, "reference").double().sum(), x)
    y = smooth.float().requires_grad_()
    want, = torch.autograd.grad(reference(y, gt, cand).double().sum(), y)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert_rel_close(f"{name} grad", want, grad, 1e-12)   # the same float64 maths behind the op's float32 cast
