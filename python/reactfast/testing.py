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


# Largest ||out - ref|| / ||ref|| against a float64 reference, by the precision of the arithmetic.
TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3, "tf32": 1e-3, torch.float32: 1e-5, torch.float64: 1e-12}


def assert_rel_close(name: str, ref, out, precision) -> float:
    """Assert ``||out - ref|| / ||ref|| <= TOLERANCE[precision]`` (or ``precision`` itself when it is a
    float), with ``ref`` computed in float64. Shapes must match and ``out`` may hold no NaN or Inf
    where ``ref`` is finite. Returns the measured relative error."""
    tol = precision if isinstance(precision, float) else TOLERANCE[precision]
    ref_t = _as_tensor(ref).to(torch.float64)
    out_t = _as_tensor(out).to(torch.float64)
    if ref_t.shape != out_t.shape:
        raise AssertionError(f"{name}: shape {tuple(out_t.shape)} != reference shape {tuple(ref_t.shape)}")
    finite = torch.isfinite(ref_t)
    bad = finite & ~torch.isfinite(out_t)
    if bool(bad.any()):
        idx = torch.nonzero(bad)[:5].tolist()
        raise AssertionError(f"{name}: {int(bad.sum())} non-finite values where the reference is finite, first at "
                             f"{idx}")
    diff = (out_t - ref_t)[finite]
    denom = float(ref_t[finite].norm())
    err = float(diff.norm()) / denom if denom > 0 else float(diff.norm())
    if not err <= tol:
        worst = int(diff.abs().argmax()) if diff.numel() else 0
        raise AssertionError(f"{name}: relative error {err:.3e} > {tol:.1e} (||ref|| {denom:.3e}, max abs err "
                             f"{float(diff.abs().max()) if diff.numel() else 0.0:.3e} at flat index {worst})")
    return err


class HostReadError(AssertionError):
    """An op read tensor values back to the host, or made a tensor from host data, where a CUDA
    graph capture forbids it."""


# Ops that read a tensor's values on the host (item, bool, int, tolist: _local_scalar_dense; shapes
# that depend on values) or make a tensor from Python data (torch.tensor: lift_fresh), which a
# captured graph would replay from freed host memory.
_HOST_READS = ("_local_scalar_dense.default", "lift_fresh.default", "lift_fresh_copy.default", "nonzero.default",
               "masked_select.default", "_unique2.default", "unique_consecutive.default")
# Ops that read values on the host only for some arguments: indexing by a boolean mask (x[mask] finds
# the mask's nonzero elements inside the op, below the dispatcher a mode sees) and repeat_interleave
# by a tensor of counts without output_size (the result's length).
_MASK_INDEXING = ("index.Tensor", "index_put.default", "index_put_.default", "_index_put_impl_.default")
_REPEAT_COUNTS = ("repeat_interleave.Tensor", "repeat_interleave.self_Tensor")


def _reads_on_host(func, args, kwargs, mask_indexing, repeat_counts) -> bool:
    if func in mask_indexing:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if func in repeat_counts:  # output_size is keyword-only
        return kwargs.get("output_size") is None
    return False


def forbid_host_reads():
    """A context manager that raises :class:`HostReadError` at the first op that reads a tensor's
    values on the host or builds a tensor from host data, naming the op and the reactfast line that
    called it. It checks on any device, so a CPU run proves a step capturable on a GPU (with the
    GPU tiers' code paths: Triton through the interpreter, under ``_backend.graph_safe()``)."""
    import os
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    def ops(names):
        found = set()
        for name in names:
            packet, overload = name.split(".")
            op = getattr(torch.ops.aten, packet, None)
            if op is not None and hasattr(op, overload):
                found.add(getattr(op, overload))
        return found

    forbidden, mask_indexing, repeat_counts = ops(_HOST_READS), ops(_MASK_INDEXING), ops(_REPEAT_COUNTS)

    class _Forbid(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in forbidden or _reads_on_host(func, args, kwargs or {}, mask_indexing, repeat_counts):
                frames = [f for f in traceback.extract_stack()
                          if "reactfast" in f.filename and os.sep + "torch" + os.sep not in f.filename
                          and not f.filename.endswith("testing.py")]
                where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.line}" for f in frames[-3:])
                raise HostReadError(f"{func} reads tensor values on the host (called from {where or 'outside'})")
            return func(*args, **(kwargs or {}))

    return _Forbid()
