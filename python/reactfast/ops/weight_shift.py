"""Per-listener weight-shift linear: y[b] = x[b] (W + dW[b])^T + bias without forming W + dW
(SPEC 3.2). Triton on CUDA tensors; on CPU the C++ AVX-512 kernels (float32; W and
dW[b] summed in registers) where the processor has AVX-512F, else the reference
(x W^T + bmm(x, dW^T)), logged once; the C++ backward computes dx and d(dW)[b] = dy[b]^T x[b].
Low-rank shifts dW[b] = U[b] V[b]^T always use the factored products (x V) U^T,
cheaper than any full-rank kernel."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from reactfast import _backend, kernels
from reactfast.ops._checks import check_same_device, check_tensor
from reactfast.reference import weight_shift as _ref

if kernels.AVAILABLE:
    from reactfast.kernels import weight_shift as _triton

IMPLEMENTED = ("triton", "cpp", "reference")
_backend.register_op("weight_shift", IMPLEMENTED)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
Shift = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _cpp_status():
    ok, reason = _backend.cpp_status()
    if ok and not _backend.native().weight_shift_cpu_supported():
        return False, "the C++ weight-shift kernels need a processor with AVX-512F"
    return ok, reason


_backend.register_requirement("weight_shift", "cpp", _cpp_status)


def _select(x: torch.Tensor, backend: str) -> str:
    name = _backend.select("weight_shift", x.device, IMPLEMENTED, backend or None)
    if name == "cpp" and x.dtype != torch.float32:
        if backend:
            raise RuntimeError(f"weight_shift: backend 'cpp' runs float32 tensors, got {x.dtype}")
        _backend.log_fallback("weight_shift", "cpp", f"the C++ kernels run float32, got {x.dtype}; using the reference")
        return "reference"
    return name


@torch.library.custom_op("reactfast::weight_shift", mutates_args=())
def _fwd(x: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor, bias: Optional[torch.Tensor],
         backend: str) -> torch.Tensor:
    name = _select(x, backend)
    if name == "triton":
        return _triton.weight_shift_fwd(x, weight, shift, bias)
    if name == "cpp":
        B, L, d_in = x.shape
        y = _backend.empty((B, L, weight.shape[0]), x.dtype, x.device)
        _backend.native().weight_shift_fwd_cpu(x, weight, shift, None if bias is None else bias.contiguous(), y, B,
                                               L, d_in, weight.shape[0])
        return y
    return _ref.weight_shift_linear(x, weight, shift, bias)


@_fwd.register_fake
def _(x, weight, shift, bias, backend):
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[0]))


@torch.library.custom_op("reactfast::weight_shift_bwd", mutates_args=())
def _bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor, need_dx: bool,
         need_dshift: bool, backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    name = _select(x, backend)
    empty = dy.new_empty(0)
    if name == "triton":
        dx = _triton.weight_shift_bwd_dx(dy, weight, shift) if need_dx else empty
        dshift = _triton.weight_shift_bwd_dshift(dy, x) if need_dshift else empty.clone()
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


@_bwd.register_fake
def _(dy, x, weight, shift, need_dx, need_dshift, backend):
    dx = torch.empty_like(x) if need_dx else dy.new_empty(0)
    return dx, (torch.empty_like(shift) if need_dshift else dy.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, shift, bias, backend = inputs
    ctx.save_for_backward(x, weight, shift)
    ctx.has_bias = bias is not None
    ctx.backend = backend


def _backward(ctx, dy):
    x, weight, shift = ctx.saved_tensors
    need_x, need_w, need_s, need_b = ctx.needs_input_grad[:4]
    dy = dy.contiguous()
    dx, dshift = _bwd(dy, x, weight, shift, bool(need_x), bool(need_s), ctx.backend)
    dweight = None
    if need_w:
        dweight = dshift.sum(0) if need_s else dy.reshape(-1, dy.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        dweight = dweight.to(weight.dtype)
    dbias = dy.sum((0, 1)) if (ctx.has_bias and need_b) else None
    return (dx if need_x else None), dweight, (dshift if need_s else None), dbias, None


_fwd.register_autograd(_backward, setup_context=_setup_context)


def check_shift(name: str, shift: Shift, B: int, d_out: int, d_in: int, like: torch.Tensor) -> Shift:
    """Validate a full-rank (B, d_out, d_in) or low-rank (U (B, d_out, r), V (B, d_in, r)) shift."""
    if isinstance(shift, (tuple, list)):
        if len(shift) != 2:
            raise ValueError(f"{name}: a low-rank shift is a pair (U, V), got {len(shift)} items")
        u, v = shift
        check_tensor(f"{name}[0] (U)", u, ndim=3, dtypes=_DTYPES)
        check_tensor(f"{name}[1] (V)", v, ndim=3, dtypes=_DTYPES)
        if u.shape[:2] != (B, d_out) or v.shape[:2] != (B, d_in) or u.shape[2] != v.shape[2]:
            raise ValueError(f"{name}: U must be ({B}, {d_out}, r) and V ({B}, {d_in}, r), got "
                             f"{tuple(u.shape)} and {tuple(v.shape)}")
        check_same_device(**{"x": like, f"{name}[0]": u, f"{name}[1]": v})
        return u, v
    check_tensor(name, shift, ndim=3, dtypes=_DTYPES)
    if tuple(shift.shape) != (B, d_out, d_in):
        raise ValueError(f"{name} must have shape ({B}, {d_out}, {d_in}) (one weight shift per sample), "
                         f"got {tuple(shift.shape)}")
    check_same_device(**{"x": like, name: shift})
    return shift


def weight_shift_linear(x: torch.Tensor, weight: torch.Tensor, shift: Shift, bias: Optional[torch.Tensor] = None,
                        backend: Optional[str] = None) -> torch.Tensor:
    """y[b] = x[b] (W + dW[b])^T + bias, one weight shift per sample, W + dW never formed.

    Args:
        x: (B, L, d_in).
        weight: (d_out, d_in), shared.
        shift: (B, d_out, d_in) full-rank shifts, or a pair (U (B, d_out, r), V (B, d_in, r)) for
            dW[b] = U[b] V[b]^T.
        bias: (d_out,) or None.
        backend: ``"triton"``, ``"cpp"`` or ``"reference"`` (default: Triton on CUDA; on CPU the C++
            kernels for float32 on AVX-512 processors, else the reference).

    Returns:
        (B, L, d_out) in x's dtype; differentiable in x, weight, shift (or U, V) and bias.

    Example:
        >>> y = weight_shift_linear(x, layer.weight, dW, layer.bias)
    """
    check_tensor("x", x, ndim=3, dtypes=_DTYPES)
    check_tensor("weight", weight, ndim=2, dtypes=_DTYPES)
    B, L, d_in = x.shape
    d_out = weight.shape[0]
    if weight.shape[1] != d_in:
        raise ValueError(f"weight must have shape (d_out, {d_in}) to match x, got {tuple(weight.shape)}")
    check_same_device(x=x, weight=weight)
    shift = check_shift("shift", shift, B, d_out, d_in, x)
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=_DTYPES)
        if bias.shape[0] != d_out:
            raise ValueError(f"bias must have shape ({d_out},), got {tuple(bias.shape)}")
        check_same_device(x=x, bias=bias)
    if backend is not None and backend not in IMPLEMENTED:
        raise ValueError(f"backend must be one of {IMPLEMENTED} or None, got {backend!r}")
    if isinstance(shift, tuple):
        return _ref.low_rank_shift_linear(x, weight, shift[0], shift[1], bias)
    return _fwd(x.contiguous(), weight.contiguous(), shift.contiguous(), bias, backend or "")
