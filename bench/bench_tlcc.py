"""Time-lagged cross-correlation (FRSyn's kernel) on CPU, checked against the reference and against
the official code's per-lag formula, which is the baseline (one core, as the official code runs)."""

import time

import numpy as np
import torch

from reactfast import _backend
from reactfast.metrics import sync_offsets
from reactfast.ops.tlcc import tlcc
from reactfast.reference import tlcc as ref

from . import _official
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
    start = time.perf_counter()
    official = [abs(_official.sync_offset(x[i].numpy(), y[i].numpy())) for i in range(4)]
    official_per_item = (time.perf_counter() - start) / 4
    assert official == sync_offsets(tlcc(x[:4], y[:4])).tolist()
    benchmark.pedantic(lambda: tlcc(x, y), rounds=3, iterations=1)
    wall = benchmark.stats.stats.min / items
    per_core = wall * THREADS
    benchmark.extra_info.update(items=items, ms_per_item_per_core=per_core * 1e3, ms_per_item_wall=wall * 1e3,
                                reference_ms_per_item=ref_per_item * 1e3, official_ms_per_item=official_per_item * 1e3)
    bench_report(f"TLCC (99 lags, T=750): {wall * 1e3:.2f} ms/item wall on {THREADS} threads "
                 f"({official_per_item / wall:.0f}x the official formula at {official_per_item * 1e3:.0f} ms/item on "
                 f"1 core), {per_core * 1e3:.2f} ms/item/core ({official_per_item / per_core:.0f}x); torch reference "
                 f"{ref_per_item * 1e3:.1f} ms/item")
