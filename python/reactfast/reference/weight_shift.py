"""Reference per-listener weight-shift linear (PerFRDiff weight editing; SPEC 3.2).

y[b] = x[b] (W + dW[b])^T + bias, computed as x W^T + x dW^T without forming W + dW; the
low-rank form dW[b] = U[b] V[b]^T as (x V) U^T. Differentiable in every input.
"""

from __future__ import annotations

from typing import Optional

import torch


def weight_shift_linear(x: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor,
                        bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (B, L, d_in), weight (d_out, d_in), shift (B, d_out, d_in) -> (B, L, d_out).

    Allocates only the output: x W^T, then bias and the batched x dW^T accumulated in place."""
    y = torch.matmul(x, weight.t())
    if bias is not None:
        y = y.add_(bias)
    return y.baddbmm_(x, shift.transpose(1, 2))


def low_rank_shift_linear(x: torch.Tensor, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                          bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (B, L, d_in), weight (d_out, d_in), u (B, d_out, r), v (B, d_in, r) -> (B, L, d_out)."""
    y = torch.matmul(x, weight.t()) + torch.bmm(torch.bmm(x, v), u.transpose(1, 2))
    return y + bias if bias is not None else y
