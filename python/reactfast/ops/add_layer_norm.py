"""The post-norm residual step of a transformer block, fused: ``LayerNorm(x + dropout(h))``.

A post-norm block ends ``norm(x + dropout(sublayer(x)))``: on a CPU that is three passes over the
activations forward (dropout, add, layer norm) and three backward, each a dispatch and an
autograd node of its own, on the small (a few hundred rows of 64) tensors of ReactFace's window
steps, where the calls' fixed costs outweigh their arithmetic. The C++ kernel does the step in one
pass per row forward (the mask, the sum, its mean and variance, the normalised output) and one
backward (the input, sublayer and affine gradients).

The dropout mask is ``reactfast.ops.dropout``'s: element i of h is kept when the keyed hash of i
reaches the threshold, the key one draw from torch's generator per call, so the fused call drops
exactly what ``dropout(h, p)`` followed by the add and the norm would, from the same generator state.

- ``cpp``: float32 CPU tensors.
- ``reference``: any dtype and device (``reactfast.reference.add_layer_norm``).
- Otherwise (CUDA, other dtypes, under ``torch.compile``): the composition
  ``F.layer_norm(x + reactfast.ops.dropout(h, p))``, whose dropout follows that op's rules (torch's
  fused dropout on CUDA unless seeded), and which the compiler fuses itself.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from reactfast import _backend
from reactfast.ops._checks import check_dropout_args
from reactfast.ops.dropout import draw_seed, dropout, fused_route
from reactfast.reference import add_layer_norm as _ref
from reactfast.reference import dropout as _ref_dropout

IMPLEMENTED = ("cpp", "reference")
_backend.register_op("add_layer_norm", IMPLEMENTED)
_CPP_OK = _backend.backend_status("cpp", "cpu", "add_layer_norm")[0]


def _keys(p: float, seed: int):
    if p == 0.0:
        return 0, 0, 0, 1.0
    key0, key1 = _ref_dropout.split_seed(seed)
    return _ref_dropout.threshold(p), key0, key1, 1.0 / (1.0 - p)


def _cpp_forward(x, h, weight, bias, eps: float, p: float, seed: int, save: bool):
    """The kernel's output and, with ``save``, what its backward reads: (out, (sum, mean, rstd,
    keep bitmask or None), scale)."""
    rows, D = x.numel() // x.shape[-1], x.shape[-1]
    drop = p > 0.0
    out = _backend.empty(x.shape, torch.float32, x.device)
    saved = (None, None, None, None)
    if save:
        saved = (_backend.empty(x.shape, torch.float32, x.device), _backend.empty((rows,), torch.float32, x.device),
                 _backend.empty((rows,), torch.float32, x.device),
                 _backend.empty((rows, (D + 7) // 8), torch.uint8, x.device) if drop else None)
    threshold, key0, key1, scale = _keys(p, seed)
    _backend.native().add_layer_norm_fwd_cpu(x, h, weight, bias, out, *saved, rows, D, drop, threshold, key0, key1,
                                             scale, eps)
    return out, saved, scale


class _AddLayerNorm(torch.autograd.Function):
    """A plain autograd.Function (as ``ops.dropout``'s): dozens of calls per training step, where a
    custom op's dispatch would cost more than the kernel."""

    @staticmethod
    def forward(ctx, x, h, weight, bias, eps: float, p: float, seed: int):
        out, (total, mean, rstd, keep), scale = _cpp_forward(x, h, weight, bias, eps, p, seed, save=True)
        ctx.save_for_backward(total, mean, rstd, weight, keep)
        ctx.drop, ctx.scale, ctx.has_bias = p > 0.0, scale, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        total, mean, rstd, weight, keep = ctx.saved_tensors
        rows, D = total.numel() // total.shape[-1], total.shape[-1]
        grad = grad.contiguous().float()
        need_x, need_h, need_w, need_b = ctx.needs_input_grad[:4]
        dx = _backend.empty(total.shape, torch.float32, total.device)
        dh = _backend.empty(total.shape, torch.float32, total.device) if need_h else None
        dw = _backend.empty((D,), torch.float32, total.device) if need_w and weight is not None else None
        db = _backend.empty((D,), torch.float32, total.device) if need_b and ctx.has_bias else None
        _backend.native().add_layer_norm_bwd_cpu(grad, total, mean, rstd, weight, keep, dx, dh, dw, db, rows, D,
                                                 ctx.drop, ctx.scale)
        return dx if need_x else None, dh, dw, db, None, None, None


def _check(name: str, t: Optional[torch.Tensor], D: int, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got "
                        f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
    if optional and tuple(t.shape) != (D,):
        raise ValueError(f"{name} must have shape ({D},) (the last dimension of x), got {tuple(t.shape)}")


def add_layer_norm(x: torch.Tensor, h: torch.Tensor, weight: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None, eps: float = 1e-5, p: float = 0.0, training: bool = True,
                   seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                   backend: Optional[str] = None) -> torch.Tensor:
    """``LayerNorm(x + dropout(h))`` over the last dimension, in one pass on a CPU.

    Args:
        x: (..., D) the residual stream.
        h: the sublayer's output, x's shape, device and dtype.
        weight, bias: (D,) the norm's affine parameters, or None.
        eps: the norm's epsilon (> 0).
        p: drop probability of h's elements in [0, 1]; with ``training`` False (or p == 0) h is
            added as is.
        seed: the dropout's 64-bit key (default one draw from ``generator``, torch's global CPU
            generator when None), as ``reactfast.ops.dropout`` takes it: the same seed drops the
            same elements of h as ``dropout(h, p, seed=seed)``.
        backend: ``"cpp"`` or ``"reference"``; default ``cpp`` for float32 CPU tensors, else the
            composition over ``reactfast.ops.dropout`` and ``F.layer_norm``.

    Returns:
        A tensor of x's shape and dtype, differentiable in x, h, weight and bias.

    Example:
        >>> norm = torch.nn.LayerNorm(64)
        >>> y = add_layer_norm(x, attn_out, norm.weight, norm.bias, norm.eps, p=0.1)
    """
    check_dropout_args(x, p, seed, backend, IMPLEMENTED, training)
    D = x.shape[-1] if x.dim() else 0
    if x.dim() == 0 or D == 0:
        raise ValueError(f"x must have a non-empty last dimension, got shape {tuple(x.shape)}")
    _check("h", h, D)
    if h.shape != x.shape or h.device != x.device or h.dtype != x.dtype:
        raise ValueError(f"h must match x in shape, device and dtype: x {tuple(x.shape)} {x.dtype} {x.device}, "
                         f"h {tuple(h.shape)} {h.dtype} {h.device}")
    _check("weight", weight, D, optional=True)
    _check("bias", bias, D, optional=True)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    p = float(p) if training else 0.0
    affine_ok = all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu") for t in (weight, bias))
    route = fused_route("add_layer_norm", x, p, backend, IMPLEMENTED, _CPP_OK, affine_ok, "x, h, weight, bias")
    if route == "reference":
        if p > 0.0 and seed is None:
            seed = draw_seed(generator)
        return _ref.add_layer_norm(x, h, weight, bias, eps, p, seed)
    if route == "composite":
        if p > 0.0:
            h = dropout(h, p, True, seed=seed, generator=generator)
        return F.layer_norm(x + h, (D,), weight, bias, eps)
    if p > 0.0 and seed is None:
        seed = draw_seed(generator)
    seed = 0 if seed is None else seed
    if weight is None and bias is not None:
        weight = torch.ones(D, dtype=torch.float32)
    x, h = x.contiguous(), h.contiguous()
    weight = None if weight is None else weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, h, weight, bias)):
        return _AddLayerNorm.apply(x, h, weight, bias, float(eps), p, seed)
    return _cpp_forward(x, h, weight, bias, float(eps), p, seed, save=False)[0]
