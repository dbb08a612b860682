"""Reference sums of squared deviations behind REACT's spread metrics (FRDiv, FRDvs, FRVar):
centred (two-pass) sums in float64, a few speakers at a time. Same signature as
``reactfast.ops.spread``; any device."""

from __future__ import annotations

import torch

# Values per float64 chunk: the temporaries stay small instead of several float64 copies of the
# whole set (1.2 GB each at the test set's scale).
_CHUNK = 1 << 20


def _speaker_chunks(pred):
    """float64 copies of ``pred`` (N, S, T, D), a few speakers at a time (about _CHUNK values)."""
    N = pred.shape[0]
    step = max(1, _CHUNK // max(1, pred[0].numel()))
    for lo in range(0, N, step):
        yield pred[lo:lo + step].double()


def spread_sums(pred: torch.Tensor) -> torch.Tensor:
    """(3,) float64 on pred's device, for pred (N, S, T, D):
    [sum over speakers k and (t, d) of sum_i (x - mean over samples i)^2,
     sum over samples i and (t, d) of sum_k (x - mean over speakers k)^2,
     sum over (k, i, d) of sum_t (x - mean over time t)^2]."""
    N = pred.shape[0]
    mean_k = sum(c.sum(0) for c in _speaker_chunks(pred)) / N
    div = dvs = var = 0.0
    for c in _speaker_chunks(pred):
        div = div + ((c - c.mean(1, keepdim=True)) ** 2).sum()
        dvs = dvs + ((c - mean_k) ** 2).sum()
        var = var + ((c - c.mean(2, keepdim=True)) ** 2).sum()
    return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=pred.device) for v in (div, dvs, var)])
