"""Benchmarks: `pytest bench` (pytest-benchmark). Each benchmark checks its result against the
reference before timing, and reports ratios against a baseline measured in the same run."""

import os

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


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("reactfast benchmark figures")
        for line in _REPORT:
            terminalreporter.write_line(line)
