"""reactfast._malloc: the ``reactfast`` program keeps freed heap memory, so a training step's
allocations stop faulting their pages in again every step."""

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")

# A step's pattern: 160 MB in blocks of 1 MB allocated from the heap, touched and freed. glibc's
# dynamic thresholds depend on the process's history, so the script first fixes the mmap threshold
# at 32 MiB and the trim threshold at glibc's default (128 KiB): every freed step is then given back to
# the OS and the next step faults all its pages in again. It prints the faults of such a step, then
# those of a step after retain_freed_memory() and a warm-up step.
SCRIPT = """
import ctypes, resource
from reactfast import _malloc
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
assert libc.mallopt(_malloc.M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(_malloc.M_TRIM_THRESHOLD, 128 << 10) == 1
def step():
    blocks = [libc.malloc(1 << 20) for _ in range(160)]
    for b in blocks:
        ctypes.memset(b, 1, 1 << 20)
    for b in blocks:
        libc.free(b)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
step()
print(faults(), _malloc.retain_freed_memory())
step()
print(faults())
"""


def _run(choice):
    env = {**os.environ, "REACTFAST_MALLOC": choice}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    before, applied, after = proc.stdout.split()
    return int(before), applied == "True", int(after)


@glibc
def test_retained_memory_is_reused_without_page_faults():
    # 160 MB is 40,960 pages of 4 KiB (fewer faults where the kernel maps huge pages).
    before, applied, after = _run("retain")
    assert applied
    assert before > 10_000, before
    assert after < 1_000, after
    before, applied, after = _run("default")
    assert not applied
    assert min(before, after) > 10_000, (before, after)


def test_a_bad_setting_is_named(monkeypatch):
    from reactfast import _malloc

    monkeypatch.setenv("REACTFAST_MALLOC", "jemalloc")
    with pytest.raises(ValueError, match="REACTFAST_MALLOC"):
        _malloc.retain_freed_memory()


def test_the_program_reports_a_bad_setting_on_one_line():
    env = {**os.environ, "REACTFAST_MALLOC": "bogus"}
    proc = subprocess.run([sys.executable, "-m", "reactfast.cli", "env"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["reactfast: error: REACTFAST_MALLOC must be 'retain' or 'default', "
                                                "got 'bogus'"]
