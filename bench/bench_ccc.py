"""CCC max over appropriate candidates (FRCorr's kernel) on CPU, checked against the reference."""

import time

import torch

from reactfast import _backend
from reactfast.metrics import candidates
from reactfast.ops.ccc import ccc_max
from reactfast.reference import ccc as ref
from reactfast.testing import assert_close

from ._metric_data import S, T, challenge_scale

THREADS = _backend.native().openmp_max_threads()


def test_ccc_pair(benchmark, bench_report):
    pred, gt, _, appropriate = challenge_scale()
    cand = candidates.from_appropriate(appropriate, S, range(16))
    queries = torch.from_numpy(pred[:16].reshape(-1, T, 25))
    targets = torch.from_numpy(gt)
    pairs = cand[1].numel()
    start = time.perf_counter()
    want = ref.ccc_max(queries, targets, cand)
    ref_per_pair = (time.perf_counter() - start) / pairs
    assert_close("ccc", want[0], ccc_max(queries, targets, cand)[0], atol=1e-7, rtol=1e-6)
    benchmark.pedantic(lambda: ccc_max(queries, targets, cand), rounds=3, iterations=1)
    per_core = benchmark.stats.stats.min * THREADS / pairs
    benchmark.extra_info.update(pairs=pairs, us_per_pair_per_core=per_core * 1e6,
                                reference_us_per_pair=ref_per_pair * 1e6)
    bench_report(f"CCC (T=750, 25 dims): {per_core * 1e6:.1f} us/pair/core; batched torch reference "
                 f"{ref_per_pair * 1e6:.0f} us/pair")
