"""CCC max over appropriate candidates (FRCorr's kernel) on CPU, checked against the reference and
against the official code's per-pair formula, which is the baseline (one core, as the official code
runs)."""

import time

import torch

from reactfast import _backend
from reactfast.metrics import candidates
from reactfast.ops.ccc import ccc_max
from reactfast.reference import ccc as ref
from reactfast.testing import assert_close

from . import _official
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
    # The official formula on the first 40 pairs, one at a time, checked pair by pair.
    lists = [(m, j) for m in range(queries.shape[0]) for j in cand[1][cand[0][m]:cand[0][m + 1]].tolist()][:40]
    q_np, t_np = queries.numpy(), targets.numpy()
    start = time.perf_counter()
    official = [_official.ccc_pair(t_np[j], q_np[m]) for m, j in lists]
    official_per_pair = (time.perf_counter() - start) / len(lists)
    for (m, j), v in zip(lists, official):
        got = ccc_max(queries[m:m + 1], targets, candidates.from_lists([[j]]))[0]
        assert_close("ccc vs official", torch.tensor([v], dtype=torch.float64), got, atol=1e-7, rtol=1e-6)
    benchmark.pedantic(lambda: ccc_max(queries, targets, cand), rounds=3, iterations=1)
    wall = benchmark.stats.stats.min / pairs
    per_core = wall * THREADS
    benchmark.extra_info.update(pairs=pairs, us_per_pair_per_core=per_core * 1e6, us_per_pair_wall=wall * 1e6,
                                reference_us_per_pair=ref_per_pair * 1e6,
                                official_us_per_pair=official_per_pair * 1e6)
    bench_report(f"CCC (T=750, 25 dims): {wall * 1e6:.1f} us/pair wall on {THREADS} threads "
                 f"({official_per_pair / wall:.0f}x the official formula at {official_per_pair * 1e6:.0f} us/pair on "
                 f"1 core), {per_core * 1e6:.1f} us/pair/core ({official_per_pair / per_core:.0f}x); batched torch "
                 f"reference {ref_per_pair * 1e6:.0f} us/pair")
