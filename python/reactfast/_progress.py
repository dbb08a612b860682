"""Progress that works everywhere: a tqdm bar in a terminal, and plain periodic lines
(``[train reactface] step 200/2000 loss 0.1234 rec 0.0567 | 35.1 steps/s eta 51s``) when the output
is a file, a pipe or a batch scheduler's log."""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts ``total`` units from ``initial``; ``update(n, values)`` after each unit.

    Args:
        total: units in all (steps, batches, chunks).
        desc: the label of every line (``train reactface``).
        unit: what a unit is called in the lines.
        enabled: False prints nothing.
        every: in plain mode, a line every ``every`` units ...
        seconds: ... or once this many seconds have passed since the last line, whichever first.
        tty: force the bar (True) or plain lines (False); default: the bar when stderr is a terminal.
    """

    def __init__(self, total: int, desc: str, unit: str = "step", initial: int = 0, enabled: bool = True,
                 every: int = 10, seconds: float = 30.0, tty: Optional[bool] = None, stream=None):
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.enabled, self.every, self.seconds = enabled, max(1, every), seconds
        self.stream = stream or sys.stdout
        self.start = self.last = time.perf_counter()
        self.start_count = initial
        self.bar = None
        if enabled and (sys.stderr.isatty() if tty is None else tty):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=1.0)

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return (self.done - self.start_count) / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, values: Optional[Dict[str, float]] = None) -> None:
        self.done += n
        if not self.enabled:
            return
        shown = {k: v for k, v in (values or {}).items() if isinstance(v, (int, float)) and k != "step"}
        if self.bar is not None:
            self.bar.update(n)
            if shown:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in list(shown.items())[:4]}, refresh=False)
            return
        now = time.perf_counter()
        if self.done % self.every and now - self.last < self.seconds and self.done < self.total:
            return
        self.last = now
        rate = self.rate()
        eta = _eta((self.total - self.done) / rate) if rate > 0 else "?"
        parts = " ".join(f"{k} {v:.4g}" for k, v in shown.items())
        print(f"[{self.desc}] {self.unit} {self.done}/{self.total} {parts} | {rate:.3g} {self.unit}s/s eta {eta}",
              file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line of information (an estimate of the work ahead) before the counting starts."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"[{self.desc}] {text}")
        else:
            print(f"[{self.desc}] {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
