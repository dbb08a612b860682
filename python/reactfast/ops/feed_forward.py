"""The post-norm feed-forward sublayer of a transformer block, fused into one autograd node:
``LayerNorm(x + dropout(W2 dropout(GELU(W1 x + b1), p_hidden) + b2, p_out))``.

Written as modules (``Linear``, ``GELU``, ``Dropout``, ``Linear``, then the residual add and the
norm), the sublayer is about ten autograd nodes (the linears' views and transposes among them) and
four wrapped calls, on the small (a few hundred rows of 64) tensors of ReactFace's window steps,
where such fixed costs are a large part of the time: the modules' forward + backward took
1.06-1.12x this call's at ReactFace's shapes (``bench/bench_feed_forward.py``, 2-core AMD EPYC VM
with AVX-512, two runs), and ReactFace's demo training forward + backward 1.5-4% longer with the
modules (best, tenth percentile and median of 60 interleaved calls in one process). The ``cpp``
path runs the same kernels as the modules would:
the two matrix products as torch's ``addmm`` on the flattened rows (as ``F.linear`` does), the GELU
with its dropout as :func:`reactfast.ops.gelu_dropout`'s C++ kernel and the residual end as
:func:`reactfast.ops.add_layer_norm`'s, so the forward equals the modules' bit for bit; the backward
is written out (layer norm, then dW2 = dy^T a, da = dy W2, dh = da * slope, dW1 = dh^T x, dx += dh W1).

The dropout masks are ``reactfast.ops.dropout``'s, keyed by one draw from torch's generator per
dropout that applies, the hidden one first: the same masks and the same generator state after the
call as the modules run one by one (``reactfast.nn.transformer.feed_forward``).

- ``cpp``: float32 CPU tensors (both C++ kernels built).
- ``reference``: any dtype and device (``reactfast.reference.feed_forward``).
- Otherwise (CUDA, other dtypes, under ``torch.compile``, or ``REACTFAST_BACKEND`` naming another
  backend for ``gelu_dropout`` or ``add_layer_norm``): the composition of ``F.linear``,
  :func:`reactfast.ops.gelu_dropout` and :func:`reactfast.ops.add_layer_norm` (each following its
  own rules there).
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch
import torch.nn.functional as F

from reactfast import _backend
from reactfast.ops._checks import check_dropout_args
from reactfast.ops.add_layer_norm import add_layer_norm
from reactfast.ops.dropout import draw_seed, fused_route
from reactfast.ops.gelu_dropout import gelu_dropout
from reactfast.reference import feed_forward as _ref

# The two kernels' modules (``reactfast.ops`` itself exports their functions under the same names).
_aln = importlib.import_module("reactfast.ops.add_layer_norm")
_gd = importlib.import_module("reactfast.ops.gelu_dropout")

IMPLEMENTED = ("cpp", "reference")
_backend.register_op("feed_forward", IMPLEMENTED)
_CPP_OK = _aln._CPP_OK and _gd._CPP_OK


def _linear(x2: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
    return x2.mm(w.t()) if b is None else torch.addmm(b, x2, w.t())


def _forward(x2, w1, b1, w2, b2, nw, nb, eps, p_hidden, p_out, seed_hidden, seed_out, save: bool):
    h = _linear(x2, w1, b1)
    a, slope = _gd._cpp_forward(h, p_hidden, seed_hidden, save)
    y = _linear(a, w2, b2)
    out, saved, scale = _aln._cpp_forward(x2, y, nw, nb, eps, p_out, seed_out, save)
    return out, a, slope, saved, scale


class _FeedForward(torch.autograd.Function):
    """One autograd node for the sublayer (a plain autograd.Function, as the kernels' own ops)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, nw, nb, eps: float, p_hidden: float, p_out: float, seed_hidden: int,
                seed_out: int):
        x2 = x.reshape(-1, x.shape[-1])
        out, a, slope, (total, mean, rstd, keep), scale = _forward(x2, w1, b1, w2, b2, nw, nb, eps, p_hidden, p_out,
                                                                   seed_hidden, seed_out, save=True)
        ctx.save_for_backward(x2, a, slope, w1, w2, nw, total, mean, rstd, keep)
        ctx.drop, ctx.scale, ctx.shape, ctx.has_nb = p_out > 0.0, scale, x.shape, nb is not None
        return out.view(x.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x2, a, slope, w1, w2, nw, total, mean, rstd, keep = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2, need_nw, need_nb = ctx.needs_input_grad[:7]
        rows, D = total.shape
        g = grad.reshape(rows, D).contiguous().float()
        dx = _backend.empty((rows, D), torch.float32, g.device)
        dy = _backend.empty((rows, D), torch.float32, g.device)
        dnw = _backend.empty((D,), torch.float32, g.device) if need_nw else None
        dnb = _backend.empty((D,), torch.float32, g.device) if need_nb and ctx.has_nb else None
        _backend.native().add_layer_norm_bwd_cpu(g, total, mean, rstd, nw, keep, dx, dy, dnw, dnb, rows, D, ctx.drop,
                                                 ctx.scale)
        dw2 = dy.t().mm(a) if need_w2 else None
        db2 = dy.sum(0) if need_b2 else None
        dh = dy.mm(w2).mul_(slope)
        dw1 = dh.t().mm(x2) if need_w1 else None
        db1 = dh.sum(0) if need_b1 else None
        dx = dx.addmm_(dh, w1).view(ctx.shape) if need_x else None
        return dx, dw1, db1, dw2, db2, dnw, dnb, None, None, None, None, None


def _check_param(name: str, t: Optional[torch.Tensor], shape, x: torch.Tensor, optional: bool) -> None:
    if t is None:
        if optional:
            return
        raise TypeError(f"{name} must be a tensor of shape {shape}, got None")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (x's last dim {x.shape[-1]}, w1's rows), got "
                         f"{tuple(t.shape)}")
    if t.dtype != x.dtype or t.device != x.device:
        raise ValueError(f"{name} must match x's dtype and device ({x.dtype}, {x.device}), got {t.dtype} on {t.device}")


