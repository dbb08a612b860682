"""DTW, CCC and TLCC ops: every backend against the reference, hand-computed cases, bad input."""

import math

import numpy as np
import pytest
import torch

from reactfast.ops import ccc as ccc_op
from reactfast.ops import dtw as dtw_op
from reactfast.ops import tlcc as tlcc_op
from reactfast.reference import ccc as ccc_ref
from reactfast.reference import dtw as dtw_ref
from reactfast.reference import tlcc as tlcc_ref
from reactfast.testing import assert_close
from tests.conftest import HAS_CUDA


def t(a):
    return torch.tensor(a, dtype=torch.float32)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_dtw_hand_cases(backend):
    x = t([[[0.0], [0.0], [0.0]], [[0.0], [1.0], [2.0]], [[0.0], [2.0], [2.0]]])
    y = t([[[1.0], [1.0], [1.0]], [[0.0], [1.0], [2.0]], [[1.0], [1.0], [1.0]]])
    # all-ones cost along 3 diagonal cells; identical; |0-1|^2 + |2-1|^2 + |2-1|^2 with warping.
    assert_close("dtw", torch.tensor([math.sqrt(3), 0.0, math.sqrt(3)], dtype=torch.float64),
                 dtw_op.dtw(x, y, backend=backend), atol=1e-12, rtol=1e-12)
    # Warping absorbs repetition: [0, 1] vs [0, 0, 1] costs nothing; [0, 2] vs [1] costs 1 + 1.
    assert float(dtw_op.dtw(t([[[0.0], [1.0]]]), t([[[0.0], [0.0], [1.0]]]), backend=backend)) == 0.0
    assert float(dtw_op.dtw(t([[[0.0], [2.0]]]), t([[[1.0]]]), backend=backend)) == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("shape", [(3, 1, 1, 2), (2, 7, 5, 3), (2, 63, 40, 25), (1, 97, 97, 4)])
def test_dtw_pairs_match_reference(shape):
    P, Tx, Ty, D = shape
    g = torch.Generator().manual_seed(sum(shape))
    x, y = torch.rand(P, Tx, D, generator=g), torch.rand(P, Ty, D, generator=g)
    ref = torch.tensor([dtw_ref.dtw(x[p], y[p]) for p in range(P)], dtype=torch.float64)
    assert_close("dtw", ref, dtw_op.dtw(x, y), atol=1e-9, rtol=1e-6)


def _cases(seed, M, G, T, D=25, k=(1, 9)):
    rng = np.random.default_rng(seed)
    pred = rng.random((M, T, D)).astype(np.float32)
    gt = rng.random((G, T, D)).astype(np.float32)
    gt[0, :, 3] = 0.5            # a constant column
    gt[1] = gt[2]                # a duplicate target: ties
    pred[0, :, :15] = (pred[0, :, :15] > 0.5)  # binary AUs, as in the data
    cands = [sorted(rng.choice(G, min(G, int(rng.integers(*k))), replace=False).tolist()) for _ in range(M)]
    cands[0] = [1, 2]
    return torch.from_numpy(pred), torch.from_numpy(gt), cands


@pytest.mark.parametrize("T", [1, 7, 40, 97])
@pytest.mark.parametrize("abandon", [True, False])
def test_weighted_dtw_min_matches_reference(T, abandon):
    pred, gt, cands = _cases(T, 11, 9, T)
    ref_min, ref_arg = dtw_ref.weighted_dtw_min(pred.numpy(), gt.numpy(), cands)
    out_min, out_arg = dtw_op.weighted_dtw_min(pred, gt, cands, abandon=abandon)
    assert_close("min", torch.from_numpy(ref_min), out_min, atol=1e-9, rtol=1e-6)
    assert out_arg[0] == 1  # tie between identical targets 1 and 2 goes to the first
    near = np.isclose(ref_min, out_min.numpy(), rtol=1e-6)
    assert near.all()


def test_abandoning_is_exact_and_prunes():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.random((24, 120, 25)).astype(np.float32))
    # Each query is a noisy copy of one target: the others can be abandoned early.
    pred = gt[:8] + 0.05 * torch.from_numpy(rng.standard_normal((8, 120, 25)).astype(np.float32))
    cands = [list(range(24))] * 8
    full = dtw_op.weighted_dtw_min(pred, gt, cands, abandon=False, return_cells=True)
    fast = dtw_op.weighted_dtw_min(pred, gt, cands, abandon=True, return_cells=True)
    assert torch.equal(full[0], fast[0]) and torch.equal(full[1], fast[1])
    assert torch.equal(fast[1], torch.arange(8))
    assert fast[2] < 0.5 * full[2], (fast[2], full[2])


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_ccc_hand_cases(backend):
    x = torch.linspace(-1, 1, 50).reshape(1, 50, 1)
    const = torch.full((1, 50, 1), 0.3)
    same = ccc_op.ccc(x, x, backend=backend)
    assert float(same) == pytest.approx(1.0, abs=1e-6)
    assert float(ccc_op.ccc(x, -x, backend=backend)) == pytest.approx(-1.0, abs=1e-6)
    assert float(ccc_op.ccc(x, const, backend=backend)) == 0.0
    # Shifted mean: r = 1, ccc = 2 s^2 / (2 s^2 + dm^2).
    s2 = float(x.var(1, unbiased=False))
    assert float(ccc_op.ccc(x, x + 1.0, backend=backend)) == pytest.approx(2 * s2 / (2 * s2 + 1.0), rel=1e-5)


