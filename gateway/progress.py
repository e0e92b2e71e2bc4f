"""Progress of long-running commands: a bar on a terminal, plain lines in a log.

On a terminal the bar redraws one line (``\\r``); anywhere else (the journal, a pipe, CI) it prints a plain line at
every 10 % so a log shows that something is happening without being flooded.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """``update(done, total)`` as often as you like; ``finish()`` once."""

    def __init__(self, label: str, out: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.label = label
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._last_decile = -1
        self._last_draw = 0.0

    def update(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units."""
        fraction = min(1.0, done / total) if total > 0 else 1.0
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.1 and fraction < 1.0:
                return
            self._last_draw = now
            filled = int(fraction * WIDTH)
            bar = "#" * filled + "." * (WIDTH - filled)
            self.out.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}%")
            self.out.flush()
            return
        decile = int(fraction * 10)
        if decile > self._last_decile:
            self._last_decile = decile
            self.out.write(f"{self.label}: {decile * 10}% ({done} of {total})\n")
            self.out.flush()

    def finish(self, note: str = "") -> None:
        """End the bar (a newline on a terminal) and say how long it took."""
        took = time.monotonic() - self.started
        tail = f": {note}" if note else ""
        if self.tty:
            self.out.write("\n")
        self.out.write(f"{self.label}: done in {took:.1f} s{tail}\n")
        self.out.flush()
