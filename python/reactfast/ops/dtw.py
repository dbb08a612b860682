"""Dynamic time warping over batches of pairs, and the weighted three-group DTW minimised over
each query's candidates (FRDist). C++/OpenMP on CPU tensors, CUDA wavefront on CUDA tensors,
numpy reference anywhere."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from reactfast import _backend
from reactfast.ops import _candidates, _native
from reactfast.ops._checks import check_same_device, check_tensor
from reactfast.reference import dtw as _ref

REACT_GROUPS = _ref.REACT_GROUPS
IMPLEMENTED = ("cuda", "cpp", "reference")


def _check_groups(groups, D: int) -> list:
    groups = [tuple(g) for g in groups]
    if not 1 <= len(groups) <= 3:
        raise ValueError(f"groups must hold 1 to 3 (start, end, weight) triples, got {len(groups)}")
    for a, b, w in groups:
        if not (0 <= a < b <= D):
            raise ValueError(f"groups: each (start, end) must satisfy 0 <= start < end <= {D}, got ({a}, {b})")
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"groups: weights must be finite and >= 0, got {w}")
    return [(int(a), int(b), float(w)) for a, b, w in groups]


def _float_seq(name, x, ndim):
    check_tensor(name, x, ndim=ndim, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16),
                 finite=True)
    return x.float().contiguous()


def dtw(x: torch.Tensor, y: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """DTW of each pair (x[p], y[p]).

    Args:
        x: (P, Tx, D) float tensor.
        y: (P, Ty, D) float tensor, same P and D.
        backend: ``"cpp"`` or ``"reference"`` (default automatic).

    Returns:
        (P,) float64: sqrt of the accumulated squared-Euclidean cost of the best warping path.

    Example:
        >>> dtw(torch.zeros(1, 3, 1), torch.ones(1, 3, 1))  # tensor([1.7321])
    """
    x, y = _float_seq("x", x, 3), _float_seq("y", y, 3)
    check_same_device(x=x, y=y)
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x and y must share P and D: x {tuple(x.shape)}, y {tuple(y.shape)}")
    name = _backend.select("dtw", x.device, ("cpp", "reference"), backend)
    P, Tx, D = x.shape
    if name == "cpp":
        out = torch.empty(P, dtype=torch.float64)
        _native.call("dtw_pairs_cpu", x, y, out, P, Tx, y.shape[1], D)
        return out
    xs, ys = x.cpu().numpy(), y.cpu().numpy()
    return torch.tensor([_ref.dtw(xs[p], ys[p]) for p in range(P)], dtype=torch.float64, device=x.device)


def weighted_dtw_min(pred: torch.Tensor, gt: torch.Tensor, candidates, groups: Sequence = REACT_GROUPS,
                     abandon: bool = True, backend: Optional[str] = None, return_cells: bool = False):
    """For each query pred[m], the minimum over its candidates j of
    sum_g w_g DTW(pred[m][:, a_g:b_g], gt[j][:, a_g:b_g]), and the j attaining it.

    Args:
        pred: (M, Tx, D) float tensor of queries.
        gt: (G, Ty, D) float tensor of candidate targets.
        candidates: a sequence of M index lists into gt, or a CSR pair (offset (M + 1,), index).
        groups: (start, end, weight) triples; default REACT's (0, 15, 1/15), (15, 17, 1), (17, 25, 1/8).
        abandon: exact early abandoning on CPU (the result is unchanged, only faster).
        backend: ``"cuda"``, ``"cpp"`` or ``"reference"`` (default automatic).

        return_cells: also return how many DP cells the C++ backend computed (for measuring
            early abandoning; the full count is M x K x Tx x Ty x 3).

    Returns:
        (min (M,) float64, argmin (M,) int64); ties go to the smallest j. With ``return_cells``
        a third item, the cell count (None for backends that do not count).
    """
    pred, gt = _float_seq("pred", pred, 3), _float_seq("gt", gt, 3)
    check_same_device(pred=pred, gt=gt)
    M, Tx, D = pred.shape
    G, Ty, Dg = gt.shape
    if Dg != D:
        raise ValueError(f"pred and gt must have the same last dim, got {D} and {Dg}")
    groups = _check_groups(groups, D)
    offset, index = _candidates.as_csr(candidates, M, G)
    name = _backend.select("dtw", pred.device, IMPLEMENTED, backend)
    if name == "cpp":
        out_min = torch.empty(M, dtype=torch.float64)
        out_arg = torch.empty(M, dtype=torch.int64)
        cells = _native.call("weighted_dtw_min_cpu", pred, gt, offset.contiguous(), index.contiguous(), M, G, Tx,
                             Ty, D, groups, bool(abandon), out_min, out_arg)
        return (out_min, out_arg, cells) if return_cells else (out_min, out_arg)
    if name == "cuda":
        out = _weighted_dtw_min_cuda(pred, gt, offset.to(pred.device), index.to(pred.device), groups)
    else:
        lists = [index[offset[m]:offset[m + 1]].tolist() for m in range(M)]
        mins, args = _ref.weighted_dtw_min(pred.cpu().numpy(), gt.cpu().numpy(), lists, groups)
        out = torch.from_numpy(mins).to(pred.device), torch.from_numpy(args).to(pred.device)
    return (*out, None) if return_cells else out


def _weighted_dtw_min_cuda(pred, gt, offset, index, groups, chunk: int = 1 << 16):
    M, Tx, D = pred.shape
    counts = offset[1:] - offset[:-1]
    query = torch.repeat_interleave(torch.arange(M, device=pred.device), counts)
    weights = torch.tensor([w for _, _, w in groups], dtype=torch.float64, device=pred.device)
    values = torch.empty(index.numel(), dtype=torch.float64, device=pred.device)
    for lo in range(0, index.numel(), chunk):
        qi = query[lo:lo + chunk].contiguous()
        ci = index[lo:lo + chunk].contiguous()
        out = torch.empty(qi.numel(), len(groups), dtype=torch.float64, device=pred.device)
        _native.call("group_dtw_pairs_cuda", pred, gt, qi, ci, qi.numel(), Tx, gt.shape[1], D, groups, out,
                     _native.stream_of(pred))
        values[lo:lo + chunk] = out @ weights
    out_min = torch.full((M,), float("inf"), dtype=torch.float64, device=pred.device)
    out_min = out_min.scatter_reduce(0, query, values, reduce="amin")
    # argmin: smallest candidate index among those equal to the minimum.
    hit = values == out_min[query]
    big = torch.iinfo(torch.int64).max
    out_arg = torch.full((M,), big, dtype=torch.int64, device=pred.device)
    out_arg = out_arg.scatter_reduce(0, query, torch.where(hit, index, torch.full_like(index, big)), reduce="amin")
    return out_min, out_arg
