"""A live status line for long phases (training, calibration, compression, each eval phase).

On a terminal it rewrites one line on stderr at most a few times a second; when stderr is not a
terminal (CI, a log file, torchrun's non-zero ranks) it prints nothing, because the run log
already carries the same figures at each logged step.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, enabled: bool | None = None, stream=None, min_interval: float = 0.25) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.min_interval = min_interval
        self._last = 0.0
        self._width = 0

    def show(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def done(self) -> None:
        """End the live line so normal output continues below it."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def training_line(step: int, iterations: int, loss: float, tokens_per_second: float, elapsed: float, cap: float) -> str:
    remaining = f" {max(cap - elapsed, 0.0):5.0f}s left" if cap > 0 else ""
    return (
        f"train step {step}/{iterations} loss {loss:.4f} {tokens_per_second:,.0f} tok/s "
        f"{elapsed:6.1f}s elapsed{remaining}"
    )
