"""Leaner forwards of ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` over the same
modules (the same parameters, so checkpoints and state dicts do not change).

At the generators' sizes (tens of tokens, widths of 64-128) torch's own forwards cost more in
Python argument checks and dispatch than in arithmetic, and their attention-probability dropout
draws a Bernoulli per element; these take the shortest path (one packed projection, SDPA when no
dropout applies, :func:`reactfast.ops.dropout` on the probabilities when one does), and end a
post-norm sublayer with :func:`add_norm` (``norm(x + dropout(h))`` in one fused call). A
feed-forward's ``Dropout(GELU(h))`` is one :func:`reactfast.ops.gelu_dropout` call
(:func:`activation_dropout`), and a whole post-norm GELU feed-forward sublayer one
:func:`reactfast.ops.feed_forward` call (:func:`post_norm_feed_forward`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from reactfast.nn.dropout import Dropout
from reactfast.ops._checks import autocast_enabled
from reactfast.ops.add_layer_norm import add_layer_norm
from reactfast.ops.dropout import dropout
from reactfast.ops.feed_forward import feed_forward
from reactfast.ops.gelu_dropout import gelu_dropout


def add_norm(norm: nn.Module, x: torch.Tensor, h: torch.Tensor, drop: Optional[nn.Module] = None) -> torch.Tensor:
    """``norm(x + drop(h))``, the end of a post-norm sublayer: one :func:`reactfast.ops.add_layer_norm`
    call when ``norm`` is an ``nn.LayerNorm`` over the last dimension, ``drop`` is None or a
    :class:`reactfast.nn.dropout.Dropout` (whose mask the fused call draws alike), x and h share a
    dtype and no autocast is on; else as written (under autocast, torch's type promotion and its
    float32 layer norm)."""
    fusable = (type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1 and x.dtype == h.dtype
               and (drop is None or isinstance(drop, Dropout) or not drop.training or drop.p == 0.0)
               and not autocast_enabled(x.device.type))
    if not fusable:
        return norm(x + (h if drop is None else drop(h)))
    p, training = (0.0, False) if drop is None else (drop.p, drop.training)
    return add_layer_norm(x, h, norm.weight, norm.bias, norm.eps, p, training)


def _gelu_then_dropout(act: nn.Module, drop: nn.Module) -> bool:
    """Whether ``drop(act(h))`` is the exact GELU then the package's Dropout (the fused calls draw
    its mask alike)."""
    return type(act) is nn.GELU and act.approximate == "none" and isinstance(drop, Dropout)


def activation_dropout(act: nn.Module, drop: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``drop(act(h))``, the middle of a feed-forward: one :func:`reactfast.ops.gelu_dropout` call
    when ``act`` is an exact ``nn.GELU`` and ``drop`` a :class:`reactfast.nn.dropout.Dropout` (the
    fused call draws its mask alike), else as written."""
    if _gelu_then_dropout(act, drop):
        return gelu_dropout(h, drop.p, drop.training)
    return drop(act(h))


