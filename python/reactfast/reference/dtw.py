"""Reference DTW (numpy, float64): steps (1,0), (0,1), (1,1), squared-Euclidean local cost,
result sqrt(D[Tx-1, Ty-1]) — tslearn's ``dtw`` as the REACT challenge calls it."""

from __future__ import annotations

import numpy as np

# REACT's three emotion groups: 15 AUs (weight 1/15), valence/arousal (1), 8 expressions (1/8).
REACT_GROUPS = ((0, 15, 1.0 / 15), (15, 17, 1.0), (17, 25, 1.0 / 8))


def dtw(x, y) -> float:
    """DTW of x (Tx, D) and y (Ty, D), accumulated in float64 over anti-diagonals."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    Tx, Ty = len(x), len(y)
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    acc = np.full((Tx + 1, Ty + 1), np.inf)
    acc[0, 0] = 0.0
    for k in range(2, Tx + Ty + 1):
        i = np.arange(max(1, k - Ty), min(Tx, k - 1) + 1)
        j = k - i
        best = np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    return float(np.sqrt(acc[Tx, Ty]))


def weighted_dtw(x, y, groups=REACT_GROUPS) -> float:
    """sum_g w_g DTW(x[:, start:end], y[:, start:end]) over (start, end, w_g) groups."""
    return float(sum(w * dtw(np.asarray(x)[:, a:b], np.asarray(y)[:, a:b]) for a, b, w in groups))


def weighted_dtw_min(pred, gt, candidates, groups=REACT_GROUPS):
    """For each query pred[m], (min, argmin) over j in candidates[m] of weighted_dtw(pred[m], gt[j])."""
    mins, args = [], []
    for m, cand in enumerate(candidates):
        values = [weighted_dtw(pred[m], gt[j], groups) for j in cand]
        best = int(np.argmin(values))
        mins.append(values[best])
        args.append(int(cand[best]))
    return np.asarray(mins, dtype=np.float64), np.asarray(args, dtype=np.int64)
