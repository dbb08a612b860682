"""Sums of squared deviations behind REACT's spread metrics (FRDiv, FRDvs, FRVar), in one op:
C++/OpenMP on CPU tensors (one read of pred for the speaker means, one for the three sums); the
reference (``reactfast.reference.spread``, float64 torch, a few speakers at a time) anywhere,
and on CUDA tensors.
Values only: the kernels have no backward, so inputs that require grad (grad mode on) are refused
unless ``backend="reference"`` asks for the differentiable reference."""

from __future__ import annotations

from typing import Optional

import torch

from reactfast import _backend
from reactfast.ops._checks import check_tensor
from reactfast.reference import spread as _ref

IMPLEMENTED = ("cpp", "reference")
_backend.register_op("spread", IMPLEMENTED)
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def spread_sums(pred: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """The three centred sums of squares of FRDiv, FRDvs and FRVar, accumulated in float64.

    Args:
        pred: (N, S, T, D) float tensor: N speakers, S samples each, T frames, D dims.
        backend: ``"cpp"`` or ``"reference"`` (default automatic: C++ on CPU tensors, the
            reference on CUDA ones).

    Returns:
        (3,) float64 on pred's device: sum over speakers k and (t, d) of sum_i (pred - mean over
        samples)^2; sum over samples i and (t, d) of sum_k (pred - mean over speakers)^2; sum over
        (k, i, d) of sum_t (pred - mean over time)^2. FRDiv = 2 [0] / ((S - 1) T D N),
        FRDvs = 2 [1] / ((N - 1) S T D), FRVar = [2] / ((T - 1) N S D).

    Example:
        >>> div, dvs, var = spread_sums(torch.rand(8, 3, 750, 25)).tolist()
    """
    check_tensor("pred", pred, ndim=4, dtypes=_FLOATS, finite=True)
    return spread_sums_unchecked(pred.float().contiguous(), _backend.for_values("spread", backend, pred))


def spread_sums_unchecked(pred, backend=None):
    """:func:`spread_sums` on pred already validated (float32 contiguous)."""
    name = _backend.select("spread", pred.device, IMPLEMENTED, backend)
    if name == "reference":
        return _ref.spread_sums(pred)
    sums = torch.empty(3, dtype=torch.float64)
    _backend.native().spread_cpu(pred, sums, *pred.shape)
    return sums
