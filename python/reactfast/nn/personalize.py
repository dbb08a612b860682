"""Per-listener weight shifts: ``WeightShiftLinear`` and ``WeightShiftMultiheadAttention`` (drop-in
subclasses of ``nn.Linear`` and ``nn.MultiheadAttention`` that take a per-sample shift), and
``personalize`` to apply shifts to any model's layers by name.

``personalize(model, {"decoder.layers.3.multihead_attn": dW, "head": dW2})`` makes every call of the
named layers inside the ``with`` block use W + dW[b] for sample b of the batch (W + dW never formed,
the parameters never copied or changed); gradients flow to the shifts. The named layers must be
``nn.Linear`` or ``nn.MultiheadAttention``; the first time, each is converted in place to its
shift-aware subclass, which shares its parameters (same ``state_dict``) and computes exactly what
it did when no shift is active. For ``nn.MultiheadAttention`` the shift edits the packed
in-projection ``in_proj_weight`` (3E, E) - queries, keys and values - as PerFRDiff does.

A shift may hold one entry per sample (B) or one per group of samples: with G entries and a batch
of B = G x R, samples g R .. g R + R - 1 share shift g (a listener-major batch: each listener's
samples, windows or guidance rows next to each other). Groups cost no copies: each group's rows
are one long sequence for the weight-shift op. Active shifts live in a context variable, so
concurrent threads (and asyncio tasks) personalise independently.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from reactfast.ops._checks import check_backend, check_bool, check_int, check_tensor
from reactfast.ops.weight_shift import IMPLEMENTED as WEIGHT_SHIFT_BACKENDS
from reactfast.ops.weight_shift import Shift, check_shift, weight_shift_linear

# module -> (shift, batch_dim, backend) for the layers personalised in the current context.
_ACTIVE: contextvars.ContextVar[Dict[nn.Module, Tuple[Shift, int, Optional[str]]]] = contextvars.ContextVar(
    "reactfast_personalize", default={})


def shift_entries(shift: Shift) -> int:
    """How many shift entries (listeners) a full-rank or low-rank shift holds."""
    first = shift[0] if isinstance(shift, (tuple, list)) and len(shift) else shift
    if not isinstance(first, torch.Tensor) or first.dim() == 0:
        got = f"shape {tuple(shift.shape)}" if isinstance(shift, torch.Tensor) else type(shift).__name__
        raise TypeError(f"shift must be a (G, d_out, d_in) tensor or a pair (U, V) of tensors, got {got}")
    return first.shape[0]


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, shift: Shift, bias: Optional[torch.Tensor],
                   backend: Optional[str] = None) -> torch.Tensor:
    """x (B, ..., d_in) -> (B, ..., d_out) with W + dW[g] for sample b, g = b // (B / G)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"personalize: the layer's input x must be a (B, ..., d_in) tensor, got {got}")
    B, G = x.shape[0], shift_entries(shift)
    if (B % G) if G else B:
        raise ValueError(f"personalize: a batch of {B} samples does not split into {G} equal groups, one per "
                         f"shift entry (give one shift per sample, or per group of consecutive samples)")
    rows = (B // G if G else 1) * math.prod(x.shape[1:-1])      # explicit: -1 is ambiguous for empty x
    y = weight_shift_linear(x.reshape(G, rows, x.shape[-1]), weight, shift, bias, backend=backend)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def _batch_first(x: torch.Tensor, batch_dim: int) -> torch.Tensor:
    return x if batch_dim == 0 else x.transpose(0, batch_dim)


class WeightShiftLinear(nn.Linear):
    """``nn.Linear`` whose forward takes an optional per-sample weight shift:
    ``forward(x (B, ..., d_in), shift=None | (B or G, d_out, d_in) | (U, V))``; G entries are
    shared by groups of B / G consecutive samples. Without a shift (given or made active by
    :func:`personalize`) it is ``nn.Linear``."""

    op = "weight_shift"
    backend: Optional[str] = None

    def forward(self, x: torch.Tensor, shift: Optional[Shift] = None) -> torch.Tensor:
        batch_dim, backend = 0, self.backend
        if shift is None:
            active = _ACTIVE.get().get(self)
            if active is None:
                return super().forward(x)
            shift, batch_dim, backend = active
        y = grouped_linear(_batch_first(x, batch_dim), self.weight, shift, self.bias, backend or self.backend)
        return _batch_first(y, batch_dim)


def _additive(mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """A boolean mask (True = not allowed) or an additive float mask as an additive float mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


class WeightShiftMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose packed in-projection takes an optional per-sample shift
    (``shift=`` (B or G, 3E, E) or (U, V), or made active by :func:`personalize`). Without one it
    is ``nn.MultiheadAttention``; with one, the shifted q/k/v projections feed
    ``F.scaled_dot_product_attention`` (or an explicit softmax when weights are asked for)."""

    op = "weight_shift"
    backend: Optional[str] = None

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False, shift: Optional[Shift] = None):
        backend = self.backend
        for name, t in (("query", query), ("key", key), ("value", value)):
            check_tensor(name, t, nonempty=False)
        for name, mask in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
            if mask is not None:
                check_tensor(name, mask, nonempty=False)
        for name, flag in (("need_weights", need_weights), ("average_attn_weights", average_attn_weights),
                           ("is_causal", is_causal)):
            check_bool(name, flag)
        given = shift is not None       # an active shift was checked by personalize on entry
        if not given:
            active = _ACTIVE.get().get(self)
            if active is None:
                return super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                       need_weights=need_weights, attn_mask=attn_mask,
                                       average_attn_weights=average_attn_weights, is_causal=is_causal)
            shift, _, backend = active
        if self.add_zero_attn:
            raise ValueError("personalize: nn.MultiheadAttention with add_zero_attn is not supported")
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dim() != 3:
                raise ValueError(f"personalize: {name} must be a batched 3-D tensor (a shift is per sample), got "
                                 f"shape {tuple(t.shape)}")
        E, H = self.embed_dim, self.num_heads
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if given:
            shift = check_shift("shift", shift, shift_entries(shift), 3 * E, E, self.in_proj_weight)
        B, Tq, Tk = query.shape[0], query.shape[1], key.shape[1]
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, Tk):
            raise ValueError(f"key_padding_mask must be ({B}, {Tk}), got shape {tuple(key_padding_mask.shape)}")
        if attn_mask is not None and tuple(attn_mask.shape) not in ((Tq, Tk), (B * H, Tq, Tk)):
            raise ValueError(f"attn_mask must be ({Tq}, {Tk}) or ({B * H}, {Tq}, {Tk}), got shape "
                             f"{tuple(attn_mask.shape)}")
        q, k, v = (grouped_linear(t, self.in_proj_weight[i * E:(i + 1) * E], _rows(shift, E, i),
                                  None if self.in_proj_bias is None else self.in_proj_bias[i * E:(i + 1) * E],
                                  backend)
                   for i, t in enumerate((query, key, value)))
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.reshape(1, 1, E).expand(B, 1, E)], 1)
            v = torch.cat([v, self.bias_v.reshape(1, 1, E).expand(B, 1, E)], 1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        Tk, d = k.shape[1], E // H
        q, k, v = (t.reshape(B, t.shape[1], H, d).transpose(1, 2) for t in (q, k, v))   # -1: ambiguous if B is 0
        mask = _additive(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.reshape(B, H, Tq, Tk)
        if key_padding_mask is not None:
            pad = _additive(key_padding_mask, q.dtype).reshape(B, 1, 1, Tk)
            mask = pad if mask is None else mask + pad
        if is_causal and mask is None:
            mask = torch.triu(torch.full((Tq, Tk), float("-inf"), device=q.device, dtype=q.dtype), 1)
        drop = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = torch.matmul(q, k.transpose(-1, -2)) / d ** 0.5
            attn = torch.softmax(scores if mask is None else scores + mask, -1)
            weights = attn.mean(1) if average_attn_weights else attn
            out = torch.matmul(F.dropout(attn, drop) if drop > 0 else attn, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        out = self.out_proj(out.transpose(1, 2).reshape(B, Tq, E))
        return (out if self.batch_first else out.transpose(0, 1)), weights


def _rows(shift: Shift, E: int, i: int) -> Shift:
    """The shift of projection i (0 q, 1 k, 2 v) of a packed (3E, E) in-projection shift."""
    if isinstance(shift, tuple):
        return shift[0][:, i * E:(i + 1) * E], shift[1]
    return shift[:, i * E:(i + 1) * E]


# The projection sets attention_projections takes: 0 (q), 1 (k), 2 (v), each at most once, in order.
_PARTS = frozenset({(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)})


def attention_projections(mha: nn.MultiheadAttention, x: torch.Tensor, parts: Tuple[int, ...]) -> List[torch.Tensor]:
    """The projections ``parts`` (0 q, 1 k, 2 v, in order) of batch-first ``x`` (B, T, E) by the
    packed in-projection of ``mha``, with the per-sample shift that :func:`personalize` made active
    for it, if any. For callers that keep keys and values (a cache over the steps of a sampler)."""
    if not isinstance(mha, nn.MultiheadAttention):
        raise TypeError(f"mha must be an nn.MultiheadAttention, got {type(mha).__name__}")
    if not mha._qkv_same_embed_dim:
        raise ValueError("attention_projections needs a packed in-projection (kdim = vdim = embed_dim)")
    check_tensor("x", x, ndim=3, nonempty=False)
    if x.shape[-1] != mha.embed_dim:
        raise ValueError(f"x must be (B, T, {mha.embed_dim}), got shape {tuple(x.shape)}")
    if not isinstance(parts, (tuple, list)) or any(type(i) is not int for i in parts) or tuple(parts) not in _PARTS:
        raise ValueError(f"parts must be a non-empty increasing tuple of the projections 0 (q), 1 (k), 2 (v), "
                         f"got {parts!r:.80}")
    E, w, b = mha.embed_dim, mha.in_proj_weight, mha.in_proj_bias
    active = _ACTIVE.get().get(mha)
    if active is None:
        lo, hi = parts[0] * E, (parts[-1] + 1) * E
        if list(parts) != list(range(parts[0], parts[-1] + 1)):
            raise ValueError(f"parts must be consecutive projections, got {parts}")
        return list(F.linear(x, w[lo:hi], None if b is None else b[lo:hi]).chunk(len(parts), -1))
    shift, _, backend = active
    return [grouped_linear(x, w[i * E:(i + 1) * E], _rows(shift, E, i), None if b is None else b[i * E:(i + 1) * E],
                           backend) for i in parts]


_SHIFTABLE = {nn.Linear: WeightShiftLinear, nn.MultiheadAttention: WeightShiftMultiheadAttention}


def make_shiftable(model: nn.Module, names) -> nn.Module:
    """Convert the named ``nn.Linear`` / ``nn.MultiheadAttention`` layers of ``model`` in place to
    their shift-aware subclasses (same parameters and buffers, same output without a shift).
    Layers already shift-aware are left as they are. Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    for name in names:
        if name == "":
            # The model itself cannot be swapped for its shift-aware subclass in place: the shift was
            # silently not applied (and a child named "" was added to the model).
            raise ValueError("personalize: the layer name '' is the model itself, which cannot be converted in "
                             "place; shift a layer inside it (wrap a lone layer as nn.Sequential(layer), name '0')")
        module = _find(modules, name)
        if isinstance(module, (WeightShiftLinear, WeightShiftMultiheadAttention)):
            continue
        kind = type(module)
        if kind not in _SHIFTABLE:
            raise TypeError(f"personalize: {name!r} is a {kind.__name__}; only nn.Linear and "
                            "nn.MultiheadAttention layers can be shifted")
        if kind is nn.MultiheadAttention and not module._qkv_same_embed_dim:
            raise ValueError(f"personalize: {name!r} has separate q/k/v projection weights (kdim/vdim != "
                             "embed_dim); only the packed in_proj_weight can be shifted")
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        if kind is nn.MultiheadAttention and isinstance(parent, nn.TransformerEncoderLayer):
            raise ValueError(f"personalize: {name!r} is the self-attention of an nn.TransformerEncoderLayer, "
                             "whose inference fast path bypasses it; shift a decoder layer's attention or a "
                             "Linear instead")
        shifted = _SHIFTABLE[kind].__new__(_SHIFTABLE[kind])
        # The same parameters, buffers and hooks, in containers of its own.
        shifted.__dict__.update({k: type(v)(v) if isinstance(v, dict) else v for k, v in module.__dict__.items()})
        setattr(parent, child, shifted)
        modules[name] = shifted
    return model


def _find(modules: Dict[str, nn.Module], name: str) -> nn.Module:
    if name not in modules:
        editable = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.MultiheadAttention))]
        raise KeyError(f"personalize: the model has no module named {name!r}; editable layers: {editable[:20]}")
    return modules[name]


@contextlib.contextmanager
def personalize(model: nn.Module, shifts: Dict[str, Shift], batch_dim: int = 0,
                backend: Optional[str] = None) -> Iterator[nn.Module]:
    """Within the block, the named layers of ``model`` apply per-sample weight shifts.

    Args:
        model: any module; its parameters are not copied or changed (the named layers become their
            shift-aware subclasses on first use, see :func:`make_shiftable`).
        shifts: layer name (as in ``model.named_modules()``) -> shift of shape (B, d_out, d_in)
            (``(B, 3E, E)`` for ``nn.MultiheadAttention``), or a low-rank pair (U, V); or G entries
            instead of B, G dividing the batch, each shared by B / G consecutive samples.
        batch_dim: the batch dimension of inputs to shifted ``nn.Linear`` layers (0 for
            batch-first models; ``nn.MultiheadAttention`` follows its own ``batch_first``).
        backend: the ``weight_shift`` op's backend (default: the layer's own, else automatic).

    Example:
        >>> with personalize(decoder, {"layers.3.multihead_attn": dW}):
        ...     out = decoder(tgt, memory)        # sample b uses W + dW[b]
    """
    if not isinstance(shifts, dict):
        raise TypeError(f"shifts must be a dict of layer name -> shift, got {type(shifts).__name__}")
    check_int("batch_dim", batch_dim, 0)
    check_backend(backend, WEIGHT_SHIFT_BACKENDS)   # the op's name: a spec string failed at the first forward
    make_shiftable(model, list(shifts))
    modules = dict(model.named_modules())
    active = dict(_ACTIVE.get())
    for name, shift in shifts.items():
        module = modules[name]
        if not isinstance(shift, (torch.Tensor, tuple)):
            raise TypeError(f"shifts[{name!r}] must be a tensor or a (U, V) pair of tensors, got "
                            f"{type(shift).__name__}")
        B = shift_entries(shift) if isinstance(shift, torch.Tensor) or len(shift) else 0
        if isinstance(module, nn.MultiheadAttention):
            E = module.embed_dim
            check_shift(f"shifts[{name!r}]", shift, B, 3 * E, E, module.in_proj_weight)
        else:
            check_shift(f"shifts[{name!r}]", shift, B, module.out_features, module.in_features, module.weight)
        active[module] = (shift, batch_dim, backend)
    token = _ACTIVE.set(active)
    try:
        yield model
    finally:
        _ACTIVE.reset(token)


def personalized_call(model: nn.Module, shifts: Dict[str, Shift], *args, batch_dim: int = 0,
                      backend: Optional[str] = None, **kwargs):
    """``model(*args, **kwargs)`` with the shifts applied (the functional form of :func:`personalize`)."""
    with personalize(model, shifts, batch_dim, backend):
        return model(*args, **kwargs)
