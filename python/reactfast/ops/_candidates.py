"""Candidate lists in CSR form: query m's candidates are index[offset[m]:offset[m + 1]]."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch


def from_lists(candidates: Sequence[Sequence[int]], num_targets: int, name: str = "candidates"
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    lengths = [len(c) for c in candidates]
    empty = [m for m, n in enumerate(lengths) if n == 0]
    if empty:
        raise ValueError(f"{name}: queries {empty[:10]} have no candidate")
    offset = torch.zeros(len(candidates) + 1, dtype=torch.int64)
    offset[1:] = torch.cumsum(torch.as_tensor(lengths, dtype=torch.int64), 0)
    index = torch.as_tensor(np.concatenate([np.asarray(c, dtype=np.int64) for c in candidates]), dtype=torch.int64)
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= num_targets):
        raise ValueError(f"{name}: indices must lie in [0, {num_targets}), got range "
                         f"[{int(index.min())}, {int(index.max())}]")
    return offset, index


def from_appropriate(appropriate: np.ndarray, samples: int, rows: Sequence[int] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Queries (k, i) for k in ``rows`` (default all), i < samples, each with candidates A(k)."""
    rows = range(appropriate.shape[0]) if rows is None else rows
    lists = [np.nonzero(appropriate[k])[0] for k in rows for _ in range(samples)]
    return from_lists(lists, appropriate.shape[1], name="appropriate")


def as_csr(candidates, num_queries: int, num_targets: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``candidates`` as lists or an (offset, index) pair -> validated CSR tensors."""
    if isinstance(candidates, tuple) and len(candidates) == 2 and isinstance(candidates[0], torch.Tensor):
        offset, index = candidates
    else:
        offset, index = from_lists(candidates, num_targets)
    if offset.numel() != num_queries + 1:
        raise ValueError(f"candidates must describe {num_queries} queries, got {offset.numel() - 1}")
    return offset, index
