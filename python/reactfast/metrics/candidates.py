"""Candidate lists for the min/max-over-appropriate metric ops, in CSR form: query m's candidates
are index[offset[m]:offset[m + 1]] (int64 tensors)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

CSR = Tuple[torch.Tensor, torch.Tensor]


def from_lists(candidates: Sequence[Sequence[int]]) -> CSR:
    """CSR from one list of integer indices per query (their range is checked by the ops that take it)."""
    lists = []
    for q, c in enumerate(candidates):
        a = np.asarray(c)
        if a.ndim != 1 or (a.size and (a.dtype.kind not in "iu" or a.dtype == np.bool_)):
            # a float index would be cut to an integer, a nested list flattened
            raise ValueError(f"candidates[{q}] must be a list of integer indices, got {c!r}")
        lists.append(a.astype(np.int64))
    offset = torch.zeros(len(lists) + 1, dtype=torch.int64)
    offset[1:] = torch.cumsum(torch.as_tensor([len(a) for a in lists], dtype=torch.int64), 0)
    index = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    return offset, torch.from_numpy(index)


def from_appropriate(appropriate: np.ndarray, samples: int, rows: Optional[Sequence[int]] = None) -> CSR:
    """Queries (k, i) for k in ``rows`` (default all), i < samples, in that order, each with the
    candidates A(k) = {j : appropriate[k, j]} (no row may be empty)."""
    a = np.asarray(appropriate, dtype=bool)
    rows = np.arange(a.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    sub = np.repeat(a[rows], samples, axis=0)                       # (len(rows) * samples, N)
    offset = np.zeros(sub.shape[0] + 1, dtype=np.int64)
    offset[1:] = np.cumsum(sub.sum(1))
    return torch.from_numpy(offset), torch.from_numpy(np.nonzero(sub)[1].astype(np.int64))
