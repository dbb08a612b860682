"""Online ReactFace on CPU with the authors' defaults (D = 128, 8 heads, W = 8, p = 8):
step latency over a long conversation, against re-encoding the whole prefix every step (the
authors' evaluation loop), and the batched runner's throughput for 1, 8 and 32 streams."""

import time

import numpy as np
import pytest
import torch

from reactfast.models import ReactFace, ReactFaceConfig
from reactfast.online import ReactionStream, StreamRunner

FPS = 25
STEPS = 10_000


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ReactFace(ReactFaceConfig(speaker_dim=58, audio_dim=768)).eval()


def _window(model, g):
    W, k = model.config.window, model.config.audio_per_frame
    return torch.randn(W, 58, generator=g), torch.randn(k * W, 768, generator=g)


def test_step_latency_flat(model, bench_report, benchmark):
    g = torch.Generator().manual_seed(0)
    stream = ReactionStream(model, num_samples=1, generator=torch.Generator().manual_seed(1))
    inputs = [_window(model, g) for _ in range(64)]
    times = []
    for i in range(STEPS):
        sp, au = inputs[i % 64]
        start = time.perf_counter()
        stream.push(sp, au)
        times.append(time.perf_counter() - start)
    times = np.array(times) * 1e3
    first, last = times[10:1000], times[-990:]
    budget = model.config.window / FPS * 1e3
    benchmark.pedantic(lambda: stream.push(*inputs[0]), rounds=50, iterations=1)
    benchmark.extra_info.update(p50_first_ms=float(np.median(first)), p99_first_ms=float(np.percentile(first, 99)),
                                p50_last_ms=float(np.median(last)), p99_last_ms=float(np.percentile(last, 99)))
    bench_report(f"online step (batch 1, W=8): steps 10-1000 p50 {np.median(first):.2f} ms p99 "
                 f"{np.percentile(first, 99):.2f} ms; steps {STEPS - 990}-{STEPS} p50 {np.median(last):.2f} ms p99 "
                 f"{np.percentile(last, 99):.2f} ms; real-time budget {budget:.0f} ms -> "
                 f"{budget / np.median(last):.0f}x real time")
    assert np.median(last) < 1.5 * np.median(first) + 0.5  # flat: no growth with conversation length


def test_against_reencoding_prefix(model, bench_report):
    T, W = 750, model.config.window
    g = torch.Generator().manual_seed(2)
    speaker = torch.randn(1, T, 58, generator=g)
    audio = torch.randn(1, 2 * T, 768, generator=g)
    start = time.perf_counter()
    streamed = model.generate(speaker, audio, 1, torch.Generator().manual_seed(3))["3dmm"]
    stream_time = time.perf_counter() - start
    # Re-encoding: every step reruns the model over the whole prefix and keeps the last window.
    start = time.perf_counter()
    last = None
    with torch.no_grad():
        for end in range(W, T + 1, W):
            last = model.generate(speaker[:, :end], audio[:, :2 * end], 1, torch.Generator().manual_seed(3))["3dmm"]
    reencode_time = time.perf_counter() - start
    assert torch.allclose(last[..., -W:, :], streamed[..., end - W:end, :], atol=1e-5)
    bench_report(f"T={T}: streaming {stream_time:.2f} s, re-encoding the prefix every step {reencode_time:.1f} s "
                 f"-> {reencode_time / stream_time:.0f}x")
    assert reencode_time / stream_time >= 10


@pytest.mark.parametrize("streams", [1, 8, 32])
def test_runner_throughput(model, streams, bench_report):
    g = torch.Generator().manual_seed(4)
    runner = StreamRunner(model)
    group = [ReactionStream(model, 1, torch.Generator().manual_seed(i)) for i in range(streams)]
    inputs = [_window(model, g) for _ in range(8)]
    steps = 40
    start = time.perf_counter()
    for i in range(steps):
        for s in group:
            s.feed(*inputs[i % 8])
        runner.step(group)
    elapsed = time.perf_counter() - start
    fps = steps * model.config.window * streams / elapsed
    bench_report(f"StreamRunner, {streams} streams: {fps:.0f} frames/s ({fps / FPS:.0f} real-time streams' worth)")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("streams", [1, 64, 512, 1024])
def test_runner_cuda_graph_gpu(streams, gpu_result):
    """The authors' ReactFace on the GPU, one sample per stream: the batched step eager and on a
    CUDA graph (captured on the first step of the layout, timed apart), per-step latency and
    frames/s. Targets: batch-1 step <= 2 ms p50; >= 1,000 real-time streams at 25 fps."""
    torch.manual_seed(0)
    model = ReactFace(ReactFaceConfig(speaker_dim=58, audio_dim=768)).cuda().eval()
    W, k = model.config.window, model.config.audio_per_frame
    g = torch.Generator(device="cuda").manual_seed(4)
    inputs = [(torch.randn(W, 58, generator=g, device="cuda"), torch.randn(k * W, 768, generator=g, device="cuda"))
              for _ in range(8)]
    times = {}
    for graph in (False, True):
        runner = StreamRunner(model, graph=graph)
        group = [ReactionStream(model, 1, torch.Generator(device="cuda").manual_seed(i)) for i in range(streams)]
        for i in range(3):  # warm-up (autotuning; the capture)
            for s in group:
                s.feed(*inputs[i % 8])
            runner.step(group)
        torch.cuda.synchronize()
        steps = []
        for i in range(30):
            for s in group:
                s.feed(*inputs[i % 8])
            torch.cuda.synchronize()
            start = time.perf_counter()
            runner.step(group)
            torch.cuda.synchronize()
            steps.append((time.perf_counter() - start) * 1e3)
        times[graph] = float(np.median(steps))
    fps = streams * W / (times[True] / 1e3)
    note = (f"{fps:.0f} frames/s on the graph = {fps / FPS:.0f} real-time streams' worth; "
            f"eager {streams * W / (times[False] / 1e3):.0f} frames/s")
    if streams == 1:
        note += "; target: batch-1 step <= 2 ms p50"
    gpu_result(f"StreamRunner step, {streams} streams (W={W}), CUDA graph", times[True], "eager step",
               times[False], note=note)
