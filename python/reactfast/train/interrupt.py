"""Ctrl-C during training: the step under way finishes, the run is checkpointed, then the
interrupt goes on (a second Ctrl-C stops at once). Without this an interrupt lands anywhere in a
step (possibly inside the optimizer's update) and every step since the last checkpoint is lost."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def deferred_interrupt(enabled: bool = True) -> Iterator[Callable[[], bool]]:
    """Within the block a first SIGINT only sets a flag (the yielded callable answers whether one
    came); a second raises KeyboardInterrupt at once. Python's handler is back after the block.

    Deferral needs Python's own SIGINT handler in place on the main thread; elsewhere (another
    thread, a handler the application installed, SIGINT ignored, or ``enabled`` False: for
    example a DDP process, whose ranks would stop at different steps) the interrupt acts as usual
    and the callable answers False."""
    if (not enabled or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield lambda: False
        return
    hits = []

    def handler(signum, frame):
        if hits:
            raise KeyboardInterrupt
        hits.append(signum)
        print("\n[reactfast] interrupted: stopping after this step and saving (Ctrl-C again stops now)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)