@pytest.mark.parametrize("T", [2, 7, 63, 750])
def test_ccc_matches_reference(T):
    pred, gt, _ = _cases(T + 1, 6, 6, T)
    gt[3, :, 10] = 1.0
    assert_close("ccc", torch.from_numpy(ccc_ref.ccc(pred.numpy(), gt.numpy())), ccc_op.ccc(pred, gt),
                 atol=1e-7, rtol=1e-6)


def test_ccc_max_matches_reference():
    pred, gt, cands = _cases(5, 13, 10, 60)
    ref_max, ref_arg = ccc_ref.ccc_max(pred.numpy(), gt.numpy(), cands)
    out_max, out_arg = ccc_op.ccc_max(pred, gt, cands)
    assert_close("max", torch.from_numpy(ref_max), out_max, atol=1e-7, rtol=1e-6)
    assert torch.equal(torch.from_numpy(ref_arg), out_arg)


def test_tlcc_shift_recovered():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((3, 200, 25)).astype(np.float32)
    x = np.roll(y, 5, axis=1)  # x[t] = y[t - 5]
    rs = tlcc_op.tlcc(torch.from_numpy(x), torch.from_numpy(y))
    assert rs.shape == (3, 99)
    assert (tlcc_ref.tlcc_offset(rs.numpy()) == 5).all()
    assert float(rs[0, 49 + 5]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("T", [2, 30, 97, 151])
def test_tlcc_matches_reference_exactly(T):
    rng = np.random.default_rng(T)
    x = rng.random((7, T, 25)).astype(np.float32)
    y = rng.random((7, T, 25)).astype(np.float32)
    x[1, : T // 2, 4] = 0.25        # constant stretch: NaN at some lags only
    y[2, :, 0] = 1.0                # constant column: NaN everywhere
    x[3, :, 15:] = (x[3, :, 15:] > 0.5)
    ref = tlcc_ref.tlcc(x, y)
    out = tlcc_op.tlcc(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_array_equal(np.isnan(ref), np.isnan(out))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(tlcc_ref.tlcc_offset(ref), tlcc_ref.tlcc_offset(out))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_dtw_matches_cpu():
    pred, gt, cands = _cases(3, 9, 12, 97)
    cpu = dtw_op.weighted_dtw_min(pred, gt, cands)
    gpu = dtw_op.weighted_dtw_min(pred.cuda(), gt.cuda(), cands, backend="cuda")
    assert_close("min", cpu[0], gpu[0].cpu(), atol=1e-9, rtol=1e-6)
    assert torch.equal(cpu[1], gpu[1].cpu())
    assert_close("ccc", ccc_op.ccc(pred[:9], gt[:9]), ccc_op.ccc(pred[:9].cuda(), gt[:9].cuda()).cpu(),
                 atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("call,err,match", [
    (lambda: dtw_op.dtw(torch.rand(2, 5, 3), torch.rand(3, 5, 3)), ValueError, "share P and D"),
    (lambda: dtw_op.dtw(torch.rand(2, 5), torch.rand(2, 5)), ValueError, "x must have 3 dimensions"),
    (lambda: dtw_op.dtw(torch.full((1, 3, 2), float("nan")), torch.rand(1, 3, 2)), ValueError, "x contains NaN"),
    (lambda: dtw_op.weighted_dtw_min(torch.rand(2, 5, 25), torch.rand(3, 5, 25), [[0], []]), ValueError,
     "no candidate"),
    (lambda: dtw_op.weighted_dtw_min(torch.rand(2, 5, 25), torch.rand(3, 5, 25), [[0], [3]]), ValueError,
     r"indices must lie in \[0, 3\)"),
    (lambda: dtw_op.weighted_dtw_min(torch.rand(1, 5, 25), torch.rand(3, 5, 25), [[0]], groups=[(0, 30, 1.0)]),
     ValueError, "0 <= start < end <= 25"),
    (lambda: dtw_op.weighted_dtw_min(torch.rand(1, 5, 25), torch.rand(3, 5, 24), [[0]]), ValueError,
     "same last dim"),
    (lambda: ccc_op.ccc(torch.rand(2, 1, 3), torch.rand(2, 1, 3)), ValueError, "at least 2 frames"),
    (lambda: ccc_op.ccc(torch.rand(2, 4, 3), torch.rand(2, 4, 2)), ValueError, "same shape"),
    (lambda: tlcc_op.tlcc(torch.rand(2, 4, 3), torch.rand(2, 4, 3), max_lag=-1), ValueError, "max_lag"),
    (lambda: tlcc_op.tlcc(torch.rand(2, 4, 3), torch.zeros(2, 4, 3, dtype=torch.int32)), TypeError, "y must have dtype"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
