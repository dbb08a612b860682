"""Positional encodings shared by the generators."""

from __future__ import annotations

import torch


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encodings of integer or float positions (...,) -> (..., dim) float32: sin at even
    channels, cos at odd ones, frequencies 10000^(-2i / dim) (Vaswani et al.)."""
    i = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    angle = positions.float()[..., None] / torch.pow(10000.0, i / dim)
    out = torch.zeros(*positions.shape, dim, device=positions.device)
    out[..., 0::2] = torch.sin(angle)
    out[..., 1::2] = torch.cos(angle[..., : dim // 2])
    return out
