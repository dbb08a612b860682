"""Batch-level losses under DDP: the rows of every process's share of the global batch.

A loss over pairs of items (PerFRDiff's supervised contrastive loss) computed on each process's
share alone misses the pairs across processes, so a 2-process run would train on another loss than
a 1-process run with the same global batch. Inside :func:`global_batch` (the trainer enters it
around its DDP step, which every process takes together), :func:`gather_rows` gives the rows of
all processes in rank order, differentiably: each process computes the loss of the whole batch,
its gradient reaches each process's own rows (summed over the processes by the gather's backward),
and DDP's average of the parameter gradients is then the 1-process gradient. Outside it (a loss
called on one process alone, to validate say) nothing is gathered and nothing waits on the others."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.distributed as dist

_ACTIVE = [False]


@contextlib.contextmanager
def global_batch() -> Iterator[None]:
    """Within: :func:`gather_rows` gathers across the processes of the default group (every one must
    enter it and gather the same tensors in the same order)."""
    previous, _ACTIVE[0] = _ACTIVE[0], True
    try:
        yield
    finally:
        _ACTIVE[0] = previous


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` (n, ...) of every process concatenated in rank order (world n, ...), differentiable in
    floating point, within :func:`global_batch` under a process group of more than one process;
    ``x`` itself otherwise. Every process's ``x`` must have the same shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not (_ACTIVE[0] and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x
    if x.is_floating_point() and x.requires_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x), 0)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)
