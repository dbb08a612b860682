"""Benchmarks: `pytest bench` (pytest-benchmark). Each benchmark checks its result against the
reference before timing, and reports ratios against a baseline measured in the same run."""

import os
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

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


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("reactfast benchmark figures")
        for line in _REPORT:
            terminalreporter.write_line(line)
