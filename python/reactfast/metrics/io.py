"""Loading generated reactions and evaluation targets from files, and writing results."""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np


def load_array(path: str, key: Optional[str] = None, name: str = "array") -> np.ndarray:
    """An array from .npy, .npz (``key`` or its only array, or 'pred') or .pt (a tensor, or a dict
    holding ``key``/'pred')."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            pick = key if key is not None else ("pred" if "pred" in keys else keys[0] if len(keys) == 1 else None)
            if pick is None or pick not in keys:
                raise ValueError(f"{name}: {path} holds arrays {keys}; say which one with a key")
            return z[pick]
    if ext in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            pick = key or "pred"
            if pick not in obj:
                raise ValueError(f"{name}: {path} holds keys {list(obj)}; expected {pick!r}")
            obj = obj[pick]
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{name}: {path} does not hold a tensor")
        return obj.float().numpy()
    raise ValueError(f"{name}: unsupported file type {ext!r} ({path}); use .npy, .npz or .pt")


def save_json(path: str, data: Dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def format_table(rows: Dict[str, Dict[str, float]]) -> str:
    """A plain-text table: one row per method, one column per metric."""
    from reactfast.metrics import METRICS

    width = max(len(k) for k in rows) + 2
    head = "method".ljust(width) + "".join(m.rjust(10) for m in METRICS)
    lines = [head, "-" * len(head)]
    for method, scores in rows.items():
        lines.append(method.ljust(width) + "".join(f"{scores[m]:10.4f}" for m in METRICS))
    return "\n".join(lines)
