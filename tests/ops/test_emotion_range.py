"""Counts of emotion values out of range: the C++ kernel against the reference on every device's
tensors, values at and next to the float32 thresholds, NaN, layouts, dtypes, bad input."""

import numpy as np
import pytest
import torch

from reactfast.ops.emotion_range import IMPLEMENTED, emotion_range_counts
from tests.conftest import usable_backends


def _emotion(rows, seed, spread=0.2):
    """Valid-looking rows with noise of ``spread``: some values out of range in every group."""
    g = np.random.default_rng(seed)
    e = np.empty((rows, 25), np.float32)
    e[:, :15] = g.random((rows, 15))
    e[:, 15:17] = g.uniform(-1, 1, (rows, 2))
    p = g.random((rows, 8))
    e[:, 17:] = p / p.sum(-1, keepdims=True)
    e += g.normal(0, spread, e.shape).astype(np.float32) * (g.random(e.shape) < 0.05)
    return torch.from_numpy(e)


def _definitions(e, tol):
    """The counts from numpy's comparisons of float32 values with float32 thresholds (as torch
    compares a float32 tensor with a Python float), row sums in float64."""
    e = e.cpu().numpy()
    below, above = np.float32(-tol), np.float32(1 + tol)
    au, va, ex = e[..., :15], e[..., 15:17], e[..., 17:]
    return [int((au < below).sum()), int((au > above).sum()), int((np.abs(va) > above).sum()),
            int((ex < below).sum()), int((np.abs(ex.astype(np.float64).sum(-1) - 1) > tol).sum())]


@pytest.mark.parametrize("rows,tol", [(1, 1e-4), (97, 1e-4), (4096 * 2 + 7, 1e-3), (751, 0.0)])
def test_matches_definitions(device, rows, tol):
    e = _emotion(rows, rows)
    want = _definitions(e, tol)
    assert sum(want) > 0 or rows == 1
    for backend in usable_backends(IMPLEMENTED, device):
        got = emotion_range_counts(e.to(device), tol, backend=backend)
        assert got.dtype == torch.int64 and got.device.type == device.type
        assert got.tolist() == want, backend


def test_thresholds_and_nan():
    """Values exactly at float32(-tol) and float32(1 + tol) are in range, the next floats out;
    NaN is counted nowhere; in-range rows give zeros (the reference's fast path)."""
    tol = 1e-4
    low, high = np.float32(-tol), np.float32(1 + tol)
    e = _emotion(6, 0, spread=0.0)
    e[0, 0], e[1, 0] = float(low), float(np.nextafter(low, np.float32(-1)))
    e[2, 1], e[3, 1] = float(high), float(np.nextafter(high, np.float32(2)))
    e[4, 15] = -float(np.nextafter(high, np.float32(2)))
    e[5, 3], e[5, 16] = float("nan"), float("nan")
    for backend in usable_backends(IMPLEMENTED, "cpu"):
        assert emotion_range_counts(e, tol, backend=backend).tolist() == [1, 1, 1, 0, 0], backend
        assert emotion_range_counts(_emotion(50, 1, spread=0.0), tol, backend=backend).tolist() == [0] * 5


def test_layouts_and_dtypes():
    e = _emotion(300, 2)
    want = _definitions(e, 1e-4)
    assert emotion_range_counts(e.reshape(3, 100, 25)).tolist() == want
    wide = torch.zeros(300, 50)
    wide[:, ::2] = e
    assert emotion_range_counts(wide[:, ::2]).tolist() == want            # strided: copied for the kernel
    assert emotion_range_counts(e.double()).tolist() == _definitions(e.double(), 1e-4)
    assert emotion_range_counts(torch.zeros(0, 25)).tolist() == [0] * 5


@pytest.mark.parametrize("call,err,match", [
    (lambda: emotion_range_counts(torch.zeros(4, 24)), ValueError, "25 dims in its last axis"),
    (lambda: emotion_range_counts(torch.zeros(4, 25, dtype=torch.int32)), TypeError, "floating-point tensor"),
    (lambda: emotion_range_counts(np.zeros((4, 25))), TypeError, "floating-point tensor, got ndarray"),
    (lambda: emotion_range_counts(torch.zeros(4, 25), tolerance=-1.0), ValueError, "tolerance must be"),
    (lambda: emotion_range_counts(torch.zeros(4, 25), tolerance=float("nan")), ValueError, "tolerance must be"),
    (lambda: emotion_range_counts(torch.zeros(4, 25, dtype=torch.float64), backend="cpp"), ValueError,
     "reads float32"),
    (lambda: emotion_range_counts(torch.zeros(4, 25), backend="triton"), RuntimeError, "implements only"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
