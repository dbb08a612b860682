"""Speaker-listener biased attention (ALiBi-like periodic bias with a causal bound; SPEC 3.1).

Triton flash kernels on CUDA tensors (forward and backward, no (B, H, Tq, Tk) tensor); the
pure-PyTorch reference elsewhere. Registered as ``torch.ops.reactfast.biased_attention_fwd`` /
``_bwd`` custom ops with fake and autograd implementations, so ``torch.compile(fullgraph=True)``
and autograd work through it.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch

from reactfast import _backend, kernels
from reactfast.ops._checks import check_same_device, check_tensor
from reactfast.reference import biased_attention as _ref

if kernels.AVAILABLE:
    from reactfast.kernels import biased_attention as _triton

IMPLEMENTED = ("triton", "reference")
_backend.register_op("biased_attention", IMPLEMENTED)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _reference_probs(q, k, slopes, q_offset, key_start, key_lengths, period, ratio, extra, scale):
    B, H, Tq, _ = q.shape
    bias = _ref.attention_bias(Tq, k.shape[2], slopes, q_offset, period, ratio, extra, key_lengths, batch=B,
                               key_start=key_start)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale + bias
    lse = torch.logsumexp(scores, -1)
    empty = torch.isinf(lse) & (lse < 0)
    p = torch.exp(scores - torch.where(empty, torch.zeros_like(lse), lse)[..., None])
    lse = torch.where(empty, torch.full_like(lse, float("inf")), lse)
    return p, lse


@torch.library.custom_op("reactfast::biased_attention_fwd", mutates_args=())
def _fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, q_offset: torch.Tensor,
         key_start: torch.Tensor, key_lengths: torch.Tensor, period: int, audio_ratio: int, extra: int, scale: float,
         backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    name = _backend.select("biased_attention", q.device, IMPLEMENTED, backend or None)
    if name == "triton":
        return _triton.biased_attention_fwd(q, k, v, slopes, q_offset, key_start, key_lengths, scale, period, audio_ratio,
                                    extra)
    p, lse = _reference_probs(q, k, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale)
    return torch.matmul(p, v.float()).to(q.dtype), lse


@_fwd.register_fake
def _(q, k, v, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale, backend):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("reactfast::biased_attention_bwd", mutates_args=())
def _bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
         slopes: torch.Tensor, q_offset: torch.Tensor, key_start: torch.Tensor, key_lengths: torch.Tensor,
         period: int, audio_ratio: int,
         extra: int, scale: float, backend: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    name = _backend.select("biased_attention", q.device, IMPLEMENTED, backend or None)
    if name == "triton":
        return _triton.biased_attention_bwd(do.contiguous(), q, k, v, out, lse, slopes, q_offset, key_start, key_lengths,
                                    scale, period, audio_ratio, extra)
    p, _ = _reference_probs(q, k, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale)
    dof = do.float()
    dv = torch.matmul(p.transpose(-1, -2), dof)
    dp = torch.matmul(dof, v.float().transpose(-1, -2))
    ds = p * (dp - (dof * out.float()).sum(-1, keepdim=True))
    dq = torch.matmul(ds, k.float()) * scale
    dk = torch.matmul(ds.transpose(-1, -2), q.float()) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@_bwd.register_fake
def _(do, q, k, v, out, lse, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale, backend = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, slopes, q_offset, key_start, key_lengths)
    ctx.args = (period, audio_ratio, extra, scale, backend)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, slopes, q_offset, key_start, key_lengths = ctx.saved_tensors
    dq, dk, dv = _bwd(grad_out, q, k, v, out, lse, slopes, q_offset, key_start, key_lengths, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None, None, None, None


_fwd.register_autograd(_backward, setup_context=_setup_context)


def _per_sample(name: str, value, B: int, device, low: int, high: Optional[int] = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise TypeError(f"{name} must be an int or an integer tensor, got dtype {value.dtype}")
        if value.numel() != B:
            raise ValueError(f"{name} must hold one value per sample ({B}), got shape {tuple(value.shape)}")
        t = value.reshape(B).to(device=device, dtype=torch.int32)
    elif isinstance(value, int) and not isinstance(value, bool):
        t = torch.full((B,), value, dtype=torch.int32, device=device)
    else:
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(value).__name__}")
    if not torch.compiler.is_compiling():
        lo, hi = int(t.min()), int(t.max())
        if lo < low or (high is not None and hi > high):
            bound = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{name} must be {bound}, got values in [{lo}, {hi}]")
    return t


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: Optional[torch.Tensor] = None,
                     q_offset: Union[int, torch.Tensor] = 0, period: int = 8, audio_ratio: int = 1, extra: int = 0,
                     key_lengths: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                     key_start: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """softmax(Q K^T * scale + M) V with the speaker-listener bias M of SPEC 3.1.

    For head h, query i at absolute frame q0 + i and key j, with pos = audio_ratio (q0 + i):
    M = -slopes[h] * floor((pos - j) / (audio_ratio * period)) where j <= pos + extra and
    j < key_lengths[b], and -inf elsewhere. Rows with every key masked give zeros.

    Args:
        q: (B, H, Tq, d) queries; k, v: (B, H, Tk, d). float32, float16 or bfloat16, one dtype.
        slopes: (H,) per-head slopes; default ALiBi 2^(-8 (h + 1) / H).
        q_offset: absolute frame of the first query (int or (B,) ints >= 0); right-aligned windows
            over S keys use S - W (with audio_ratio 1).
        period: p >= 1, frames per bias step (8 in ReactFace).
        audio_ratio: k >= 1 keys per query frame (2 for audio at twice the video rate).
        extra: keys past pos that still count as current (0 authors; audio_ratio - 1 paper).
        key_lengths: (B,) valid keys per sample (padding after); default all Tk.
        key_start: (B,) first valid key per sample (empty slots of a right-aligned rolling buffer
            before it); default 0.
        scale: default 1 / sqrt(d).
        backend: ``"triton"`` or ``"reference"`` (default: Triton on CUDA, reference on CPU).

    Returns:
        (B, H, Tq, d) in q's dtype.

    Example:
        >>> out = biased_attention(q, k, v, q_offset=k.shape[2] - q.shape[2], period=8)
    """
    check_tensor("q", q, ndim=4, dtypes=_DTYPES)
    check_tensor("k", k, ndim=4, dtypes=_DTYPES)
    check_tensor("v", v, ndim=4, dtypes=_DTYPES)
    check_same_device(q=q, k=k, v=v)
    B, H, Tq, d = q.shape
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[:2] != (B, H) or k.shape[3] != d:
        raise ValueError(f"k must have shape ({B}, {H}, Tk, {d}) to match q, got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if d > 256:
        raise ValueError(f"head dim must be <= 256, got {d}")
    for name, value, low in (("period", period, 1), ("audio_ratio", audio_ratio, 1), ("extra", extra, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if backend is not None and backend not in IMPLEMENTED:
        raise ValueError(f"backend must be one of {IMPLEMENTED} or None, got {backend!r}")
    Tk = k.shape[2]
    if slopes is None:
        slopes = _ref.alibi_slopes(H, q.device)
    else:
        check_tensor("slopes", slopes, ndim=1, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16))
        if slopes.numel() != H:
            raise ValueError(f"slopes must have one value per head ({H}), got shape {tuple(slopes.shape)}")
        if slopes.device != q.device:
            raise ValueError(f"slopes must be on q's device {q.device}, got {slopes.device}")
    q0 = _per_sample("q_offset", q_offset, B, q.device, 0)
    lengths = _per_sample("key_lengths", key_lengths if key_lengths is not None else Tk, B, q.device, 0, Tk)
    starts = _per_sample("key_start", key_start if key_start is not None else 0, B, q.device, 0, Tk)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    out, _ = _fwd(q.contiguous(), k.contiguous(), v.contiguous(), slopes.float().contiguous(), q0, starts, lengths,
                  period, audio_ratio, extra, scale, backend or "")
    return out
