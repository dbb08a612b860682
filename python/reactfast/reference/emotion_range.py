"""Reference counts of REACT emotion values outside their valid ranges (what
``reactfast.data.check_emotion`` reports). Same signature as ``reactfast.ops.emotion_range``;
any device, any float dtype."""

from __future__ import annotations

import torch

from reactfast.data.layout import AU, EXPRESSION, VA


def _in_range(au, va, ex, tol: float) -> bool:
    """Whether every value is in range, from the groups' extremes and the rows' sums: reductions
    without a mask the size of the input, so the common case (everything in range) is a few passes.
    NaN fails every comparison, so it takes the counting path."""
    lo, hi = (float(v) for v in torch.aminmax(au))
    if not (lo >= -tol and hi <= 1 + tol):
        return False
    lo, hi = (float(v) for v in torch.aminmax(va))
    if not (lo >= -1 - tol and hi <= 1 + tol):
        return False
    if not float(ex.amin()) >= -tol:
        return False
    lo, hi = (float(v) for v in torch.aminmax(ex.double().sum(-1) - 1))
    return lo >= -tol and hi <= tol


def emotion_range_counts(emotion: torch.Tensor, tolerance: float = 1e-4) -> torch.Tensor:
    """(5,) int64 on emotion's device, for emotion (..., 25): AUs below -tol, AUs above 1 + tol,
    |valence or arousal| above 1 + tol, expression probabilities below -tol, and rows whose 8
    probabilities sum (in float64) more than tol away from 1."""
    au, va, ex = emotion[..., AU], emotion[..., VA], emotion[..., EXPRESSION]
    if emotion.numel() and _in_range(au, va, ex, tolerance):
        return torch.zeros(5, dtype=torch.int64, device=emotion.device)
    counts = [au < -tolerance, au > 1 + tolerance, va.abs() > 1 + tolerance, ex < -tolerance,
              (ex.double().sum(-1) - 1).abs() > tolerance]
    # count_nonzero: a boolean mask's sum() is 5x slower on strided views.
    return torch.stack([torch.count_nonzero(c) for c in counts])
