"""Metric kernels against the straightforward per-pair implementations of the official
definitions (reactfast.reference), and the whole suite at test-set scale.

Per-core figures are wall time x threads used (the machine's cores), i.e. core-seconds.
Set REACTFAST_BENCH_N to change the full-suite size (default 806 speakers, S = 10, T = 750,
about 50 appropriate reactions per speaker).
"""

import os
import time

import numpy as np
import pytest
import torch

from reactfast import _backend, metrics
from reactfast.data import SyntheticDyads
from reactfast.ops import _candidates
from reactfast.ops.ccc import ccc_max
from reactfast.ops.dtw import weighted_dtw_min
from reactfast.ops.tlcc import tlcc
from reactfast.reference import ccc as ccc_ref
from reactfast.reference import dtw as dtw_ref
from reactfast.reference import tlcc as tlcc_ref

T = 750
S = 10
THREADS = _backend.native().openmp_max_threads()


def _timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


@pytest.fixture(scope="module")
def data():
    n = int(os.environ.get("REACTFAST_BENCH_N", "806"))
    synthetic = SyntheticDyads(sessions=n // 2, prototypes=max(1, n // 100), seed=0)
    ds = synthetic.dataset(modalities=("emotion",))
    gt = ds.stack("listener", "emotion").numpy()
    speaker = ds.stack("speaker", "emotion").numpy()
    appropriate = ds.appropriate
    rng = np.random.default_rng(0)
    N = gt.shape[0]
    # Generated reactions resemble some appropriate real reaction: a random one, perturbed.
    pick = np.array([[rng.choice(np.nonzero(appropriate[k])[0]) for _ in range(S)] for k in range(N)])
    pred = gt[pick] + rng.normal(0, 0.1, (N, S, T, 25)).astype(np.float32)
    return pred, gt, speaker, appropriate


def test_weighted_dtw_pair(benchmark, data, bench_report):
    pred, gt, _, appropriate = data
    rows = range(8)
    cand = _candidates.from_appropriate(appropriate, S, rows)
    queries = torch.from_numpy(pred[:8].reshape(-1, T, 25))
    targets = torch.from_numpy(gt)
    pairs = cand[1].numel()
    # Reference: the straightforward per-pair computation, on a few pairs (it is slow).
    few = [cand[1][:2].tolist()]
    ref, ref_time = _timed(lambda: dtw_ref.weighted_dtw_min(queries[:1].numpy(), gt, few))
    ref_per_pair = ref_time / 2
    fast_few = weighted_dtw_min(queries[:1], targets, few, abandon=False)
    np.testing.assert_allclose(fast_few[0].numpy(), ref[0], rtol=1e-6)
    full, full_time = _timed(lambda: weighted_dtw_min(queries, targets, cand, abandon=False, return_cells=True))
    out = benchmark.pedantic(lambda: weighted_dtw_min(queries, targets, cand, abandon=True, return_cells=True),
                             rounds=3, iterations=1)
    assert torch.equal(out[0], full[0])
    fast_per_core = benchmark.stats.stats.min * THREADS / pairs
    full_per_core = full_time * THREADS / pairs
    benchmark.extra_info.update(pairs=pairs, ms_per_pair_per_core=fast_per_core * 1e3,
                                ms_per_pair_per_core_no_abandon=full_per_core * 1e3,
                                reference_ms_per_pair=ref_per_pair * 1e3, cells_fraction=out[2] / full[2])
    bench_report(f"weighted DTW (3 groups, T=750): {fast_per_core * 1e3:.3f} ms/pair/core with early abandoning "
                 f"({out[2] / full[2]:.1%} of cells), {full_per_core * 1e3:.3f} ms without; reference "
                 f"{ref_per_pair * 1e3:.0f} ms/pair -> {ref_per_pair / fast_per_core:.0f}x")
    assert ref_per_pair / fast_per_core > 20


def test_ccc_pair(benchmark, data, bench_report):
    pred, gt, _, appropriate = data
    cand = _candidates.from_appropriate(appropriate, S, range(16))
    queries = torch.from_numpy(pred[:16].reshape(-1, T, 25))
    targets = torch.from_numpy(gt)
    pairs = cand[1].numel()
    lists = [cand[1][cand[0][m]:cand[0][m + 1]].tolist() for m in range(4)]
    ref, ref_time = _timed(lambda: ccc_ref.ccc_max(queries[:4].numpy(), gt, lists))
    ref_per_pair = ref_time / sum(len(c) for c in lists)
    np.testing.assert_allclose(ccc_max(queries[:4], targets, lists)[0].numpy(), ref[0], rtol=1e-6)
    benchmark.pedantic(lambda: ccc_max(queries, targets, cand), rounds=3, iterations=1)
    per_core = benchmark.stats.stats.min * THREADS / pairs
    benchmark.extra_info.update(pairs=pairs, us_per_pair_per_core=per_core * 1e6,
                                reference_us_per_pair=ref_per_pair * 1e6)
    bench_report(f"CCC (T=750, 25 dims): {per_core * 1e6:.1f} us/pair/core; vectorised numpy reference "
                 f"{ref_per_pair * 1e6:.0f} us/pair -> {ref_per_pair / per_core:.1f}x")
    assert ref_per_pair / per_core > 2


def test_tlcc_item(benchmark, data, bench_report):
    pred, _, speaker, _ = data
    items = 64
    x = torch.from_numpy(np.ascontiguousarray(pred[:items, 0]))
    y = torch.from_numpy(speaker[:items])
    ref, ref_time = _timed(lambda: tlcc_ref.tlcc(x[:8].numpy(), y[:8].numpy()))
    ref_per_item = ref_time / 8
    np.testing.assert_array_equal(tlcc_ref.tlcc_offset(ref), tlcc_ref.tlcc_offset(tlcc(x[:8], y[:8]).numpy()))
    benchmark.pedantic(lambda: tlcc(x, y), rounds=3, iterations=1)
    per_core = benchmark.stats.stats.min * THREADS / items
    benchmark.extra_info.update(items=items, ms_per_item_per_core=per_core * 1e3,
                                reference_ms_per_item=ref_per_item * 1e3)
    bench_report(f"TLCC (99 lags, T=750): {per_core * 1e3:.2f} ms/item/core; vectorised numpy reference "
                 f"{ref_per_item * 1e3:.1f} ms/item -> {ref_per_item / per_core:.1f}x")
    assert ref_per_item / per_core > 2


def test_full_suite(benchmark, data, bench_report):
    pred, gt, speaker, appropriate = data
    scores = benchmark.pedantic(lambda: metrics.evaluate(pred, gt, speaker, appropriate), rounds=1, iterations=1)
    seconds = benchmark.stats.stats.min
    N = pred.shape[0]
    k = appropriate.sum(1).mean()
    benchmark.extra_info.update(N=N, S=S, T=T, appropriate_per_speaker=float(k), seconds=seconds, **scores)
    bench_report(f"whole suite N={N}, S={S}, T={T}, {k:.1f} appropriate/speaker: {seconds:.1f} s on "
                 f"{THREADS} threads; " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items()))
    assert all(np.isfinite(v) for v in scores.values())
