"""Reference dynamic time warping as the REACT challenge computes it (tslearn's ``dtw``): steps
(1, 0), (0, 1), (1, 1), squared-Euclidean local cost accumulated in float64, result
sqrt(D[Tx - 1, Ty - 1]); and FRDist's weighted three-group DTW minimised over candidates.
Same signatures as ``reactfast.ops.dtw``; any device (every pair advances together, one
anti-diagonal at a time)."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from reactfast.reference.ccc import segment_best

# REACT's three emotion groups: 15 AUs (weight 1/15), valence/arousal (1), 8 expressions (1/8).
REACT_GROUPS = ((0, 15, 1.0 / 15), (15, 17, 1.0), (17, 25, 1.0 / 8))


def dtw(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DTW of each pair: x (P, Tx, D), y (P, Ty, D) -> (P,) float64."""
    x, y = x.double(), y.double()
    P, Tx, Ty = x.shape[0], x.shape[1], y.shape[1]
    cost = x.new_zeros(P, Tx, Ty)
    for d in range(x.shape[2]):
        cost += (x[:, :, None, d] - y[:, None, :, d]) ** 2
    acc = torch.full((P, Tx + 1, Ty + 1), float("inf"), dtype=torch.float64, device=x.device)
    acc[:, 0, 0] = 0.0
    for k in range(2, Tx + Ty + 1):
        i = torch.arange(max(1, k - Ty), min(Tx, k - 1) + 1, device=x.device)
        j = k - i
        best = torch.minimum(torch.minimum(acc[:, i - 1, j], acc[:, i, j - 1]), acc[:, i - 1, j - 1])
        acc[:, i, j] = cost[:, i - 1, j - 1] + best
    return torch.sqrt(acc[:, Tx, Ty])


def weighted_dtw(x: torch.Tensor, y: torch.Tensor, groups: Sequence = REACT_GROUPS) -> torch.Tensor:
    """sum_g w_g DTW(x[..., a_g:b_g], y[..., a_g:b_g]) of each pair -> (P,) float64."""
    return sum(w * dtw(x[..., a:b], y[..., a:b]) for a, b, w in groups)


def weighted_dtw_min(pred: torch.Tensor, gt: torch.Tensor, candidates: Tuple[torch.Tensor, torch.Tensor],
                     groups: Sequence = REACT_GROUPS) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each query pred[m] (M, Tx, D), the minimum over j in its candidates (CSR: index[offset[m]:
    offset[m + 1]]) of weighted_dtw(pred[m], gt[j]), and that j (the first on ties).
    Returns (min (M,) float64, argmin (M,) int64)."""
    offset, index = (c.to(pred.device) for c in candidates)
    query = torch.repeat_interleave(torch.arange(pred.shape[0], device=pred.device), offset[1:] - offset[:-1])
    values = weighted_dtw(pred[query], gt[index], groups)
    return segment_best(values, query, index, pred.shape[0], largest=False)
