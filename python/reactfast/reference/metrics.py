"""Reference REACT metric suite: SPEC section 2 written out speaker by speaker, the oracle of
``reactfast.metrics``.

pred (N, S, T, 25), listener_gt (N, T, 25), speaker (N, T, 25) float tensors; appropriate (N, N) bool.
"""

from __future__ import annotations

import torch

from reactfast.reference import ccc as _ccc
from reactfast.reference import dtw as _dtw
from reactfast.reference import tlcc as _tlcc


def _tensors(*arrays):
    return [torch.as_tensor(a) for a in arrays]


def frcorr(pred, listener_gt, appropriate) -> float:
    pred, listener_gt, appropriate = _tensors(pred, listener_gt, appropriate)
    N, S = pred.shape[:2]
    total = 0.0
    for k in range(N):
        cand = torch.nonzero(appropriate[k].bool())[:, 0]
        for i in range(S):
            total += float(_ccc.ccc(listener_gt[cand], pred[k, i].expand(len(cand), -1, -1)).mean(-1).max())
    return total / N


def frdist(pred, listener_gt, appropriate, groups=_dtw.REACT_GROUPS) -> float:
    pred, listener_gt, appropriate = _tensors(pred, listener_gt, appropriate)
    N, S = pred.shape[:2]
    total = 0.0
    for k in range(N):
        cand = torch.nonzero(appropriate[k].bool())[:, 0]
        for i in range(S):
            total += float(_dtw.weighted_dtw(pred[k, i].expand(len(cand), -1, -1), listener_gt[cand], groups).min())
    return total / N


def frdiv(pred) -> float:
    pred = torch.as_tensor(pred).double()
    N, S = pred.shape[:2]
    if S == 1:
        return 0.0
    flat = pred.reshape(N, S, -1)
    total = 0.0
    for k in range(N):
        diff = flat[k][:, None, :] - flat[k][None, :, :]
        total += float((diff ** 2).sum()) / (S * (S - 1) * flat.shape[-1])
    return total / N


def frdvs(pred) -> float:
    pred = torch.as_tensor(pred).double()
    N, S = pred.shape[:2]
    if N == 1:
        return 0.0
    flat = pred.reshape(N, S, -1)
    total = 0.0
    for i in range(S):
        diff = flat[:, i][:, None, :] - flat[:, i][None, :, :]
        total += float((diff ** 2).sum()) / (N * (N - 1) * flat.shape[-1])
    return total / S


def frvar(pred) -> float:
    return float(torch.as_tensor(pred).double().var(dim=2, unbiased=True).mean())


def _offset(rs: torch.Tensor) -> int:
    """|center - argmax|, the argmax returning the first NaN if any (numpy's rule)."""
    values = rs.tolist()
    nan = [i for i, v in enumerate(values) if v != v]
    arg = nan[0] if nan else max(range(len(values)), key=lambda i: (values[i], -i))
    return abs(len(values) // 2 - arg)


def frsyn(pred, speaker, max_lag: int = 49, all_samples: bool = False) -> float:
    pred, speaker = _tensors(pred, speaker)
    S = pred.shape[1]
    offsets = [_offset(row) for i in (range(S) if all_samples else range(1))
               for row in _tlcc.tlcc(pred[:, i], speaker, max_lag)]
    return sum(offsets) / len(offsets)


def evaluate(pred, listener_gt, speaker, appropriate) -> dict:
    return {
        "FRCorr": frcorr(pred, listener_gt, appropriate),
        "FRDist": frdist(pred, listener_gt, appropriate),
        "FRDiv": frdiv(pred),
        "FRDvs": frdvs(pred),
        "FRVar": frvar(pred),
        "FRSyn": frsyn(pred, speaker),
    }
