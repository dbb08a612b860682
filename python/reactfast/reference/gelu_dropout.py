"""GELU then dropout, the middle of a transformer feed-forward (the oracle of
``reactfast.ops.gelu_dropout``): ``dropout(gelu(x), p, seed)`` with the exact GELU,
x Phi(x) = x erfc(-x / sqrt 2) / 2, and the mask of ``reactfast.reference.dropout``.

GELU is written with erfc, not as x (1 + erf(x / sqrt 2)) / 2 (``torch.nn.functional.gelu``'s
form): for x below about -5 that sum cancels (in float64 too, from x = -8 on), while erfc keeps
its relative accuracy, so a float64 call here is a reference for the tail as well.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from reactfast.reference import dropout as _dropout


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU, x Phi(x), by erfc; differentiable."""
    return 0.5 * x * torch.special.erfc(x * -math.sqrt(0.5))


def gelu_dropout(x: torch.Tensor, p: float = 0.0, seed: Optional[int] = None) -> torch.Tensor:
    """``dropout(gelu(x), p, seed)``; differentiable; p = 0 returns gelu(x) (``seed`` unused)."""
    g = gelu(x)
    if p > 0.0:
        if seed is None:
            raise ValueError("seed is needed when p > 0")
        g = _dropout.dropout(g, p, seed)
    return g
