"""The REACT challenge metric suite (SPEC section 2), reproducing the official numbers.

Inputs: ``pred`` (N, S, T, 25) generated listener emotion, ``listener_gt`` (N, T, 25),
``speaker`` (N, T, 25) speaker emotion, ``appropriate`` (N, N) bool (row k: the dyads whose real
listener reaction is appropriate for speaker k). numpy arrays or torch tensors (CPU or CUDA).

- FRCorr = (1/N) sum_k sum_i max_{j in A(k)} CCC(listener_gt[j], pred[k, i])  (a sum over samples)
- FRDist = (1/N) sum_k sum_i min_{j in A(k)} [DTW_AU/15 + DTW_VA + DTW_FER/8]
- FRDiv  = (1/N) sum_k sum_{i != i'} ||pred[k,i] - pred[k,i']||^2 / (S (S-1) T D)   (0 when S = 1)
- FRDvs  = sum_i sum_{k != l} ||pred[k,i] - pred[l,i]||^2 / (N (N-1) S T D)       (0 when N = 1)
- FRVar  = mean over (k, i, d) of the unbiased variance over time
- FRSyn  = mean_k |offset| of the time-lagged cross-correlation of pred[k, 0] with speaker[k]
  (official rule: first sample only; ``frsyn_all_samples=True`` averages over every sample).

Quirks of the official code are kept (see SPEC); corrected variants are opt-in and named.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Optional

import numpy as np
import torch

from reactfast import _backend
from reactfast._progress import Progress
from reactfast.data import layout
from reactfast.data.layout import check_emotion
from reactfast.metrics import candidates
from reactfast.ops._checks import check_bool, check_int
from reactfast.ops.ccc import ccc_max_unchecked
from reactfast.ops.dtw import REACT_GROUPS, check_groups, weighted_dtw_min_unchecked
from reactfast.ops.spread import spread_sums_unchecked
from reactfast.ops.tlcc import tlcc_unchecked

EMOTION_DIM = 25
METRICS = ("FRCorr", "FRDist", "FRDiv", "FRDvs", "FRVar", "FRSyn")
#: Whether a higher value is better, per metric (appropriateness: FRCorr up, FRDist down;
#: diversity: FRDiv, FRDvs, FRVar up; synchrony: FRSyn, the mean lag in frames, down).
HIGHER_IS_BETTER = {"FRCorr": True, "FRDist": False, "FRDiv": True, "FRDvs": True, "FRVar": True, "FRSyn": False}

__all__ = ["evaluate", "frcorr", "frdist", "frdiv", "frdvs", "frvar", "frsyn", "sync_offsets", "check_inputs",
           "pose_seam_jump", "METRICS", "HIGHER_IS_BETTER"]


def _described(x) -> str:
    return (f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, (torch.Tensor, np.ndarray))
            else type(x).__name__)


def _as_tensor(name: str, x, ndim: int) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {x.dtype}")
    x = x.detach()    # a model's output that carries its graph: the metrics read its values
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.shape[-1] != EMOTION_DIM:
        raise ValueError(f"{name} must have {EMOTION_DIM} emotion dims in its last axis, got shape {tuple(x.shape)}")
    if any(s == 0 for s in x.shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    # One pass without a temporary: aminmax propagates NaN, and Inf shows at an extreme.
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf")
    largest = max(-lo, hi)
    if largest > _LARGEST:
        raise ValueError(f"{name} holds values up to {largest:.3g} in magnitude; the REACT metrics take emotion "
                         f"features (AUs and expression probabilities in [0, 1], valence/arousal in [-1, 1]) and "
                         f"their float32 statistics overflow beyond {_LARGEST:.0e}")
    return x.float().contiguous()


# Beyond this magnitude the float32 sums of squares of 750 frames overflow.
_LARGEST = 1e15


def check_inputs(pred, listener_gt=None, speaker=None, appropriate=None):
    """Validate and convert the metric inputs; returns float32 tensors and a bool matrix."""
    pred = _as_tensor("pred", pred, 4)
    N, S, T, _ = pred.shape
    out = [pred]
    for name, x in (("listener_gt", listener_gt), ("speaker", speaker)):
        if x is None:
            out.append(None)
            continue
        x = _as_tensor(name, x, 3)
        if x.shape[:2] != (N, T):
            raise ValueError(f"{name} must have shape ({N}, {T}, {EMOTION_DIM}) to match pred, got {tuple(x.shape)}")
        if x.device != pred.device:
            raise ValueError(f"{name} must be on pred's device ({pred.device}), got {x.device}")
        out.append(x)
    out.append(None if appropriate is None else candidates.check_appropriate(appropriate, N))
    return tuple(out)


def _rows(rows, N):
    return list(range(N)) if rows is None else sorted(candidates.check_rows(rows, N).tolist())


# Work per chunk of speakers and CPU thread, in DP cells (DTW) or frame-dims (CCC): chunks on a CPU
# stay short enough (about a second) for the progress output to move.
_CHUNK_WORK = 2e8


def _sum_best(kernel, pred, listener_gt, a, rows, chunk, desc, progress, pair_work) -> float:
    """sum over rows k and samples i of ``kernel``'s best value over A(k), divided by N. ``pair_work``
    is the work of one (query, candidate) pair; chunks hold at most ``chunk`` speakers and about
    _CHUNK_WORK of work; progress counts pairs, so its rate and estimate follow the work."""
    N, S, T, D = pred.shape
    rows = _rows(rows, N)
    per_row = a[rows].sum(1) * S
    total_pairs = int(per_row.sum())
    bar = Progress(total_pairs, desc, unit="pair", enabled=progress, every=1 << 62, seconds=10.0)
    if progress and total_pairs * pair_work > 20 * _CHUNK_WORK:
        bar.note(f"{total_pairs} (query, candidate) pairs of {T} frames to compare")
    limit = _CHUNK_WORK * torch.get_num_threads() if pred.device.type == "cpu" else float("inf")
    # Every query's best value, summed once at the end: the total does not depend on the chunking.
    bests, lo = [], 0
    while lo < len(rows):
        hi, work = lo + 1, per_row[lo] * pair_work
        while hi < len(rows) and hi - lo < chunk and work + per_row[hi] * pair_work <= limit:
            work += per_row[hi] * pair_work
            hi += 1
        part = rows[lo:hi]
        offset, index = candidates._from_appropriate(a, S, np.asarray(part, dtype=np.int64))
        # Consecutive rows (the default) as a view: indexing with a list would copy them.
        queries = pred[part[0]:part[-1] + 1] if part == list(range(part[0], part[-1] + 1)) else pred[part]
        best = kernel(queries.reshape(-1, T, D), listener_gt, offset.to(pred.device), index.to(pred.device))[0]
        bests.append(best.double().cpu())
        bar.update(int(per_row[lo:hi].sum()))
        lo = hi
    bar.close()
    return float(torch.cat(bests).sum()) / N if bests else 0.0


def _frcorr(pred, listener_gt, a, chunk=64, progress=False, backend=None, rows=None) -> float:
    op = _backend.for_op(backend, "ccc")
    return _sum_best(lambda *args: ccc_max_unchecked(*args, backend=op), pred, listener_gt, a, rows, chunk,
                     "FRCorr", progress, pair_work=pred.shape[2] * pred.shape[3])


def _frdist(pred, listener_gt, a, chunk=16, progress=False, abandon=True, groups=REACT_GROUPS, backend=None,
            rows=None) -> float:
    op = _backend.for_op(backend, "dtw")
    groups = check_groups(groups, pred.shape[-1])
    # With pruning a pair costs about a tenth (model-like) to a half (random) of its cells
    # (bench/bench_dtw.py), and each call drains its lanes and threads once at its end: chunks count
    # a sixteenth, so a call holds up to 16 speakers (about a second or two of work).
    cells = pred.shape[2] ** 2 * len(groups) * (1 / 16 if abandon else 1.0)
    return _sum_best(lambda *args: weighted_dtw_min_unchecked(*args, groups, abandon, op), pred, listener_gt, a,
                     rows, chunk, "FRDist", progress, pair_work=cells)


def frcorr(pred, listener_gt, appropriate, chunk: int = 64, progress: bool = False, backend=None,
           rows=None) -> float:
    """FRCorr: appropriateness as the best CCC against an appropriate real reaction, summed over samples.

    ``rows``: compute only these speakers' terms (still divided by N), so that the results of
    disjoint row sets (e.g. one per process) add up to the metric."""
    _need(listener_gt=listener_gt, appropriate=appropriate)
    pred, listener_gt, _, a = check_inputs(pred, listener_gt, None, appropriate)
    check_int("chunk", chunk)
    check_bool("progress", progress)
    return _frcorr(pred, listener_gt, a, chunk, progress, backend, rows)


def frdist(pred, listener_gt, appropriate, chunk: int = 16, progress: bool = False, abandon: bool = True,
           groups=REACT_GROUPS, backend=None, rows=None) -> float:
    """FRDist: the smallest weighted three-group DTW to an appropriate real reaction, summed over
    samples. ``rows`` as in :func:`frcorr`."""
    _need(listener_gt=listener_gt, appropriate=appropriate)
    pred, listener_gt, _, a = check_inputs(pred, listener_gt, None, appropriate)
    check_int("chunk", chunk)
    check_bool("progress", progress)
    check_bool("abandon", abandon)
    return _frdist(pred, listener_gt, a, chunk, progress, abandon, groups, backend, rows)


def _spread(pred, backend=None, need_var: bool = True) -> Dict[str, float]:
    """FRDiv, FRDvs and FRVar from one call of the spread op (centred float64 sums of squares):
    sum_{i != i'} ||a_i - a_i'||^2 = 2 S sum_i ||a_i - mean||^2, so no pair is formed. FRVar
    needs 2 frames (NaN for one frame without ``need_var``)."""
    N, S, T, D = pred.shape
    if need_var and T < 2:
        raise ValueError(f"pred needs at least 2 frames for FRVar, got shape {tuple(pred.shape)}")
    div, dvs, var = spread_sums_unchecked(pred, _backend.for_op(backend, "spread")).tolist()
    return {"FRDiv": 0.0 if S == 1 else 2 * div / ((S - 1) * T * D * N),
            "FRDvs": 0.0 if N == 1 else 2 * dvs / ((N - 1) * S * T * D),
            "FRVar": var / ((T - 1) * N * S * D) if T > 1 else math.nan}


def sync_offsets(rs: torch.Tensor) -> torch.Tensor:
    """|offset| of each lagged correlation curve rs (M, 2L + 1): |L - argmax_l rs(l)|, the argmax
    returning the first NaN where a curve holds any (numpy's rule, as the official code)."""
    if not isinstance(rs, torch.Tensor) or not rs.is_floating_point() or rs.dim() < 1:
        raise TypeError(f"rs must be a float tensor (M, 2L + 1) of lagged correlation curves, got "
                        f"{_described(rs)}")
    if rs.shape[-1] % 2 == 0:
        raise ValueError(f"rs must hold 2L + 1 lags (an odd number, lag 0 in the middle) in its last dim, got "
                         f"shape {tuple(rs.shape)}")
    nan = torch.isnan(rs)
    first_nan = nan.to(torch.uint8).argmax(-1)
    peak = torch.nan_to_num(rs, nan=float("-inf")).argmax(-1)
    return (rs.shape[-1] // 2 - torch.where(nan.any(-1), first_nan, peak)).abs()


# What each metric input is, for the error when one a metric needs is missing (None).
_NEEDED = {
    "listener_gt": "a numpy array or torch tensor (N, T, 25) of the real listeners' emotion",
    "appropriate": "an (N, N) bool or 0/1 matrix (row k: the dyads whose real reaction is appropriate for speaker k)",
    "speaker": "a numpy array or torch tensor (N, T, 25) of the speakers' emotion: FRSyn correlates each reaction "
               "with its speaker",
}


def _need(**inputs) -> None:
    """Each of ``inputs`` (named as in ``_NEEDED``) is given: a missing one is named before any work."""
    for name, value in inputs.items():
        if value is None:
            raise TypeError(f"{name} must be {_NEEDED[name]}; got None")


def _frsyn(pred, speaker, max_lag=49, all_samples=False, backend=None) -> float:
    N, S, T, D = pred.shape
    if T < max_lag + 2:
        # Lags past T - 2 leave fewer than 2 frames: NaN curves, whose first NaN is the official
        # argmax (the most negative lag), so every offset is max_lag whatever the reactions.
        warnings.warn(f"FRSyn: clips of {T} frames are shorter than the lag range needs ({max_lag + 2} frames for "
                      f"lags up to {max_lag}); by the official argmax rule every offset comes out as {max_lag}, "
                      "so FRSyn says nothing about these reactions", RuntimeWarning, stacklevel=3)
    samples = range(S) if all_samples else range(1)
    x = torch.cat([pred[:, i] for i in samples]).contiguous()
    y = speaker.repeat(len(samples), 1, 1)
    rs = tlcc_unchecked(x, y, max_lag, _backend.for_op(backend, "tlcc"))
    return float(sync_offsets(rs).double().mean())


def frdiv(pred) -> float:
    """FRDiv: mean squared distance between the S samples of each speaker (diversity)."""
    return _spread(check_inputs(pred)[0], need_var=False)["FRDiv"]


def frdvs(pred) -> float:
    """FRDvs: mean squared distance between the reactions of different speakers, per sample index."""
    return _spread(check_inputs(pred)[0], need_var=False)["FRDvs"]


def frvar(pred) -> float:
    """FRVar: mean over (speaker, sample, dim) of the unbiased variance over time."""
    return _spread(check_inputs(pred)[0])["FRVar"]


def frsyn(pred, speaker, max_lag: int = 49, all_samples: bool = False, backend=None) -> float:
    """FRSyn: mean |offset| of the peak of the time-lagged cross-correlation with the speaker.

    Official rule: only sample 0 of each speaker counts; ``all_samples=True`` is the corrected
    variant over every sample.
    """
    _need(speaker=speaker)
    pred, _, speaker, _ = check_inputs(pred, None, speaker, None)
    check_int("max_lag", max_lag, minimum=0)   # lags past the clip give NaN curves, as the official code's
    check_bool("all_samples", all_samples)
    return _frsyn(pred, speaker, max_lag, all_samples, backend)


def pose_seam_jump(frames: torch.Tensor, window: int) -> torch.Tensor:
    """Not a REACT metric: the mean |head-pose change| across the window seams of generated 3DMM
    sequences (B, T, 58) emitted in windows of ``window`` frames (how visibly an online generator's
    windows join; PFLPosNet's PosNet lowers it)."""
    if not isinstance(frames, torch.Tensor) or not frames.is_floating_point() or frames.dim() != 3 or \
            frames.shape[-1] != layout.TDMM_DIM:
        raise TypeError(f"frames must be a float tensor (B, T, {layout.TDMM_DIM}) of 3DMM sequences, got "
                        f"{_described(frames)}")
    check_int("window", window)
    pose = frames[..., layout.TDMM_POSE]
    seams = torch.arange(window, pose.shape[1], window, device=frames.device)
    return (pose[:, seams] - pose[:, seams - 1]).abs().mean()


def warn_out_of_range(pred) -> dict:
    """Warn (``RuntimeWarning``) when generated emotion leaves its valid ranges, with the counts of
    ``reactfast.data.check_emotion``; returns those counts (empty when all is in range)."""
    problems = check_emotion(pred)
    if problems:
        total = int(np.prod(pred.shape[:-1]))
        listed = ", ".join(f"{n} {what}" for what, n in problems.items())
        warnings.warn(f"pred leaves the valid emotion ranges ({total} frames): {listed}; the metrics are "
                      "computed on the values as given", RuntimeWarning, stacklevel=3)
    return problems


def evaluate(pred, listener_gt, speaker, appropriate, progress: bool = False, abandon: bool = True,
             frsyn_all_samples: bool = False, backend: Optional[str] = None) -> Dict[str, float]:
    """All REACT metrics: {"FRCorr", "FRDist", "FRDiv", "FRDvs", "FRVar", "FRSyn"}.

    Inputs on a CUDA device are evaluated there (their kernels' GPU paths); numpy arrays on the CPU.

    Args:
        pred: (N, S, T, 25) generated listener emotion.
        listener_gt: (N, T, 25) real listener emotion of each dyad.
        speaker: (N, T, 25) speaker emotion of each dyad.
        appropriate: (N, N) bool (or 0/1) appropriateness matrix; no row may be empty.
        progress: show tqdm progress bars for FRCorr and FRDist.
        abandon: exact early abandoning in FRDist (same result, faster).
        frsyn_all_samples: FRSyn over every sample instead of the official first-sample rule.
        backend: force the kernels' backend: one name (``"cpp"``, ``"cuda"``, ``"reference"``) for
            every metric op that has it, or per op as ``"dtw:cuda,ccc:reference"``.

    Example:
        >>> scores = evaluate(pred, listener_gt, speaker, appropriate)
        >>> scores["FRDist"]
    """
    _backend.check_spec_ops(backend)
    for name, flag in (("progress", progress), ("abandon", abandon), ("frsyn_all_samples", frsyn_all_samples)):
        check_bool(name, flag)  # frsyn_all_samples="False" would compute the corrected variant, not the official
    _need(listener_gt=listener_gt, appropriate=appropriate, speaker=speaker)   # before FRCorr and FRDist run
    pred, listener_gt, speaker, a = check_inputs(pred, listener_gt, speaker, appropriate)
    if pred.shape[2] < 2:
        raise ValueError(f"pred must have at least 2 frames (T) for the metric suite, got shape {tuple(pred.shape)}")
    _backend.check_forced(backend, ("ccc", "dtw", "spread", "tlcc"), pred.device)   # not after FRCorr and FRDist
    warn_out_of_range(pred)
    return {
        "FRCorr": _frcorr(pred, listener_gt, a, progress=progress, backend=backend),
        "FRDist": _frdist(pred, listener_gt, a, progress=progress, abandon=abandon, backend=backend),
        **_spread(pred, backend),
        "FRSyn": _frsyn(pred, speaker, all_samples=frsyn_all_samples, backend=backend),
    }
