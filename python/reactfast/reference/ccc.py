"""Reference CCC as the REACT challenge computes it (numpy).

r: Pearson correlation in float64 (numpy.corrcoef), NaN -> 0, clipped to [-1, 1]; means,
variances and standard deviations of the float32 data in float32 (ddof = 0);
ccc = 2 r sx sy / (sx^2 + sy^2 + (mx - my)^2 + 1e-8)."""

from __future__ import annotations

import numpy as np


def pearson(x, y, axis: int = -2) -> np.ndarray:
    """Two-pass Pearson r in float64 along ``axis`` (NaN where a series is constant)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc = x - x.mean(axis, keepdims=True)
    yc = y - y.mean(axis, keepdims=True)
    sxx, syy = (xc * xc).sum(axis), (yc * yc).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis) / np.sqrt(sxx * syy)
    r = np.where((sxx == 0) | (syy == 0), np.nan, r)
    return np.clip(r, -1.0, 1.0)


def ccc(x, y) -> np.ndarray:
    """Per-dim CCC of x and y of shape (..., T, D) -> (..., D) float64."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    r = np.nan_to_num(pearson(x, y), nan=0.0)
    mx, my = x.mean(-2), y.mean(-2)
    vx, vy = x.var(-2), y.var(-2)
    sx, sy = x.std(-2), y.std(-2)
    num = 2.0 * r * sx.astype(np.float64) * sy.astype(np.float64)
    dm = mx.astype(np.float64) - my.astype(np.float64)
    return num / (vx.astype(np.float64) + vy.astype(np.float64) + dm * dm + 1e-8)


def ccc_max(pred, gt, candidates):
    """For each query pred[m], (max, argmax) over j in candidates[m] of mean_d CCC(gt[j], pred[m])."""
    maxs, args = [], []
    for m, cand in enumerate(candidates):
        values = ccc(np.asarray(gt)[list(cand)], np.asarray(pred)[m][None]).mean(-1)
        best = int(np.argmax(values))
        maxs.append(float(values[best]))
        args.append(int(cand[best]))
    return np.asarray(maxs), np.asarray(args, dtype=np.int64)