def feed_forward(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], w2: torch.Tensor,
                 b2: Optional[torch.Tensor], norm_weight: Optional[torch.Tensor] = None,
                 norm_bias: Optional[torch.Tensor] = None, eps: float = 1e-5, p_hidden: float = 0.0,
                 p_out: float = 0.0, training: bool = True, seed_hidden: Optional[int] = None,
                 seed_out: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 backend: Optional[str] = None) -> torch.Tensor:
    """``LayerNorm(x + dropout(W2 dropout(GELU(W1 x + b1), p_hidden) + b2, p_out))`` over the last
    dimension, the exact (erf) GELU: a post-norm transformer block's feed-forward sublayer.

    Args:
        x: (..., D) the residual stream, float.
        w1: (Hd, D) and b1: (Hd,) or None, the first linear layer's parameters; w2: (D, Hd) and
            b2: (D,) or None, the second's; all of x's dtype and device.
        norm_weight, norm_bias: (D,) the norm's affine parameters, or None.
        eps: the norm's epsilon (> 0).
        p_hidden, p_out: drop probabilities in [0, 1] of the hidden activations and of the second
            linear layer's output; with ``training`` False both are 0.
        seed_hidden, seed_out: the two dropouts' 64-bit keys, as :func:`reactfast.ops.dropout` takes
            them (default one draw each from ``generator``, torch's global CPU generator when None,
            the hidden one first, only for a dropout that applies): the same masks as
            ``add_layer_norm(x, linear(gelu_dropout(linear(x, w1, b1), p_hidden), w2, b2), ...)``.
        backend: ``"cpp"`` or ``"reference"``; default ``cpp`` for float32 CPU tensors, else the
            composition over :func:`reactfast.ops.gelu_dropout` and :func:`reactfast.ops.add_layer_norm`.

    Returns:
        A tensor of x's shape and dtype, differentiable in x and every parameter.

    Example:
        >>> ffn = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))
        >>> y = feed_forward(x, ffn[0].weight, ffn[0].bias, ffn[2].weight, ffn[2].bias, p_hidden=0.1, p_out=0.1)
    """
    check_dropout_args(x, p_hidden, seed_hidden, backend, IMPLEMENTED, training, "p_hidden", "seed_hidden")
    check_dropout_args(x, p_out, seed_out, backend, IMPLEMENTED, p_name="p_out", seed_name="seed_out")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dimension, got shape {tuple(x.shape)}")
    D = x.shape[-1]
    if not isinstance(w1, torch.Tensor) or w1.dim() != 2 or w1.shape[1] != D or w1.shape[0] == 0:
        raise ValueError(f"w1 must be a (hidden, {D}) tensor (x's last dim {D}), got "
                         f"{tuple(w1.shape) if isinstance(w1, torch.Tensor) else type(w1).__name__}")
    Hd = w1.shape[0]
    _check_param("w1", w1, (Hd, D), x, optional=False)
    _check_param("b1", b1, (Hd,), x, optional=True)
    _check_param("w2", w2, (D, Hd), x, optional=False)
    _check_param("b2", b2, (D,), x, optional=True)
    _check_param("norm_weight", norm_weight, (D,), x, optional=True)
    _check_param("norm_bias", norm_bias, (D,), x, optional=True)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if x.numel() // D * Hd >= 2 ** 32:
        raise ValueError(f"the hidden activations must have fewer than 2^32 elements, got {x.numel() // D * Hd}")
    p_hidden, p_out = (float(p_hidden), float(p_out)) if training else (0.0, 0.0)
    route = fused_route("feed_forward", x, max(p_hidden, p_out), backend, IMPLEMENTED, _CPP_OK,
                        inputs="x, w1, b1, w2, b2, norm_weight, norm_bias",
                        kernels_of=("gelu_dropout", "add_layer_norm"))
    if route == "composite":
        a = gelu_dropout(F.linear(x, w1, b1), p_hidden, seed=seed_hidden, generator=generator)
        return add_layer_norm(x, F.linear(a, w2, b2), norm_weight, norm_bias, eps, p_out, seed=seed_out,
                              generator=generator)
    if p_hidden > 0.0 and seed_hidden is None:
        seed_hidden = draw_seed(generator)
    if p_out > 0.0 and seed_out is None:
        seed_out = draw_seed(generator)
    if route == "reference":
        return _ref.feed_forward(x, w1, b1, w2, b2, norm_weight, norm_bias, eps, p_hidden, p_out, seed_hidden, seed_out)
    seed_hidden, seed_out = seed_hidden or 0, seed_out or 0
    if norm_weight is None and norm_bias is not None:
        norm_weight = torch.ones(D, dtype=torch.float32)
    x = x.contiguous()
    params = [None if t is None else t.contiguous() for t in (w1, b1, w2, b2, norm_weight, norm_bias)]
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in [x, *params]):
        return _FeedForward.apply(x, *params, float(eps), p_hidden, p_out, seed_hidden, seed_out)
    out = _forward(x.reshape(-1, D), *params, float(eps), p_hidden, p_out, seed_hidden, seed_out, save=False)[0]
    return out.view(x.shape)
