"""The whole REACT metric suite at test-set scale (REACTFAST_BENCH_N speakers, default 806,
S = 10, T = 750, about 50 appropriate reactions per speaker). The per-op figures are in
bench_dtw.py, bench_ccc.py and bench_tlcc.py."""

import os
import time
import warnings

import numpy as np
import pytest

from reactfast import _backend, metrics
from reactfast.data import SyntheticDyads

from . import _official
from ._metric_data import S, T, challenge_scale, model_like

THREADS = _backend.native().openmp_max_threads()


def test_full_suite(benchmark, bench_report):
    pred, gt, speaker, appropriate = challenge_scale()
    scores = benchmark.pedantic(lambda: metrics.evaluate(pred, gt, speaker, appropriate), rounds=1, iterations=1)
    seconds = benchmark.stats.stats.min
    N = pred.shape[0]
    k = appropriate.sum(1).mean()
    benchmark.extra_info.update(N=N, S=S, T=T, appropriate_per_speaker=float(k), seconds=seconds, **scores)
    bench_report(f"whole suite N={N}, S={S}, T={T}, {k:.1f} appropriate/speaker: {seconds:.1f} s on "
                 f"{THREADS} threads; " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items()))
    assert all(np.isfinite(v) for v in scores.values())


OFFICIAL_SPEAKERS = int(os.environ.get("REACTFAST_BENCH_OFFICIAL_SPEAKERS", "48"))


@pytest.mark.skipif(_official.tslearn_missing(),
                    reason="the official DTW primitive needs tslearn (pip install tslearn)")
