"""Inputs shaped like REACT emotion for the metric-op tests: binary AUs, constant columns, ties."""

import numpy as np
import torch

from reactfast.metrics.candidates import from_lists


def cases(seed, M, G, T, D=25, k=(1, 9), device="cpu"):
    """(pred (M, T, D), gt (G, T, D), CSR candidates, the candidate lists); query 0's candidates are
    the identical targets 1 and 2 (a tie)."""
    rng = np.random.default_rng(seed)
    pred = rng.random((M, T, D)).astype(np.float32)
    gt = rng.random((G, T, D)).astype(np.float32)
    gt[0, :, 3] = 0.5                              # a constant column
    gt[1] = gt[2]                                  # a duplicate target: ties
    pred[0, :, :15] = pred[0, :, :15] > 0.5        # binary AUs, as in the data
    lists = [sorted(rng.choice(G, min(G, int(rng.integers(*k))), replace=False).tolist()) for _ in range(M)]
    lists[0] = [1, 2]
    offset, index = from_lists(lists)
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return to(pred), to(gt), (offset.to(device), index.to(device)), lists