def post_norm_feed_forward(first: nn.Module, act: nn.Module, drop: nn.Module, second: nn.Module, norm: nn.Module,
                           x: torch.Tensor, out_drop: Optional[nn.Module] = None) -> torch.Tensor:
    """``norm(x + out_drop(second(drop(act(first(x))))))``, a post-norm block's feed-forward sublayer:
    one :func:`reactfast.ops.feed_forward` call (one autograd node) when ``first`` and ``second``
    are ``nn.Linear``, ``act`` the exact ``nn.GELU``, ``drop`` and ``out_drop`` (or None)
    :class:`reactfast.nn.dropout.Dropout` modules (whose masks the fused call draws alike), ``norm``
    an ``nn.LayerNorm`` over the last dimension, x of the weights' dtype and no autocast on; else
    :func:`add_norm` over :func:`activation_dropout`, as written."""
    fusable = (type(first) is nn.Linear and type(second) is nn.Linear and _gelu_then_dropout(act, drop)
               and (out_drop is None or isinstance(out_drop, Dropout)) and type(norm) is nn.LayerNorm
               and len(norm.normalized_shape) == 1 and x.dtype == first.weight.dtype
               and not autocast_enabled(x.device.type))
    if not fusable:
        return add_norm(norm, x, second(activation_dropout(act, drop, first(x))), out_drop)
    p_out, out_training = (0.0, False) if out_drop is None else (out_drop.p, out_drop.training)
    return feed_forward(x, first.weight, first.bias, second.weight, second.bias, norm.weight, norm.bias, norm.eps,
                        drop.p if drop.training else 0.0, p_out if out_training else 0.0)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    B, T, E = x.shape
    return x.view(B, T, heads, E // heads).transpose(1, 2)


def multi_head_attention(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``mha(query, key, value, key_padding_mask=..., need_weights=False)[0]`` for a batch-first
    module: (B, Tq, E) queries over (B, Tk, kdim/vdim) keys and values; ``key_padding_mask`` (B, Tk)
    bool, True where a key is ignored."""
    if not mha.batch_first or mha.bias_k is not None or mha.add_zero_attn:
        return mha(query, key, value, key_padding_mask=key_padding_mask, need_weights=False)[0]
    E, H = mha.embed_dim, mha.num_heads
    b = mha.in_proj_bias
    bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
    if mha._qkv_same_embed_dim and query is key and key is value:
        q, k, v = F.linear(query, mha.in_proj_weight, b).chunk(3, -1)          # one packed projection
    elif mha._qkv_same_embed_dim and key is value:
        w = mha.in_proj_weight
        q = F.linear(query, w[:E], bq)
        k, v = F.linear(key, w[E:], None if b is None else b[E:]).chunk(2, -1)
    else:
        wq, wk, wv = (mha.in_proj_weight.chunk(3) if mha._qkv_same_embed_dim else
                      (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight))
        q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
    q, k, v = _split_heads(q, H), _split_heads(k, H), _split_heads(v, H)
    mask = None
    if key_padding_mask is not None:
        mask = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
            key_padding_mask, float("-inf"))[:, None, None, :]
    p = mha.dropout if mha.training else 0.0
    if p == 0.0:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif q.shape[2] == 1:
        # One query per row (ReactFace's point-to-point audio blocks: a frame over its k audio
        # rows): products and sums over the heads' elements, not a batch of (1 x d) @ (d x Tk)
        # matrix products (thousands of tiny ones). The probabilities keep their (B, H, 1, Tk)
        # shape, so dropout draws the same mask.
        scores = (q * k).sum(-1).unsqueeze(2) * (q.shape[-1] ** -0.5)
        if mask is not None:
            scores = scores + mask
        probs = dropout(torch.softmax(scores, -1), p)
        out = (probs.transpose(-1, -2) * v).sum(2, keepdim=True)
    else:
        scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if mask is not None:
            scores = scores + mask
        out = torch.matmul(dropout(torch.softmax(scores, -1), p), v)
    B, _, Tq, d = out.shape
    return mha.out_proj(out.transpose(1, 2).reshape(B, Tq, H * d))


def encoder_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor,
                  key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``layer(x, src_key_padding_mask=key_padding_mask)`` for a batch-first layer (post- or
    pre-norm), its dropouts as the layer holds them."""
    def attend(h):
        return multi_head_attention(layer.self_attn, h, h, h, key_padding_mask)

    def feed_forward(h):
        return layer.linear2(layer.dropout(layer.activation(layer.linear1(h))))

    if layer.norm_first:
        x = x + layer.dropout1(attend(layer.norm1(x)))
        return x + layer.dropout2(feed_forward(layer.norm2(x)))
    x = add_norm(layer.norm1, x, attend(x), layer.dropout1)
    return add_norm(layer.norm2, x, feed_forward(x), layer.dropout2)


def encoder(module: nn.TransformerEncoder, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None
            ) -> torch.Tensor:
    """``module(x, src_key_padding_mask=key_padding_mask)`` layer by layer through :func:`encoder_layer`."""
    for layer in module.layers:
        x = encoder_layer(layer, x, key_padding_mask)
    return x if module.norm is None else module.norm(x)
