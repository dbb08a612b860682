"""nn.BiasedCrossAttention: multi-head attention over ``reactfast.ops.biased_attention``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from reactfast.nn.dropout import Dropout
from reactfast.ops._checks import check_backend, check_bool, check_int, check_real, check_tensor
from reactfast.ops.biased_attention import IMPLEMENTED, biased_attention
from reactfast.reference.biased_attention import alibi_slopes


@dataclass
class KVCache:
    """Projected keys/values seen so far by one incremental attention (all samples in step).

    k, v: (B, H, L, d) most recent keys; ``seen``: keys received in total (the absolute position
    of key L-1 is seen - 1); keys older than the module's ``max_cache`` are dropped.
    """

    k: Optional[torch.Tensor] = None
    v: Optional[torch.Tensor] = None
    seen: int = 0

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


class BiasedCrossAttention(nn.Module):
    """Multi-head cross-attention with ReactFace's periodic ALiBi-like bias and causal bound.

    Args:
        embed_dim: query (and output) width E; num_heads divides it.
        kdim, vdim: key and value input widths (default E).
        dropout: dropout on the attention output during training (the fused kernel has no
            attention-probability dropout); off at eval.
        period: p, frames per bias step (8 in ReactFace).
        audio_ratio: k keys per query frame (2 for audio at twice the video rate).
        extra: keys past the current position that still count (0 authors, k - 1 paper).
        slopes: per-head slopes (default ALiBi); stored as a buffer.
        max_cache: in incremental mode keep at most this many recent keys (a multiple of
            audio_ratio), so the cost of a step does not grow with the conversation.
        backend: force the op's backend.

    ``forward(query (B, Tq, E), key (B, Tk, kdim), value (B, Tk, vdim), q_offset, key_lengths, key_start)``
    returns (B, Tq, E). ``step(query, new_key, new_value, cache)`` appends the new keys to the
    cache and attends from a right-aligned window of queries (the newest frames), giving what one
    full call over all keys would give for those queries.
    """

    op = "biased_attention"

    def __init__(self, embed_dim: int, num_heads: int, kdim: Optional[int] = None, vdim: Optional[int] = None,
                 dropout: float = 0.0, period: int = 8, audio_ratio: int = 1, extra: int = 0,
                 slopes: Optional[torch.Tensor] = None, bias: bool = True, max_cache: Optional[int] = None,
                 backend: Optional[str] = None):
        super().__init__()
        for name, value, low in (("embed_dim", embed_dim, 1), ("num_heads", num_heads, 1), ("period", period, 1),
                                 ("audio_ratio", audio_ratio, 1), ("extra", extra, 0)):
            check_int(name, value, low)
        for name, value in (("kdim", kdim), ("vdim", vdim)):
            if value is not None:
                check_int(name, value)
        check_real("dropout", dropout)   # a number: torch's Dropout names a probability out of [0, 1]
        check_bool("bias", bias)
        if embed_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        if slopes is not None and (not isinstance(slopes, torch.Tensor) or slopes.shape != (num_heads,)):
            raise ValueError(f"slopes must be a tensor of one value per head ({num_heads},), got "
                             f"{tuple(slopes.shape) if isinstance(slopes, torch.Tensor) else type(slopes).__name__}")
        check_backend(backend, IMPLEMENTED)   # named here, not at the first forward
        if max_cache is not None and (check_int("max_cache", max_cache) < audio_ratio or max_cache % audio_ratio):
            raise ValueError(f"max_cache must be a positive multiple of audio_ratio ({audio_ratio}), got {max_cache}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.period, self.audio_ratio, self.extra = period, audio_ratio, extra
        self.max_cache, self.backend = max_cache, backend
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.dropout = Dropout(dropout)
        self.register_buffer("slopes", alibi_slopes(num_heads) if slopes is None else slopes.float().clone())

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def _attend(self, q, k, v, q_offset, key_lengths, key_start=None, repeat: int = 1,
                drop: bool = True) -> torch.Tensor:
        R, H, Tq, d = q.shape
        if repeat > 1:
            # The repeat rows of a key row fold into one row of repeat x Tq queries at period Tq.
            q = q.reshape(R // repeat, repeat, H, Tq, d).transpose(1, 2).reshape(R // repeat, H, repeat * Tq, d)
        out = biased_attention(q, k, v, self.slopes, q_offset=q_offset, period=self.period,
                               audio_ratio=self.audio_ratio, extra=self.extra, key_lengths=key_lengths,
                               key_start=key_start, query_period=Tq, backend=self.backend)
        if repeat > 1:
            out = out.reshape(R // repeat, H, repeat, Tq, d).transpose(1, 2).reshape(R, H, Tq, d)
        out = self.out_proj(out.transpose(1, 2).reshape(R, Tq, H * d))
        return self.dropout(out) if drop else out

    def project_kv(self, key: torch.Tensor, value: torch.Tensor):
        """Keys and values (B, T, kdim / vdim) projected and split into heads: two (B, H, T, d)
        tensors, to cache (rolling buffers) and pass to :meth:`attend`."""
        self._check("key", key, self.k_proj.in_features)
        self._check("value", value, self.v_proj.in_features)
        return self._heads(self.k_proj(key)), self._heads(self.v_proj(value))

    def attend(self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_offset: Union[int, torch.Tensor] = 0,
               key_lengths: Optional[torch.Tensor] = None, key_start: Optional[torch.Tensor] = None,
               kv_index: Optional[torch.Tensor] = None, kv_repeat: int = 1, dropout: bool = True) -> torch.Tensor:
        """Attention of ``query`` (B, Tq, E) over projected keys and values (G, H, Tk, d) from
        :meth:`project_kv`, when several query rows share one key row (the samples of one
        conversation, one speaker): ``kv_repeat`` r, rows g r .. g r + r - 1 read key row g (the
        keys are read once, no copies; ``q_offset``, ``key_start``, ``key_lengths`` per key row); or
        ``kv_index`` (B,), the key row of each query row (copied per row; per-row arguments).
        ``dropout=False`` leaves out the output dropout, for a caller that applies ``self.dropout``
        fused with what follows (``reactfast.nn.transformer.add_norm``)."""
        self._check("query", query, self.q_proj.in_features)
        for name, t in (("k", k), ("v", v)):
            check_tensor(name, t, ndim=4, nonempty=False)   # shapes: the op names them against q
        check_int("kv_repeat", kv_repeat)
        check_bool("dropout", dropout)
        if kv_index is not None:
            check_tensor("kv_index", kv_index, ndim=1, dtypes=(torch.int32, torch.int64), nonempty=False)
            k, v = k.index_select(0, kv_index), v.index_select(0, kv_index)
        if k.shape[0] * kv_repeat != query.shape[0]:
            raise ValueError(f"{query.shape[0]} query rows do not match {k.shape[0]} key rows x kv_repeat "
                             f"{kv_repeat} (or give kv_index)")
        return self._attend(self._heads(self.q_proj(query)), k, v, q_offset, key_lengths, key_start, kv_repeat,
                            dropout)

    def _check(self, name, x, width):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"{name} must be a (B, T, {width}) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.shape[-1] != width:
            raise ValueError(f"{name} must have last dim {width}, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if x.shape[1] == 0 and name in ("query", "key", "value"):
            raise ValueError(f"{name} must hold at least one frame, got shape {tuple(x.shape)}")

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                q_offset: Union[int, torch.Tensor] = 0, key_lengths: Optional[torch.Tensor] = None,
                key_start: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._check("query", query, self.q_proj.in_features)
        self._check("key", key, self.k_proj.in_features)
        self._check("value", value, self.v_proj.in_features)
        if key.shape[:2] != value.shape[:2]:
            raise ValueError(f"key and value must share (B, Tk), got {tuple(key.shape)} and {tuple(value.shape)}")
        if key.shape[0] != query.shape[0]:
            raise ValueError(f"query and key must share the batch size, got {query.shape[0]} and {key.shape[0]}")
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        return self._attend(q, k, v, q_offset, key_lengths, key_start)

    def new_cache(self) -> KVCache:
        return KVCache()

    def step(self, query: torch.Tensor, new_key: torch.Tensor, new_value: torch.Tensor, cache: KVCache
             ) -> torch.Tensor:
        """Incremental call: append ``new_key``/``new_value`` (B, n, kdim/vdim) to ``cache`` and
        attend from ``query`` (B, W, E), the newest W frames (right-aligned: its last frame is the
        frame of the last key received)."""
        self._check("query", query, self.q_proj.in_features)
        self._check("new_key", new_key, self.k_proj.in_features)
        self._check("new_value", new_value, self.v_proj.in_features)
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache (from new_cache()), got {type(cache).__name__}")
        n, B = new_key.shape[1], query.shape[0]
        if n % self.audio_ratio:
            raise ValueError(f"new_key must bring a multiple of audio_ratio ({self.audio_ratio}) keys, got {n}")
        if new_value.shape[:2] != new_key.shape[:2] or new_key.shape[0] != B:
            raise ValueError(f"query, new_key and new_value must share the batch size, and new_key and new_value "
                             f"their length, got {tuple(query.shape)}, {tuple(new_key.shape)} and "
                             f"{tuple(new_value.shape)}")
        if cache.k is not None and cache.k.shape[0] != B:
            raise ValueError(f"the cache holds {cache.k.shape[0]} samples, got a batch of {B}")
        # Everything is checked before the cache changes: a refused call leaves it as it was.
        seen = cache.seen + n
        kept = cache.length + n if self.max_cache is None else min(cache.length + n, self.max_cache)
        frames, W = seen // self.audio_ratio, query.shape[1]
        if W > frames:
            raise ValueError(f"query window of {W} frames is longer than the {frames} frames seen")
        # Positions are relative to the first cached key: shift the query frame by the dropped keys.
        q_offset = frames - W - (seen - kept) // self.audio_ratio
        if q_offset < 0:
            raise ValueError(f"the query window of {W} frames reaches further back than the {kept} cached "
                             f"keys (max_cache={self.max_cache}); raise max_cache")
        k = self._heads(self.k_proj(new_key))
        v = self._heads(self.v_proj(new_value))
        if cache.k is not None:
            k = torch.cat([cache.k, k], 2)
            v = torch.cat([cache.v, v], 2)
        if k.shape[2] > kept:
            k = k[:, :, -kept:].contiguous()
            v = v[:, :, -kept:].contiguous()
        out = self._attend(self._heads(self.q_proj(query)), k, v, q_offset, None)
        cache.k, cache.v, cache.seen = k, v, seen
        return out
