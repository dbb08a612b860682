"""Speaker-listener biased attention (ALiBi-like periodic bias with a causal bound; SPEC 3.1).

- ``triton``: flash kernels on CUDA tensors (forward and backward, no (B, H, Tq, Tk) tensor),
  registered as ``torch.ops.reactfast.biased_attention_fwd`` / ``_bwd`` custom ops with fake and
  autograd implementations, so ``torch.compile(fullgraph=True)`` and autograd work through them.
- ``cpp`` (the CPU path for float32 heads up to ``CPP_MAX_HEAD_DIM``): C++ kernels, forward and
  backward, that read only each query's visible keys (one contiguous range: the causal bound and
  empty buffer slots cost nothing) and compute the bias from integer step counts; no bias, mask or
  copy of q, k, v is made, and the output and gradients come in the (B, T, H, d) layout of a
  projection, so splitting heads and merging them back are views. A plain autograd.Function (its
  dispatch is a fraction of a custom op's); under ``torch.compile`` the same kernels as the custom
  ops ``reactfast::biased_attention_cpu_fwd`` / ``_bwd``.
- ``sdpa`` (CPU float16/bfloat16 and wider heads): torch's fused
  ``scaled_dot_product_attention`` with the bias built once per distinct (q_offset, key_start,
  key_lengths) and broadcast over the samples that share it (in ReactFace every sample of a batch
  does), its own backward.
- ``reference``: the pure-PyTorch oracle, any device.
"""

from __future__ import annotations

import collections
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from reactfast import _backend, kernels
from reactfast.ops import _eager
from reactfast.ops._checks import (autocast_inputs, check_backend, check_precision, check_real, check_same_device,
                                   check_tensor)
from reactfast.reference import biased_attention as _ref

if kernels.AVAILABLE:
    from reactfast.kernels import biased_attention as _triton

IMPLEMENTED = ("triton", "cpp", "sdpa", "reference")
_backend.register_op("biased_attention", IMPLEMENTED)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# The CPU default takes the C++ kernels for float32 heads up to this width and SDPA above it (a
# property of the model's configuration, so one model's calls all take one path, offline and
# streaming). Forward + backward against SDPA, 2-core AVX2 machine, bench_biased_attention_cpu.py,
# one run: at head dim 16 (ReactFace's, at the authors' D 128 / 8 heads and the demo's 64 / 4) the
# demo's calls 1.4-3.1x, causal T 750 2.3x, every key visible 1.15x, an online window (Tq 8) 0.97x;
# at 32 causal 1.8x but every key visible 0.89x and online 0.66x; at 64 1.4x, 0.76x and 0.75x.
CPP_MAX_HEAD_DIM = 16
# Largest q_offset: the Triton kernels' bias floor is exact for key positions below 2^22.
MAX_Q_OFFSET = 2 ** 21


def _work(t: torch.Tensor) -> torch.Tensor:
    """The reference path's arithmetic: float32, float64 for float64 inputs."""
    return t if t.dtype == torch.float64 else t.float()


def _reference_probs(q, k, slopes, q_offset, key_start, key_lengths, period, ratio, extra, scale, qperiod):
    B, H, Tq, _ = q.shape
    bias = _ref.attention_bias(Tq, k.shape[2], slopes, q_offset, period, ratio, extra, key_lengths, batch=B,
                               key_start=key_start, query_period=qperiod)
    scores = torch.matmul(_work(q), _work(k).transpose(-1, -2)) * scale + bias.to(_work(q).dtype)
    lse = torch.logsumexp(scores, -1)
    empty = torch.isinf(lse) & (lse < 0)
    p = torch.exp(scores - torch.where(empty, torch.zeros_like(lse), lse)[..., None])
    lse = torch.where(empty, torch.full_like(lse, float("inf")), lse)
    return p, lse


def _fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, q_offset: torch.Tensor,
              key_start: torch.Tensor, key_lengths: torch.Tensor, period: int, audio_ratio: int, extra: int,
              scale: float, qperiod: int, backend: str,
              precision: str = "tf32x3") -> Tuple[torch.Tensor, torch.Tensor]:
    name = _backend.select("biased_attention", q.device, IMPLEMENTED, backend or None)
    if name == "triton":
        return _triton.biased_attention_fwd(q, k, v, slopes, q_offset, key_start, key_lengths, scale, period,
                                            audio_ratio, extra, qperiod, precision)
    p, lse = _reference_probs(q, k, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale,
                              qperiod)
    return torch.matmul(p, _work(v)).to(q.dtype), lse.float()


