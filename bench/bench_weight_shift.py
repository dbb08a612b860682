"""Per-listener weight shifts: B = 32 listeners, a cross-attention in-projection (1536 x 512),
L = 102 tokens. The batched path against the authors' way: a loop over listeners, each writing
W + dW[b] into the layer and running it."""

import pytest
import torch

from reactfast.ops.weight_shift import weight_shift_linear
from reactfast.testing import assert_close

B, L, D_IN, D_OUT = 32, 102, 512, 1536


def _authors_loop(x, layer, shift):
    W = layer.weight.detach().clone()
    outs = []
    for b in range(x.shape[0]):
        with torch.no_grad():
            layer.weight.copy_(W + shift[b])       # materialised per listener
        outs.append(layer(x[b:b + 1]))
    with torch.no_grad():
        layer.weight.copy_(W)
    return torch.cat(outs)


def _peak_cpu_bytes(fn):
    """Peak of the bytes allocated minus freed over the call, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.cpu_memory_usage), key=lambda e: e.time_range.start)
    level = peak = 0
    for e in events:
        if e.cpu_parent is None or not e.cpu_parent.cpu_memory_usage:
            level += e.cpu_memory_usage
            peak = max(peak, level)
    return peak


@torch.no_grad()
def test_batched_vs_authors_loop_cpu(benchmark, bench_report):
    torch.manual_seed(0)
    layer = torch.nn.Linear(D_IN, D_OUT)
    x = torch.randn(B, L, D_IN)
    shift = torch.randn(B, D_OUT, D_IN) * 0.01
    want = _authors_loop(x, layer, shift)
    got = weight_shift_linear(x, layer.weight, shift, layer.bias)
    assert_close("batched", want, got, atol=1e-3, rtol=1e-3)
    import time

    loop_times = []
    for _ in range(3):
        start = time.perf_counter()
        _authors_loop(x, layer, shift)
        loop_times.append(time.perf_counter() - start)
    benchmark.pedantic(lambda: weight_shift_linear(x, layer.weight, shift, layer.bias), rounds=5, iterations=1)
    ratio = min(loop_times) / benchmark.stats.stats.min
    peak = _peak_cpu_bytes(lambda: weight_shift_linear(x, layer.weight, shift, layer.bias))
    out_bytes = B * L * D_OUT * 4
    u, v = torch.randn(B, D_OUT, 8) * 0.1, torch.randn(B, D_IN, 8) * 0.1
    start = time.perf_counter()
    for _ in range(3):
        weight_shift_linear(x, layer.weight, (u, v), layer.bias)
    low_rank = (time.perf_counter() - start) / 3
    benchmark.extra_info.update(speedup_vs_loop=ratio, peak_bytes=peak, output_bytes=out_bytes,
                                low_rank_ms=low_rank * 1e3)
    bench_report(f"weight shift B={B} {D_OUT}x{D_IN} L={L} CPU: batched {benchmark.stats.stats.min * 1e3:.1f} ms, "
                 f"authors' loop {min(loop_times) * 1e3:.1f} ms -> {ratio:.2f}x; forward allocations peak "
                 f"{peak / 2**20:.1f} MiB for a {out_bytes / 2**20:.1f} MiB output; rank-8 shifts {low_rank * 1e3:.1f} ms "
                 f"-> {min(loop_times) / low_rank:.2f}x")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_triton_vs_composite_gpu(bench_report):
    import triton.testing

    x = torch.randn(B, L, D_IN, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(D_OUT, D_IN, device="cuda", dtype=torch.bfloat16)
    shift = torch.randn(B, D_OUT, D_IN, device="cuda", dtype=torch.bfloat16) * 0.01
    composite = lambda: x @ w.t() + torch.bmm(x, shift.transpose(1, 2))  # noqa: E731
    fused = lambda: weight_shift_linear(x, w, shift, backend="triton")  # noqa: E731
    assert_close("triton", composite().float(), fused().float(), atol=5e-2, rtol=5e-2)
    t_c, t_f = triton.testing.do_bench(composite), triton.testing.do_bench(fused)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fused()
    extra = torch.cuda.max_memory_allocated() - base
    bench_report(f"weight shift GPU bf16: Triton {t_f * 1e3:.0f} us, composite {t_c * 1e3:.0f} us -> {t_c / t_f:.2f}x; "
                 f"allocated {extra / 2**20:.1f} MiB (output {B * L * D_OUT * 2 / 2**20:.1f} MiB)")
    assert t_c / t_f >= 1.5
