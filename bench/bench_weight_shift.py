"""Per-listener weight shifts: B = 32 listeners, a cross-attention in-projection (1536 x 512),
L = 102 tokens. The batched path against the authors' way: a loop over listeners, each writing
W + dW[b] into the layer and running it."""

import pytest
import torch

from reactfast.ops.weight_shift import weight_shift_linear
from reactfast.testing import assert_rel_close

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
def test_batched_vs_authors_loop_cpu(benchmark, bench_report, best_times):
    torch.manual_seed(0)
    layer = torch.nn.Linear(D_IN, D_OUT)
    x = torch.randn(B, L, D_IN)
    shift = torch.randn(B, D_OUT, D_IN) * 0.01
    # Every provider against the float64 sum written in (the authors' W + dW[b]), by relative norm.
    w64, b64 = layer.weight.double(), layer.bias.double()
    want = torch.stack([x[i].double() @ (w64 + shift[i].double()).t() for i in range(B)]) + b64
    for name, got in (("authors' loop", _authors_loop(x, layer, shift)),
                      ("batched (default backend)", weight_shift_linear(x, layer.weight, shift, layer.bias)),
                      ("batched (reference)", weight_shift_linear(x, layer.weight, shift, layer.bias,
                                                                  backend="reference"))):
        assert_rel_close(name, want, got.reshape(want.shape), torch.float32)
    from reactfast.ops.weight_shift import _select

    backend = _select(x, "")
    u, v = torch.randn(B, D_OUT, 8) * 0.1, torch.randn(B, D_IN, 8) * 0.1
    t = best_times({
        "loop": lambda: _authors_loop(x, layer, shift),
        "default": lambda: weight_shift_linear(x, layer.weight, shift, layer.bias),
        "reference": lambda: weight_shift_linear(x, layer.weight, shift, layer.bias, backend="reference"),
        "rank8": lambda: weight_shift_linear(x, layer.weight, (u, v), layer.bias),
    }, rounds=7)
    t_loop, t_default, t_ref, t_low = t["loop"], t["default"], t["reference"], t["rank8"]
    benchmark.pedantic(lambda: weight_shift_linear(x, layer.weight, shift, layer.bias), rounds=5, iterations=1,
                       warmup_rounds=1)
    peak = _peak_cpu_bytes(lambda: weight_shift_linear(x, layer.weight, shift, layer.bias))
    peak_ref = _peak_cpu_bytes(lambda: weight_shift_linear(x, layer.weight, shift, layer.bias, backend="reference"))
    out_bytes = B * L * D_OUT * 4
    benchmark.extra_info.update(backend=backend, speedup_vs_loop=t_loop / t_default,
                                reference_speedup_vs_loop=t_loop / t_ref, peak_bytes=peak, output_bytes=out_bytes)
    bench_report(f"weight shift B={B} {D_OUT}x{D_IN} L={L} CPU forward: authors' loop {t_loop * 1e3:.1f} ms; "
                 f"batched {backend} {t_default * 1e3:.1f} ms -> {t_loop / t_default:.2f}x; batched reference "
                 f"{t_ref * 1e3:.1f} ms -> {t_loop / t_ref:.2f}x; rank-8 {t_low * 1e3:.1f} ms -> "
                 f"{t_loop / t_low:.2f}x; forward allocations peak {peak / 2**20:.1f} MiB ({backend}), "
                 f"{peak_ref / 2**20:.1f} MiB (reference) for a {out_bytes / 2**20:.1f} MiB output")


