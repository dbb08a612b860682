"""The official challenge code's per-pair formulas, written as it writes them (numpy per dim, per
lag, per pair in Python loops): the baselines of bench_ccc.py and bench_tlcc.py. They are checked
against the package's kernels before any timing (SPEC section 2)."""

import numpy as np


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
