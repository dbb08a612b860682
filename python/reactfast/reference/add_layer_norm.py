"""The post-norm residual step of a transformer block (the oracle of ``reactfast.ops.add_layer_norm``):
``LayerNorm(x + dropout(h))`` over the last dimension, the dropout mask that of
``reactfast.reference.dropout`` keyed by ``seed`` over h's elements."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from reactfast.reference import dropout as _dropout


def add_layer_norm(x: torch.Tensor, h: torch.Tensor, weight: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None, eps: float = 1e-5, p: float = 0.0,
                   seed: Optional[int] = None) -> torch.Tensor:
    """``F.layer_norm(x + dropout(h, p, seed), (D,), weight, bias, eps)``; differentiable; p = 0 adds h
    as is (``seed`` unused)."""
    if p > 0.0:
        if seed is None:
            raise ValueError("seed is needed when p > 0")
        h = _dropout.dropout(h, p, seed)
    return F.layer_norm(x + h, (x.shape[-1],), weight, bias, eps)
