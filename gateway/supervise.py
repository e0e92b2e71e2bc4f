"""Reconnect helper shared by every link (AMI, modem, FastAGI peers...).

Theory of operation: ``reconnect_loop`` calls ``connect_once`` forever. ``connect_once`` runs for as long as the
link is healthy and raises (or returns) when it fails. Between attempts we sleep a capped, jittered exponential
backoff ("full jitter": uniform in [0, min(cap, base * 2**n))), so a fleet of links that dropped together does not
reconnect in lockstep. The log says WARNING once when a link goes down and INFO once when it comes back, never once
per attempt, so a dead modem does not flood the journal.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class LinkState:
    """Observable state of one supervised link (read by the status page)."""

    name: str
    up: bool = False
    since: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: str | None = None

    def mark_up(self) -> None:
        """Record that the link works; logs INFO once if it had been down."""
        if not self.up:
            if self.attempts:
                log.info("link %s is back after %d failed attempt(s)", self.name, self.attempts)
            else:
                log.info("link %s is up", self.name)
            self.up = True
            self.since = time.time()
        self.attempts = 0

    def mark_down(self, error: BaseException | str) -> None:
        """Record a failure; logs WARNING once per outage."""
        self.last_error = str(error) or type(error).__name__
        self.attempts += 1
        if self.up or self.attempts == 1:
            log.warning("link %s is down: %s", self.name, self.last_error)
            self.up = False
            self.since = time.time()


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th consecutive failure (1-based)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


async def reconnect_loop(
    name: str,
    connect_once: Callable[[LinkState], Awaitable[None]] | Callable[[], Awaitable[None]],
    *,
    base: float = 0.5,
    cap: float = 30.0,
    state: LinkState | None = None,
) -> None:
    """Run ``connect_once`` forever with capped, jittered backoff between failures.

    ``connect_once`` may accept the :class:`LinkState` to call ``mark_up()`` once its handshake succeeded; if it
    takes no argument the link is marked up as soon as the attempt starts. Cancel the task to stop.
    """
    st = state or LinkState(name)
    wants_state = len(inspect.signature(connect_once).parameters) >= 1
    while True:
        try:
            if wants_state:
                await connect_once(st)  # type: ignore[call-arg]
            else:
                st.mark_up()
                await connect_once()  # type: ignore[call-arg]
            st.mark_down("connection closed")
        except asyncio.CancelledError:
            raise
        except Exception as err:
            st.mark_down(err)
            log.debug("link %s attempt failed", name, exc_info=True)
        await asyncio.sleep(backoff_delay(st.attempts, base=base, cap=cap))
