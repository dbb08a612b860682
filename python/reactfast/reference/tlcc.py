"""Reference time-lagged cross-correlation (FRSyn) as the REACT challenge computes it (numpy)."""

from __future__ import annotations

import numpy as np

from reactfast.reference.ccc import pearson


def tlcc(x, y, max_lag: int = 49) -> np.ndarray:
    """rs of x, y (M, T, D) for lags -max_lag..max_lag -> (M, 2 max_lag + 1) float32.

    Lag l > 0 pairs x[l:] with y[:T-l]; l < 0 pairs x[:T+l] with y[-l:]. Per dim the float64
    Pearson r (NaN for a constant segment or one shorter than 2 frames); rs(l) is the float32 mean
    over dims, accumulated in dim order (NaN propagates).
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    M, T, D = x.shape
    rs = np.full((M, 2 * max_lag + 1), np.nan, dtype=np.float32)
    for li, lag in enumerate(range(-max_lag, max_lag + 1)):
        n = T - abs(lag)
        if n < 2:
            continue
        xs = x[:, lag:] if lag > 0 else x[:, : T + lag] if lag < 0 else x
        ys = y[:, : T - lag] if lag > 0 else y[:, -lag:] if lag < 0 else y
        r = pearson(xs, ys, axis=1).astype(np.float32)
        rs[:, li] = np.cumsum(r, axis=-1, dtype=np.float32)[:, -1] / np.float32(D)
    return rs


def tlcc_offset(rs: np.ndarray) -> np.ndarray:
    """|offset| per row: center - argmax(rs), argmax returning the first NaN if any (numpy's rule)."""
    center = rs.shape[-1] // 2
    return np.abs(center - np.argmax(rs, axis=-1)).astype(np.int64)
