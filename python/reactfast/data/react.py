"""The REACT 2024 dataset layout as a torch Dataset (SPEC section 1).

``root`` is the challenge's ``data`` folder::

    root/{split}.csv                                   ,speaker_path,listener_path
    root/neighbour_emotion_{split}.npy                 (N, N) 0/1, N = 2 x rows (mirrored)
    root/{split}/Emotion/<path>.csv                    header + frames x 25
    root/{split}/3D_FV_files/<path>.npy                (frames, 1, 58) or (frames, 58)
    root/{split}/Audio_files/<path>.npy or <path>.wav  features (frames * k, F) or a wav (PCM or float)

Items are dyads speaker -> listener; with ``mirror=True`` (as the challenge evaluates) the rows
come first as listed, then swapped, so N = 2 x rows and item ``R + r`` is row r reversed.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from reactfast.data import audio as audio_io
from reactfast.data import files, layout
from reactfast.data.files import DataError
from reactfast.ops._checks import check_bool, check_int, check_path

MODALITIES = ("emotion", "3dmm", "audio")


def window_starts(frames: int, window: int, stride: int) -> List[int]:
    """Start frames of the windows of ``window`` frames every ``stride`` frames within ``frames``."""
    check_int("frames", frames)
    check_int("stride", stride)
    if check_int("window", window) > frames:
        raise ValueError(f"window must be in [1, {frames}], got {window}")
    return list(range(0, frames - window + 1, stride))


class ReactDataset(torch.utils.data.Dataset):
    """Dyadic speaker -> listener clips in the challenge layout.

    Args:
        root: the ``data`` folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        frames: truncate every clip to its first ``frames`` frames (750 for evaluation).
        window: if given, items are windows of this many frames (training); else whole clips.
        stride: distance between window starts (default ``window``: no overlap).
        mirror: add every dyad reversed (listener as speaker), as the challenge does.
        modalities: any of ``"emotion"``, ``"3dmm"``, ``"audio"`` (a sequence, or one name).
        audio_per_frame: k, audio feature rows per video frame (2 for 50 Hz features).
        cache_clips: how many loaded clips to keep in memory (0 disables the cache).
        audio_features: the features computed from ``.wav`` files: ``"baseline"`` (the challenge
            baseline's Kaldi MFCC, 2 x 39 per frame) or ``"reactfast"`` (see ``reactfast.data.audio``);
            ``.npy`` feature files are read as they are.

    Each item is a dict of float32 tensors ``speaker_<m>`` and ``listener_<m>`` for each modality
    m (emotion (T, 25), 3dmm (T, 58), audio (T * k, F)), plus ``item`` (the dyad index in
    [0, N)), ``start`` (first frame of the window) and ``listener_id`` (the listener's identity:
    its clip folder <dataset>/<session>/<role>, numbered).
    """

    def __init__(self, root: str, split: str, frames: int = layout.EVAL_FRAMES, window: Optional[int] = None,
                 stride: Optional[int] = None, mirror: bool = True, modalities: Sequence[str] = MODALITIES,
                 audio_per_frame: int = layout.AUDIO_SAMPLES_PER_FRAME, cache_clips: int = 256,
                 audio_features: str = "baseline"):
        check_path("root", root, "be the data folder")
        if split not in layout.SPLITS:
            raise ValueError(f"split must be one of {layout.SPLITS}, got {split!r}")
        check_bool("mirror", mirror)
        if isinstance(modalities, str):          # one modality by name
            modalities = (modalities,)
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {tuple(modalities)}")
        check_int("frames", frames)
        check_int("audio_per_frame", audio_per_frame)
        check_int("cache_clips", cache_clips, minimum=0)
        for name, value in (("window", window), ("stride", stride)):
            if value is not None:
                check_int(name, value)
        if audio_features not in audio_io.FEATURES:
            raise ValueError(f"audio_features must be one of {audio_io.FEATURES}, got {audio_features!r}")
        self.wav_features = audio_features
        self.root, self.split, self.frames = root, split, frames
        self.modalities = tuple(modalities)
        self.k = audio_per_frame
        self.mirror = mirror
        self.pairs = self._read_pairs()
        self.dyads: List[Tuple[str, str]] = list(self.pairs)
        if mirror:
            self.dyads += [(listener, speaker) for speaker, listener in self.pairs]
        self.window = window
        if window is None and stride is not None:
            raise ValueError(f"stride ({stride}) needs a window: without one each dyad is one item of all its frames")
        starts = [0] if window is None else window_starts(frames, window, window if stride is None else stride)
        self._index = [(i, s) for i in range(len(self.dyads)) for s in starts]
        # Listener identity of each dyad: the clip's folder (<dataset>/<session>/<role>) by default.
        names = [listener.rsplit("/", 1)[0] for _, listener in self.dyads]
        index = {n: i for i, n in enumerate(sorted(set(names)))}
        self.listener_ids = [index[n] for n in names]
        self._cache: "OrderedDict[str, Dict[str, np.ndarray]]" = OrderedDict()
        self._cache_size = cache_clips
        self._appropriate: Optional[np.ndarray] = None

    def _read_pairs(self) -> List[Tuple[str, str]]:
        return files.read_split(os.path.join(self.root, f"{self.split}.csv"))

    @property
    def audio_features(self) -> str:
        """What the audio rows are (recorded in checkpoints): ``.npy`` features of some width, or the
        features computed from ``.wav``."""
        if not self.dyads or "audio" not in self.modalities:
            return "none"
        clip = self.dyads[0][0]
        if os.path.isfile(self._path("audio", clip, ".npy")):
            return f"npy features ({self.load_clip(clip)['audio'].shape[1]}-d)"
        return f"wav -> {self.wav_features} features"

    def __len__(self) -> int:
        return len(self._index)

    @property
    def num_items(self) -> int:
        """N: dyads (after mirroring) — the rows of the appropriateness matrix."""
        return len(self.dyads)

    def _path(self, modality: str, clip: str, ext: str) -> str:
        return os.path.join(self.root, self.split, layout.MODALITY_DIRS[modality], clip + ext)

    def _load_modality(self, modality: str, clip: str) -> np.ndarray:
        if modality == "emotion":
            return files.read_emotion(self._path("emotion", clip, ".csv"), self.frames)
        if modality == "3dmm":
            return files.read_3dmm(self._path("3dmm", clip, ".npy"), self.frames)
        feats = self._path("audio", clip, ".npy")
        wav = self._path("audio", clip, ".wav")
        if os.path.isfile(feats):
            return files.read_audio_features(feats, self.frames * self.k)
        if os.path.isfile(wav):
            samples, sr = audio_io.read_wav(wav)
            have, need = len(samples) / sr, self.frames / layout.FPS
            if have < need - 1.0 / layout.FPS:
                raise files.TooFewFrames(f"{wav}: truncated, {have:.2f} s of audio for {self.frames} frames "
                                         f"({need:.2f} s at {layout.FPS} fps)")
            if self.k != 2:
                raise DataError(f"{wav}: features from .wav come as 2 rows per frame, but audio_per_frame is {self.k}")
            return audio_io.features(samples, sr, self.frames, self.wav_features)
        raise DataError(f"missing file: {feats} (or {wav})")

    def load_clip(self, clip: str) -> Dict[str, np.ndarray]:
        """All requested modalities of one clip, truncated to ``frames`` frames."""
        if clip in self._cache:
            self._cache.move_to_end(clip)
            return self._cache[clip]
        out, lengths = {}, {}
        for m in self.modalities:
            arr = self._load_modality(m, clip)
            if m == "audio":
                self._check_audio_width(clip, arr.shape[1])
                out[m] = arr[: self.frames * self.k]
            else:
                lengths[m] = arr.shape[0]
                out[m] = arr[: self.frames]
        if len(set(lengths.values())) > 1:
            desc = ", ".join(f"{m}: {n} frames" for m, n in lengths.items())
            raise DataError(f"clip {clip!r} of split {self.split!r}: modalities differ in length ({desc})")
        if self._cache_size > 0:
            self._cache[clip] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def _check_audio_width(self, clip: str, width: int) -> None:
        """Every clip must bring audio features of one width (all .npy of one width, or all .wav)."""
        first = getattr(self, "_audio_width", None)
        if first is None:
            self._audio_width = (width, clip)
        elif first[0] != width:
            raise DataError(f"clip {clip!r} of split {self.split!r}: its audio features are {width}-d but clip "
                            f"{first[1]!r} gave {first[0]}-d; every clip needs the same audio features "
                            f"(.npy files of one width, or .wav files for MFCC)")

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        item, start = self._index[index]
        speaker_clip, listener_clip = self.dyads[item]
        sample: Dict[str, torch.Tensor] = {"item": torch.tensor(item), "start": torch.tensor(start),
                                           "listener_id": torch.tensor(self.listener_ids[item])}
        span = self.window or self.frames
        for role, clip in (("speaker", speaker_clip), ("listener", listener_clip)):
            data = self.load_clip(clip)
            for m, arr in data.items():
                k = self.k if m == "audio" else 1
                sample[f"{role}_{m}"] = torch.from_numpy(np.ascontiguousarray(arr[start * k:(start + span) * k]))
        return sample

    @property
    def appropriate(self) -> np.ndarray:
        """(N, N) bool appropriateness ("neighbour") matrix of this split."""
        if self._appropriate is None:
            path = os.path.join(self.root, layout.neighbour_file(self.split))
            self._appropriate = files.read_neighbours(path, self.num_items)
        return self._appropriate

    def stack(self, role: str, modality: str) -> torch.Tensor:
        """Whole clips of every dyad for one role and modality: (N, frames[*k], D)."""
        if role not in ("speaker", "listener"):
            raise ValueError(f"role must be 'speaker' or 'listener', got {role!r}")
        if modality not in self.modalities:
            raise ValueError(f"modality {modality!r} was not loaded; this dataset has {self.modalities}")
        col = 0 if role == "speaker" else 1
        return torch.stack([torch.from_numpy(np.ascontiguousarray(self.load_clip(d[col])[modality]))
                            for d in self.dyads])


class InMemoryReactDataset(ReactDataset):
    """The same items as :class:`ReactDataset`, from arrays held in memory (synthetic data)."""

    def __init__(self, clips: Dict[str, Dict[str, np.ndarray]], pairs: List[Tuple[str, str]],
                 appropriate: Optional[np.ndarray] = None, split: str = "train",
                 listener_ids: Optional[Sequence[int]] = None, **kwargs):
        self._clips, self._pairs_in = clips, pairs
        kwargs.setdefault("frames", min(c["emotion"].shape[0] for c in clips.values()))
        kwargs.setdefault("cache_clips", 0)
        super().__init__(root="<memory>", split=split, **kwargs)
        missing = sorted({c for pair in self.pairs for c in pair} - set(clips))
        if missing:   # (found now, not when a batch first reads them)
            raise DataError(f"pairs name clips that clips does not hold: {missing[:5]}")
        if appropriate is not None:
            # As a neighbour file is checked: one row and column per (mirrored) dyad, 0/1.
            self._appropriate = files.check_neighbours(appropriate, self.num_items, "appropriate")
        if listener_ids is not None:
            if len(listener_ids) != self.num_items:
                raise ValueError(f"listener_ids must have one id per dyad ({self.num_items}), got {len(listener_ids)}")
            self.listener_ids = [int(i) for i in listener_ids]

    def _read_pairs(self):
        return list(self._pairs_in)

    @property
    def audio_features(self) -> str:
        return f"in-memory features ({self._clips[self.dyads[0][0]]['audio'].shape[1]}-d)"

    def _load_modality(self, modality: str, clip: str) -> np.ndarray:
        if clip not in self._clips:
            raise DataError(f"clip {clip!r} is not in this in-memory dataset")
        return self._clips[clip][modality]

    @property
    def appropriate(self) -> np.ndarray:
        if self._appropriate is None:
            raise DataError("this in-memory dataset has no appropriateness matrix")
        return self._appropriate
