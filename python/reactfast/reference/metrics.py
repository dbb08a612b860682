"""Reference REACT metric suite: straightforward implementations of SPEC section 2, the oracle.

pred (N, S, T, 25), listener_gt (N, T, 25), speaker (N, T, 25), appropriate (N, N) bool.
"""

from __future__ import annotations

import numpy as np

from reactfast.reference import ccc as _ccc
from reactfast.reference import dtw as _dtw
from reactfast.reference import tlcc as _tlcc


def frcorr(pred, listener_gt, appropriate) -> float:
    N, S = pred.shape[:2]
    total = 0.0
    for k in range(N):
        cand = np.nonzero(appropriate[k])[0]
        for i in range(S):
            total += float(_ccc.ccc(listener_gt[cand], pred[k, i][None]).mean(-1).max())
    return total / N


def frdist(pred, listener_gt, appropriate, groups=_dtw.REACT_GROUPS) -> float:
    N, S = pred.shape[:2]
    total = 0.0
    for k in range(N):
        cand = np.nonzero(appropriate[k])[0]
        for i in range(S):
            total += min(_dtw.weighted_dtw(pred[k, i], listener_gt[j], groups) for j in cand)
    return total / N


def frdiv(pred) -> float:
    pred = np.asarray(pred, dtype=np.float64)
    N, S = pred.shape[:2]
    if S == 1:
        return 0.0
    flat = pred.reshape(N, S, -1)
    total = 0.0
    for k in range(N):
        diff = flat[k][:, None, :] - flat[k][None, :, :]
        total += (diff ** 2).sum() / (S * (S - 1) * flat.shape[-1])
    return total / N


def frdvs(pred) -> float:
    pred = np.asarray(pred, dtype=np.float64)
    N, S = pred.shape[:2]
    if N == 1:
        return 0.0
    flat = pred.reshape(N, S, -1)
    total = 0.0
    for i in range(S):
        diff = flat[:, i][:, None, :] - flat[:, i][None, :, :]
        total += (diff ** 2).sum() / (N * (N - 1) * flat.shape[-1])
    return total / S


def frvar(pred) -> float:
    return float(np.asarray(pred, dtype=np.float64).var(axis=2, ddof=1).mean())


def frsyn(pred, speaker, max_lag: int = 49, all_samples: bool = False) -> float:
    pred = np.asarray(pred, dtype=np.float32)
    S = pred.shape[1]
    samples = range(S) if all_samples else range(1)
    offsets = [_tlcc.tlcc_offset(_tlcc.tlcc(pred[:, i], speaker, max_lag)) for i in samples]
    return float(np.mean(np.concatenate(offsets)))


def evaluate(pred, listener_gt, speaker, appropriate) -> dict:
    return {
        "FRCorr": frcorr(pred, listener_gt, appropriate),
        "FRDist": frdist(pred, listener_gt, appropriate),
        "FRDiv": frdiv(pred),
        "FRDvs": frdvs(pred),
        "FRVar": frvar(pred),
        "FRSyn": frsyn(pred, speaker),
    }
