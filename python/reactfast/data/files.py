"""Readers for the single files of the REACT layout. Every failure names the file."""

from __future__ import annotations

import csv
import os
import warnings
from typing import List, Optional, Tuple

import numpy as np

from reactfast.data import layout
from reactfast.ops._checks import check_path


class DataError(ValueError):
    """A data file is missing, truncated or malformed."""


class TooFewFrames(DataError):
    """A clip holds fewer frames (or seconds of audio) than were asked for."""


def _need(path: str) -> None:
    check_path("path", path, "be a file path")   # an int was taken as a file descriptor
    if not os.path.isfile(path):
        raise DataError(f"missing file: {path}")


def _check_values(path: str, arr: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])[:5].tolist()
        raise DataError(f"{path}: {int(bad.sum())} NaN/Inf values, first in rows {rows}")
    return arr


def _check_frames(path: str, arr: np.ndarray, min_frames: Optional[int]) -> None:
    if min_frames is not None and arr.shape[0] < min_frames:
        raise TooFewFrames(f"{path}: truncated, {arr.shape[0]} frames but at least {min_frames} are needed")


def read_split(path: str) -> List[Tuple[str, str]]:
    """``{split}.csv``: header ``,speaker_path,listener_path`` then one row per dyad."""
    _need(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: empty split file")
    header = [h.strip() for h in rows[0]]
    try:
        i_s, i_l = header.index("speaker_path"), header.index("listener_path")
    except ValueError:
        raise DataError(f"{path}: header must name speaker_path and listener_path columns, got {header}") from None
    pairs = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(i_s, i_l):
            raise DataError(f"{path}: line {n} has {len(row)} columns, expected {len(header)}")
        speaker, listener = row[i_s].strip().strip("/"), row[i_l].strip().strip("/")
        if not speaker or not listener:
            raise DataError(f"{path}: line {n} has an empty speaker_path or listener_path")
        pairs.append((speaker, listener))
    if not pairs:
        raise DataError(f"{path}: no dyads listed")
    return pairs


def _numbers(line: str) -> bool:
    try:
        [float(c) for c in line.split(",")]
    except ValueError:
        return False
    return True


def read_emotion(path: str, min_frames: Optional[int] = None) -> np.ndarray:
    """Emotion csv: a header row, then frames x 25 floats -> float32 (frames, 25). A file whose
    first row is already numbers (no header) is read whole, with a warning naming it."""
    _need(path)
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text csv file") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise DataError(f"{path}: empty file")
    first = 2
    if _numbers(lines[0]):
        warnings.warn(f"{path}: no header row (the first row holds numbers); reading every row as a frame",
                      stacklevel=2)
        body, first = lines, 1
    else:
        body = lines[1:]
    if not body:
        raise DataError(f"{path}: no frames after the header row")
    values = []
    for n, line in enumerate(body, start=first):
        cells = line.split(",")
        if len(cells) != layout.EMOTION_DIM:
            raise DataError(f"{path}: line {n} has {len(cells)} columns, expected {layout.EMOTION_DIM}")
        try:
            values.append([float(c) for c in cells])
        except ValueError:
            raise DataError(f"{path}: line {n} has a value that is not a number: {line[:80]!r}") from None
    arr = np.asarray(values, dtype=np.float32)
    _check_frames(path, arr, min_frames)
    return _check_values(path, arr)


def load_npy(path: str) -> np.ndarray:
    """A numeric .npy array (no pickles, objects, strings or complex numbers); errors name the file."""
    _need(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) or "allow_pickle" in str(exc):
            # numpy reads a file without the .npy header as a pickle: name what the file holds.
            with open(path, "rb") as f:
                head = f.read(6)
            if head == b"\x93NUMPY":
                raise DataError(f"{path}: holds an array of Python objects, not a numeric array") from None
            if head[:1] != b"\x80":    # a pickle's first byte (protocol 2 and later)
                raise DataError(f"{path}: is not a .npy file (no NumPy header; it begins {head!r})") from None
            raise DataError(f"{path}: holds pickled Python objects, not a numeric array") from None
        raise DataError(f"{path}: cannot read as .npy ({exc})") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read as .npy ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: holds {type(arr).__name__}, not a single array")
    if arr.dtype.kind == "c":
        raise DataError(f"{path}: holds complex numbers ({arr.dtype}); expected real values")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{path}: holds {arr.dtype} values ({'strings' if arr.dtype.kind in 'US' else 'objects'}), "
                        "expected numbers")
    return arr


def read_3dmm(path: str, min_frames: Optional[int] = None) -> np.ndarray:
    """FaceVerse 3DMM npy, (frames, 1, 58) or (frames, 58) -> float32 (frames, 58)."""
    arr = load_npy(path).astype(np.float32)
    if arr.ndim == 3 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 2 or arr.shape[1] != layout.TDMM_DIM:
        raise DataError(f"{path}: expected shape (frames, {layout.TDMM_DIM}), got {arr.shape}")
    _check_frames(path, arr, min_frames)
    return _check_values(path, arr)


def read_audio_features(path: str, min_rows: Optional[int] = None) -> np.ndarray:
    """Per-frame audio features saved as .npy (rows, dims): k rows per video frame."""
    arr = load_npy(path).astype(np.float32)
    if arr.ndim != 2:
        raise DataError(f"{path}: expected audio features of shape (rows, dims), got {arr.shape}")
    _check_frames(path, arr, min_rows)
    return _check_values(path, arr)


def read_neighbours(path: str, num_items: Optional[int] = None) -> np.ndarray:
    """Appropriateness matrix ``neighbour_emotion_{split}.npy``: (N, N) of 0/1 -> bool."""
    return check_neighbours(load_npy(path), num_items, path)


def check_neighbours(arr, num_items: Optional[int] = None, name: str = "appropriate") -> np.ndarray:
    """An appropriateness matrix (N, N) of 0/1 (bool or numbers) as bool, N = ``num_items`` if given;
    every row must list an appropriate reaction. Errors (DataError) name ``name``."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise DataError(f"{name}: expected a square (N, N) matrix, got shape {arr.shape}")
    if num_items is not None and arr.shape[0] != num_items:
        raise DataError(f"{name}: matrix is {arr.shape[0]} x {arr.shape[1]} but the split has {num_items} "
                        f"(mirrored) items")
    if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
        raise DataError(f"{name}: values must be 0 or 1")
    arr = arr.astype(bool)
    empty = np.nonzero(~arr.any(1))[0]
    if len(empty):
        raise DataError(f"{name}: rows {empty[:10].tolist()} list no appropriate reaction (empty neighbour row)")
    return arr


def write_emotion(path: str, emotion: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(",".join(layout.EMOTION_COLUMNS) + "\n")
        for row in np.asarray(emotion, dtype=np.float32):
            f.write(",".join(f"{v:.9g}" for v in row) + "\n")
