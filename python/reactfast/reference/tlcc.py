"""Reference time-lagged cross-correlation as the REACT challenge computes it (FRSyn).

Lag l > 0 pairs x[l:] with y[:T - l]; l < 0 pairs x[:T + l] with y[-l:]. Per dim the float64
Pearson r (NaN for a constant segment or one shorter than 2 frames); rs(l) is the float32 mean
over dims, summed in dim order in float32 (NaN propagates). Same signature as
``reactfast.ops.tlcc``; any device.
"""

from __future__ import annotations

import torch

from reactfast.reference.ccc import pearson


def tlcc(x: torch.Tensor, y: torch.Tensor, max_lag: int = 49) -> torch.Tensor:
    """rs of x, y (M, T, D) for lags -max_lag..max_lag -> (M, 2 max_lag + 1) float32; column
    ``max_lag + l`` holds lag l."""
    x, y = x.float(), y.float()
    M, T, D = x.shape
    rs = torch.full((M, 2 * max_lag + 1), float("nan"), dtype=torch.float32, device=x.device)
    for li, lag in enumerate(range(-max_lag, max_lag + 1)):
        if T - abs(lag) < 2:
            continue
        xs = x[:, lag:] if lag > 0 else x[:, : T + lag] if lag < 0 else x
        ys = y[:, : T - lag] if lag > 0 else y[:, -lag:] if lag < 0 else y
        r = pearson(xs, ys, dim=1).float()
        total = r[:, 0]
        for d in range(1, D):
            total = total + r[:, d]
        rs[:, li] = total / D
    return rs
