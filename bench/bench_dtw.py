"""Weighted three-group DTW (FRDist's kernel) on CPU: the C++ kernel per pair per core, with and
without exact early abandoning, checked against the reference first.

Per-core figures are wall time x threads used (the machine's cores), i.e. core-seconds."""

import time

import torch

from reactfast import _backend
from reactfast.metrics import candidates
from reactfast.ops.dtw import weighted_dtw_min
from reactfast.reference import dtw as ref
from reactfast.testing import assert_close

from ._metric_data import S, T, challenge_scale

THREADS = _backend.native().openmp_max_threads()


def test_weighted_dtw_pair(benchmark, bench_report):
    pred, gt, _, appropriate = challenge_scale()
    cand = candidates.from_appropriate(appropriate, S, range(8))
    queries = torch.from_numpy(pred[:8].reshape(-1, T, 25))
    targets = torch.from_numpy(gt)
    pairs = cand[1].numel()
    few = candidates.from_lists([cand[1][:2].tolist()])
    start = time.perf_counter()
    want = ref.weighted_dtw_min(queries[:1], targets, few)
    ref_per_pair = (time.perf_counter() - start) / 2
    assert_close("dtw", want[0], weighted_dtw_min(queries[:1], targets, few, abandon=False)[0], atol=1e-9,
                 rtol=1e-6)
    start = time.perf_counter()
    full = weighted_dtw_min(queries, targets, cand, abandon=False, return_cells=True)
    full_time = time.perf_counter() - start
    out = benchmark.pedantic(lambda: weighted_dtw_min(queries, targets, cand, abandon=True, return_cells=True),
                             rounds=3, iterations=1)
    assert torch.equal(out[0], full[0])
    fast_per_core = benchmark.stats.stats.min * THREADS / pairs
    full_per_core = full_time * THREADS / pairs
    benchmark.extra_info.update(pairs=pairs, ms_per_pair_per_core=fast_per_core * 1e3,
                                ms_per_pair_per_core_no_abandon=full_per_core * 1e3,
                                reference_ms_per_pair=ref_per_pair * 1e3, cells_fraction=out[2] / full[2])
    bench_report(f"weighted DTW (3 groups, T=750): {fast_per_core * 1e3:.3f} ms/pair/core with early abandoning "
                 f"({out[2] / full[2]:.1%} of cells), {full_per_core * 1e3:.3f} ms without; torch reference "
                 f"{ref_per_pair * 1e3:.0f} ms/pair")
