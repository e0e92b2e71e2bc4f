"""The continuity clock: real time in the daemon, a hand-moved clock in tests (no sleeps).

The engine asks the clock for ``now()`` and waits with ``wait_until(moment, wake)``; the wait returns at the moment
or as soon as ``wake`` is set (a new job was scheduled). :class:`ManualClock` moves only when a test calls
``advance``/``set``, which wakes every waiter so the engine re-checks what is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from gateway.supervise import cancel_and_wait


class Clock(Protocol):
    """What the engine needs from time."""

    def now(self) -> float: ...

    async def wait_until(self, moment: float | None, wake: asyncio.Event) -> None: ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        """Unix seconds."""
        return time.time()

    async def wait_until(self, moment: float | None, wake: asyncio.Event) -> None:
        """Sleep until ``moment`` (None: until woken) or until ``wake`` is set."""
        timeout = None if moment is None else max(0.0, moment - time.time())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wake.wait()


class ManualClock:
    """A clock that only moves when told to (tests, benchmarks)."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._moved = asyncio.Event()

    def now(self) -> float:
        """The clock's current time."""
        return self._now

    def set(self, moment: float) -> None:
        """Jump to ``moment`` and wake every waiter."""
        self._now = moment
        self._moved.set()
        self._moved = asyncio.Event()

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.set(self._now + seconds)

    async def wait_until(self, moment: float | None, wake: asyncio.Event) -> None:
        """Return once the clock reached ``moment`` or ``wake`` is set."""
        while moment is None or self._now < moment:
            if wake.is_set():
                return
            moved = self._moved
            waiter = asyncio.ensure_future(wake.wait())
            mover = asyncio.ensure_future(moved.wait())
            try:
                await asyncio.wait({waiter, mover}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(waiter, mover, owner="clock")
