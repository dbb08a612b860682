"""Per-listener weight-shift linear: y[b] = x[b] (W + dW[b])^T + bias without forming W + dW
(SPEC 3.2). Triton on CUDA tensors; on CPU the C++ kernels for float32 (AVX-512 intrinsics with
W and dW[b] summed in registers, or AVX2 / baseline builds with the sum formed in a per-thread panel
of 16 rows; ``reactfast env`` names the build), the reference (x W^T + bmm(x, dW^T)) for other
dtypes, logged once; the C++ backward computes dx and d(dW)[b] = dy[b]^T x[b].
Low-rank shifts dW[b] = U[b] V[b]^T use the factored products (x V) U^T, cheaper than any
full-rank kernel: on CUDA one Triton kernel (x V beside x W^T in the same pass), elsewhere the
composite; their backward is the factored products in torch."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from reactfast import _backend, kernels
from reactfast.ops import _eager
from reactfast.ops._checks import autocast_inputs, check_backend, check_precision, check_same_device, check_tensor
from reactfast.reference import weight_shift as _ref

if kernels.AVAILABLE:
    from reactfast.kernels import weight_shift as _triton

IMPLEMENTED = ("triton", "cpp", "reference")
_backend.register_op("weight_shift", IMPLEMENTED)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
Shift = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _select(x: torch.Tensor, backend: str) -> str:
    name = _backend.select("weight_shift", x.device, IMPLEMENTED, backend or None)
    if name == "cpp" and x.dtype != torch.float32:
        if backend:
            raise RuntimeError(f"weight_shift: backend 'cpp' runs float32 tensors, got {x.dtype}")
        _backend.log_fallback("weight_shift", "cpp", f"the C++ kernels run float32, got {x.dtype}; using the reference")
        return "reference"
    if name == "triton" and x.dtype == torch.float64:
        if backend:
            raise RuntimeError("weight_shift: backend 'triton' runs float32, float16 and bfloat16 tensors, got "
                               "torch.float64")
        _backend.log_fallback("weight_shift", "triton", "the Triton kernels run float32, float16 and bfloat16, got "
                              "torch.float64; using the reference")
        return "reference"
    return name


def _fwd_impl(x: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor, bias: Optional[torch.Tensor],
              backend: str, precision: str = "tf32x3") -> torch.Tensor:
    name = _select(x, backend)
    if name == "triton":
        return _triton.weight_shift_fwd(x, weight, shift, bias, precision)
    if name == "cpp":
        B, L, d_in = x.shape
        y = _backend.empty((B, L, weight.shape[0]), x.dtype, x.device)
        _backend.native().weight_shift_fwd_cpu(x, weight, shift, None if bias is None else bias.contiguous(), y, B,
                                               L, d_in, weight.shape[0])
        return y
    return _ref.weight_shift_linear(x, weight, shift, bias)


_fwd = torch.library.custom_op("reactfast::weight_shift", mutates_args=())(_fwd_impl)


@_fwd.register_fake
def _(x, weight, shift, bias, backend, precision="tf32x3"):
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[0]))


def _bwd_impl(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor, need_dx: bool,
              need_dshift: bool, backend: str, precision: str = "tf32x3") -> Tuple[torch.Tensor, torch.Tensor]:
    name = _select(x, backend)
    empty = dy.new_empty(0)
    if name == "triton":
        dx = _triton.weight_shift_bwd_dx(dy, weight, shift, precision) if need_dx else empty
        dshift = _triton.weight_shift_bwd_dshift(dy, x, precision) if need_dshift else empty.clone()
        return dx, dshift
    if name == "cpp":
        B, L, d_in = x.shape
        d_out = weight.shape[0]
        dx, dshift = empty, empty.clone()
        if need_dx:
            dx = _backend.empty(x.shape, x.dtype, x.device)
            _backend.native().weight_shift_bwd_dx_cpu(dy, weight, shift, dx, B, L, d_in, d_out)
        if need_dshift:
            dshift = _backend.empty(shift.shape, shift.dtype, shift.device)
            _backend.native().weight_shift_bwd_dshift_cpu(dy, x, dshift, B, L, d_in, d_out)
        return dx, dshift
    dx = torch.matmul(dy, weight) + torch.bmm(dy, shift) if need_dx else empty
    dshift = torch.bmm(dy.transpose(1, 2), x) if need_dshift else empty.clone()
    return dx, dshift


_bwd = torch.library.custom_op("reactfast::weight_shift_bwd", mutates_args=())(_bwd_impl)


@_bwd.register_fake
def _(dy, x, weight, shift, need_dx, need_dshift, backend, precision="tf32x3"):
    dx = torch.empty_like(x) if need_dx else dy.new_empty(0)
    return dx, (torch.empty_like(shift) if need_dshift else dy.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, shift, bias, backend, precision = inputs
    ctx.save_for_backward(x, weight, shift)
    ctx.has_bias = bias is not None
    ctx.backend, ctx.precision = backend, precision


def _backward(ctx, dy):
    x, weight, shift = ctx.saved_tensors
    need_x, need_w, need_s, need_b = ctx.needs_input_grad[:4]
    dy = dy.contiguous()
    dx, dshift = _eager.pick(_bwd, _bwd_impl)(dy, x, weight, shift, bool(need_x), bool(need_s), ctx.backend,
                                              ctx.precision)
    dweight = None
    if need_w:
        dweight = dshift.sum(0) if need_s else dy.reshape(-1, dy.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        dweight = dweight.to(weight.dtype)
    dbias = dy.sum((0, 1)) if (ctx.has_bias and need_b) else None
    return (dx if need_x else None), dweight, (dshift if need_s else None), dbias, None, None


_fwd.register_autograd(_backward, setup_context=_setup_context)
_fwd_eager = _eager.eager_autograd(_fwd_impl, _setup_context, _backward)


def _low_rank_impl(x: torch.Tensor, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                   bias: Optional[torch.Tensor], backend: str, precision: str) -> torch.Tensor:
    name = "reference"
    if backend == "triton" or (not backend and x.is_cuda):
        name = _select(x, backend)
    if name == "triton":
        return _triton.low_rank_fwd(x, weight, u, v, bias, precision)
    return _ref.low_rank_shift_linear(x, weight, u, v, bias)


_low_rank = torch.library.custom_op("reactfast::low_rank_shift", mutates_args=())(_low_rank_impl)


@_low_rank.register_fake
def _(x, weight, u, v, bias, backend, precision):
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[0]))


def _low_rank_setup(ctx, inputs, output):
    x, weight, u, v, bias, _, _ = inputs
    ctx.save_for_backward(x, weight, u, v)
    ctx.has_bias = bias is not None


def _low_rank_backward(ctx, dy):
    """The factored products: dx = dy W + (dy U) V^T, dU = dy^T (x V), dV = x^T (dy U)."""
    x, weight, u, v = ctx.saved_tensors
    need_x, need_w, need_u, need_v, need_b = ctx.needs_input_grad[:5]
    dyu = torch.bmm(dy, u) if (need_x or need_v) else None
    dx = torch.matmul(dy, weight) + torch.bmm(dyu, v.transpose(1, 2)) if need_x else None
    dw = (dy.reshape(-1, dy.shape[-1]).t() @ x.reshape(-1, x.shape[-1])).to(weight.dtype) if need_w else None
    du = torch.bmm(dy.transpose(1, 2), torch.bmm(x, v)) if need_u else None
    dv = torch.bmm(x.transpose(1, 2), dyu) if need_v else None
    db = dy.sum((0, 1)) if (ctx.has_bias and need_b) else None
    return dx, dw, du, dv, db, None, None


_low_rank.register_autograd(_low_rank_backward, setup_context=_low_rank_setup)
_low_rank_eager = _eager.eager_autograd(_low_rank_impl, _low_rank_setup, _low_rank_backward)


def check_shift(name: str, shift: Shift, B: int, d_out: int, d_in: int, like: torch.Tensor) -> Shift:
    """Validate a full-rank (B, d_out, d_in) or low-rank (U (B, d_out, r), V (B, d_in, r)) shift."""
    if isinstance(shift, (tuple, list)):
        if len(shift) != 2:
            raise ValueError(f"{name}: a low-rank shift is a pair (U, V), got {len(shift)} items")
        u, v = shift
        check_tensor(f"{name}[0] (U)", u, ndim=3, dtypes=_DTYPES, nonempty=False)
        check_tensor(f"{name}[1] (V)", v, ndim=3, dtypes=_DTYPES, nonempty=False)
        if u.shape[:2] != (B, d_out) or v.shape[:2] != (B, d_in) or u.shape[2] != v.shape[2]:
            raise ValueError(f"{name}: U must be ({B}, {d_out}, r) and V ({B}, {d_in}, r), got "
                             f"{tuple(u.shape)} and {tuple(v.shape)}")
        check_same_device(**{"x": like, f"{name}[0]": u, f"{name}[1]": v})
        return u, v
    check_tensor(name, shift, ndim=3, dtypes=_DTYPES, nonempty=False)
    if tuple(shift.shape) != (B, d_out, d_in):
        raise ValueError(f"{name} must have shape ({B}, {d_out}, {d_in}) (one weight shift per sample), "
                         f"got {tuple(shift.shape)}")
    check_same_device(**{"x": like, name: shift})
    return shift


def weight_shift_linear(x: torch.Tensor, weight: torch.Tensor, shift: Shift, bias: Optional[torch.Tensor] = None,
                        backend: Optional[str] = None, precision: str = "tf32x3") -> torch.Tensor:
    """y[b] = x[b] (W + dW[b])^T + bias, one weight shift per sample, W + dW never formed.

    Args:
        x: (B, L, d_in); any of them may be 0, as for ``nn.Linear`` (an empty batch or window gives
            an empty output, d_in 0 the bias alone; no kernel runs).
        weight: (d_out, d_in), shared.
        shift: (B, d_out, d_in) full-rank shifts, or a pair (U (B, d_out, r), V (B, d_in, r)) for
            dW[b] = U[b] V[b]^T.
        bias: (d_out,) or None.
        backend: ``"triton"``, ``"cpp"`` or ``"reference"`` (default: Triton on CUDA, the reference
            for float64 there; on CPU the C++ kernels for float32, the reference for other dtypes,
            float64 included). Low-rank shifts take
            the Triton kernel on CUDA (or when forced) and the composite elsewhere.
        precision: float32 on the Triton kernels: ``"tf32x3"`` (default; three TF32 products of
            split operands on the matrix units, float32 accuracy), ``"tf32"`` (one TF32 product,
            about 1e-3 relative error: 1.3e-3 measured on an H100 for one-term sums) or ``"ieee"``
            (exact float32 products on FMA units: the earlier
            ieee-only kernel took 797 us against the composite's 323 us on an H100, B 32, 1536 x 512,
            L 102). Other dtypes and backends ignore it.

    Returns:
        (B, L, d_out) in x's dtype; differentiable in x, weight, shift (or U, V) and bias.

    Example:
        >>> y = weight_shift_linear(x, layer.weight, dW, layer.bias)
    """
    check_tensor("x", x, ndim=3, dtypes=_DTYPES, nonempty=False)
    check_tensor("weight", weight, ndim=2, dtypes=_DTYPES, nonempty=False)
    if isinstance(shift, (tuple, list)):
        x, weight, bias, *shift = autocast_inputs(x.device.type, x, weight, bias, *shift)
        shift = tuple(shift)
    else:
        x, weight, bias, shift = autocast_inputs(x.device.type, x, weight, bias, shift)
    B, L, d_in = x.shape
    d_out = weight.shape[0]
    if weight.shape[1] != d_in:
        raise ValueError(f"weight must have shape (d_out, {d_in}) to match x, got {tuple(weight.shape)}")
    check_same_device(x=x, weight=weight)
    shift = check_shift("shift", shift, B, d_out, d_in, x)
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=_DTYPES, nonempty=False)
        if bias.shape[0] != d_out:
            raise ValueError(f"bias must have shape ({d_out},), got {tuple(bias.shape)}")
        check_same_device(x=x, bias=bias)
    check_backend(backend, IMPLEMENTED)
    check_precision(precision)
    # One dtype (autocast has cast them above): a kernel would read another dtype's bytes as x's.
    named = [("x", x), ("weight", weight)] + ([("U", shift[0]), ("V", shift[1])] if isinstance(shift, tuple) else
                                              [("shift", shift)]) + ([("bias", bias)] if bias is not None else [])
    if len({t.dtype for _, t in named}) > 1:
        names = [n for n, _ in named]
        raise TypeError(f"{', '.join(names[:-1])} and {names[-1]} must share one dtype, got "
                        + ", ".join(str(t.dtype).replace("torch.", "") for _, t in named))
    if any(t.numel() == 0 for _, t in named):
        # An empty batch, window or layer (as nn.Linear takes them): the composite gives the empty
        # or bias-only output and zero gradients; no kernel is launched.
        if isinstance(shift, tuple):
            return _ref.low_rank_shift_linear(x, weight, shift[0], shift[1], bias)
        return _ref.weight_shift_linear(x, weight, shift, bias)
    if isinstance(shift, tuple):
        u, v = shift
        if backend == "cpp":
            raise ValueError("backend 'cpp' has no low-rank kernel (low-rank shifts: 'triton' or 'reference')")
        return _eager.pick(_low_rank, _low_rank_eager)(x.contiguous(), weight.contiguous(), u.contiguous(),
                                                       v.contiguous(), bias, backend or "", precision)
    return _eager.pick(_fwd, _fwd_eager)(x.contiguous(), weight.contiguous(), shift.contiguous(), bias, backend or "",
                                         precision)
