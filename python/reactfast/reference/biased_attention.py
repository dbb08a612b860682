"""Reference speaker-listener biased attention (ReactFace's SLBS / VIM / MIM; SPEC 3.1).

out = softmax(Q K^T / sqrt(d) + M) V with, for head h, query i (absolute frame q0 + i) and key j,

    pos = k (q0 + i)
    M[h, i, j] = -m_h * floor((pos - j) / (k p))   if j <= pos + extra and j < key_length
               = -inf                               otherwise

Keys before key_start[b] (rolling buffers whose oldest slots are still empty) are masked too. With
``query_period`` P, query row i stands at frame q0 + (i mod P): the rows hold several query
windows of P frames over the same keys (the samples of one conversation, folded into one row).
m_h: per-head slopes (ALiBi default 2^(-8 (h + 1) / H)); p: the period; k: keys per query frame
(1 for video-rate keys, 2 for audio at twice the frame rate); extra: how many keys past pos count
as current (0 in the authors' code; k - 1 includes the current frame's audio samples).
With k = 1 and extra = 0 this is the authors' form -m_h floor((q0 + i - j) / p), j <= q0 + i.
Rows whose keys are all masked give zeros.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch


def alibi_slopes(num_heads: int, device=None) -> torch.Tensor:
    """ALiBi slopes m_h = 2^(-8 (h + 1) / H), float32 (H,)."""
    h = torch.arange(num_heads, dtype=torch.float64, device=device)
    return torch.pow(2.0, -8.0 * (h + 1) / num_heads).float()


def _offsets(q_offset: Union[int, torch.Tensor], B: int, device) -> torch.Tensor:
    if isinstance(q_offset, torch.Tensor):
        return q_offset.to(device=device, dtype=torch.int64).reshape(B)
    return torch.full((B,), int(q_offset), dtype=torch.int64, device=device)


def attention_bias(Tq: int, Tk: int, slopes: torch.Tensor, q_offset: Union[int, torch.Tensor] = 0,
                   period: int = 8, audio_ratio: int = 1, extra: int = 0,
                   key_lengths: Optional[torch.Tensor] = None, batch: Optional[int] = None,
                   key_start: Optional[torch.Tensor] = None, query_period: Optional[int] = None) -> torch.Tensor:
    """The materialised bias M: (B, H, Tq, Tk) float32 with -inf where masked.

    ``batch`` is needed when neither ``q_offset`` nor ``key_lengths`` is a tensor (default 1).
    """
    device = slopes.device
    B = batch or (q_offset.numel() if isinstance(q_offset, torch.Tensor) else
                  key_lengths.numel() if key_lengths is not None else 1)
    q0 = _offsets(q_offset, B, device)
    i = torch.arange(Tq, device=device) % (query_period or Tq)
    j = torch.arange(Tk, device=device)
    pos = audio_ratio * (q0[:, None] + i[None, :])                       # (B, Tq)
    diff = pos[:, :, None] - j[None, None, :]                             # (B, Tq, Tk)
    steps = torch.div(diff, audio_ratio * period, rounding_mode="floor").float()
    bias = -slopes.float()[None, :, None, None] * steps[:, None]          # (B, H, Tq, Tk)
    visible = j[None, None, :] <= pos[:, :, None] + extra
    if key_lengths is not None:
        visible = visible & (j[None, None, :] < key_lengths.to(device).reshape(B, 1, 1))
    if key_start is not None:
        visible = visible & (j[None, None, :] >= key_start.to(device).reshape(B, 1, 1))
    return bias.masked_fill(~visible[:, None], float("-inf"))


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: Optional[torch.Tensor] = None,
                     q_offset: Union[int, torch.Tensor] = 0, period: int = 8, audio_ratio: int = 1, extra: int = 0,
                     key_lengths: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                     key_start: Optional[torch.Tensor] = None, query_period: Optional[int] = None) -> torch.Tensor:
    """Biased attention of q (B, H, Tq, d) over k, v (B, H, Tk, d); computed in float32 (float64 for
    float64 inputs), returned in q's dtype. Differentiable; any device."""
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    work = torch.promote_types(q.dtype, torch.float32)
    if slopes is None:
        slopes = alibi_slopes(H, q.device)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    bias = attention_bias(Tq, Tk, slopes.to(q.device), q_offset, period, audio_ratio, extra, key_lengths, batch=B,
                          key_start=key_start, query_period=query_period).to(work)
    scores = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)) * scale + bias
    row_max = scores.amax(-1, keepdim=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max).detach()
    p = torch.exp(scores - row_max)
    denom = p.sum(-1, keepdim=True)
    p = p / torch.where(denom == 0, torch.ones_like(denom), denom)
    return torch.matmul(p, v.to(work)).to(q.dtype)
