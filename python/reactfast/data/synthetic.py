"""Synthetic dyadic data with planted structure, deterministic under a seed.

Every session draws one of a few speaker behaviour *prototypes* (smooth latent trajectories).
Speakers follow their prototype with a random phase and noise; listeners react with a personal
style: a delay, a gain, exponential smoothing and a latent offset. Fixed random emission maps
turn latents into the 25 emotion dims (binary AUs, valence/arousal in [-1, 1], expression
probabilities summing to 1), the 58 3DMM dims and k audio feature rows per frame.

Appropriateness follows from the construction: the reaction of dyad j is appropriate for the
speaker of dyad k when both speakers follow the same prototype in the same role (forward dyads
with forward dyads, mirrored with mirrored), so each speaker has several appropriate reactions
from different listeners.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from reactfast.data import files, layout
from reactfast.data.react import InMemoryReactDataset
from reactfast.ops._checks import check_int, check_real


@dataclass
class SyntheticConfig:
    sessions: int = 24
    frames: int = layout.CLIP_FRAMES
    prototypes: int = 4
    listeners: int = 6
    latent_dim: int = 8
    audio_dim: int = 32
    audio_per_frame: int = layout.AUDIO_SAMPLES_PER_FRAME
    noise: float = 0.05
    seed: int = 0
    split: str = "val"

    def __post_init__(self):
        self.frames = check_int("frames", self.frames, minimum=2)
        for name in ("sessions", "prototypes", "listeners", "latent_dim", "audio_dim", "audio_per_frame"):
            setattr(self, name, check_int(name, getattr(self, name)))
        self.seed = check_int("seed", self.seed, minimum=0)
        self.noise = check_real("noise", self.noise)
        if not isinstance(self.split, str) or self.split not in layout.SPLITS:
            raise ValueError(f"split must be one of {layout.SPLITS}, got {self.split!r}")


@dataclass
class ListenerStyle:
    delay: int
    gain: float
    smoothing: float
    offset: np.ndarray


def _smooth(x: np.ndarray, a: float) -> np.ndarray:
    out = np.empty_like(x)
    acc = x[0]
    for t in range(len(x)):
        acc = a * acc + (1 - a) * x[t]
        out[t] = acc
    return out


class SyntheticDyads:
    """Generates sessions in memory; ``dataset()`` serves them like the real layout and
    ``write(root, split)`` writes them in that layout."""

    def __init__(self, config: SyntheticConfig = None, **overrides):
        self.config = config or SyntheticConfig(**overrides)
        if config is not None and overrides:
            raise ValueError("pass either a SyntheticConfig or keyword overrides, not both")
        self._generate()

    def _generate(self) -> None:
        c = self.config
        # One world per seed (prototypes, emissions, listener styles); sessions per (seed, split).
        rng = np.random.default_rng(c.seed)
        Z, T = c.latent_dim, c.frames
        t = np.arange(T, dtype=np.float64) / layout.FPS
        self.emit_emotion = rng.normal(0, 1.0, (Z, layout.EMOTION_DIM))
        self.emit_3dmm = rng.normal(0, 0.5, (Z, layout.TDMM_DIM))
        self.emit_audio = rng.normal(0, 1.0, (Z, c.audio_dim))
        freqs = rng.uniform(0.05, 0.6, (c.prototypes, Z))
        amps = rng.uniform(0.5, 1.5, (c.prototypes, Z))
        bias = rng.normal(0, 0.5, (c.prototypes, Z))
        self.styles = [ListenerStyle(delay=int(rng.integers(2, 13)), gain=float(rng.uniform(0.5, 1.2)),
                                     smoothing=float(rng.uniform(0.6, 0.95)), offset=rng.normal(0, 0.4, Z))
                       for _ in range(c.listeners)]
        rng = np.random.default_rng([c.seed, layout.SPLITS.index(c.split)])
        self.prototype = np.arange(c.sessions) % c.prototypes
        self.listener_id = rng.integers(0, c.listeners, c.sessions)
        self.speaker_latent = np.empty((c.sessions, T, Z))
        self.listener_latent = np.empty((c.sessions, T, Z))
        for r in range(c.sessions):
            p = self.prototype[r]
            phase = rng.uniform(0, 0.5, Z)
            speaker = bias[p] + amps[p] * np.sin(2 * np.pi * freqs[p] * t[:, None] + phase)
            speaker += _smooth(rng.normal(0, c.noise * 4, (T, Z)), 0.8)
            style = self.styles[self.listener_id[r]]
            shifted = np.concatenate([np.repeat(speaker[:1], style.delay, 0), speaker[: T - style.delay]])
            listener = style.offset + style.gain * _smooth(shifted, style.smoothing)
            listener += _smooth(rng.normal(0, c.noise * 2, (T, Z)), 0.8)
            self.speaker_latent[r], self.listener_latent[r] = speaker, listener
        self._rng = rng

    def _emit(self, latent: np.ndarray) -> Dict[str, np.ndarray]:
        c = self.config
        pre = latent @ self.emit_emotion
        emotion = np.empty((len(latent), layout.EMOTION_DIM))
        emotion[:, layout.AU] = (pre[:, layout.AU] > 0.5).astype(np.float64)
        emotion[:, layout.VA] = np.tanh(0.5 * pre[:, layout.VA])
        logits = pre[:, layout.EXPRESSION]
        e = np.exp(logits - logits.max(1, keepdims=True))
        emotion[:, layout.EXPRESSION] = e / e.sum(1, keepdims=True)
        tdmm = 0.1 * np.tanh(latent @ self.emit_3dmm)
        fine = np.linspace(0, len(latent) - 1, len(latent) * c.audio_per_frame)
        up = np.stack([np.interp(fine, np.arange(len(latent)), latent[:, z]) for z in range(latent.shape[1])], 1)
        audio = up @ self.emit_audio + self._rng.normal(0, c.noise, (len(fine), c.audio_dim))
        return {"emotion": emotion.astype(np.float32), "3dmm": tdmm.astype(np.float32),
                "audio": audio.astype(np.float32)}

    def clip_paths(self, r: int) -> Tuple[str, str]:
        session = f"NoXI/synthetic_{self.config.split}_{r:03d}"
        return f"{session}/Expert_video/1", f"{session}/Novice_video/1"

    @property
    def pairs(self) -> List[Tuple[str, str]]:
        return [self.clip_paths(r) for r in range(self.config.sessions)]

    def clips(self) -> Dict[str, Dict[str, np.ndarray]]:
        if not hasattr(self, "_clips"):
            self._clips = {}
            for r in range(self.config.sessions):
                speaker, listener = self.clip_paths(r)
                self._clips[speaker] = self._emit(self.speaker_latent[r])
                self._clips[listener] = self._emit(self.listener_latent[r])
        return self._clips

    def appropriate(self, mirror: bool = True) -> np.ndarray:
        """(N, N) bool: same prototype and same direction; N = sessions (x 2 if mirrored)."""
        group = list(self.prototype)
        if mirror:
            group = group + [g + self.config.prototypes for g in self.prototype]
        group = np.asarray(group)
        return group[:, None] == group[None, :]

    def listener_ids(self, mirror: bool = True) -> np.ndarray:
        """Identity of the listener of each dyad (mirrored speakers get ids after the listeners)."""
        ids = list(self.listener_id)
        if mirror:
            ids += [self.config.listeners + r for r in range(self.config.sessions)]
        return np.asarray(ids)

    def dataset(self, mirror: bool = True, **kwargs) -> InMemoryReactDataset:
        kwargs.setdefault("audio_per_frame", self.config.audio_per_frame)
        kwargs.setdefault("frames", min(self.config.frames, layout.EVAL_FRAMES))
        kwargs.setdefault("split", self.config.split)
        return InMemoryReactDataset(self.clips(), self.pairs, self.appropriate(mirror), mirror=mirror,
                                    listener_ids=self.listener_ids(mirror), **kwargs)

    def write(self, root: str, split: str = None) -> str:
        """Write the sessions in the challenge layout under ``root`` (as ``split``, default the
        config's); returns ``root``."""
        split = split or self.config.split
        if split not in layout.SPLITS:
            raise ValueError(f"split must be one of {layout.SPLITS}, got {split!r}")
        base = os.path.join(root, split)
        for clip, data in self.clips().items():
            files.write_emotion(os.path.join(base, layout.MODALITY_DIRS["emotion"], clip + ".csv"), data["emotion"])
            for m, arr in (("3dmm", data["3dmm"][:, None, :]), ("audio", data["audio"])):
                path = os.path.join(base, layout.MODALITY_DIRS[m], clip + ".npy")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                np.save(path, arr)
        with open(os.path.join(root, f"{split}.csv"), "w") as f:
            f.write(",speaker_path,listener_path\n")
            for i, (s, l) in enumerate(self.pairs):
                f.write(f"{i},{s},{l}\n")
        np.save(os.path.join(root, layout.neighbour_file(split)), self.appropriate(True).astype(np.float32))
        return root
