"""Dynamic time warping over batches of pairs, and FRDist's weighted three-group DTW minimised over
each query's candidates. C++/OpenMP on CPU tensors: eight pairs in the SIMD lanes, each lane
refilled as its pair finishes; for the minimum, the UCR Suite's exact pruning cascade (LB_Kim,
LB_Keogh of the rows on block envelopes of each candidate and of the columns on the query's
envelope, candidates in bound order, abandoning inside the DP against the best so far;
csrc/include/reactfast/dtw_bounds.h) with banded DPs (PrunedDTW: one
pair at a time, eight of its rows in the SIMD lanes as a wavefront, swept only where its values can
still matter, under per-group limits from the diagonal path and the best so far;
csrc/cpu/dtw_band.cpp). CUDA on CUDA tensors: for up to 32 feature dims
a warp-level wavefront after cuDTW++ (csrc/include/reactfast/dtw_warp.h: one warp per pair, a strip
of query rows per lane in registers, neighbours passed by shuffles, the three groups in one pass,
one block per query whose warps share its best value for exact abandoning, min and argmin fused);
wider features one block per (pair, group). The reference (``reactfast.reference.dtw``) anywhere.
Values only: the kernels have no backward, so inputs that require grad (grad mode on) are refused
unless ``backend="reference"`` asks for the differentiable reference."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from reactfast import _backend
from reactfast.ops._checks import (check_bool, check_candidates, check_int, check_real, check_same_device,
                                   check_tensor)
from reactfast.reference import dtw as _ref

REACT_GROUPS = _ref.REACT_GROUPS
IMPLEMENTED = ("cuda", "cpp", "reference")
_backend.register_op("dtw", IMPLEMENTED)
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
WARP_MAX_DIMS = 32  # the warp kernel's feature registers
WARPS_PER_QUERY = 4  # warps of one query's block on CUDA


def check_groups(groups, D: int) -> list:
    """(start, end, weight) triples, 1 to 3 of them, integers 0 <= start < end <= D, finite weights >= 0."""
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__iter__"):
        raise ValueError(f"groups must be a list of (start, end, weight) triples, got {groups!r}")
    groups = list(groups)
    if not 1 <= len(groups) <= 3:
        raise ValueError(f"groups must hold 1 to 3 (start, end, weight) triples, got {len(groups)}")
    out = []
    for g in groups:
        if isinstance(g, (str, bytes)) or not hasattr(g, "__len__") or len(g) != 3:
            raise ValueError(f"groups: each must be a (start, end, weight) triple, got {g!r}")
        a, b = (check_int("groups: start and end", v, minimum=0) for v in g[:2])
        if not a < b <= D:
            raise ValueError(f"groups: each (start, end) must satisfy 0 <= start < end <= {D}, got ({a}, {b})")
        out.append((a, b, check_real("groups: weights", g[2])))
    return out


def _sequences(name: str, x) -> torch.Tensor:
    check_tensor(name, x, ndim=3, dtypes=_FLOATS, finite=True)
    return x.float().contiguous()


def dtw(x: torch.Tensor, y: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """DTW of each pair (x[p], y[p]).

    Args:
        x: (P, Tx, D) float tensor.
        y: (P, Ty, D) float tensor, same P and D and device.
        backend: ``"cuda"``, ``"cpp"`` or ``"reference"`` (default automatic).

    Returns:
        (P,) float64: sqrt of the accumulated squared-Euclidean cost of the best warping path.

    Example:
        >>> dtw(torch.zeros(1, 3, 1), torch.ones(1, 3, 1))  # tensor([1.7321])
    """
    x, y = _sequences("x", x), _sequences("y", y)
    check_same_device(x=x, y=y)
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x and y must share P and D: x {tuple(x.shape)}, y {tuple(y.shape)}")
    name = _backend.select("dtw", x.device, IMPLEMENTED, _backend.for_values("dtw", backend, x, y))
    P, Tx, D = x.shape
    if name == "reference":
        return _ref.dtw(x, y)
    out = _backend.empty((P,), torch.float64, x.device)
    if name == "cpp":
        _backend.native().dtw_pairs_cpu(x, y, out, P, Tx, y.shape[1], D)
        return out
    pairs = torch.arange(P, device=x.device)
    if D <= WARP_MAX_DIMS:  # each pair a query with one candidate, one warp a block
        offset = torch.arange(P + 1, device=x.device)
        arg = _backend.empty((P,), torch.int64, x.device)
        with _backend.device_guard(x):
            _backend.native().weighted_dtw_min_cuda(x, y, offset, pairs, P, Tx, y.shape[1], D, [(0, D, 1.0)], False,
                                                    1, out, arg, _backend.cuda_stream(x))
        return out
    with _backend.device_guard(x):
        _backend.native().group_dtw_pairs_cuda(x, y, pairs, pairs, P, Tx, y.shape[1], D, [(0, D, 1.0)], out,
                                               _backend.cuda_stream(x))
    return out


def weighted_dtw_min(pred: torch.Tensor, gt: torch.Tensor, candidates: Tuple[torch.Tensor, torch.Tensor],
                     groups: Sequence = REACT_GROUPS, abandon: bool = True, backend: Optional[str] = None,
                     return_cells: bool = False):
    """For each query pred[m], the minimum over its candidates j of
    sum_g w_g DTW(pred[m][:, a_g:b_g], gt[j][:, a_g:b_g]), and the j attaining it.

    Args:
        pred: (M, Tx, D) float tensor of queries.
        gt: (G, Ty, D) float tensor of candidate targets.
        candidates: CSR pair (offset (M + 1,), index (K,)) of int64 tensors: query m's candidates are
            index[offset[m]:offset[m + 1]] (``reactfast.metrics.candidates`` builds them).
        groups: (start, end, weight) triples; default REACT's (0, 15, 1/15), (15, 17, 1), (17, 25, 1/8).
        abandon: exact pruning: on CPU lower bounds skip or abandon candidates that cannot beat the
            best so far, and each DP row is computed only over the columns where a path that can
            still matter passes; on CUDA (D <= 32) a pair is abandoned at a border row between two
            of its warp's passes (every 128 rows in REACT's layout) whose bound exceeds the query's
            best so far. The result is unchanged, bit for bit, only faster. On CPU it takes, for the
            call, a copy of the listed candidates laid out for the SIMD lanes, about twice their size.
        backend: ``"cuda"``, ``"cpp"`` or ``"reference"`` (default automatic).
        return_cells: also return how many DP cells the C++ backend computed (for measuring the
            pruning; the full count is K x Tx x Ty x groups).

    Returns:
        (min (M,) float64, argmin (M,) int64); ties go to the candidate listed first. With
        ``return_cells`` a third item, the cell count (None for backends that do not count).
    """
    pred, gt = _sequences("pred", pred), _sequences("gt", gt)
    check_same_device(pred=pred, gt=gt)
    M, _, D = pred.shape
    if gt.shape[2] != D:
        raise ValueError(f"pred and gt must have the same last dim, got {D} and {gt.shape[2]}")
    groups = check_groups(groups, D)
    offset, index = check_candidates("candidates", candidates, M, gt.shape[0])
    check_bool("abandon", abandon)
    check_bool("return_cells", return_cells)
    out = weighted_dtw_min_unchecked(pred, gt, offset, index, groups, abandon,
                                     _backend.for_values("dtw", backend, pred, gt))
    return out if return_cells else out[:2]


def weighted_dtw_min_unchecked(pred, gt, offset, index, groups, abandon=True, backend=None):
    """:func:`weighted_dtw_min` on inputs already validated (float32 contiguous tensors on one
    device, CSR int64 tensors, checked groups); returns (min, argmin, cells or None)."""
    name = _backend.select("dtw", pred.device, IMPLEMENTED, backend)
    M, Tx, D = pred.shape
    G, Ty, _ = gt.shape
    if name == "reference":
        return (*_ref.weighted_dtw_min(pred, gt, (offset, index), groups), None)
    if name == "cpp":
        out_min = _backend.empty((M,), torch.float64, pred.device)
        out_arg = _backend.empty((M,), torch.int64, pred.device)
        cells = _backend.native().weighted_dtw_min_cpu(pred, gt, offset.cpu(), index.cpu(), M, G, Tx, Ty, D, groups,
                                                      bool(abandon), out_min, out_arg)
        return out_min, out_arg, cells
    offset, index = offset.to(pred.device), index.to(pred.device)
    if D > WARP_MAX_DIMS:
        return (*_weighted_dtw_min_cuda_blocks(pred, gt, offset, index, groups), None)
    out_min = _backend.empty((M,), torch.float64, pred.device)
    out_arg = _backend.empty((M,), torch.int64, pred.device)
    with _backend.device_guard(pred):
        _backend.native().weighted_dtw_min_cuda(pred, gt, offset, index, M, Tx, Ty, D, groups, bool(abandon),
                                                WARPS_PER_QUERY, out_min, out_arg, _backend.cuda_stream(pred))
    return out_min, out_arg, None


def weighted_dtw_min_warp_emulated(pred: torch.Tensor, gt: torch.Tensor, candidates: Tuple[torch.Tensor, torch.Tensor],
                                   groups: Sequence = REACT_GROUPS, abandon: bool = True,
                                   warps: int = WARPS_PER_QUERY):
    """The CUDA warp kernel's schedule run on the CPU (all 32 lanes of a warp in lockstep, a query's
    ``warps`` warps taking its candidates in list order), for testing the kernel where no GPU is at
    hand. Arguments as :func:`weighted_dtw_min`, on CPU tensors with at most 32 feature dims.

    Returns:
        (min (M,) float64, argmin (M,) int64, number of pairs abandoned).
    """
    pred, gt = _sequences("pred", pred), _sequences("gt", gt)
    check_same_device(pred=pred, gt=gt)
    if pred.device.type != "cpu":
        raise ValueError(f"pred and gt must be CPU tensors (the emulation runs on the CPU), got {pred.device}")
    M, Tx, D = pred.shape
    if gt.shape[2] != D:
        raise ValueError(f"pred and gt must have the same last dim, got {D} and {gt.shape[2]}")
    if D > WARP_MAX_DIMS:
        raise ValueError(f"the warp kernel takes at most {WARP_MAX_DIMS} feature dims, got {D}")
    if isinstance(warps, bool) or not isinstance(warps, int) or not 1 <= warps <= 8:
        raise ValueError(f"warps must be an int in [1, 8], got {warps!r}")
    groups = check_groups(groups, D)
    offset, index = check_candidates("candidates", candidates, M, gt.shape[0])
    check_bool("abandon", abandon)
    out_min = _backend.empty((M,), torch.float64, pred.device)
    out_arg = _backend.empty((M,), torch.int64, pred.device)
    abandoned = _backend.native().weighted_dtw_min_warp_emulated_cpu(pred, gt, offset, index, M, Tx, gt.shape[1], D,
                                                                     groups, bool(abandon), warps, out_min, out_arg)
    return out_min, out_arg, abandoned


def _weighted_dtw_min_cuda_blocks(pred, gt, offset, index, groups, chunk: int = 1 << 16):
    M, Tx, D = pred.shape
    query = torch.repeat_interleave(torch.arange(M, device=pred.device), offset[1:] - offset[:-1])
    weights = torch.tensor([w for _, _, w in groups], dtype=torch.float64, device=pred.device)
    values = torch.empty(index.numel(), dtype=torch.float64, device=pred.device)
    for lo in range(0, index.numel(), chunk):
        qi = query[lo:lo + chunk].contiguous()
        ci = index[lo:lo + chunk].contiguous()
        out = _backend.empty((qi.numel(), len(groups)), torch.float64, pred.device)
        with _backend.device_guard(pred):
            _backend.native().group_dtw_pairs_cuda(pred, gt, qi, ci, qi.numel(), Tx, gt.shape[1], D, groups, out,
                                                   _backend.cuda_stream(pred))
        values[lo:lo + chunk] = out @ weights
    return _ref.segment_best(values, query, index, M, largest=False)
