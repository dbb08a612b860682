"""The table ``make test-gpu`` ends with (tools/gpu_report.py): counts from pytest's JUnit report,
runs stopped at their time limit marked, a killed run's counts read from its progress lines, and
the script's refusal where there is no GPU."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_report  # noqa: E402

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="1" tests="4"><testcase classname="tests.ops.test_a" name="test_x[cuda]" /><testcase
classname="tests.ops.test_a" name="test_y[cuda]"><failure message="boom" /></testcase><testcase
classname="tests.ops.test_a" name="test_z" /><testcase classname="tests.ops.test_a" name="test_s"><skipped
/></testcase></testsuite></testsuites>"""


def _write(folder, name, text):
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


def test_counts_failures_and_a_stopped_run(tmp_path, capsys):
    _write(tmp_path, "tests.xml", JUNIT)
    _write(tmp_path, "tests.limit", "300\n")
    status = gpu_report.main(str(tmp_path))
    out = capsys.readouterr().out
    assert status == 1
    assert "2 passed, 1 failed, 1 skipped (STOPPED at its 300 s limit" in out
    assert "FAILED tests.ops.test_a::test_y[cuda]" in out
    assert "GPU benchmarks   no result" in out


def test_killed_run_counted_from_its_progress_lines(tmp_path, capsys):
    _write(tmp_path, "tests.log", "....F.s.x                                  [  9%]\n"
                                  "..E.....                                   [ 17%]\n"
                                  "tests/ops/test_a.py Fatal Python error: Aborted\n")
    _write(tmp_path, "tests.limit", "300")
    assert gpu_report.progress_counts(os.path.join(tmp_path, "tests.log")) == {
        "passed": 13, "failed": 2, "skipped": 2, "percent": 17}
    assert gpu_report.main(str(tmp_path)) == 1
    assert "killed at 17%: 13 passed, 2 failed, 2 skipped so far" in capsys.readouterr().out


def test_clean_run_and_benchmark_rows(tmp_path, capsys):
    _write(tmp_path, "tests.xml", JUNIT.replace('failures="1"', 'failures="0"').replace(
        '<failure message="boom" />', ""))
    _write(tmp_path, "bench.xml", JUNIT.replace('failures="1"', 'failures="0"').replace(
        '<failure message="boom" />', ""))
    _write(tmp_path, "bench.jsonl", '{"bench": "attention fwd T750", "ms": 0.1, "baseline": "flex", '
                                    '"baseline_ms": 0.2, "ratio": 2.0, "target": 1.5, "met": true, '
                                    '"floor_fraction": 0.5, "device": "NVIDIA H100"}\n')
    assert gpu_report.main(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "3 passed, 0 failed, 1 skipped\n" in out and "1.50x ok" in out and "device: NVIDIA H100" in out


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_make_test_gpu_refuses_without_a_gpu(tmp_path):
    done = subprocess.run(["bash", os.path.join(ROOT, "tools", "test_gpu.sh")], capture_output=True, text=True,
                          env={**os.environ, "REPORT": str(tmp_path / "report")}, cwd=ROOT)
    assert done.returncode == 2 and "finds no GPU" in done.stderr