def test_full_suite_vs_official_code(bench_report):
    """The whole suite against the official code's structure (pool over speakers, per-pair tslearn
    DTW, per-pair CCC, per-lag TLCC) on the same machine, same processes as threads, in one run; a
    48-speaker case with about 8 appropriate reactions per speaker."""
    synthetic = SyntheticDyads(sessions=OFFICIAL_SPEAKERS // 2, prototypes=3, seed=1)
    ds = synthetic.dataset(modalities=("emotion",))
    gt = ds.stack("listener", "emotion").numpy()
    speaker = ds.stack("speaker", "emotion").numpy()
    appropriate = ds.appropriate
    pred = model_like(gt, appropriate, seed=1)
    N, k = pred.shape[0], appropriate.sum(1).mean()
    start = time.perf_counter()
    with warnings.catch_warnings():  # perturbed real reactions leave the emotion ranges a little
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = metrics.evaluate(pred, gt, speaker, appropriate)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    official = _official.suite(pred, gt, speaker, appropriate, processes=THREADS)
    official_s = time.perf_counter() - start
    for name, value in official.items():
        if name == "FRSyn":
            assert ours[name] == value, (name, ours[name], value)
        else:
            assert abs(ours[name] - value) <= 1e-6 * max(1.0, abs(value)), (name, ours[name], value)
    bench_report(f"whole suite vs the official code, N={N}, S={S}, T={T}, {k:.1f} appropriate/speaker, "
                 f"{THREADS} cores: {ours_s:.2f} s vs {official_s:.1f} s ({official_s / ours_s:.0f}x); every "
                 f"metric equal within 1e-6 relative, FRSyn exact")


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_full_suite_gpu(bench_report, gpu_result):
    """The whole suite on CUDA tensors at test scale (FRCorr through the Triton kernel, FRDist through
    the CUDA DTW) against the C++ backend on this machine's cores, each metric equal to the CPU's."""
    import torch

    pred, gt, speaker, appropriate = challenge_scale()
    start = time.perf_counter()
    cpu = metrics.evaluate(pred, gt, speaker, appropriate)
    cpu_s = time.perf_counter() - start
    tensors = [torch.from_numpy(a).cuda() for a in (pred, gt, speaker)]
    metrics.evaluate(*tensors, appropriate)                # the first run compiles the Triton kernels
    torch.cuda.synchronize()
    start = time.perf_counter()
    gpu = metrics.evaluate(*tensors, appropriate)
    torch.cuda.synchronize()
    gpu_s = time.perf_counter() - start
    for name, value in cpu.items():
        assert gpu[name] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, value, gpu[name])
    gpu_result(f"whole metric suite N={pred.shape[0]} S={S} T={T}", gpu_s * 1e3, f"C++ on {THREADS} threads",
               cpu_s * 1e3, target=30.0, note="target: <= 2 s and >= 30x the 16-core C++ backend")
    bench_report(f"whole suite on {torch.cuda.get_device_name()}: {gpu_s:.2f} s vs {cpu_s:.1f} s C++ on {THREADS} "
                 "threads")


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_frcorr_triton_vs_reference_gpu(gpu_result):
    """FRCorr's max over candidates at test scale: the Triton kernel against the gathering reference."""
    import torch
    import triton.testing

    from reactfast.metrics import candidates
    from reactfast.ops.ccc import ccc_max

    pred, gt, _, appropriate = challenge_scale()
    speakers = range(min(64, pred.shape[0]))
    cand = tuple(c.cuda() for c in candidates.from_appropriate(appropriate, S, speakers))
    queries = torch.from_numpy(pred[:len(speakers)].reshape(-1, T, pred.shape[-1])).cuda()
    targets = torch.from_numpy(gt).cuda()
    want = ccc_max(queries, targets, cand, backend="reference")
    got = ccc_max(queries, targets, cand, backend="triton")
    assert torch.allclose(got[0], want[0], rtol=1e-9, atol=1e-12) and torch.equal(got[1], want[1])
    t_k = triton.testing.do_bench(lambda: ccc_max(queries, targets, cand, backend="triton"), return_mode="median")
    t_r = triton.testing.do_bench(lambda: ccc_max(queries, targets, cand, backend="reference"), return_mode="median")
    pairs = cand[1].numel()
    moved = pairs * T * pred.shape[-1] * 4
    gpu_result(f"FRCorr max over candidates, {pairs} pairs T={T}", t_k, "reference (gathered pairs)", t_r,
               note=f"{t_k * 1e6 / pairs:.2f} ns/pair; {moved / t_k / 1e9:.2f} TB/s of candidate reads")


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_frdist_warp_kernel_vs_block_kernel_gpu(gpu_result, bench_report):
    """FRDist's min over candidates at test scale (a subset of speakers): the warp-wavefront kernel
    (with and without abandoning) against the one-block-per-(pair, group) kernel it replaces, each
    against the C++ backend's values; DP cells per second beside the time."""
    import torch
    import triton.testing

    from reactfast.metrics import candidates
    from reactfast.ops import dtw as dtw_op

    pred, gt, _, appropriate = challenge_scale()
    speakers = range(min(16, pred.shape[0]))
    cand_cpu = candidates.from_appropriate(appropriate, S, speakers)
    queries_cpu = torch.from_numpy(pred[:len(speakers)].reshape(-1, T, pred.shape[-1])).contiguous()
    targets_cpu = torch.from_numpy(gt).contiguous()
    want = dtw_op.weighted_dtw_min(queries_cpu, targets_cpu, cand_cpu, backend="cpp")
    queries, targets = queries_cpu.cuda(), targets_cpu.cuda()
    offset, index = (c.cuda() for c in cand_cpu)
    groups = dtw_op.check_groups(dtw_op.REACT_GROUPS, queries.shape[-1])

    def warp(abandon):
        return dtw_op.weighted_dtw_min_unchecked(queries, targets, offset, index, groups, abandon, "cuda")[:2]

    def blocks():
        return dtw_op._weighted_dtw_min_cuda_blocks(queries, targets, offset, index, groups)

    for name, fn in (("warp", lambda: warp(False)), ("warp+abandon", lambda: warp(True)), ("blocks", blocks)):
        got = fn()
        assert torch.allclose(got[0].cpu(), want[0], rtol=1e-6, atol=1e-9), name
        assert torch.equal(got[1].cpu(), want[1]), name
    times = {name: triton.testing.do_bench(fn, return_mode="median", rep=2000)
             for name, fn in (("warp", lambda: warp(False)), ("warp+abandon", lambda: warp(True)), ("blocks", blocks))}
    pairs = index.numel()
    cells = pairs * T * T
    for name in ("warp", "warp+abandon"):
        gpu_result(f"FRDist min over candidates ({name}), {pairs} pairs T={T}", times[name], "block kernel",
                   times["blocks"], note=f"{cells / times[name] / 1e6:.1f} G cells/s (3 groups a cell)")
    bench_report(f"FRDist on {torch.cuda.get_device_name()}: " +
                 ", ".join(f"{k} {v:.2f} ms" for k, v in times.items()) + f" for {pairs} pairs")
