"""``nn.Dropout`` over :func:`reactfast.ops.dropout`: on a CPU its mask is a keyed hash of the
element index computed by the C++ kernel with the scaled output (a fraction of the cost of
``bernoulli_``); on CUDA it is ``nn.functional.dropout``, under ``torch.compile`` the same C++
kernel as a custom op on CPU float32 (torch's dropout elsewhere)."""

from __future__ import annotations

import torch
from torch import nn

from reactfast.ops.dropout import dropout

__all__ = ["Dropout", "dropout"]


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the cheaper CPU mask of :func:`reactfast.ops.dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
