"""Process facts under torchrun that the ``reactfast`` program needs before and after its command,
kept free of torch so that reading them costs no import."""

from __future__ import annotations

import atexit
import os
import sys

__all__ = ["exit_distributed_process", "launched_world_size"]


def exit_distributed_process(code: int) -> None:
    """End a torchrun process whose work is done: the exit handlers run (the DDP wrappers are dropped
    and the process group destroyed while the interpreter is whole), the standard streams are flushed,
    and the process exits with ``code`` without finalizing the interpreter. Finalization is where
    torch's non-Python threads (gloo's, the autograd engine's) can still call into the dying
    interpreter and abort the process, "terminate called without an active exception"
    (pytorch/pytorch#190489): 3 of about 275 runs of the two-process DDP test on a 2-core VM ended
    so, rank 1 with SIGABRT after the run had finished."""
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 255:
        raise ValueError(f"code must be an exit status, an int in [0, 255], got {code!r}")
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)


def launched_world_size() -> int:
    """The number of processes torchrun launched (its WORLD_SIZE; 1 outside torchrun)."""
    value = os.environ.get("WORLD_SIZE", "").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"WORLD_SIZE must be a process count >= 1 (torchrun sets it), got {value!r}")
    return int(value)
