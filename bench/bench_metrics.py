"""The whole REACT metric suite at test-set scale (REACTFAST_BENCH_N speakers, default 806,
S = 10, T = 750, about 50 appropriate reactions per speaker). The per-op figures are in
bench_dtw.py, bench_ccc.py and bench_tlcc.py."""

import numpy as np

from reactfast import _backend, metrics

from ._metric_data import S, T, challenge_scale

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
