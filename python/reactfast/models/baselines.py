"""Reference baselines of the REACT papers: Mirror, Random and NN.

- Mirror: the listener copies the speaker's behaviour (emotion and 3DMM); S identical samples.
- Random: every frame drawn from a Gaussian (standard normal by default, or the training
  listeners' per-dim mean and std with ``fit``).
- NN: each window of the speaker's emotion is matched to the nearest training speaker windows
  (L2); their listeners' windows, in order of distance, are the S samples.

Each has ``predict(dataset, samples, seed) -> {"emotion": (N, S, T, 25), "3dmm": (N, S, T, 58)}``
over a whole-clip dataset.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from reactfast.data import layout


class MirrorBaseline:
    name = "Mirror"

    def predict(self, dataset, samples: int = 10, seed: int = 0) -> Dict[str, np.ndarray]:
        out = {}
        for m in ("emotion", "3dmm"):
            if m in dataset.modalities:
                x = dataset.stack("speaker", m).numpy()
                out[m] = np.repeat(x[:, None], samples, axis=1)
        return out


class RandomBaseline:
    name = "Random"

    def __init__(self):
        self.stats: Dict[str, tuple] = {}

    def fit(self, train_dataset) -> "RandomBaseline":
        for m in ("emotion", "3dmm"):
            if m in train_dataset.modalities:
                x = train_dataset.stack("listener", m).numpy().reshape(-1, layout.EMOTION_DIM if m == "emotion"
                                                                       else layout.TDMM_DIM)
                self.stats[m] = (x.mean(0), x.std(0))
        return self

    def predict(self, dataset, samples: int = 10, seed: int = 0) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        N, T = dataset.num_items, dataset.frames
        out = {}
        for m, d in (("emotion", layout.EMOTION_DIM), ("3dmm", layout.TDMM_DIM)):
            mean, std = self.stats.get(m, (np.zeros(d), np.ones(d)))
            out[m] = (mean + std * rng.standard_normal((N, samples, T, d))).astype(np.float32)
        return out


class NearestNeighbourBaseline:
    name = "NN"

    def __init__(self, window: int = 50):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.keys: Optional[np.ndarray] = None

    def fit(self, train_dataset) -> "NearestNeighbourBaseline":
        W = self.window
        speaker = train_dataset.stack("speaker", "emotion").numpy()
        listeners = {m: train_dataset.stack("listener", m).numpy() for m in ("emotion", "3dmm")
                     if m in train_dataset.modalities}
        T = speaker.shape[1]
        if T < W:
            raise ValueError(f"training clips ({T} frames) are shorter than the window ({W})")
        starts = range(0, T - W + 1, W // 2 or 1)
        self.keys = np.stack([speaker[:, s:s + W].reshape(len(speaker), -1) for s in starts], 1).reshape(-1, W * 25)
        self.values = {m: np.stack([x[:, s:s + W] for s in starts], 1).reshape(-1, W, x.shape[-1])
                       for m, x in listeners.items()}
        return self

    def predict(self, dataset, samples: int = 10, seed: int = 0) -> Dict[str, np.ndarray]:
        if self.keys is None:
            raise RuntimeError("NearestNeighbourBaseline.predict needs fit(train_dataset) first")
        if samples > len(self.keys):
            raise ValueError(f"samples ({samples}) exceeds the {len(self.keys)} training windows")
        W = self.window
        speaker = dataset.stack("speaker", "emotion").numpy()
        N, T, _ = speaker.shape
        out = {m: np.zeros((N, samples, T, v.shape[-1]), np.float32) for m, v in self.values.items()}
        key_sq = (self.keys ** 2).sum(1)
        for s in range(0, T, W):
            e = min(T, s + W)
            q = speaker[:, s:e]
            if e - s < W:
                q = np.concatenate([q, np.repeat(q[:, -1:], W - (e - s), 1)], 1)
            q = q.reshape(N, -1)
            dist = key_sq[None] - 2 * q @ self.keys.T
            nearest = np.argsort(dist, axis=1, kind="stable")[:, :samples]
            for m, v in self.values.items():
                out[m][:, :, s:e] = v[nearest][:, :, : e - s]
        return out
