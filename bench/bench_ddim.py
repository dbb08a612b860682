"""DDIM: the fused step against the eager reference step, and whole-loop sampling
(10 samples x 15 windows = 150 trajectories, 50 frames, 25 dims, 50 steps).

On a CPU the step has no fused kernel (Triton runs there only through the interpreter), so the
CPU benchmark reports the sampling loop and the share of time the step takes; the step and
CUDA-graph targets are measured on a GPU."""

import time

import pytest
import torch

from reactfast.diffusion import DDIMScheduler, sample
from reactfast.ops.ddim import ddim_step
from reactfast.reference.ddim import ddim_step as ddim_ref
from reactfast.testing import assert_rel_close


class SmallDenoiser(torch.nn.Module):
    def __init__(self, dims=25, hidden=128):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dims * 2 + 1, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, dims))

    def forward(self, x, t, cond):
        tt = (t.float() / 1000).reshape(-1, 1, 1).expand(x.shape[0], x.shape[1], 1)
        return self.net(torch.cat([x, cond, tt], -1))


def test_sampling_loop_cpu(benchmark, bench_report):
    torch.manual_seed(0)
    den = SmallDenoiser().eval()
    cond = torch.randn(150, 50, 25)
    sched = DDIMScheduler(1000, "cosine", prediction="x0")
    run = lambda: sample(den, (150, 50, 25), cond, sched, steps=50, guidance_scale=7.5,  # noqa: E731
                         generator=torch.Generator().manual_seed(0))
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert torch.isfinite(out).all()
    # Share of the step in the loop: time 50 reference steps on the same batch.
    x, o = torch.randn(150, 50, 25), torch.randn(150, 50, 25)
    coef = sched.step_coefficients(torch.full((150,), 500), torch.full((150,), 480))
    start = time.perf_counter()
    for _ in range(50):
        ddim_ref(x, o, coef, "x0", o, 7.5, None, 1.0)
    step_time = time.perf_counter() - start
    loop = benchmark.stats.stats.min
    bench_report(f"DDIM sampling (150 x 50 x 25, 50 steps, guidance) on CPU: {loop * 1e3:.1f} ms per batch, "
                 f"{150 / loop:.0f} windows/s; the eager step is {step_time / loop:.1%} of the loop")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_step_gpu(gpu_result, gpu_ceilings):
    import triton.testing

    B, N, D = 150, 50, 512
    x, c, u = (torch.randn(B, N, D, device="cuda") for _ in range(3))
    sched = DDIMScheduler(1000, "cosine", prediction="x0")
    coef = sched.step_coefficients(torch.full((B,), 500, device="cuda"), torch.full((B,), 480, device="cuda"))
    assert_rel_close("step", ddim_ref(x.double(), c.double(), coef, "x0", u.double(), 7.5, None, 1.0)[0],
                     ddim_step(x, c, coef, "x0", u, 7.5, None, 1.0, backend="triton")[0], torch.float32)
    fused = triton.testing.do_bench(lambda: ddim_step(x, c, coef, "x0", u, 7.5, None, 1.0, backend="triton"),
                                    return_mode="median")
    eager = triton.testing.do_bench(lambda: ddim_ref(x, c, coef, "x0", u, 7.5, None, 1.0), return_mode="median")
    # Floor: x_t, both model outputs read once, x_prev and x0 written once (float32).
    gpu_result(f"DDIM fused step {B}x{N}x{D} fp32", fused, "eager step", eager, target=3.0,
               floor_ms=5 * 4 * x.numel() / gpu_ceilings["bytes_per_ms"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_loop(gpu_result):
    """The guided 50-step loop replayed from a captured graph against the eager loop (the capture,
    once per denoiser and shape, timed apart)."""
    import time

    import triton.testing

    from reactfast import diffusion

    den = SmallDenoiser().cuda().eval()
    cond = torch.randn(150, 50, 25, device="cuda")
    sched = DDIMScheduler(1000, "cosine", prediction="x0")
    kw = dict(scheduler=sched, steps=50, guidance_scale=7.5, device="cuda")
    g = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    diffusion.clear_graphs()
    eager_out = sample(den, (150, 50, 25), cond, generator=g(), **kw)
    torch.cuda.synchronize()
    start = time.perf_counter()
    graph_out = sample(den, (150, 50, 25), cond, generator=g(), cuda_graph=True, **kw)
    torch.cuda.synchronize()
    capture_ms = (time.perf_counter() - start) * 1e3
    assert_rel_close("graph", eager_out.double(), graph_out, torch.float32)
    eager = triton.testing.do_bench(lambda: sample(den, (150, 50, 25), cond, generator=g(), **kw),
                                    return_mode="median")
    graph = triton.testing.do_bench(lambda: sample(den, (150, 50, 25), cond, generator=g(), cuda_graph=True, **kw),
                                    return_mode="median")
    gpu_result("DDIM 50-step guided loop, CUDA graph replay", graph, "eager loop", eager, target=2.0,
               note=f"first call (warm-up + capture + replay) {capture_ms:.1f} ms")
    diffusion.clear_graphs()
