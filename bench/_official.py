"""The official challenge code's per-pair formulas, written as it writes them (numpy per dim, per
lag, per pair in Python loops; tslearn's ``dtw`` per emotion group): the baselines of
bench_dtw.py, bench_ccc.py, bench_tlcc.py and bench_metrics.py. They are checked against the
package's kernels before any timing (SPEC section 2)."""

import importlib.util

import numpy as np

from reactfast.ops.dtw import REACT_GROUPS


def tslearn_missing() -> bool:
    return importlib.util.find_spec("tslearn") is None


def ccc_pair(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dim-mean CCC of two (T, D) float32 clips: np.corrcoef per dim (float64, NaN -> 0, clipped),
    float32 means, variances and standard deviations."""
    values = []
    for d in range(gt.shape[1]):
        a, b = gt[:, d], pred[:, d]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.corrcoef(a, b)[0, 1]
        r = float(np.clip(np.nan_to_num(r), -1.0, 1.0))
        numerator = 2 * r * np.std(a) * np.std(b)
        denominator = np.var(a) + np.var(b) + (np.mean(a) - np.mean(b)) ** 2 + 1e-8
        values.append(numerator / denominator)
    return float(np.mean(values))


def sync_offset(pred: np.ndarray, speaker: np.ndarray, max_lag: int = 49) -> int:
    """FRSyn's offset of one (T, D) pair: Pearson r per dim and lag (np.corrcoef, float64; NaN
    kept), the float32 mean over dims per lag, offset = max_lag - argmax (first NaN, else first
    maximum)."""
    T, D = pred.shape
    rs = []
    for lag in range(-max_lag, max_lag + 1):
        x = pred[lag:] if lag > 0 else pred[:T + lag] if lag < 0 else pred
        y = speaker[:T - lag] if lag > 0 else speaker[-lag:] if lag < 0 else speaker
        with np.errstate(invalid="ignore", divide="ignore"):
            r = [np.corrcoef(x[:, d], y[:, d])[0, 1] for d in range(D)]
        rs.append(np.float32(np.mean(np.asarray(r, dtype=np.float64))))
    rs = np.asarray(rs, dtype=np.float32)
    best = int(np.argmax(rs)) if not np.isnan(rs).any() else int(np.flatnonzero(np.isnan(rs))[0])
    return max_lag - best


# --- the whole suite, structured as the official code runs it ---------------------------------
# FRDist and FRCorr: a multiprocessing pool over speakers (the official code's ``*_mp`` helpers),
# each worker looping over samples and appropriate reactions pair by pair; FRSyn per speaker on the
# first sample; FRDiv, FRDvs and FRVar vectorised in numpy (cheap next to the rest).

_SUITE = {}  # the arrays of the running suite, inherited by the forked workers


def dtw_pair(p: np.ndarray, g: np.ndarray) -> float:
    """FRDist's weighted DTW of one pair: tslearn's ``dtw`` per emotion group, float64."""
    from tslearn.metrics import dtw

    return sum(w * dtw(p[:, a:b], g[:, a:b]) for a, b, w in REACT_GROUPS)


def _frdist_speaker(k: int) -> float:
    pred, gt, appropriate = _SUITE["pred"], _SUITE["gt"], _SUITE["appropriate"]
    cand = np.nonzero(appropriate[k])[0]
    return sum(min(dtw_pair(pred[k, i].astype(np.float64), gt[j].astype(np.float64)) for j in cand)
               for i in range(pred.shape[1]))


def _frcorr_speaker(k: int) -> float:
    pred, gt, appropriate = _SUITE["pred"], _SUITE["gt"], _SUITE["appropriate"]
    cand = np.nonzero(appropriate[k])[0]
    return sum(max(ccc_pair(gt[j], pred[k, i]) for j in cand) for i in range(pred.shape[1]))


def spread(pred: np.ndarray) -> tuple:
    """FRDiv, FRDvs and FRVar as the official code computes them: every pair of samples, every pair of
    speakers, numpy's ddof=1 variance over time."""
    N, S = pred.shape[:2]
    flat = pred.reshape(N, S, -1).astype(np.float64)
    frdiv = 0.0 if S == 1 else float(np.mean([((f[:, None] - f[None]) ** 2).sum() / (S * (S - 1) * f.shape[1])
                                              for f in flat]))
    frdvs = 0.0 if N == 1 else float(np.mean([((c[:, None] - c[None]) ** 2).sum() / (N * (N - 1) * c.shape[1])
                                              for c in flat.transpose(1, 0, 2)]))
    frvar = float(pred.astype(np.float64).var(axis=2, ddof=1).mean())
    return frdiv, frdvs, frvar


def suite(pred: np.ndarray, gt: np.ndarray, speaker: np.ndarray, appropriate: np.ndarray,
          processes: int) -> dict:
    """The six REACT metrics the official way, FRDist and FRCorr over ``processes`` forked workers."""
    import multiprocessing

    N, S, T, D = pred.shape
    dtw_pair(pred[0, 0].astype(np.float64), gt[0].astype(np.float64))  # numba compiles once, before the fork
    _SUITE.update(pred=pred, gt=gt, appropriate=np.asarray(appropriate, dtype=bool))
    try:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            frdist = sum(pool.map(_frdist_speaker, range(N), chunksize=1)) / N
            frcorr = sum(pool.map(_frcorr_speaker, range(N), chunksize=1)) / N
    finally:
        _SUITE.clear()
    frdiv, frdvs, frvar = spread(pred)
    frsyn = float(np.mean([abs(sync_offset(pred[k, 0], speaker[k])) for k in range(N)]))
    return {"FRCorr": frcorr, "FRDist": frdist, "FRDiv": frdiv, "FRDvs": frdvs, "FRVar": frvar, "FRSyn": frsyn}
