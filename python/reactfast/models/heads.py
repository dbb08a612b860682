"""Output heads with the valid ranges of the REACT emotion features (SPEC section 1), shared by the
generators that output emotion: 15 AU occurrences through a sigmoid, valence and arousal through
tanh, the 8 expression probabilities through a softmax; and the matching losses (BCE on the AUs,
smooth L1 on valence/arousal, KL divergence on the expression distribution)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reactfast.data import layout


def activate_emotion(logits: torch.Tensor) -> torch.Tensor:
    """Raw head outputs (..., 25) -> emotion in its valid ranges (..., 25)."""
    # Each part made contiguous first: torch's CPU kernels take a slice of the last dim element by
    # element (softplus on one ran 7x slower than on a copy).
    au, va, expression = (logits[..., part].contiguous() for part in (layout.AU, layout.VA, layout.EXPRESSION))
    return torch.cat([torch.sigmoid(au), torch.tanh(va), torch.softmax(expression, -1)], -1)


def emotion_logits_of(emotion: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """The head outputs that ``activate_emotion`` maps to ``emotion`` (clipped away from the range ends)."""
    au = emotion[..., layout.AU].clamp(eps, 1 - eps)
    va = emotion[..., layout.VA].clamp(-1 + eps, 1 - eps)
    expr = emotion[..., layout.EXPRESSION].clamp(min=eps)
    return torch.cat([torch.log(au) - torch.log1p(-au), torch.atanh(va), torch.log(expr)], -1)


class EmotionHead(nn.Module):
    """Linear(dim -> 25) whose outputs are logits; ``forward`` returns (logits, emotion in range)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, layout.EMOTION_DIM)

    def forward(self, h: torch.Tensor):
        logits = self.proj(h)
        return logits, activate_emotion(logits)


def sequence_ccc(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Concordance correlation over time of sequences ``x`` and ``y`` (..., T, C) per channel: (..., C)."""
    mx, my = x.mean(-2, keepdim=True), y.mean(-2, keepdim=True)
    xc, yc = x - mx, y - my
    cov = (xc * yc).mean(-2)
    # The variances from the centred sequences: torch's var over the time axis took 360-410 us at the
    # demo's (8, 3, 1, 128, 25), the mean of squares 30-50 us
    return 2 * cov / ((xc * xc).mean(-2) + (yc * yc).mean(-2) + (mx - my).squeeze(-2) ** 2 + eps)


def emotion_loss(logits: torch.Tensor, target: torch.Tensor, va_weight: float = 1.0,
                 ccc_weight: float = 0.0) -> torch.Tensor:
    """Per-sequence loss of head outputs ``logits`` (..., T, 25) against target emotion (..., T, 25)
    (broadcast): BCE of the AUs + ``va_weight`` x smooth L1 of valence/arousal + KL(target ||
    predicted) of the expression distribution, each averaged over frames (and over its dims), +
    ``ccc_weight`` x (1 - the CCC over time, averaged over the 25 dims). Returns (...).

    Every activation and statistic is computed once per side, before broadcasting: with S samples
    against K targets only the pairwise products are S x K (BCE(x, t) = softplus(x) - x t; the KL's
    cross term; the CCC's covariance), not the activations."""
    shape = torch.broadcast_shapes(logits.shape, target.shape)
    x_au = logits[..., layout.AU].contiguous()        # contiguous parts: see activate_emotion
    t_au = target[..., layout.AU].clamp(0, 1)
    au = F.softplus(x_au).mean((-1, -2)) - (x_au * t_au).mean((-1, -2))
    va_pred = torch.tanh(logits[..., layout.VA].contiguous())
    va_shape = shape[:-1] + va_pred.shape[-1:]
    va = F.smooth_l1_loss(va_pred.expand(va_shape), target[..., layout.VA].expand(va_shape),
                          reduction="none").mean((-1, -2))
    p = target[..., layout.EXPRESSION].clamp(min=0)
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-8)
    log_q = torch.log_softmax(logits[..., layout.EXPRESSION].contiguous(), -1)
    kl = torch.xlogy(p, p).sum(-1).mean(-1) - (p * log_q).sum(-1).mean(-1)
    loss = au + va_weight * va + kl
    if ccc_weight:
        loss = loss + ccc_weight * (1 - sequence_ccc(activate_emotion(logits), target).mean(-1))
    return loss.expand(shape[:-2])