_fwd = torch.library.custom_op("reactfast::biased_attention_fwd", mutates_args=())(_fwd_impl)


@_fwd.register_fake
def _(q, k, v, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale, qperiod, backend,
      precision="tf32x3"):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


def _bwd_impl(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
              lse: torch.Tensor, slopes: torch.Tensor, q_offset: torch.Tensor, key_start: torch.Tensor,
              key_lengths: torch.Tensor, period: int, audio_ratio: int, extra: int, scale: float, qperiod: int,
              backend: str, precision: str = "tf32x3") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    name = _backend.select("biased_attention", q.device, IMPLEMENTED, backend or None)
    if name == "triton":
        return _triton.biased_attention_bwd(do.contiguous(), q, k, v, out, lse, slopes, q_offset, key_start,
                                            key_lengths, scale, period, audio_ratio, extra, qperiod, precision)
    p, _ = _reference_probs(q, k, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale,
                            qperiod)
    dof = do.to(p.dtype)
    dv = torch.matmul(p.transpose(-1, -2), dof)
    dp = torch.matmul(dof, _work(v).transpose(-1, -2))
    ds = p * (dp - (dof * out.to(p.dtype)).sum(-1, keepdim=True))
    dq = torch.matmul(ds, _work(k)) * scale
    dk = torch.matmul(ds.transpose(-1, -2), _work(q)) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


_bwd = torch.library.custom_op("reactfast::biased_attention_bwd", mutates_args=())(_bwd_impl)


@_bwd.register_fake
def _(do, q, k, v, out, lse, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale, qperiod,
      backend, precision="tf32x3"):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale, qperiod, backend, \
        precision = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, slopes, q_offset, key_start, key_lengths)
    ctx.args = (period, audio_ratio, extra, scale, qperiod, backend, precision)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, slopes, q_offset, key_start, key_lengths = ctx.saved_tensors
    dq, dk, dv = _eager.pick(_bwd, _bwd_impl)(grad_out, q, k, v, out, lse, slopes, q_offset, key_start, key_lengths,
                                              *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None, None, None, None, None, None


_fwd.register_autograd(_backward, setup_context=_setup_context)


# Eager calls: the same implementation and backward without the custom op's dispatch (0.25 to 0.4 ms
# of host time per forward and backward on a 2-core VM, as much as the kernels' GPU time at the
# models' sizes: 0.24 ms for B16 H8 T750 d64 bf16 on an H100).
_fwd_eager = _eager.eager_autograd(_fwd_impl, _setup_context, _backward)


def _masked_bias(bias, dtype):
    """(bias with masked rows zeroed, in ``dtype``; 0/1 multiplier of rows with a visible key): SDPA
    alone would give NaN on rows whose keys are all masked."""
    visible = torch.isfinite(bias).any(-1, keepdim=True)
    return torch.where(visible, bias, torch.zeros_like(bias)).to(dtype), visible.to(dtype)


def _sdpa_masked(q, k, v, mask, scale):
    """SDPA with an additive bias (G, H, Tq, Tk) broadcast over q's batch, from :func:`_masked_bias`."""
    bias, visible = mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale) * visible


# Prepared biases of the CPU path, by everything they depend on: a training step or a stream asks
# for the same few (q_offset, key_start, key_lengths) patterns again and again, and building one
# costs more than the attention at the generators' sizes.
_BIAS_CACHE: "collections.OrderedDict" = collections.OrderedDict()
_BIAS_CACHE_SIZE = 64


