"""Counts of REACT emotion values outside their valid ranges (``reactfast.data.check_emotion``,
the metric suite's range warning), in one op: C++/OpenMP on float32 CPU tensors (one pass over
the values); the reference (``reactfast.reference.emotion_range``) for other dtypes, on CUDA
tensors, and anywhere when forced."""

from __future__ import annotations

from typing import Optional

import torch

from reactfast import _backend
from reactfast.data.layout import EMOTION_DIM
from reactfast.ops._checks import check_real
from reactfast.reference import emotion_range as _ref

IMPLEMENTED = ("cpp", "reference")
_backend.register_op("emotion_range", IMPLEMENTED)


def emotion_range_counts(emotion: torch.Tensor, tolerance: float = 1e-4, backend: Optional[str] = None
                         ) -> torch.Tensor:
    """How many values of REACT emotion features lie outside their valid ranges.

    Args:
        emotion: (..., 25) float tensor: 15 AUs in [0, 1], valence and arousal in [-1, 1], 8
            expression probabilities (>= 0, summing to 1 per frame).
        tolerance: slack on every bound and on the probabilities' sum.
        backend: ``"cpp"`` or ``"reference"`` (default automatic: C++ for float32 CPU tensors).

    Returns:
        (5,) int64 on emotion's device: AUs below 0, AUs above 1, valence/arousal outside
        [-1, 1], negative expression probabilities, and frames whose probabilities' sum (in
        float64) is not 1 (each beyond ``tolerance``). NaN values are counted nowhere.

    Example:
        >>> au_low, au_high, va, ex_low, rows = emotion_range_counts(pred).tolist()
    """
    if not isinstance(emotion, torch.Tensor) or not emotion.is_floating_point():
        got = emotion.dtype if isinstance(emotion, torch.Tensor) else type(emotion).__name__
        raise TypeError(f"emotion must be a floating-point tensor, got {got}")
    if emotion.dim() < 1 or emotion.shape[-1] != EMOTION_DIM:
        raise ValueError(f"emotion must have {EMOTION_DIM} dims in its last axis, got shape {tuple(emotion.shape)}")
    return emotion_range_counts_unchecked(emotion.detach(), check_real("tolerance", tolerance), backend)


def emotion_range_counts_unchecked(emotion, tolerance, backend=None):
    """:func:`emotion_range_counts` on arguments already validated. The automatic choice takes the
    C++ kernel for float32 CPU tensors only (it reads float32): other dtypes take the reference."""
    if backend is None and emotion.dtype != torch.float32 and _backend.forced_backend("emotion_range") is None:
        backend = "reference"
    name = _backend.select("emotion_range", emotion.device, IMPLEMENTED, backend)
    if name == "reference":
        return _ref.emotion_range_counts(emotion, tolerance)
    if emotion.dtype != torch.float32:
        raise ValueError(f"emotion_range: the C++ kernel reads float32, got {emotion.dtype} (use the reference)")
    x = emotion.contiguous()
    counts = torch.empty(5, dtype=torch.int64)
    _backend.native().emotion_range_cpu(x, x.numel() // EMOTION_DIM, tolerance, counts)
    return counts
