"""Positional encodings shared by the generators."""

from __future__ import annotations

import torch


def sinusoid(positions: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal encodings of integer or float positions (...,) -> (..., dim) in ``dtype`` (computed
    in float32, in float64 for float64): sin at even channels, cos at odd ones, frequencies
    10000^(-2i / dim) (Vaswani et al.)."""
    work = torch.float64 if dtype == torch.float64 else torch.float32
    i = torch.arange(0, dim, 2, device=positions.device, dtype=work)
    angle = positions.to(work)[..., None] / torch.pow(10000.0, i / dim)
    out = torch.zeros(*positions.shape, dim, device=positions.device, dtype=work)
    out[..., 0::2] = torch.sin(angle)
    out[..., 1::2] = torch.cos(angle[..., : dim // 2])
    return out if work == dtype else out.to(dtype)