def _cached_bias(pattern, slopes, Tq, Tk, qperiod, period, ratio, extra, dtype):
    # The slopes by value: a buffer edited in place, or a converted copy whose memory is reused,
    # must not hit an old entry.
    key = (pattern, tuple(slopes.tolist()), str(slopes.device), Tq, Tk, qperiod, period, ratio, extra, dtype)
    hit = _BIAS_CACHE.get(key)
    if hit is not None:
        _BIAS_CACHE.move_to_end(key)
        return hit
    q0, start, length = (torch.tensor([x], device=slopes.device) for x in pattern)
    one = _ref.attention_bias(qperiod, Tk, slopes, q0, period, ratio, extra, key_lengths=length, key_start=start,
                              batch=1)
    if qperiod != Tq:
        one = one.repeat(1, 1, Tq // qperiod, 1)
    prepared = _masked_bias(one, dtype)
    _BIAS_CACHE[key] = prepared
    if len(_BIAS_CACHE) > _BIAS_CACHE_SIZE:
        _BIAS_CACHE.popitem(last=False)
    return prepared


def _sdpa(q, k, v, slopes, q0, starts, lengths, period, ratio, extra, scale, qperiod):
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    if torch.compiler.is_compiling():
        bias = _ref.attention_bias(qperiod, Tk, slopes, q0, period, ratio, extra, key_lengths=lengths,
                                   key_start=starts, batch=B)
        if qperiod != Tq:
            bias = bias.repeat(1, 1, Tq // qperiod, 1)
        return _sdpa_masked(q, k, v, _masked_bias(bias, q.dtype), scale)
    rows = torch.stack([q0, starts, lengths], 1).tolist()
    patterns = sorted(set(map(tuple, rows)))

    def mask(pattern):
        return _cached_bias(pattern, slopes, Tq, Tk, qperiod, period, ratio, extra, q.dtype)

    if len(patterns) == 1:
        return _sdpa_masked(q, k, v, mask(patterns[0]), scale)
    outs, order = [], []
    for pattern in patterns:
        idx = torch.tensor([b for b, r in enumerate(rows) if tuple(r) == pattern], device=q.device)
        outs.append(_sdpa_masked(q[idx], k[idx], v[idx], mask(pattern), scale))
        order.append(idx)
    return torch.cat(outs)[torch.argsort(torch.cat(order))]


def _strides(t: torch.Tensor):
    return tuple(t.stride()[:3])


def _last_dim_dense(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _heads_layout(B: int, H: int, T: int, d: int, device) -> torch.Tensor:
    """An output buffer (B, H, T, d) laid out as (B, T, H, d): heads merge back into a row by a view."""
    return _backend.empty((B, T, H, d), torch.float32, device).permute(0, 2, 1, 3)


def _cpp_forward(q, k, v, slopes, q0, starts, lengths, args):
    """The C++ forward kernel: (out, lse) with out in the heads layout; ``args`` = (period,
    audio_ratio, extra, scale, qperiod)."""
    period, ratio, extra, scale, qperiod = args
    q, k, v = _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v)
    B, H, Tq, d = q.shape
    out = _heads_layout(B, H, Tq, d, q.device)
    lse = _backend.empty((B, H, Tq), torch.float32, q.device)
    _backend.native().biased_attention_fwd_cpu(
        q, k, v, out, lse, slopes, q0, starts, lengths, (B, H, Tq, k.shape[2], d),
        (_strides(q), _strides(k), _strides(v), _strides(out)), period, ratio, extra, qperiod, scale)
    return out, lse


def _cpp_backward(dout, q, k, v, out, lse, slopes, q0, starts, lengths, args):
    """The C++ backward kernel: (dq, dk, dv) in the heads layout."""
    period, ratio, extra, scale, qperiod = args
    dout = _last_dim_dense(dout.float())
    q, k, v = _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v)
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    dq, dk, dv = (_heads_layout(B, H, Tq, d, q.device), _heads_layout(B, H, Tk, d, q.device),
                  _heads_layout(B, H, Tk, d, q.device))
    _backend.native().biased_attention_bwd_cpu(
        dout, q, k, v, out, lse, dq, dk, dv, slopes, q0, starts, lengths, (B, H, Tq, Tk, d),
        tuple(_strides(t) for t in (dout, q, k, v, out, dq, dk, dv)), period, ratio, extra, qperiod, scale)
    return dq, dk, dv


class _CppAttention(torch.autograd.Function):
    """The C++ kernels in eager mode; ``args`` = (period, audio_ratio, extra, scale, qperiod)."""

    @staticmethod
    def forward(ctx, q, k, v, slopes, q0, starts, lengths, args):
        q, k, v = _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v)
        out, lse = _cpp_forward(q, k, v, slopes, q0, starts, lengths, args)
        ctx.save_for_backward(q, k, v, out, lse, slopes, q0, starts, lengths)
        ctx.args = args
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        dq, dk, dv = _cpp_backward(dout, *ctx.saved_tensors, ctx.args)
        return dq, dk, dv, None, None, None, None, None


