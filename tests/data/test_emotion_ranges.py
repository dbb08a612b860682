"""check_emotion: in-range emotion gives {} (its fast path on the extremes), and each kind of
violation is counted as the masks count it, for torch tensors and numpy arrays."""

import numpy as np
import pytest
import torch

from reactfast.data import check_emotion


def _valid(seed=0, shape=(3, 40)):
    g = np.random.default_rng(seed)
    e = np.empty(shape + (25,), np.float32)
    e[..., :15] = g.random(shape + (15,))
    e[..., 15:17] = g.uniform(-1, 1, shape + (2,))
    p = g.random(shape + (8,))
    e[..., 17:] = p / p.sum(-1, keepdims=True)
    return e


def _expected(e, tol=1e-4):
    e = e.astype(np.float64)
    au, va, ex = e[..., :15], e[..., 15:17], e[..., 17:]
    counts = {"AU below 0": int((au < -tol).sum()), "AU above 1": int((au > 1 + tol).sum()),
              "valence/arousal outside [-1, 1]": int((np.abs(va) > 1 + tol).sum()),
              "negative expression probabilities": int((ex < -tol).sum()),
              "expression rows not summing to 1": int((np.abs(ex.sum(-1) - 1) > tol).sum())}
    return {k: v for k, v in counts.items() if v}


def _au_low(e):
    e[0, :5, 3] = -0.2


def _au_high(e):
    e[1, 7, 0] = 1.01


def _va(e):
    e[2, :3, 16] = -1.5


def _negative_probability(e):
    e[0, 9, 20] = -0.1
    e[0, 9, 21] += 0.1  # the row still sums to 1


def _row_sum(e):
    e[1, :4, 17] += 0.3


@pytest.mark.parametrize("array", [np.asarray, torch.from_numpy])
@pytest.mark.parametrize("change", [None, _au_low, _au_high, _va, _negative_probability, _row_sum])
def test_counts_match_the_masks(array, change):
    e = _valid()
    if change is not None:
        change(e)
    want = _expected(e)
    assert (want == {}) == (change is None)   # every change leaves the range somewhere
    assert check_emotion(array(e.copy())) == want


def test_nan_alone_is_not_a_range_violation():
    """NaN fails every comparison: it counts in no category (as before the fast path), and the
    metrics reject it in their own input check."""
    e = _valid()
    e[1, 2, 4] = np.nan
    e[2, 5, 17] = np.nan
    assert check_emotion(torch.from_numpy(e.copy())) == {} == check_emotion(e)
    e[0, :2, 1] = -0.5                      # a violation beside the NaN is still counted
    assert check_emotion(torch.from_numpy(e.copy())) == {"AU below 0": 2} == check_emotion(e)
