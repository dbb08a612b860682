"""Time-lagged cross-correlation (FRSyn's kernel) on CPU, checked against the reference."""

import time

import numpy as np
import torch

from reactfast import _backend
from reactfast.metrics import sync_offsets
from reactfast.ops.tlcc import tlcc
from reactfast.reference import tlcc as ref

from ._metric_data import challenge_scale

THREADS = _backend.native().openmp_max_threads()


def test_tlcc_item(benchmark, bench_report):
    pred, _, speaker, _ = challenge_scale()
    items = 64
    x = torch.from_numpy(np.ascontiguousarray(pred[:items, 0]))
    y = torch.from_numpy(speaker[:items])
    start = time.perf_counter()
    want = ref.tlcc(x[:8], y[:8])
    ref_per_item = (time.perf_counter() - start) / 8
    assert torch.equal(sync_offsets(want), sync_offsets(tlcc(x[:8], y[:8])))
    benchmark.pedantic(lambda: tlcc(x, y), rounds=3, iterations=1)
    per_core = benchmark.stats.stats.min * THREADS / items
    benchmark.extra_info.update(items=items, ms_per_item_per_core=per_core * 1e3,
                                reference_ms_per_item=ref_per_item * 1e3)
    bench_report(f"TLCC (99 lags, T=750): {per_core * 1e3:.2f} ms/item/core; torch reference "
                 f"{ref_per_item * 1e3:.1f} ms/item")
