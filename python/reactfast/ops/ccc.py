"""Concordance correlation coefficient (REACT's FRCorr definition) over batches of pairs, and its
maximum over each query's candidates. C++/OpenMP on CPU tensors; on CUDA tensors a batched
float64 torch path; numpy reference anywhere."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from reactfast import _backend
from reactfast.ops import _candidates, _native
from reactfast.ops._checks import check_same_device, check_tensor
from reactfast.reference import ccc as _ref

IMPLEMENTED = ("cuda", "cpp", "reference")
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _prep(name, x):
    check_tensor(name, x, ndim=3, dtypes=_FLOATS, finite=True)
    if x.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 frames (dim 1), got shape {tuple(x.shape)}")
    return x.float().contiguous()


def _ccc_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched CCC of (..., T, D) float32 tensors on any device -> (..., D) float64."""
    xd, yd = x.double(), y.double()
    xc, yc = xd - xd.mean(-2, keepdim=True), yd - yd.mean(-2, keepdim=True)
    sxx, syy = (xc * xc).sum(-2), (yc * yc).sum(-2)
    r = torch.nan_to_num((xc * yc).sum(-2) / torch.sqrt(sxx * syy), nan=0.0).clamp(-1, 1)
    r = torch.where((sxx == 0) | (syy == 0), torch.zeros_like(r), r)
    T = x.shape[-2]
    vx, vy = (sxx / T).float().double(), (syy / T).float().double()
    mx, my = xd.mean(-2).float().double(), yd.mean(-2).float().double()
    sx, sy = vx.float().sqrt().double(), vy.float().sqrt().double()
    return 2 * r * sx * sy / (vx + vy + (mx - my) ** 2 + 1e-8)


def ccc(x: torch.Tensor, y: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """Per-dim CCC of each pair (x[p], y[p]).

    Args:
        x, y: (P, T, D) float tensors.
        backend: ``"cuda"``, ``"cpp"`` or ``"reference"`` (default automatic).

    Returns:
        (P, D) float64; the CCC of two clips is ``ccc(x, y).mean(-1)``.
    """
    x, y = _prep("x", x), _prep("y", y)
    check_same_device(x=x, y=y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    name = _backend.select("ccc", x.device, IMPLEMENTED, backend)
    if name == "cpp":
        out = torch.empty(x.shape[0], x.shape[2], dtype=torch.float64)
        _native.call("ccc_pairs_cpu", x, y, out, *x.shape)
        return out
    if name == "cuda":
        return _ccc_torch(x, y)
    return torch.from_numpy(_ref.ccc(x.cpu().numpy(), y.cpu().numpy())).to(x.device)


def ccc_max(pred: torch.Tensor, gt: torch.Tensor, candidates, backend: Optional[str] = None
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each query pred[m], the maximum over its candidates j of mean_d CCC(gt[j], pred[m]).

    Args:
        pred: (M, T, D), gt: (G, T, D) float tensors.
        candidates: M index lists into gt, or a CSR pair (offset (M + 1,), index).

    Returns:
        (max (M,) float64, argmax (M,) int64), the first j on ties.
    """
    pred, gt = _prep("pred", pred), _prep("gt", gt)
    check_same_device(pred=pred, gt=gt)
    M, T, D = pred.shape
    if gt.shape[1:] != pred.shape[1:]:
        raise ValueError(f"pred and gt must share (T, D), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    offset, index = _candidates.as_csr(candidates, M, gt.shape[0])
    name = _backend.select("ccc", pred.device, IMPLEMENTED, backend)
    if name == "cpp":
        out_max = torch.empty(M, dtype=torch.float64)
        out_arg = torch.empty(M, dtype=torch.int64)
        _native.call("ccc_max_cpu", pred, gt, offset.contiguous(), index.contiguous(), M, gt.shape[0], T, D,
                     out_max, out_arg)
        return out_max, out_arg
    lists = [index[offset[m]:offset[m + 1]].tolist() for m in range(M)]
    if name == "cuda":
        maxs, args = [], []
        for m, cand in enumerate(lists):
            values = _ccc_torch(gt[cand], pred[m].expand(len(cand), T, D)).mean(-1)
            best = int(torch.argmax(values))
            maxs.append(values[best])
            args.append(cand[best])
        return torch.stack(maxs), torch.tensor(args, device=pred.device)
    maxs, args = _ref.ccc_max(pred.cpu().numpy(), gt.cpu().numpy(), lists)
    return torch.from_numpy(maxs).to(pred.device), torch.from_numpy(args).to(pred.device)
