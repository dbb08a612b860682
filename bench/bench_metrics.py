"""The whole REACT metric suite at test-set scale (REACTFAST_BENCH_N speakers, default 806,
S = 10, T = 750, about 50 appropriate reactions per speaker). The per-op figures are in
bench_dtw.py, bench_ccc.py and bench_tlcc.py."""

import os
import time
import warnings

import numpy as np
import pytest

from reactfast import _backend, metrics
from reactfast.data import SyntheticDyads

from . import _official
from ._metric_data import S, T, challenge_scale, model_like

THREADS = _backend.native().openmp_max_threads()


def test_full_suite(benchmark, bench_report):
    pred, gt, speaker, appropriate = challenge_scale()
    scores = benchmark.pedantic(lambda: metrics.evaluate(pred, gt, speaker, appropriate), rounds=1, iterations=1)
    seconds = benchmark.stats.stats.min
    N = pred.shape[0]
    k = appropriate.sum(1).mean()
    benchmark.extra_info.update(N=N, S=S, T=T, appropriate_per_speaker=float(k), seconds=seconds, **scores)
    bench_report(f"whole suite N={N}, S={S}, T={T}, {k:.1f} appropriate/speaker: {seconds:.1f} s on "
                 f"{THREADS} threads; " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items()))
    assert all(np.isfinite(v) for v in scores.values())


OFFICIAL_SPEAKERS = int(os.environ.get("REACTFAST_BENCH_OFFICIAL_SPEAKERS", "48"))


@pytest.mark.skipif(_official.tslearn_missing(), reason="the official DTW primitive needs tslearn (pip install tslearn)")
def test_full_suite_vs_official_code(bench_report):
    """The whole suite against the official code's structure (pool over speakers, per-pair tslearn
    DTW, per-pair CCC, per-lag TLCC) on the same machine, same processes as threads, in one run; a
    48-speaker case with about 8 appropriate reactions per speaker."""
    synthetic = SyntheticDyads(sessions=OFFICIAL_SPEAKERS // 2, prototypes=3, seed=1)
    ds = synthetic.dataset(modalities=("emotion",))
    gt = ds.stack("listener", "emotion").numpy()
    speaker = ds.stack("speaker", "emotion").numpy()
    appropriate = ds.appropriate
    pred = model_like(gt, appropriate, seed=1)
    N, k = pred.shape[0], appropriate.sum(1).mean()
    start = time.perf_counter()
    with warnings.catch_warnings():  # perturbed real reactions leave the emotion ranges a little
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = metrics.evaluate(pred, gt, speaker, appropriate)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    official = _official.suite(pred, gt, speaker, appropriate, processes=THREADS)
    official_s = time.perf_counter() - start
    for name, value in official.items():
        if name == "FRSyn":
            assert ours[name] == value, (name, ours[name], value)
        else:
            assert abs(ours[name] - value) <= 1e-6 * max(1.0, abs(value)), (name, ours[name], value)
    bench_report(f"whole suite vs the official code, N={N}, S={S}, T={T}, {k:.1f} appropriate/speaker, "
                 f"{THREADS} cores: {ours_s:.2f} s vs {official_s:.1f} s ({official_s / ours_s:.0f}x); every "
                 f"metric equal within 1e-6 relative, FRSyn exact")
