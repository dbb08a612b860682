"""Concordance correlation coefficient (REACT's FRCorr definition) over batches of pairs, and its
maximum over each query's candidates. C++/OpenMP on CPU tensors; on CUDA tensors the maximum over
candidates is one Triton kernel (``reactfast.kernels.ccc``: per-series statistics once, each pair
streamed once, no gather of the pairs); the reference (``reactfast.reference.ccc``, batched torch
in float64) anywhere, and for per-pair CCC on CUDA (forcing ``triton`` there raises).
Values only: the kernels have no backward, so inputs that require grad (grad mode on) are refused
unless ``backend="reference"`` asks for the differentiable reference."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from reactfast import _backend, kernels
from reactfast.ops._checks import check_candidates, check_same_device, check_tensor
from reactfast.reference import ccc as _ref

if kernels.AVAILABLE:
    from reactfast.kernels import ccc as _triton

IMPLEMENTED = ("cpp", "triton", "reference")
PAIR_IMPLEMENTED = ("cpp", "reference")        # per-pair ccc(): the Triton kernel computes the max only
_backend.register_op("ccc", IMPLEMENTED)
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _clips(name: str, x) -> torch.Tensor:
    check_tensor(name, x, ndim=3, dtypes=_FLOATS, finite=True)
    if x.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 frames (dim 1), got shape {tuple(x.shape)}")
    return x.float().contiguous()


def ccc(x: torch.Tensor, y: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """Per-dim CCC of each pair (x[p], y[p]).

    Args:
        x, y: (P, T, D) float tensors on one device, T >= 2.
        backend: ``"cpp"`` or ``"reference"`` (default automatic).

    Returns:
        (P, D) float64; the CCC of two clips is ``ccc(x, y).mean(-1)``.

    Example:
        >>> ccc(x, x).mean(-1)  # 1 for every non-constant clip
    """
    x, y = _clips("x", x), _clips("y", y)
    check_same_device(x=x, y=y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    name = _backend.select("ccc", x.device, PAIR_IMPLEMENTED, _backend.for_values("ccc", backend, x, y))
    if name == "reference":
        return _ref.ccc(x, y)
    out = _backend.empty((x.shape[0], x.shape[2]), torch.float64, x.device)
    _backend.native().ccc_pairs_cpu(x, y, out, *x.shape)
    return out


def ccc_max(pred: torch.Tensor, gt: torch.Tensor, candidates: Tuple[torch.Tensor, torch.Tensor],
            backend: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each query pred[m], the maximum over its candidates j of mean_d CCC(gt[j], pred[m]).

    Args:
        pred: (M, T, D), gt: (G, T, D) float tensors on one device.
        candidates: CSR pair (offset (M + 1,), index (K,)) of int64 tensors: query m's candidates are
            index[offset[m]:offset[m + 1]].
        backend: ``"cpp"``, ``"triton"`` or ``"reference"`` (default automatic: C++ on CPU tensors,
            Triton on CUDA ones).

    Returns:
        (max (M,) float64, argmax (M,) int64); ties go to the candidate listed first.
    """
    pred, gt = _clips("pred", pred), _clips("gt", gt)
    check_same_device(pred=pred, gt=gt)
    if gt.shape[1:] != pred.shape[1:]:
        raise ValueError(f"pred and gt must share (T, D), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    offset, index = check_candidates("candidates", candidates, pred.shape[0], gt.shape[0])
    return ccc_max_unchecked(pred, gt, offset, index, _backend.for_values("ccc", backend, pred, gt))


def ccc_max_unchecked(pred, gt, offset, index, backend=None):
    """:func:`ccc_max` on inputs already validated (float32 contiguous, CSR int64)."""
    name = _backend.select("ccc", pred.device, IMPLEMENTED, backend)
    if name == "reference":
        return _ref.ccc_max(pred, gt, (offset, index))
    if name == "triton":
        return _triton.ccc_max(pred, gt, offset.to(pred.device), index.to(pred.device))
    M, T, D = pred.shape
    out_max = _backend.empty((M,), torch.float64, pred.device)
    out_arg = _backend.empty((M,), torch.int64, pred.device)
    _backend.native().ccc_max_cpu(pred, gt, offset.cpu(), index.cpu(), M, gt.shape[0], T, D, out_max, out_arg)
    return out_max, out_arg
