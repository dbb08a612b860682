"""Time-lagged cross-correlation (REACT's FRSyn definition). C++/OpenMP on CPU tensors; numpy
reference anywhere (CUDA tensors are evaluated through the CPU path: the op is cheap)."""

from __future__ import annotations

from typing import Optional

import torch

from reactfast import _backend
from reactfast.ops import _native
from reactfast.ops._checks import check_same_device, check_tensor
from reactfast.reference import tlcc as _ref

IMPLEMENTED = ("cpp", "reference")


def tlcc(x: torch.Tensor, y: torch.Tensor, max_lag: int = 49, backend: Optional[str] = None) -> torch.Tensor:
    """Lagged correlation curve rs(l), l = -max_lag..max_lag, of each pair (x[m], y[m]).

    Args:
        x: (M, T, D) float tensor (the generated listener reaction).
        y: (M, T, D) float tensor (the speaker).
        max_lag: largest lag in frames (49: 2 s at 25 fps, 99 lags).
        backend: ``"cpp"`` or ``"reference"`` (default automatic).

    Returns:
        (M, 2 max_lag + 1) float32; column ``max_lag + l`` holds lag l; NaN where a dim's segment
        is constant. ``reactfast.reference.tlcc.tlcc_offset`` turns it into |offset|.
    """
    for name, t in (("x", x), ("y", y)):
        check_tensor(name, t, ndim=3, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16),
                     finite=True)
    check_same_device(x=x, y=y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not isinstance(max_lag, int) or max_lag < 0:
        raise ValueError(f"max_lag must be an int >= 0, got {max_lag!r}")
    device = x.device
    x, y = x.detach().float().cpu().contiguous(), y.detach().float().cpu().contiguous()
    name = _backend.select("tlcc", x.device, IMPLEMENTED, backend)
    M, T, D = x.shape
    if name == "cpp":
        rs = torch.empty(M, 2 * max_lag + 1, dtype=torch.float32)
        _native.call("tlcc_cpu", x, y, rs, M, T, D, max_lag)
    else:
        rs = torch.from_numpy(_ref.tlcc(x.numpy(), y.numpy(), max_lag))
    return rs.to(device)
