"""Reference concordance correlation coefficient as the REACT challenge computes it (FRCorr).

For one dim: r = Pearson correlation in float64 (NaN -> 0, clipped to [-1, 1]); the means,
variances (ddof = 0) and standard deviations of the float32 data as float32 values;
ccc = 2 r sx sy / (sx^2 + sy^2 + (mx - my)^2 + 1e-8). The CCC of two clips is the mean over dims.
Same signatures as ``reactfast.ops.ccc``; any device.
"""

from __future__ import annotations

from typing import Tuple

import torch


def pearson(x: torch.Tensor, y: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Two-pass float64 Pearson r along ``dim``, clipped to [-1, 1]; NaN where a series is constant.
    The means are sums divided by the length (as numpy's): torch's CUDA mean multiplies the sum by
    the rounded reciprocal, and n * fl(1/n) != 1 for n = 49, 98, 103, 107, ...: a constant series
    of ones then sits one rounding off its mean and loses its NaN (FRSyn's lags of 49, 103 and 107
    frames on an H100)."""
    x, y = x.double(), y.double()
    n = x.shape[dim]
    xc = x - x.sum(dim, keepdim=True) / n
    yc = y - y.sum(dim, keepdim=True) / n
    sxx, syy = (xc * xc).sum(dim), (yc * yc).sum(dim)
    r = (xc * yc).sum(dim) / torch.sqrt(sxx * syy)
    r = torch.where((sxx == 0) | (syy == 0), torch.full_like(r, float("nan")), r)
    return r.clamp(-1.0, 1.0)


def stats32(x: torch.Tensor):
    """float32 mean, variance and standard deviation along time (dim -2), as float64 values."""
    x = x.double()
    mean = x.mean(-2)
    var = ((x - mean[..., None, :]) ** 2).mean(-2)
    mean32, var32 = mean.float(), var.float()
    return mean32.double(), var32.double(), torch.sqrt(var32).double()


def ccc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-dim CCC of each pair: x, y (P, T, D) -> (P, D) float64."""
    r = torch.nan_to_num(pearson(x, y), nan=0.0)
    mx, vx, sx = stats32(x)
    my, vy, sy = stats32(y)
    return 2.0 * r * sx * sy / (vx + vy + (mx - my) ** 2 + 1e-8)


def ccc_max(pred: torch.Tensor, gt: torch.Tensor, candidates: Tuple[torch.Tensor, torch.Tensor]
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each query pred[m] (M, T, D), the maximum over j in its candidates of the dim-mean
    CCC(gt[j], pred[m]), and that j (the first on ties). ``candidates`` is CSR: query m's
    candidates are index[offset[m]:offset[m + 1]]. Returns (max (M,) float64, argmax (M,) int64)."""
    offset, index = (c.to(pred.device) for c in candidates)
    query = torch.repeat_interleave(torch.arange(pred.shape[0], device=pred.device), offset[1:] - offset[:-1])
    values = ccc(gt[index], pred[query]).mean(-1)
    return segment_best(values, query, index, pred.shape[0], largest=True)


def segment_best(values: torch.Tensor, query: torch.Tensor, index: torch.Tensor, M: int, largest: bool
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per query, the best of its ``values`` (max or min) and the candidate index attaining it; on
    ties the candidate listed first."""
    fill = float("-inf") if largest else float("inf")
    best = torch.full((M,), fill, dtype=values.dtype, device=values.device)
    best = best.scatter_reduce(0, query, values, reduce="amax" if largest else "amin")
    position = torch.arange(values.numel(), device=values.device)
    big = values.numel()
    first = torch.full((M,), big, dtype=torch.long, device=values.device)
    first = first.scatter_reduce(0, query, torch.where(values == best[query], position, big), reduce="amin")
    return best, index[first]
