"""Time-lagged cross-correlation (FRSyn): every backend on every device against the reference
(exactly: FRSyn's argmax must not move), a recovered shift, bad input."""

import numpy as np
import pytest
import torch

from reactfast.metrics import sync_offsets
from reactfast.ops.tlcc import IMPLEMENTED, tlcc
from reactfast.reference import tlcc as ref
from tests.conftest import usable_backends


def test_shift_recovered(device):
    g = torch.Generator().manual_seed(1)
    y = torch.randn(3, 200, 25, generator=g).to(device)
    x = torch.roll(y, 5, dims=1)  # x[t] = y[t - 5]
    for backend in usable_backends(IMPLEMENTED, device):
        rs = tlcc(x, y, backend=backend)
        assert rs.shape == (3, 99) and rs.device.type == device.type
        assert (sync_offsets(rs) == 5).all()
        assert float(rs[0, 49 + 5]) == pytest.approx(1.0, abs=1e-6)


# D: REACT's 25 emotion dims (the C++ kernel's compile-time path) and other widths (its loop).
@pytest.mark.parametrize("T,D", [(2, 25), (30, 25), (97, 25), (151, 25), (97, 6), (30, 31)])
def test_matches_reference(device, T, D):
    rng = np.random.default_rng(T * D)
    x = rng.random((7, T, D)).astype(np.float32)
    y = rng.random((7, T, D)).astype(np.float32)
    x[1, : T // 2, 4] = 0.25        # constant stretch: NaN at some lags only
    y[2, :, 0] = 1.0                # constant column: NaN everywhere
    x[3, :, D // 2:] = x[3, :, D // 2:] > 0.5
    x[4, : T // 3] = 1e4            # a stretch far from the rest, whose spread is tiny: segments
    x[4, T // 3:] *= 1e-3           # without the stretch lose their digits in a one-pass variance
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    want = ref.tlcc(x, y).cpu()
    for backend in usable_backends(IMPLEMENTED, device):
        got = tlcc(x, y, backend=backend).cpu()
        assert torch.equal(torch.isnan(want), torch.isnan(got)), backend
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, equal_nan=True)
        assert torch.equal(sync_offsets(want), sync_offsets(got)), backend


def test_offsets_follow_numpys_argmax():
    rs = torch.tensor([[0.1, 0.5, 0.5, 0.2, 0.0], [0.1, float("nan"), 0.9, float("nan"), 0.0]])
    # Row 0: the first maximum (lag -1) -> |2 - 1|; row 1: the first NaN wins (numpy's argmax).
    assert sync_offsets(rs).tolist() == [1, 1]
    assert sync_offsets(rs).tolist() == np.abs(2 - np.argmax(rs.numpy(), -1)).tolist()


@pytest.mark.parametrize("call,err,match", [
    (lambda: tlcc(torch.rand(2, 4, 3), torch.rand(2, 4, 3), max_lag=-1), ValueError, "max_lag"),
    (lambda: tlcc(torch.rand(2, 4, 3), torch.zeros(2, 4, 3, dtype=torch.int32)), TypeError, "y must have dtype"),
    (lambda: tlcc(torch.rand(2, 4, 3), torch.rand(2, 5, 3)), ValueError, "same shape"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
