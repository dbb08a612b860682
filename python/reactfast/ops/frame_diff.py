"""First temporal difference of a frame sequence (velocity), the plumbing op that proves every
backend tier (reference, C++, CUDA, Triton) builds, dispatches and agrees."""

from __future__ import annotations

from typing import Optional

import torch

from reactfast import _backend, kernels
from reactfast.ops._checks import check_backend, check_tensor
from reactfast.reference import frame_diff as _ref

if kernels.AVAILABLE:
    from reactfast.kernels import frame_diff as _triton

IMPLEMENTED = ("cuda", "triton", "cpp", "reference")
_backend.register_op("frame_diff", IMPLEMENTED)


@torch.library.custom_op("reactfast::frame_diff", mutates_args=())
def _frame_diff(x: torch.Tensor, backend: str) -> torch.Tensor:
    name = _backend.select("frame_diff", x.device, IMPLEMENTED, backend or None)
    if name == "reference":
        return _ref.frame_diff(x).contiguous()
    if name == "triton":
        return _triton.frame_diff_fwd(x)
    B, T, D = x.shape
    xf = x.float().contiguous()
    out = _backend.empty((B, T - 1, D), torch.float32, x.device)
    if name == "cpp":
        _backend.native().frame_diff_cpu(xf, out, B, T, D)
    else:
        with _backend.device_guard(x):
            _backend.native().frame_diff_cuda(xf, out, B, T, D, _backend.cuda_stream(x))
    return out.to(x.dtype)


@_frame_diff.register_fake
def _(x, backend):
    B, T, D = x.shape
    return x.new_empty((B, T - 1, D))


def _setup_context(ctx, inputs, output):
    ctx.T = inputs[0].shape[1]


def _backward(ctx, grad):
    zero = grad.new_zeros((grad.shape[0], 1, grad.shape[2]))
    return torch.cat([zero, grad], 1) - torch.cat([grad, zero], 1), None


_frame_diff.register_autograd(_backward, setup_context=_setup_context)


def frame_diff(x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """First temporal difference along time.

    Args:
        x: (B, T, D) float tensor (float32, float16 or bfloat16), T >= 2.
        backend: force ``"cuda"``, ``"triton"``, ``"cpp"`` or ``"reference"``; default automatic.

    Returns:
        (B, T - 1, D) tensor with ``out[:, t] = x[:, t + 1] - x[:, t]``, x's dtype.

    Example:
        >>> velocity = frame_diff(torch.randn(4, 750, 58))
    """
    check_tensor("x", x, ndim=3, dtypes=(torch.float32, torch.float16, torch.bfloat16))
    if x.shape[1] < 2:
        raise ValueError(f"x must have at least 2 frames (dim 1), got shape {tuple(x.shape)}")
    check_backend(backend, _backend.BACKENDS)
    return _frame_diff(x.contiguous(), backend or "")
