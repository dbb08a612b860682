"""Training batches: dataset items plus each speaker's appropriate real reactions over the same
frames (the targets of ReactFace's appropriate reconstruction loss)."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from reactfast.data.react import ReactDataset
from reactfast.ops._checks import check_indices, check_int


def check_dataset(name: str, dataset, needs) -> None:
    """A TypeError naming ``name`` unless ``dataset`` has the attributes ``needs`` of
    ReactDataset's interface (a dataset of one's own with that interface passes)."""
    missing = [a for a in needs if not hasattr(dataset, a)]
    if missing:
        raise TypeError(f"{name} must be a reactfast.data.ReactDataset (or have its {', '.join(missing)}), got "
                        f"{type(dataset).__name__}")


def collate_appropriate(dataset: ReactDataset, indices: Sequence[int], max_candidates: int = 8
                        ) -> Dict[str, torch.Tensor]:
    """Stack items ``indices`` and add ``appropriate_3dmm`` (B, K, T, 58), ``appropriate_emotion``
    (B, K, T, 25) and ``appropriate_valid`` (B, K): the item's own listener first, then the other
    appropriate dyads in index order, at most ``max_candidates``."""
    check_dataset("dataset", dataset, ("__len__", "__getitem__", "appropriate", "dyads", "load_clip"))
    check_int("max_candidates", max_candidates)
    indices = check_indices("indices", indices, len(dataset)).tolist()
    if not indices:
        raise ValueError("indices must name at least one item, got none")
    items = [dataset[i] for i in indices]
    batch = {key: torch.stack([it[key] for it in items]) for key in items[0]}
    appropriate = dataset.appropriate
    span = items[0]["listener_3dmm"].shape[0]
    lists = []
    for it in items:
        k = int(it["item"])
        others = [j for j in np.nonzero(appropriate[k])[0].tolist() if j != k]
        lists.append([k] + others[: max_candidates - 1])
    K = max(len(c) for c in lists)
    B = len(items)
    targets = {m: torch.zeros(B, K, span, d) for m, d in (("3dmm", 58), ("emotion", 25)) if f"listener_{m}" in batch}
    valid = torch.zeros(B, K, dtype=torch.bool)
    for b, (it, cands) in enumerate(zip(items, lists)):
        start = int(it["start"])
        for c, j in enumerate(cands):
            clip = dataset.load_clip(dataset.dyads[j][1])
            for m, t in targets.items():
                t[b, c] = torch.from_numpy(np.ascontiguousarray(clip[m][start:start + span]))
            valid[b, c] = True
    for m, t in targets.items():
        batch[f"appropriate_{m}"] = t
    batch["appropriate_valid"] = valid
    return batch
