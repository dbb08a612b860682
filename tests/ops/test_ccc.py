"""CCC and its max over candidates (FRCorr): every backend on every device against the reference,
hand-computed cases, bad input."""

import pytest
import torch

from reactfast.metrics.candidates import from_lists
from reactfast.ops.ccc import IMPLEMENTED, PAIR_IMPLEMENTED, ccc, ccc_max
from reactfast.reference import ccc as ref
from reactfast.testing import assert_close
from tests.conftest import usable_backends
from tests.ops._metric_cases import cases


def test_hand_cases(device):
    x = torch.linspace(-1, 1, 50, device=device).reshape(1, 50, 1)
    const = torch.full((1, 50, 1), 0.3, device=device)
    s2 = float(x.var(1, unbiased=False))
    for backend in usable_backends(PAIR_IMPLEMENTED, device):
        assert float(ccc(x, x, backend=backend)) == pytest.approx(1.0, abs=1e-6)
        assert float(ccc(x, -x, backend=backend)) == pytest.approx(-1.0, abs=1e-6)
        assert float(ccc(x, const, backend=backend)) == 0.0          # constant: r is NaN -> 0
        # Shifted mean: r = 1, ccc = 2 s^2 / (2 s^2 + dm^2).
        assert float(ccc(x, x + 1.0, backend=backend)) == pytest.approx(2 * s2 / (2 * s2 + 1.0), rel=1e-5)


@pytest.mark.parametrize("T", [2, 7, 63, 750])
def test_pairs_match_reference(device, T):
    pred, gt, _, _ = cases(T + 1, 6, 6, T, device=device)
    gt[3, :, 10] = 1.0
    want = ref.ccc(pred, gt)
    for backend in usable_backends(PAIR_IMPLEMENTED, device):
        assert_close(backend, want, ccc(pred, gt, backend=backend), atol=1e-7, rtol=1e-6)


def test_max_matches_reference(device):
    pred, gt, cand, lists = cases(5, 13, 10, 60, device=device)
    want_max, want_arg = ref.ccc_max(pred, gt, cand)
    # The reference's max equals the max over a per-candidate loop.
    for m, c in enumerate(lists):
        values = ref.ccc(gt[c], pred[m].expand(len(c), -1, -1)).mean(-1)
        assert float(want_max[m]) == float(values.max())
    for backend in usable_backends(IMPLEMENTED, device):
        got_max, got_arg = ccc_max(pred, gt, cand, backend=backend)
        assert_close(backend, want_max, got_max, atol=1e-7, rtol=1e-6)
        assert torch.equal(want_arg.cpu(), got_arg.cpu()), backend


@pytest.mark.parametrize("call,err,match", [
    (lambda: ccc(torch.rand(2, 4, 3), torch.rand(2, 4, 3), backend="triton"), RuntimeError, "implements only"),
    (lambda: ccc(torch.rand(2, 1, 3), torch.rand(2, 1, 3)), ValueError, "at least 2 frames"),
    (lambda: ccc(torch.rand(2, 4, 3), torch.rand(2, 4, 2)), ValueError, "same shape"),
    (lambda: ccc(torch.rand(2, 4, 3), torch.rand(2, 4, 3).int()), TypeError, "y must have dtype"),
    (lambda: ccc_max(torch.rand(2, 4, 3), torch.rand(3, 5, 3), from_lists([[0], [1]])), ValueError, "share"),
    (lambda: ccc_max(torch.rand(2, 4, 3), torch.rand(3, 4, 3), from_lists([[0], [5]])), ValueError,
     r"indices must lie in \[0, 3\)"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


@pytest.mark.parametrize("T,BT", [(2, None), (63, None), (750, None), (97, 16)])
def test_triton_max_kernel(T, BT):
    """The Triton FRCorr kernel called directly: time tiles that do not divide T, constant columns in
    targets and queries, a duplicated target (ties go to the first listed), against the reference."""
    from reactfast.kernels import ccc as kern
    from tests.conftest import TRITON_DEVICE

    pred, gt, (offset, index), _ = cases(T, 6, 9, T, device=TRITON_DEVICE)
    pred[2, :, 7] = 0.25                                  # a constant query column
    want_max, want_arg = ref.ccc_max(pred, gt, (offset, index))
    got_max, got_arg = kern.ccc_max(pred.contiguous(), gt.contiguous(), offset, index, BT=BT)
    assert_close("max", want_max, got_max, atol=1e-12, rtol=1e-9)
    assert torch.equal(want_arg.cpu(), got_arg.cpu())
    assert int(got_arg[0]) == 1, "ties go to the candidate listed first"