# Inside torch.compile the same C++ kernels as opaque custom ops (a compiled graph cannot trace the
# extension call): their fake outputs take the kernels' heads layout, stride for stride.
@torch.library.custom_op("reactfast::biased_attention_cpu_fwd", mutates_args=())
def _cpp_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, q_offset: torch.Tensor,
                key_start: torch.Tensor, key_lengths: torch.Tensor, period: int, audio_ratio: int, extra: int,
                scale: float, qperiod: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return _cpp_forward(q, k, v, slopes, q_offset, key_start, key_lengths, (period, audio_ratio, extra, scale, qperiod))


@_cpp_fwd_op.register_fake
def _(q, k, v, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale, qperiod):
    B, H, Tq, d = q.shape
    return _heads_layout(B, H, Tq, d, q.device), q.new_empty((B, H, Tq), dtype=torch.float32)


@torch.library.custom_op("reactfast::biased_attention_cpu_bwd", mutates_args=())
def _cpp_bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                lse: torch.Tensor, slopes: torch.Tensor, q_offset: torch.Tensor, key_start: torch.Tensor,
                key_lengths: torch.Tensor, period: int, audio_ratio: int, extra: int, scale: float,
                qperiod: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _cpp_backward(dout, q, k, v, out, lse, slopes, q_offset, key_start, key_lengths,
                         (period, audio_ratio, extra, scale, qperiod))


@_cpp_bwd_op.register_fake
def _(dout, q, k, v, out, lse, slopes, q_offset, key_start, key_lengths, period, audio_ratio, extra, scale, qperiod):
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    return (_heads_layout(B, H, Tq, d, q.device), _heads_layout(B, H, Tk, d, q.device),
            _heads_layout(B, H, Tk, d, q.device))


def _cpp_setup_context(ctx, inputs, output):
    q, k, v, slopes, q_offset, key_start, key_lengths = inputs[:7]
    ctx.save_for_backward(q, k, v, output[0], output[1], slopes, q_offset, key_start, key_lengths)
    ctx.args = inputs[7:]


