"""Per-listener weight shifts for unmodified models: ``WeightShiftLinear`` and ``personalize``.

``personalize(model, {"decoder.layers.3.multihead_attn": dW, "head": dW2})`` makes every call of
the named ``nn.Linear`` / ``nn.MultiheadAttention`` modules inside the ``with`` block use
W + dW[b] for sample b of the batch (W + dW never formed, the parameters never copied or
changed); gradients flow to the shifts. For ``nn.MultiheadAttention`` the shift edits the packed
in-projection ``in_proj_weight`` (3E, E) - queries, keys and values - as PerFRDiff does.

A shift may hold one entry per sample (B) or one per group of samples: with G entries and a batch
of B = G x R, samples g R .. g R + R - 1 share shift g (a listener-major batch: each listener's
samples, windows or guidance rows next to each other). Groups cost no copies: each group's rows
are one long sequence for the weight-shift op.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from reactfast.ops.weight_shift import Shift, check_shift, weight_shift_linear


def shift_entries(shift: Shift) -> int:
    """How many shift entries (listeners) a full-rank or low-rank shift holds."""
    return (shift[0] if isinstance(shift, tuple) else shift).shape[0]


def _grouped_linear(x: torch.Tensor, weight: torch.Tensor, shift: Shift, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (B, ..., d_in) -> (B, ..., d_out); sample b uses shift entry b // (B / G)."""
    B, G = x.shape[0], shift_entries(shift)
    if B % G:
        raise ValueError(f"personalize: a batch of {B} samples does not split into {G} equal groups, one per "
                         f"shift entry (give one shift per sample, or per group of consecutive samples)")
    y = weight_shift_linear(x.reshape(G, -1, x.shape[-1]), weight, shift, bias)
    return y.reshape(*x.shape[:-1], -1)


class WeightShiftLinear(nn.Linear):
    """nn.Linear whose forward takes an optional per-sample weight shift:
    ``forward(x (B, ..., d_in), shift=None | (B or G, d_out, d_in) | (U, V))``; G entries are
    shared by groups of B / G consecutive samples."""

    def forward(self, x: torch.Tensor, shift: Optional[Shift] = None) -> torch.Tensor:
        if shift is None:
            return super().forward(x)
        return _grouped_linear(x, self.weight, shift, self.bias)


def _batch_first(x: torch.Tensor, batch_dim: int) -> torch.Tensor:
    return x if batch_dim == 0 else x.transpose(0, batch_dim)


def _shifted_linear(module: nn.Linear, shift: Shift, batch_dim: int, x: torch.Tensor) -> torch.Tensor:
    y = _grouped_linear(_batch_first(x, batch_dim), module.weight, shift, module.bias)
    return _batch_first(y, batch_dim)


def _split(shift: Shift, E: int, i: int) -> Shift:
    if isinstance(shift, tuple):
        return shift[0][:, i * E:(i + 1) * E], shift[1]
    return shift[:, i * E:(i + 1) * E]


def _shifted_mha(module: nn.MultiheadAttention, shift: Shift, query, key, value, key_padding_mask=None,
                 need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False):
    E, H = module.embed_dim, module.num_heads
    if not module.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    W, b = module.in_proj_weight, module.in_proj_bias
    proj = []
    for i, t in enumerate((query, key, value)):
        proj.append(_grouped_linear(t, W[i * E:(i + 1) * E], _split(shift, E, i),
                                    None if b is None else b[i * E:(i + 1) * E]))
    q, k, v = proj
    if module.bias_k is not None:
        B = k.shape[0]
        k = torch.cat([k, module.bias_k.reshape(1, 1, E).expand(B, 1, E)], 1)
        v = torch.cat([v, module.bias_v.reshape(1, 1, E).expand(B, 1, E)], 1)
        if attn_mask is not None:
            attn_mask = F.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, 1))
    if module.add_zero_attn:
        raise ValueError("personalize: nn.MultiheadAttention with add_zero_attn is not supported")
    B, Tq, _ = q.shape
    Tk = k.shape[1]
    d = E // H
    q = q.reshape(B, Tq, H, d).transpose(1, 2)
    k = k.reshape(B, Tk, H, d).transpose(1, 2)
    v = v.reshape(B, Tk, H, d).transpose(1, 2)
    mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                             target_type=q.dtype, check_other=False)
    if mask is not None and mask.dim() == 3:
        mask = mask.reshape(B, H, Tq, Tk)
    if key_padding_mask is not None:
        kpm = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask", other_type=None,
                                other_name="", target_type=q.dtype)
        kpm = kpm.reshape(B, 1, 1, Tk)
        mask = kpm if mask is None else mask + kpm
    if is_causal and mask is None:
        mask = torch.triu(torch.full((Tq, Tk), float("-inf"), device=q.device, dtype=q.dtype), 1)
    drop = module.dropout if module.training else 0.0
    if need_weights:
        scores = torch.matmul(q, k.transpose(-1, -2)) / (d ** 0.5)
        if mask is not None:
            scores = scores + mask
        attn = torch.softmax(scores, -1)
        attn = F.dropout(attn, drop) if drop > 0 else attn
        out = torch.matmul(attn, v)
    else:
        attn = None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
    out = out.transpose(1, 2).reshape(B, Tq, E)
    out = module.out_proj(out)
    if not module.batch_first:
        out = out.transpose(0, 1)
    weights = None
    if need_weights:
        weights = attn.mean(1) if average_attn_weights else attn
    return out, weights


