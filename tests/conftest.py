"""Test set-up: tests follow the device. Every device-aware test takes the ``device`` fixture (cpu,
and cuda where a GPU exists). Triton kernels run on CUDA tensors where a GPU exists and through
the interpreter on CPU tensors where none does: ``TRITON_INTERPRET`` must be set before the
kernel modules are imported, so it is set here, before reactfast is imported. Every kernel output
is poisoned (NaN) before the kernel writes it."""

import os

# cuBLAS reads its workspace setting when its handle is made: set before any CUDA work, so that
# deterministic training (TrainConfig(deterministic=True)) can run on a GPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # On a GPU each kernel launches with its first candidate configuration: autotuning compiles
    # every candidate for every new shape class (a minute or more per test on an H100 machine);
    # tests/ops/test_autotune_candidates.py checks every candidate and the autotuned launch.
    os.environ.setdefault("REACTFAST_AUTOTUNE", "0")

import pytest  # noqa: E402

from reactfast import _backend  # noqa: E402

DEVICES = ["cpu", "cuda"] if HAS_CUDA else ["cpu"]
# Where the Triton kernels run in this session: CUDA tensors, or the interpreter's CPU tensors.
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"


def pytest_terminal_summary(terminalreporter):
    """Where the Triton kernels cannot run in this session, why, once at the end (every test that
    forces the Triton backend fails with the same reason)."""
    ok, reason = _backend.triton_status(TRITON_DEVICE)
    if not ok:
        terminalreporter.section("reactfast Triton kernels")
        terminalreporter.write_line(f"the Triton kernels cannot run on {TRITON_DEVICE} here: {reason}")


def run_each_cpu_build(script, args=()):
    """Run the Python file ``script`` once per CPU lane build this machine can run, each in a process
    of its own (REACTFAST_CPU_ISA caps the pick): the machine's own build, AVX2 apart only where the
    machine's is wider, and baseline x86-64. ``{cap}`` in ``args`` becomes the cap ("" for the
    machine's own). Returns each run's stdout; a failing run fails the test with its stderr."""
    import subprocess
    import sys

    from reactfast import _C

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = []
    for cap in ("",) + (("x86-64-v3",) if _C.cpu_isa() == "x86-64-v4" else ()) + ("x86-64",):
        env = {key: value for key, value in os.environ.items() if key != "REACTFAST_CPU_ISA"}
        if cap:
            env["REACTFAST_CPU_ISA"] = cap
        done = subprocess.run([sys.executable, str(script)] + [a.format(cap=cap) for a in args], env=env,
                              capture_output=True, text=True, cwd=root)
        assert done.returncode == 0, f"REACTFAST_CPU_ISA={cap!r}:\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    return outputs


def devices():
    return list(DEVICES)


def usable_backends(op_implemented, device, op=None):
    """The backends of an op that can run on ``device`` here."""
    device_type = torch.device(device).type
    return [b for b in op_implemented if _backend.backend_status(b, device_type, op)[0]]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch):
    monkeypatch.delenv("REACTFAST_BACKEND", raising=False)


@pytest.fixture(autouse=True)
def _poisoned_outputs():
    previous = _backend.poison_outputs(True)
    yield
    _backend.poison_outputs(previous)