def test_training_step_vs_authors_loop_cpu(bench_report, best_times):
    """Forward + backward to x, W and the shifts (the hypernetwork trains through dW)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(D_IN, D_OUT)
    x = torch.randn(B, L, D_IN, requires_grad=True)
    shift = (torch.randn(B, D_OUT, D_IN) * 0.01).requires_grad_()
    dy = torch.randn(B, L, D_OUT)

    def loop():
        for t in (x, shift, layer.weight, layer.bias):
            t.grad = None
        # The authors' summed weight, differentiable: W + dW[b] per listener. unbind, not shift[b]:
        # indexing's backward would write a full-size zero gradient per listener.
        outs = [torch.nn.functional.linear(xb, layer.weight + sb, layer.bias)
                for xb, sb in zip(x.unbind(0), shift.unbind(0))]
        torch.stack(outs).backward(dy)
        return x.grad, shift.grad, layer.weight.grad

    def batched(backend=None):
        for t in (x, shift, layer.weight, layer.bias):
            t.grad = None
        weight_shift_linear(x, layer.weight, shift, layer.bias, backend=backend).backward(dy)
        return x.grad, shift.grad, layer.weight.grad

    # The gradients of the float64 sum written in; the loop and the batched op each against them.
    x64, s64, w64 = (t.detach().double().requires_grad_() for t in (x, shift, layer.weight))
    y64 = torch.stack([x64[i] @ (w64 + s64[i]).t() for i in range(B)]) + layer.bias.detach().double()
    want = torch.autograd.grad(y64, (x64, s64, w64), dy.double())
    for provider, grads in (("loop", [g.clone() for g in loop()]), ("batched", batched())):
        for name, a, c in zip(("dx", "dshift", "dW"), want, grads):
            assert_rel_close(f"{provider} {name}", a, c, torch.float32)
    t = best_times({"loop": loop, "batched": batched, "reference": lambda: batched("reference")}, rounds=5)
    t_loop, t_batched, t_ref = t["loop"], t["batched"], t["reference"]
    bench_report(f"weight shift B={B} {D_OUT}x{D_IN} L={L} CPU forward+backward: authors' loop {t_loop * 1e3:.1f} ms; "
                 f"batched {t_batched * 1e3:.1f} ms -> {t_loop / t_batched:.2f}x; batched reference "
                 f"{t_ref * 1e3:.1f} ms -> {t_loop / t_ref:.2f}x")


GPU_DTYPES = [(torch.bfloat16, "tf32", 2.0), (torch.float16, "tf32", 2.0), (torch.float32, "tf32", 1.0),
              (torch.float32, "ieee", None)]


def _gpu_inputs(dtype, rank=None):
    g = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda *s, scale=1.0: (torch.randn(*s, device="cuda", generator=g) * scale).to(dtype)  # noqa: E731
    x, w = mk(B, L, D_IN), mk(D_OUT, D_IN)
    shift = (mk(B, D_OUT, rank, scale=0.1), mk(B, D_IN, rank, scale=0.1)) if rank else mk(B, D_OUT, D_IN, scale=0.01)
    return x, w, shift


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,precision,target", GPU_DTYPES, ids=[f"{d}-{p}".replace("torch.", "")
                                                                    for d, p, _ in GPU_DTYPES])
@torch.no_grad()
def test_triton_vs_composite_gpu(dtype, precision, target, gpu_result, gpu_ceilings):
    """Forward against torch's composite (x W^T + bmm(x, dW^T)); floor: every byte read once."""
    import triton.testing

    x, w, shift = _gpu_inputs(dtype)
    composite = lambda: x @ w.t() + torch.bmm(x, shift.transpose(1, 2))  # noqa: E731
    fused = lambda: weight_shift_linear(x, w, shift, backend="triton", precision=precision)  # noqa: E731
    want = torch.matmul(x.double(), w.double().t()) + torch.bmm(x.double(), shift.double().transpose(1, 2))
    tol = precision if dtype == torch.float32 else dtype
    if dtype == torch.float32 and precision == "ieee":
        tol = torch.float32
    err_fused = assert_rel_close("triton", want, fused(), tol)
    err_composite = assert_rel_close("composite", want, composite(), "tf32" if dtype == torch.float32 else dtype)
    t_c = triton.testing.do_bench(composite, return_mode="median")
    t_f = triton.testing.do_bench(fused, return_mode="median")
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fused()
    extra = torch.cuda.max_memory_allocated() - base
    size = x.element_size()
    moved = size * (x.numel() + w.numel() + shift.numel() + B * L * D_OUT)
    name = str(dtype).split(".")[-1] + (f" {precision}" if dtype == torch.float32 else "")
    gpu_result(f"weight shift fwd {name} B{B} {D_OUT}x{D_IN} L{L}", t_f, "composite", t_c, target=target,
               floor_ms=moved / gpu_ceilings["bytes_per_ms"],
               note=f"rel err vs float64 {err_fused:.1e} (composite {err_composite:.1e}); allocated "
                    f"{extra / 2**20:.1f} MiB (output {B * L * D_OUT * size / 2**20:.1f} MiB)")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_fwd_bwd_vs_composite_gpu(gpu_result):
    """Forward and backward to x, W and dW, bf16, against the composite's autograd."""
    import triton.testing

    x, w, shift = (t.requires_grad_() for t in _gpu_inputs(torch.bfloat16))
    dy = torch.randn(B, L, D_OUT, device="cuda", dtype=torch.bfloat16)

    def run(fn):
        return lambda: torch.autograd.grad(fn(), (x, w, shift), dy)

    composite = run(lambda: x @ w.t() + torch.bmm(x, shift.transpose(1, 2)))
    fused = run(lambda: weight_shift_linear(x, w, shift, backend="triton"))
    x64, w64, s64 = (t.detach().double().requires_grad_() for t in (x, w, shift))
    want = torch.autograd.grad(x64 @ w64.t() + torch.bmm(x64, s64.transpose(1, 2)), (x64, w64, s64), dy.double())
    for name, a, b in zip(("dx", "dW", "d(dW)"), want, fused()):
        assert_rel_close(name, a, b, torch.bfloat16)
    t_c = triton.testing.do_bench(composite, return_mode="median")
    t_f = triton.testing.do_bench(fused, return_mode="median")
    gpu_result(f"weight shift fwd+bwd bf16 B{B} {D_OUT}x{D_IN} L{L}", t_f, "composite", t_c, target=1.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_low_rank_vs_full_rank_composite_gpu(gpu_result):
    """Rank-8 shifts through the fused kernel against the full-rank composite (what a full shift costs)."""
    import triton.testing

    x, w, (u, v) = _gpu_inputs(torch.bfloat16, rank=8)
    full = (u.double() @ v.double().transpose(1, 2)).to(torch.bfloat16)
    composite = lambda: x @ w.t() + torch.bmm(x, full.transpose(1, 2))  # noqa: E731
    fused = lambda: weight_shift_linear(x, w, (u, v), backend="triton")  # noqa: E731
    want = x.double() @ w.double().t() + torch.bmm(torch.bmm(x.double(), v.double()), u.double().transpose(1, 2))
    err = assert_rel_close("low rank", want, fused(), torch.bfloat16)
    t_c = triton.testing.do_bench(composite, return_mode="median")
    t_f = triton.testing.do_bench(fused, return_mode="median")
    gpu_result(f"weight shift rank-8 fwd bf16 B{B} {D_OUT}x{D_IN} L{L}", t_f, "full-rank composite", t_c, target=3.0,
               note=f"rel err vs float64 {err:.1e}")
