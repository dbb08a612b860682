"""Candidate lists for the min/max-over-appropriate metric ops, in CSR form: query m's candidates
are index[offset[m]:offset[m + 1]] (int64 tensors)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["CSR", "from_appropriate", "from_lists"]

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
    from reactfast.ops._checks import check_int

    raw = np.asarray(appropriate)
    if raw.ndim != 2 or raw.shape[0] != raw.shape[1]:
        raise ValueError(f"appropriate must be a square (N, N) matrix, got shape {raw.shape}")
    if raw.dtype != np.bool_ and not np.isin(raw, (0, 1)).all():
        raise ValueError("appropriate must be boolean or hold only 0 and 1")
    a = raw.astype(bool)
    check_int("samples", samples)
    if rows is None:
        rows = np.arange(a.shape[0])
    else:
        given = np.asarray(rows)
        if given.ndim != 1 or (given.size and given.dtype.kind not in "iu") or given.dtype == np.bool_:
            raise ValueError(f"rows must be a list of integer row indices, got {rows!r}")
        bad = given[(given < 0) | (given >= a.shape[0])]
        if bad.size:   # -1 took the last row, silently
            raise ValueError(f"rows must lie in [0, {a.shape[0]}), got {bad[:5].tolist()}")
        rows = given.astype(np.int64)
    empty = rows[~a[rows].any(1)]
    if empty.size:
        raise ValueError(f"appropriate: rows {empty[:5].tolist()} are empty (no appropriate reaction)")
    sub = np.repeat(a[rows], samples, axis=0)                       # (len(rows) * samples, N)
    offset = np.zeros(sub.shape[0] + 1, dtype=np.int64)
    offset[1:] = np.cumsum(sub.sum(1))
    return torch.from_numpy(offset), torch.from_numpy(np.nonzero(sub)[1].astype(np.int64))