def _patch(model: nn.Module, shifts: Dict[str, Shift], batch_dim: int):
    modules = dict(model.named_modules())
    patched = []
    for name, shift in shifts.items():
        if name not in modules:
            editable = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.MultiheadAttention))]
            raise KeyError(f"personalize: the model has no module named {name!r}; editable layers: {editable[:20]}")
        module = modules[name]
        if isinstance(module, nn.Linear):
            like = module.weight
            B = (shift[0] if isinstance(shift, tuple) else shift).shape[0]
            check_shift(f"shifts[{name!r}]", shift, B, module.out_features, module.in_features, like)
            fn = lambda x, _m=module, _s=shift: _shifted_linear(_m, _s, batch_dim, x)  # noqa: E731
        elif isinstance(module, nn.MultiheadAttention):
            if not module._qkv_same_embed_dim:
                raise ValueError(f"personalize: {name!r} has separate q/k/v projection weights (kdim/vdim != "
                                 "embed_dim); only the packed in_proj_weight can be shifted")
            E = module.embed_dim
            B = (shift[0] if isinstance(shift, tuple) else shift).shape[0]
            check_shift(f"shifts[{name!r}]", shift, B, 3 * E, E, module.in_proj_weight)
            fn = lambda *a, _m=module, _s=shift, **k: _shifted_mha(_m, _s, *a, **k)  # noqa: E731
        else:
            raise TypeError(f"personalize: {name!r} is a {type(module).__name__}; only nn.Linear and "
                            "nn.MultiheadAttention layers can be shifted")
        patched.append((module, fn))
    return patched


@contextlib.contextmanager
def personalize(model: nn.Module, shifts: Dict[str, Shift], batch_dim: int = 0) -> Iterator[nn.Module]:
    """Within the block, the named layers of ``model`` apply per-sample weight shifts.

    Args:
        model: any module; it is not copied and its parameters are not changed.
        shifts: layer name (as in ``model.named_modules()``) -> shift of shape (B, d_out, d_in)
            (``(B, 3E, E)`` for ``nn.MultiheadAttention``), or a low-rank pair (U, V); or G entries
            instead of B, G dividing the batch, each shared by B / G consecutive samples.
        batch_dim: the batch dimension of inputs to shifted ``nn.Linear`` layers (0 for
            batch-first models; ``nn.MultiheadAttention`` follows its own ``batch_first``).

    Not thread-safe: the named modules' ``forward`` is replaced for the duration of the block.

    Example:
        >>> with personalize(decoder, {"layers.3.multihead_attn": dW}):
        ...     out = decoder(tgt, memory)        # sample b uses W + dW[b]
    """
    patched = _patch(model, shifts, batch_dim)
    for module, fn in patched:
        if "forward" in module.__dict__:
            raise RuntimeError(f"personalize: {type(module).__name__} is already personalised (nested blocks on "
                               "the same layer are not supported)")
    try:
        for module, fn in patched:
            module.forward = fn
        yield model
    finally:
        for module, _ in patched:
            module.__dict__.pop("forward", None)


def personalized_call(model: nn.Module, shifts: Dict[str, Shift], *args, batch_dim: int = 0, **kwargs):
    """``model(*args, **kwargs)`` with the shifts applied (the functional form of :func:`personalize`)."""
    with personalize(model, shifts, batch_dim):
        return model(*args, **kwargs)
