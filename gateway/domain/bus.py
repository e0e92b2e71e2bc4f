"""In-process event bus with bounded per-subscriber queues.

Theory of operation: each subscriber declares the event classes it takes (:mod:`gateway.domain.events`).
``publish`` appends the event to the bounded deque of every subscriber that declared its class and wakes it; it
never awaits, never blocks and never raises, so a slow subscriber (a browser on a bad link, a stuck webhook) cannot
stall ingest. When a subscriber's queue is full the OLDEST event is dropped for that subscriber only and its
``overflow`` counter goes up; the bus keeps a total that the status page and /metrics show. Subscribers that need
every event (webhooks, rules) read the store as the source of truth and use the bus only as a wake-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.domain.events import Event

log = logging.getLogger(__name__)


class Subscription:
    """One subscriber's bounded queue. Iterate it with ``async for``; ``close()`` when done."""

    def __init__(self, bus: Bus, name: str, maxsize: int, types: tuple[type[Event], ...]) -> None:
        self.name = name
        self.maxsize = max(1, maxsize)
        self.types = types
        self.overflow = 0
        self.delivered = 0
        self._bus = bus
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def _offer(self, event: Event) -> None:
        if self._closed or not isinstance(event, self.types):
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.overflow += 1
            self._bus.overflow_total += 1
            if self.overflow == 1 or self.overflow % 1000 == 0:
                log.warning("bus subscriber %s is too slow: %d event(s) dropped", self.name, self.overflow)
        self._items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pending(self) -> int:
        """Events waiting to be read."""
        return len(self._items)

    def get_nowait(self) -> Event | None:
        """The next event, or None if there is none."""
        if self._items:
            self.delivered += 1
            return self._items.popleft()
        return None

    async def get(self) -> Event:
        """Wait for the next event. Raises ``StopAsyncIteration`` once closed and drained."""
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.delivered += 1
        return self._items.popleft()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def close(self) -> None:
        """Stop receiving; a pending ``get`` ends."""
        if self._closed:
            return
        self._closed = True
        self._bus._remove(self)  # noqa: SLF001 - the bus and its subscriptions are one unit
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """Per-subscriber figures for the status page."""

    name: str
    pending: int
    overflow: int
    delivered: int


class Bus:
    """Publish/subscribe inside the daemon. The events are the classes of :mod:`gateway.domain.events`."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self.published = 0
        self.overflow_total = 0

    async def start(self) -> None:
        """Nothing to start; present so the supervisor treats every part alike."""

    async def stop(self) -> None:
        """Close every subscription so their readers finish."""
        for sub in list(self._subs):
            sub.close()

    def subscribe(self, name: str, maxsize: int = 1000, *, types: tuple[type[Event], ...]) -> Subscription:
        """A new subscription that receives exactly the events of the classes in ``types``."""
        if not types:
            raise ValueError(f"bus subscriber {name} must declare the event classes it takes")
        sub = Subscription(self, name, maxsize, tuple(types))
        self._subs.append(sub)
        return sub

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every subscriber. Never blocks, never raises."""
        self.published += 1
        for sub in self._subs:
            try:
                sub._offer(event)  # noqa: SLF001
            except Exception:
                log.exception("bus subscriber %s failed to take an event", sub.name)

    def stats(self) -> list[SubscriberStats]:
        """Figures per subscriber."""
        return [SubscriberStats(s.name, s.pending(), s.overflow, s.delivered) for s in self._subs]

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