def _cpp_op_backward(ctx, grad_out, grad_lse):
    dq, dk, dv = _cpp_bwd_op(grad_out, *ctx.saved_tensors, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None, None, None, None


_cpp_fwd_op.register_autograd(_cpp_op_backward, setup_context=_cpp_setup_context)
# Read once, outside any graph: whether the C++ kernels can run here.
_CPP_OK = _backend.backend_status("cpp", "cpu", "biased_attention")[0]


def _cpp_usable(q: torch.Tensor) -> Optional[str]:
    """Why the C++ kernels cannot take this call (None when they can)."""
    if q.dtype != torch.float32:
        return f"they take float32 only, got {q.dtype}"
    return None


# Read-only tensors every call with the same arguments would build again (ALiBi slopes, per-sample
# ints given as one int): on a GPU each build is a kernel launch or more.
_CONSTANTS: dict = {}
_CONSTANTS_SIZE = 256


def _cached(key, make):
    """``make()``, kept for later calls with ``key`` in eager mode; built afresh while torch.compile
    traces or a CUDA graph captures (a tensor made during a capture holds no values until replay)."""
    if torch.compiler.is_compiling() or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
        return make()
    value = _CONSTANTS.get(key)
    if value is None:
        if len(_CONSTANTS) >= _CONSTANTS_SIZE:
            _CONSTANTS.clear()
        value = _CONSTANTS[key] = make()
    return value


def _per_sample(name: str, value, B: int, device, low: int, high: Optional[int] = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise TypeError(f"{name} must be an int or an integer tensor, got dtype {value.dtype}")
        if value.numel() != B:
            raise ValueError(f"{name} must hold one value per sample ({B}), got shape {tuple(value.shape)}")
        t = value.reshape(B).to(device=device, dtype=torch.int32)
    elif isinstance(value, int) and not isinstance(value, bool):
        if value < low or (high is not None and value > high):   # checked on the host: no tensor read
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{name} must be {bound}, got {value}")
        return _cached(("per_sample", value, B, device),
                       lambda: torch.full((B,), value, dtype=torch.int32, device=device))
    else:
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(value).__name__}")
    if not _backend.host_checks_allowed(t):
        # No host synchronisation on a GPU (a step stays capturable in a CUDA graph): out-of-range
        # values are clamped into range on the device instead of raising.
        return t.clamp(low, high)
    lo, hi = torch.aminmax(t)
    lo, hi = int(lo), int(hi)
    if lo < low or (high is not None and hi > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got values in [{lo}, {hi}]")
    return t


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: Optional[torch.Tensor] = None,
                     q_offset: Union[int, torch.Tensor] = 0, period: int = 8, audio_ratio: int = 1, extra: int = 0,
                     key_lengths: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                     key_start: Optional[torch.Tensor] = None, query_period: Optional[int] = None,
                     backend: Optional[str] = None, precision: str = "tf32x3") -> torch.Tensor:
    """softmax(Q K^T * scale + M) V with the speaker-listener bias M of SPEC 3.1.

    For head h, query i at absolute frame q0 + i and key j, with pos = audio_ratio (q0 + i):
    M = -slopes[h] * floor((pos - j) / (audio_ratio * period)) where j <= pos + extra and
    j < key_lengths[b], and -inf elsewhere. Rows with every key masked give zeros.

    Args:
        q: (B, H, Tq, d) queries; k, v: (B, H, Tk, d). float32, float16, bfloat16 or float64, one
            dtype (under autocast all three are cast to its dtype, as for a matmul); float64 takes the
            SDPA path (or the reference) in float64 on any device.
        slopes: (H,) per-head slopes; default ALiBi 2^(-8 (h + 1) / H).
        q_offset: absolute frame of the first query (int or (B,) ints in [0, 2^21]); right-aligned
            windows over S keys use S - W (with audio_ratio 1).
        period: p >= 1, frames per bias step (8 in ReactFace).
        audio_ratio: k >= 1 keys per query frame (2 for audio at twice the video rate).
        extra: keys past pos that still count as current (0 authors; audio_ratio - 1 paper).
        key_lengths: (B,) valid keys per sample (padding after); default all Tk.
        key_start: (B,) first valid key per sample (empty slots of a right-aligned rolling buffer
            before it); default 0. Integer tensors on a CPU are range-checked; on a GPU they are
            clamped into range on the device (no host synchronisation).
        scale: default 1 / sqrt(d).
        query_period: P dividing Tq: query row i stands at frame q_offset + (i mod P), i.e. the rows
            hold Tq / P windows of P frames over the same keys (several samples of one speaker folded
            into one batch row: their keys are read once, and no copies are made). Default Tq.
        backend: ``"triton"``, ``"cpp"``, ``"sdpa"`` or ``"reference"`` (default: Triton on CUDA; on
            CPU the C++ kernels for float32 with head dims up to ``CPP_MAX_HEAD_DIM`` (16), as custom
            ops inside ``torch.compile``, SDPA for wider heads and float16/bfloat16). Forcing ``"cpp"`` (here or
            by ``REACTFAST_BACKEND``) takes any float32 head dim and raises for other dtypes.
        precision: float32 inputs on the Triton path: ``"tf32x3"`` (default; each product as three
            TF32 products of split operands on the matrix units, float32 accuracy), ``"tf32"`` (one
            TF32 product: a third of the matrix-unit work, about 1e-3 relative error and up to 2.1e-3
            measured on an H100 after the softmax, over the 1e-3 the tests allow TF32) or ``"ieee"``
            (exact float32 products on FMA units, no tensor cores: the earlier ieee-only kernels took
            62 ms against 1.8 ms in bf16 for fwd+bwd B16 H8 T750 d64 on an H100). fp16/bf16 inputs
            and the other backends ignore it (the CPU paths are exact float32).

    Returns:
        (B, H, Tq, d) in q's dtype.

    Example:
        >>> out = biased_attention(q, k, v, q_offset=k.shape[2] - q.shape[2], period=8)
    """
    check_tensor("q", q, ndim=4, dtypes=_DTYPES)
    check_tensor("k", k, ndim=4, dtypes=_DTYPES)
    check_tensor("v", v, ndim=4, dtypes=_DTYPES)
    check_same_device(q=q, k=k, v=v)
    q, k, v = autocast_inputs(q.device.type, q, k, v)
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
    check_backend(backend, IMPLEMENTED)
    Tk = k.shape[2]
    if slopes is None:
        slopes = _cached(("slopes", H, q.device), lambda: _ref.alibi_slopes(H, q.device))
    else:
        check_tensor("slopes", slopes, ndim=1, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16))
        if slopes.numel() != H:
            raise ValueError(f"slopes must have one value per head ({H}), got shape {tuple(slopes.shape)}")
        if slopes.device != q.device:
            raise ValueError(f"slopes must be on q's device {q.device}, got {slopes.device}")
    check_precision(precision)
    q0 = _per_sample("q_offset", q_offset, B, q.device, 0, MAX_Q_OFFSET)
    lengths = _per_sample("key_lengths", key_lengths if key_lengths is not None else Tk, B, q.device, 0, Tk)
    starts = _per_sample("key_start", key_start if key_start is not None else 0, B, q.device, 0, Tk)
    scale = 1.0 / math.sqrt(d) if scale is None else check_real("scale", scale, minimum=None)
    qperiod = Tq if query_period is None else query_period
    if not isinstance(qperiod, int) or isinstance(qperiod, bool) or qperiod < 1 or Tq % qperiod:
        raise ValueError(f"query_period must be an int >= 1 dividing Tq ({Tq}), got {query_period!r}")
    forced = backend if backend is not None else _backend.forced_backend("biased_attention")
    if q.device.type == "cpu" and forced in (None, "cpp") and torch.compiler.is_compiling():
        # A compiled graph calls the C++ kernels as custom ops where they would run in eager mode,
        # and traces the SDPA path otherwise.
        eager_cpp = _CPP_OK and _cpp_usable(q) is None and (forced == "cpp" or d <= CPP_MAX_HEAD_DIM)
        if eager_cpp:
            return _cpp_fwd_op(q, k, v, slopes.float().contiguous(), q0, starts, lengths, period, audio_ratio, extra,
                               scale, qperiod)[0]
        if forced == "cpp":
            raise ValueError(f"biased_attention: the C++ kernels were forced but "
                             f"{_cpp_usable(q) or 'they are not available here'}")
        name = "sdpa"
    else:
        name = _backend.select("biased_attention", q.device, IMPLEMENTED, forced)
    if name == "triton" and q.dtype == torch.float64:
        if forced == "triton":
            raise ValueError("biased_attention: the Triton kernels were forced but they take float32, float16 and "
                             "bfloat16, got float64")
        _backend.log_fallback("biased_attention", "triton", "float64 inputs (the kernels take float32, float16 and "
                              "bfloat16): SDPA with a built bias")
        name = "sdpa"
    if name == "cpp":
        why = _cpp_usable(q)
        if why is None and forced is None and d > CPP_MAX_HEAD_DIM:
            why = f"the head dim {d} is above {CPP_MAX_HEAD_DIM}"
        if why is None:
            return _CppAttention.apply(q, k, v, slopes.float().contiguous(), q0, starts, lengths,
                                       (period, audio_ratio, extra, scale, qperiod))
        if forced == "cpp":
            how = "backend='cpp'" if backend is not None else "REACTFAST_BACKEND"
            raise ValueError(f"biased_attention: the C++ kernels were forced ({how}) but {why}")
        name = "sdpa"   # float16/bfloat16 on a CPU, or wide heads
    if name == "sdpa":
        return _sdpa(q, k, v, slopes.float(), q0, starts, lengths, period, audio_ratio, extra, scale, qperiod)
    attend = _eager.pick(_fwd, _fwd_eager)
    out, _ = attend(q.contiguous(), k.contiguous(), v.contiguous(), slopes.float().contiguous(), q0, starts, lengths,
                    period, audio_ratio, extra, scale, qperiod, backend or "", precision)
    return out
