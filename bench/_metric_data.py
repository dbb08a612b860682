"""Shared data for the metric benchmarks: synthetic REACT emotion at test-set scale, generated
reactions that resemble appropriate real ones ("model-like") or not ("random")."""

import functools
import os

import numpy as np

from reactfast.data import SyntheticDyads

T = 750
S = 10


@functools.lru_cache(maxsize=1)
def challenge_scale():
    """(pred, listener_gt, speaker, appropriate) with N = REACTFAST_BENCH_N speakers (default 806)."""
    n = int(os.environ.get("REACTFAST_BENCH_N", "806"))
    synthetic = SyntheticDyads(sessions=max(1, n // 2), prototypes=max(1, n // 100), seed=0)
    ds = synthetic.dataset(modalities=("emotion",))
    gt = ds.stack("listener", "emotion").numpy()
    speaker = ds.stack("speaker", "emotion").numpy()
    appropriate = ds.appropriate
    return model_like(gt, appropriate), gt, speaker, appropriate


def model_like(gt, appropriate, seed=0):
    """Each sample: a random appropriate real reaction, perturbed."""
    rng = np.random.default_rng(seed)
    N = gt.shape[0]
    pick = np.array([[rng.choice(np.nonzero(appropriate[k])[0]) for _ in range(S)] for k in range(N)])
    return gt[pick] + rng.normal(0, 0.1, (N, S, T, 25)).astype(np.float32)


def random_like(gt, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((gt.shape[0], S, T, 25)).astype(np.float32)
