"""Helpers for parity tests and benchmarks."""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def assert_close(name: str, ref, out, atol: float = 1e-5, rtol: float = 1e-5, max_report: int = 5) -> None:
    """Assert ``out`` matches ``ref`` elementwise (``|out - ref| <= atol + rtol |ref|``).

    On failure the message gives the max-abs error, the RMS ratio ||out - ref|| / ||ref||, and
    the first mismatching indices with both values. NaNs must sit in the same places.
    """
    ref_t = _as_tensor(ref).to(torch.float64)
    out_t = _as_tensor(out).to(torch.float64)
    if ref_t.shape != out_t.shape:
        raise AssertionError(f"{name}: shape {tuple(out_t.shape)} != reference shape {tuple(ref_t.shape)}")
    nan_ref, nan_out = torch.isnan(ref_t), torch.isnan(out_t)
    if not torch.equal(nan_ref, nan_out):
        idx = torch.nonzero(nan_ref != nan_out)[:max_report].tolist()
        raise AssertionError(f"{name}: NaN positions differ, first at {idx}")
    ref_f = torch.where(nan_ref, torch.zeros_like(ref_t), ref_t)
    out_f = torch.where(nan_out, torch.zeros_like(out_t), out_t)
    same_inf = torch.isinf(ref_f) & (ref_f == out_f)
    diff = torch.where(same_inf, torch.zeros_like(ref_f), (out_f - ref_f).abs())
    bad = diff > atol + rtol * ref_f.abs()
    if bool(bad.any()):
        max_abs = float(diff.max())
        denom = float(ref_f[~torch.isinf(ref_f)].norm()) or 1.0
        rms_ratio = float(diff[~torch.isinf(diff)].norm()) / denom
        idx = torch.nonzero(bad)[:max_report].tolist()
        pairs = ", ".join(f"{tuple(i)}: ref={ref_f[tuple(i)].item():.8g} out={out_f[tuple(i)].item():.8g}" for i in idx)
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.numel()} elements differ (atol={atol}, rtol={rtol}); "
            f"max abs err {max_abs:.3e}, RMS ratio {rms_ratio:.3e}; first: {pairs}")
