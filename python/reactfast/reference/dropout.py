"""Dropout with a counter-based mask (the oracle of ``reactfast.ops.dropout``).

Element i (in the flattened, contiguous order) of a call keyed by the 64-bit ``seed`` is kept when
``lowbias32(lowbias32(i ^ key0) ^ key1) >= round(p 2^32)``, with key0 and key1 the low and high 32
bits of the seed: the mask is a function of the index and the seed only, so the C++ kernel draws
the same one. 32-bit unsigned arithmetic is done in int64 with the products split into 16-bit
halves, so nothing overflows.
"""

from __future__ import annotations

from typing import Tuple

import torch

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32) and a 32-bit constant c."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def lowbias32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def split_seed(seed: int) -> Tuple[int, int]:
    """The two 32-bit keys of a 64-bit seed (low, high)."""
    seed &= (1 << 64) - 1
    return seed & _M32, seed >> 32


def threshold(p: float) -> int:
    """The 32-bit threshold a draw must reach to keep its element: round(p 2^32), at most 2^32 - 1."""
    return min(int(round(p * 2.0 ** 32)), _M32)


def keep_mask(shape, p: float, seed: int, device=None) -> torch.Tensor:
    """The bool mask of kept elements of a call with drop probability p and ``seed``."""
    n = 1
    for s in shape:
        n *= int(s)
    key0, key1 = split_seed(seed)
    i = torch.arange(n, dtype=torch.int64, device=device)
    bits = lowbias32(lowbias32(i ^ key0) ^ key1)
    return (bits >= threshold(p)).reshape(shape)


def dropout(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """x with each element zeroed with probability p (by :func:`keep_mask`) and the rest scaled by
    1 / (1 - p); differentiable."""
    keep = keep_mask(x.shape, p, seed, x.device)
    return torch.where(keep, x * (1.0 / (1.0 - p)), torch.zeros((), dtype=x.dtype, device=x.device))
