"""Benchmarks: `pytest bench` (pytest-benchmark). Each benchmark checks its result against the
reference before timing, and reports ratios against a baseline measured in the same run.

GPU benchmarks (marked ``gpu``) record each figure with ``gpu_result``: the time, the baseline's
time and the ratio, the target ratio, and where known the floor (bytes over bandwidth or FLOPs
over rate) and the fraction of it reached. With ``REACTFAST_BENCH_JSON`` set, every record is
appended there as a JSON line (``make test-gpu`` prints them as a table)."""

import json
import os
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from reactfast import _malloc  # noqa: E402

# The benchmarks run with the allocator setting of the ``reactfast`` program: freed heap memory kept
# for reuse (bench_train.py measures it against glibc's defaults, in processes of their own).
_malloc.retain_freed_memory()

_REPORT = []


def report(line: str) -> None:
    """Add a line to the summary printed at the end of the run."""
    _REPORT.append(line)


@pytest.fixture
def bench_report():
    return report


def interleaved_best(fns: dict, rounds: int = 5) -> dict:
    """Minimum wall time of each callable over ``rounds`` rounds, one call of each per round (after
    one warm-up call each), so a slow or fast spell of a shared machine touches every side."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@pytest.fixture
def best_times():
    return interleaved_best


def record_gpu(name: str, ms: float, baseline: str, baseline_ms: float, target: float = None,
               floor_ms: float = None, note: str = "") -> dict:
    """Record one GPU figure: ``name`` took ``ms`` against ``baseline`` at ``baseline_ms``."""
    import torch

    ratio = baseline_ms / ms
    row = {"bench": name, "device": torch.cuda.get_device_name(), "ms": ms, "baseline": baseline,
           "baseline_ms": baseline_ms, "ratio": ratio, "target": target,
           "met": None if target is None else bool(ratio >= target), "floor_ms": floor_ms,
           "floor_fraction": None if floor_ms is None else floor_ms / ms, "note": note}
    line = (f"{name} on {row['device']}: {ms:.4g} ms vs {baseline} {baseline_ms:.4g} ms -> {ratio:.2f}x"
            + (f" (target {target}x: {'met' if row['met'] else 'MISSED'})" if target is not None else "")
            + (f"; floor {floor_ms:.4g} ms, {row['floor_fraction']:.0%} of it" if floor_ms is not None else "")
            + (f"; {note}" if note else ""))
    report(line)
    path = os.environ.get("REACTFAST_BENCH_JSON")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


@pytest.fixture
def gpu_result():
    return record_gpu


@pytest.fixture(scope="session")
def gpu_ceilings():
    """This GPU's two ceilings, measured once (METHOD.md): device-to-device copy bandwidth (bytes read
    plus written per ms) and the bf16 matrix rate (FLOP per ms) on random data."""
    import torch
    import triton.testing

    src = torch.randn(512 * 2 ** 20 // 4, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = triton.testing.do_bench(lambda: a @ b, return_mode="median")
    ceilings = {"bytes_per_ms": 2 * src.numel() * 4 / copy_ms, "bf16_flop_per_ms": 2 * 8192 ** 3 / mm_ms}
    report(f"ceilings on {torch.cuda.get_device_name()}: copy {ceilings['bytes_per_ms'] / 1e9:.2f} TB/s, "
           f"bf16 matmul {ceilings['bf16_flop_per_ms'] / 1e9:.0f} TFLOP/s")
    return ceilings


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("reactfast benchmark figures")
        for line in _REPORT:
            terminalreporter.write_line(line)
