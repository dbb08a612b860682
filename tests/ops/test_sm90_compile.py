"""The Triton kernels compile for Hopper (sm_90) through Triton's real pipeline, with no GPU: the
interpreter tests check what the kernels compute, this checks that the GPU compiler accepts them
(every kernel family, fp32 both ways, bf16, fp16 with a padded head dim, the decode split), with
no local-memory spills and shared memory within the chip's."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")


def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "reactfast.kernels.sm90", "--quick"], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "all kernels compiled for sm_90" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ok")]
    assert any(line.split()[1:3] == ["attention", "fwd"] and "split" in line for line in lines), proc.stdout
    for family in ("attention dK/dV", "attention dQ", "ddim", "weight_shift", "frame_diff", "combine", "delta",
                   "ccc max", "tlcc"):
        assert any(family in line for line in lines), family
