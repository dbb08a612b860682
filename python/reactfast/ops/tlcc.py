"""Time-lagged cross-correlation (REACT's FRSyn definition). C++/OpenMP on CPU tensors; on CUDA
tensors a Triton kernel (``reactfast.kernels.tlcc``, one program per pair and lag); the reference
(``reactfast.reference.tlcc``, a Python loop over lags) anywhere.
Values only: the kernels have no backward, so inputs that require grad (grad mode on) are refused
unless ``backend="reference"`` asks for the differentiable reference."""

from __future__ import annotations

from typing import Optional

import torch

from reactfast import _backend, kernels
from reactfast.ops._checks import check_same_device, check_tensor
from reactfast.reference import tlcc as _ref

if kernels.AVAILABLE:
    from reactfast.kernels import tlcc as _triton

IMPLEMENTED = ("cpp", "triton", "reference")
_backend.register_op("tlcc", IMPLEMENTED)
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def tlcc(x: torch.Tensor, y: torch.Tensor, max_lag: int = 49, backend: Optional[str] = None) -> torch.Tensor:
    """Lagged correlation curve rs(l), l = -max_lag..max_lag, of each pair (x[m], y[m]).

    Args:
        x: (M, T, D) float tensor (the generated listener reaction).
        y: (M, T, D) float tensor (the speaker), x's device.
        max_lag: largest lag in frames (49: 2 s at 25 fps, 99 lags).
        backend: ``"cpp"``, ``"triton"`` or ``"reference"`` (default automatic: C++ on CPU tensors,
            Triton on CUDA ones).

    Returns:
        (M, 2 max_lag + 1) float32; column ``max_lag + l`` holds lag l; NaN where a dim's segment
        is constant. ``reactfast.metrics.sync_offsets`` turns it into FRSyn's |offset|.
    """
    for name, t in (("x", x), ("y", y)):
        check_tensor(name, t, ndim=3, dtypes=_FLOATS, finite=True)
    check_same_device(x=x, y=y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not isinstance(max_lag, int) or isinstance(max_lag, bool) or max_lag < 0:
        raise ValueError(f"max_lag must be an int >= 0, got {max_lag!r}")
    return tlcc_unchecked(x.float().contiguous(), y.float().contiguous(), max_lag,
                          _backend.for_values("tlcc", backend, x, y))


def tlcc_unchecked(x, y, max_lag=49, backend=None):
    """:func:`tlcc` on inputs already validated (float32 contiguous, one device)."""
    name = _backend.select("tlcc", x.device, IMPLEMENTED, backend)
    if name == "reference":
        return _ref.tlcc(x, y, max_lag)
    if name == "triton":
        return _triton.tlcc(x, y, max_lag)
    M, T, D = x.shape
    rs = _backend.empty((M, 2 * max_lag + 1), torch.float32, x.device)
    _backend.native().tlcc_cpu(x, y, rs, M, T, D, max_lag)
    return rs
