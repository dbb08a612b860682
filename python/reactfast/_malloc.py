"""Keep freed heap memory in the process (glibc malloc), for CPU training's allocation pattern.

A training step allocates and frees the same few hundred MB of activations and gradients every
step. glibc returns the freed top of the heap to the OS once it exceeds its trim threshold (a few
MB by default) and serves mid-sized blocks with fresh ``mmap``s until its threshold adapts, so the
next step faults the same pages in again: about 2,800 page faults and 12-15 ms of system time a
step in the demo's ReactFace training on a 2-core VM (about 110 and 3 ms with this setting;
``bench/bench_train.py``). ``retain_freed_memory`` sets the trim
threshold to 1 GiB (up to that much freed memory is kept for reuse), a top pad of 64 MiB and a
fixed mmap threshold of 32 MiB (the most glibc's own dynamic threshold reaches on 64-bit: larger
blocks keep mappings of their own and go back to the OS when freed). Results are unchanged; the
process keeps its peak heap (up to 1 GiB of it free) instead of returning it. The ``reactfast``
command calls it at start; library code never does (the setting is process-wide).
``REACTFAST_MALLOC=default`` leaves glibc's settings alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

SETTINGS = ((M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20), (M_MMAP_THRESHOLD, 32 << 20))


def retain_freed_memory() -> bool:
    """Apply the settings above; True when they took effect (Linux with glibc and no opt-out)."""
    choice = os.environ.get("REACTFAST_MALLOC", "retain").strip().lower()
    if choice not in ("retain", "default"):
        raise ValueError(f"REACTFAST_MALLOC must be 'retain' or 'default', got {choice!r}")
    if choice == "default" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
