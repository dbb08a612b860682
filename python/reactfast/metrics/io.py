"""Loading generated reactions and evaluation targets from files, and writing results."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

__all__ = ["format_table", "load_array", "load_npz_arrays", "ranking", "save_json"]


def load_array(path: str, key: Optional[str] = None, name: str = "array") -> np.ndarray:
    """A numeric array from .npy, .npz (``key`` or its only array, or 'pred') or .pt (a tensor, or a
    dict holding ``key``/'pred'); every failure names the file."""
    from reactfast.data.files import DataError, load_npy

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            return load_npy(path)
        except DataError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if ext == ".npz":
        with _open_npz(path, name) as z:
            keys = list(z.keys())
            pick = key if key is not None else ("pred" if "pred" in keys else keys[0] if len(keys) == 1 else None)
            if pick is None or pick not in keys:
                asked = f"no array {key!r}" if key is not None else "no 'pred' array"
                raise ValueError(f"{name}: {path} holds {asked}; its arrays: {keys} (choose one with key=, "
                                 "--key on the command line)")
            return _member(z, pick, path, name)
    if ext in (".pt", ".pth"):
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{name}: {path} cannot be read as a torch file ({type(exc).__name__}: {exc})") from None
        if isinstance(obj, dict):
            pick = key or "pred"
            if pick not in obj:
                raise ValueError(f"{name}: {path} holds no key {pick!r}; its keys: {list(obj)} (choose one with "
                                 "key=, --key on the command line)")
            obj = obj[pick]
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{name}: {path} does not hold a tensor")
        if obj.is_complex():
            raise ValueError(f"{name}: {path} holds {obj.dtype} values, expected real numbers")
        # A model's output saved as it came (requires_grad) is read as its values.
        return obj.detach().float().numpy()
    raise ValueError(f"{name}: unsupported file type {ext!r} ({path}); use .npy, .npz or .pt")


def _open_npz(path: str, name: str):
    import zipfile

    if not zipfile.is_zipfile(path):   # (numpy would take it for a pickle and say so)
        raise ValueError(f"{name}: {path} is not a readable .npz archive (it has no zip directory: truncated, or "
                         "not a .npz at all; reactfast generate and numpy.savez write them)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{name}: {path} is not a readable .npz archive (truncated? {type(exc).__name__}: "
                         f"{exc})") from None


def _member(z, key: str, path: str, name: str) -> np.ndarray:
    try:
        arr = z[key]
    except ValueError as exc:
        raise ValueError(f"{name}: {path}[{key!r}] holds pickled objects, not a numeric array ({exc})") from None
    except Exception as exc:
        raise ValueError(f"{name}: {path}[{key!r}] cannot be read (truncated? {type(exc).__name__}: {exc})") from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name}: {path}[{key!r}] holds {arr.dtype} values, expected numbers")
    return arr


def load_npz_arrays(path: str, required, optional=(), hint: str = "") -> Dict[str, np.ndarray]:
    """The named arrays of a .npz (from ``reactfast generate``); an error names the missing ones."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    with _open_npz(path, os.path.basename(path)) as z:
        missing = [k for k in required if k not in z.files]
        if missing:
            raise ValueError(f"{path} holds {z.files}, not {missing}" + (f"; {hint}" if hint else ""))
        return {k: _member(z, k, path, k) for k in list(required) + [k for k in optional if k in z.files]}


def _plain(value):
    """numpy and torch scalars and arrays as Python numbers and lists, for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "detach") and hasattr(value, "tolist"):   # a torch tensor
        return value.detach().cpu().tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def save_json(path: str, data: Dict) -> None:
    """Write ``data`` as JSON atomically (numpy and torch numbers and arrays as plain ones)."""
    from reactfast import _io

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=_plain)

    _io.atomic_write(path, write)


def format_table(rows: Dict[str, Dict[str, float]]) -> str:
    """A plain-text table: one row per method, one column per metric."""
    from reactfast.metrics import METRICS

    if not rows:
        raise ValueError("format_table needs at least one row (method -> scores)")
    width = max(len(k) for k in rows) + 2
    head = "method".ljust(width) + "".join(m.rjust(10) for m in METRICS)
    lines = [head, "-" * len(head)]
    for method, scores in rows.items():
        lines.append(method.ljust(width) + "".join(f"{scores[m]:10.4f}" for m in METRICS))
    return "\n".join(lines)


#: The metrics on which each baseline is a meaningful bar: Random's diversity is that of noise and
#: Mirror's is zero by construction, so a generator is compared with them on the others.
BASELINE_METRICS = {"Random": ("FRCorr", "FRDist", "FRSyn"),
                    "Mirror": ("FRCorr", "FRDist", "FRSyn", "FRDiv"),
                    "NN": ("FRCorr", "FRDist", "FRDiv", "FRSyn")}


def ranking(rows: Dict[str, Dict[str, float]], model: str) -> List[str]:
    """Lines ranking the methods on each metric (best first) and saying in words every metric on
    which ``model`` does not beat a baseline of ``BASELINE_METRICS`` that ``rows`` holds."""
    from reactfast.metrics import HIGHER_IS_BETTER, METRICS

    if model not in rows:
        raise ValueError(f"model {model!r} is not one of the rows {sorted(rows)}")
    lines = ["ranking, best first:"]
    for m in METRICS:
        order = sorted(rows, key=lambda k: rows[k][m], reverse=HIGHER_IS_BETTER[m])
        lines.append(f"  {m:7s} ({'higher' if HIGHER_IS_BETTER[m] else 'lower'} is better): " + " > ".join(order))
    misses = []
    for base, names in BASELINE_METRICS.items():
        if base not in rows or base == model:
            continue
        for m in names:
            ours, theirs = rows[model][m], rows[base][m]
            better = ours > theirs if HIGHER_IS_BETTER[m] else ours < theirs
            if not better:
                misses.append(f"  {model} does not beat {base} on {m}: {ours:.4f} vs {theirs:.4f}")
    compared = [b for b in BASELINE_METRICS if b in rows and b != model]
    if misses:
        lines.append(f"{model} falls short of a baseline on {len(misses)} comparison(s):")
        lines += misses
    elif compared:
        lines.append(f"{model} beats {', '.join(compared)} on every metric compared "
                     f"({'; '.join(b + ': ' + ', '.join(BASELINE_METRICS[b]) for b in compared)})")
    return lines
