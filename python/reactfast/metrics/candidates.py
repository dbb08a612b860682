"""Candidate lists for the min/max-over-appropriate metric ops, in CSR form: query m's candidates
are index[offset[m]:offset[m + 1]] (int64 tensors)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from reactfast.ops._checks import check_indices

__all__ = ["CSR", "check_appropriate", "check_rows", "from_appropriate", "from_lists"]

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


def check_appropriate(appropriate, n: Optional[int] = None) -> np.ndarray:
    """The appropriateness matrix as a bool numpy array: (N, N) (``n`` given: (n, n), pred's N), bool
    or 0/1, no row empty; a ValueError naming what is wrong otherwise."""
    a = appropriate.detach().cpu().numpy() if isinstance(appropriate, torch.Tensor) else np.asarray(appropriate)
    if n is not None and a.shape != (n, n):
        raise ValueError(f"appropriate must have shape ({n}, {n}) to match pred, got {a.shape}")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"appropriate must be a square (N, N) matrix, got shape {a.shape}")
    if a.dtype != bool:
        if not (np.issubdtype(a.dtype, np.number) and np.isin(a, (0, 1)).all()):
            raise ValueError("appropriate must be boolean or hold only 0 and 1")
        a = a.astype(bool)
    empty = np.nonzero(~a.any(1))[0]
    if len(empty):
        raise ValueError(f"appropriate: rows {empty[:10].tolist()} are empty (no appropriate reaction)")
    return a


def check_rows(rows, n: int) -> np.ndarray:
    """Speaker rows as an int64 array in the order given: integers in [0, n) (a float was cut to an
    integer, -1 took the last row)."""
    return check_indices("rows", rows, n)


def from_appropriate(appropriate, samples: int, rows: Optional[Sequence[int]] = None) -> CSR:
    """Queries (k, i) for k in ``rows`` (default all), i < samples, in that order, each with the
    candidates A(k) = {j : appropriate[k, j]} (bool or 0/1, no row may be empty)."""
    from reactfast.ops._checks import check_int

    a = check_appropriate(appropriate)
    check_int("samples", samples)
    return _from_appropriate(a, samples, np.arange(a.shape[0]) if rows is None else check_rows(rows, a.shape[0]))


def _from_appropriate(a: np.ndarray, samples: int, rows: np.ndarray) -> CSR:
    """:func:`from_appropriate` on inputs already checked (the metric suite's chunks)."""
    sub = np.repeat(a[rows], samples, axis=0)                       # (len(rows) * samples, N)
    offset = np.zeros(sub.shape[0] + 1, dtype=np.int64)
    offset[1:] = np.cumsum(sub.sum(1))
    return torch.from_numpy(offset), torch.from_numpy(np.nonzero(sub)[1].astype(np.int64))
