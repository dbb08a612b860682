"""Argument validation shared by the public ops: errors name the argument."""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def check_tensor(name: str, x, ndim: Optional[int] = None, dtypes: Optional[Sequence[torch.dtype]] = None,
                 finite: bool = False, nonempty: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {str(x.dtype).replace('torch.', '')}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and x.is_floating_point() and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    for name, dev in devices.items():
        if dev != first:
            desc = ", ".join(f"{n} on {d}" for n, d in devices.items())
            raise ValueError(f"{name} must be on the same device as the other inputs ({desc})")
    return first
