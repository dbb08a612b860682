"""GELU then dropout, fused: ``dropout(gelu(x))``, the middle of a transformer feed-forward
(``Linear -> GELU -> Dropout -> Linear``).

On a CPU, torch's GELU and its backward each take a pass over the hidden activations (its
backward, which evaluates erf and exp again, is the costlier), and dropout two more; at ReactFace's
sizes the four were about 11 ms of a demo training step (profiled). The C++ kernel makes one pass
forward: the GELU (exact, by erfc: see ``reactfast/gelu_dropout.h``), the mask, the scaled output,
and the factor its backward needs (the slope of GELU times the mask and scale), so the backward is
one multiply. The kept factor takes the memory torch's GELU would keep for its input.

The mask is ``reactfast.ops.dropout``'s: the key is one draw from torch's generator per call, so a
fused call drops exactly what ``dropout(gelu(x), p)`` would from the same generator state.

- ``cpp``: float32 CPU tensors, outside ``torch.compile``.
- ``reference``: any dtype and device (``reactfast.reference.gelu_dropout``).
- Otherwise (CUDA, other dtypes, under ``torch.compile``): ``reactfast.ops.dropout(F.gelu(x))``,
  whose dropout follows that op's rules (torch's fused dropout on CUDA unless seeded).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from reactfast import _backend
from reactfast.ops._checks import check_dropout_args
from reactfast.ops.dropout import draw_seed, dropout, fused_route
from reactfast.reference import dropout as _ref_dropout
from reactfast.reference import gelu_dropout as _ref

IMPLEMENTED = ("cpp", "reference")
_backend.register_op("gelu_dropout", IMPLEMENTED)
_CPP_OK = _backend.backend_status("cpp", "cpu", "gelu_dropout")[0]


def _cpp_forward(x: torch.Tensor, p: float, seed: int, save: bool):
    """The kernel's output and, with ``save``, the factor its backward multiplies by (else None)."""
    out = _backend.empty(x.shape, torch.float32, x.device)
    slope = _backend.empty(x.shape, torch.float32, x.device) if save else None
    drop = p > 0.0
    if drop:
        key0, key1 = _ref_dropout.split_seed(seed)
        threshold, scale = _ref_dropout.threshold(p), 1.0 / (1.0 - p)
    else:
        key0 = key1 = threshold = 0
        scale = 1.0
    _backend.native().gelu_dropout_fwd_cpu(x, out, slope, x.numel(), drop, threshold, key0, key1, scale)
    return out, slope


class _GeluDropout(torch.autograd.Function):
    """A plain autograd.Function (as ``ops.dropout``'s): dozens of calls per training step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int):
        out, slope = _cpp_forward(x, p, seed, save=True)
        ctx.save_for_backward(slope)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None


def gelu_dropout(x: torch.Tensor, p: float = 0.0, training: bool = True, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, backend: Optional[str] = None) -> torch.Tensor:
    """``dropout(gelu(x), p)`` in one pass on a CPU, with the exact (erf) GELU.

    Args:
        x: float tensor, any shape (fewer than 2^32 elements).
        p: drop probability in [0, 1]; with ``training`` False (or p == 0) only the GELU applies.
        training: as ``nn.Dropout``'s mode.
        seed: the dropout's 64-bit key (default one draw from ``generator``, torch's global CPU
            generator when None), as ``reactfast.ops.dropout`` takes it: the same seed drops the
            same elements as ``dropout(gelu(x), p, seed=seed)``.
        backend: ``"cpp"`` or ``"reference"``; default ``cpp`` for float32 CPU tensors, else
            ``F.gelu`` followed by ``reactfast.ops.dropout``.

    Returns:
        A tensor of x's shape and dtype, differentiable in x.

    Example:
        >>> h = linear2(gelu_dropout(linear1(x), 0.1))
    """
    check_dropout_args(x, p, seed, backend, IMPLEMENTED, training)
    p = float(p) if training else 0.0
    route = fused_route("gelu_dropout", x, p, backend, IMPLEMENTED, _CPP_OK)
    if route == "reference":
        if p > 0.0 and seed is None:
            seed = draw_seed(generator)
        return _ref.gelu_dropout(x, p, seed)
    if route == "composite":
        return dropout(F.gelu(x), p, True, seed=seed, generator=generator) if p > 0.0 else F.gelu(x)
    if p > 0.0 and seed is None:
        seed = draw_seed(generator)
    seed = 0 if seed is None else seed
    x = x.contiguous()
    if torch.is_grad_enabled() and x.requires_grad:
        return _GeluDropout.apply(x, p, seed)
    return _cpp_forward(x, p, seed, save=False)[0]
