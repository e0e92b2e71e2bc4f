"""Lifecycle helpers in one place: the reconnect loop, the owned task set and the one way to cancel tasks.

Theory of operation: ``reconnect_loop`` calls ``connect_once`` until it is cancelled. ``connect_once`` runs for as
long as the link is healthy and raises (or returns) when it fails. Between attempts we sleep a capped, jittered
exponential backoff ("full jitter": uniform in [0, min(cap, base * 2**n))), so a fleet of links that dropped together
does not reconnect in lockstep. The log says WARNING once when a link goes down and INFO once when it comes back,
never once per attempt, so a dead modem does not flood the journal. A :class:`~gateway.errors.ConfigError` is
different: retrying cannot fix a wrong password or a missing PIN, so the loop logs the fix once at ERROR, marks the
link ``stopped`` (the part's health shows the fix) and returns.

Every task has an owner: a part keeps its tasks in a :class:`TaskSet` (a strong reference until the task is done,
a crash logged with its traceback) and stops them with :func:`cancel_and_wait`, which collects the tasks'
cancellation without swallowing a cancellation of the caller, and gives up on a task stuck past its timeout (logged,
returned) so a vanished device cannot hold up the daemon's exit.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class LinkState:
    """Observable state of one supervised link (read by the status page)."""

    name: str
    up: bool = False
    since: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: str | None = None
    stopped: bool = False
    """True once a configuration problem stopped the link; ``last_error`` says what to fix."""

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

    def mark_stopped(self, error: ConfigError) -> None:
        """Record that the link gave up because of a configuration problem; logs the fix once at ERROR."""
        self.last_error = str(error)
        self.up = False
        self.stopped = True
        self.since = time.time()
        log.error("link %s stopped until its configuration is fixed: %s", self.name, self.last_error)


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
    """Run ``connect_once`` again and again with capped, jittered backoff between failures.

    ``connect_once`` may accept the :class:`LinkState` to call ``mark_up()`` once its handshake succeeded; if it
    takes no argument the link is marked up as soon as the attempt starts. Cancel the task to stop. A
    :class:`~gateway.errors.ConfigError` ends the loop (the state is marked ``stopped`` with the fix).
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
        except ConfigError as err:
            st.mark_stopped(err)
            return
        except Exception as err:
            st.mark_down(err)
            log.debug("link %s attempt failed", name, exc_info=True)
        await asyncio.sleep(backoff_delay(st.attempts, base=base, cap=cap))


async def cancel_and_wait(
    *tasks: asyncio.Future[Any] | None,
    timeout: float | None = None,  # noqa: ASYNC109 - when to give up on stuck tasks, not a cancel scope
    owner: str = "gateway",
) -> list[asyncio.Future[Any]]:
    """Cancel ``tasks`` (None entries are skipped) and wait until they have finished.

    The tasks' own cancellation and any error they end with are collected here (an error is logged at DEBUG), never
    raised; a cancellation of the caller itself still propagates. With ``timeout``, tasks still running after that
    many seconds are abandoned: logged at ERROR and returned.
    """
    live = [t for t in tasks if t is not None]
    if not live:
        return []
    for task in live:
        task.cancel()
    done, stuck = await asyncio.wait(live, timeout=timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.debug("%s: %s ended with %r", owner, _name(task), task.exception())
    for task in stuck:
        log.error("%s: %s did not stop within %.0f s; abandoning it", owner, _name(task), timeout or 0.0)
    return list(stuck)


class TaskSet:
    """The tasks one part owns: each is referenced until it is done, and a crash is logged with its traceback."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a task of this set."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("%s: task %s died", self.owner, task.get_name(), exc_info=err)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    async def wait(self) -> None:
        """Wait until every task of the set has finished on its own."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def cancel_all(self, timeout: float | None = None) -> list[asyncio.Future[Any]]:  # noqa: ASYNC109
        """Cancel every task and wait for them (see :func:`cancel_and_wait`); returns the abandoned ones."""
        return await cancel_and_wait(*self._tasks, timeout=timeout, owner=self.owner)


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)


def freeze_startup_objects() -> int:
    """Move every object alive now out of the garbage collector's reach (:func:`gc.freeze`); returns how many.

    A daemon loads a lot once at start (libphonenumber's metadata, dateparser's languages, aiohttp, the config) and
    keeps it for its whole life. CPython's full collections scan every tracked object each time, and with these
    loaded one took 40-210 ms on the 2-core box: the event loop stood still that long, and a ringing call's FastAGI
    answer with it. Frozen objects are never scanned again; what the daemon allocates later is collected as usual.
    Called once the daemon has started and again after the slow warm-ups that run in the background.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
