"""The post-norm feed-forward sublayer of a transformer block (the oracle of
``reactfast.ops.feed_forward``): ``LayerNorm(x + dropout(W2 dropout(GELU(W1 x + b1)) + b2))`` with
the exact GELU and the masks of ``reactfast.reference.dropout``, the hidden one keyed by
``seed_hidden``, the output one by ``seed_out``."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from reactfast.reference.add_layer_norm import add_layer_norm
from reactfast.reference.gelu_dropout import gelu_dropout


def feed_forward(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], w2: torch.Tensor,
                 b2: Optional[torch.Tensor], norm_weight: Optional[torch.Tensor] = None,
                 norm_bias: Optional[torch.Tensor] = None, eps: float = 1e-5, p_hidden: float = 0.0,
                 p_out: float = 0.0, seed_hidden: Optional[int] = None, seed_out: Optional[int] = None) -> torch.Tensor:
    """``add_layer_norm(x, linear(gelu_dropout(linear(x, w1, b1), p_hidden, seed_hidden), w2, b2),
    norm_weight, norm_bias, eps, p_out, seed_out)``; differentiable; a p of 0 leaves its seed unused."""
    a = gelu_dropout(F.linear(x, w1, b1), p_hidden, seed_hidden)
    return add_layer_norm(x, F.linear(a, w2, b2), norm_weight, norm_bias, eps, p_out, seed_out)
