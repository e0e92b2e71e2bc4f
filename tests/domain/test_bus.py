"""The in-process bus: bounded queues, overflow counted, publish never blocks."""

from __future__ import annotations

import asyncio
import time

from gateway.domain.bus import Bus


async def test_slow_subscriber_never_stalls_publish_and_overflow_is_counted() -> None:
    bus = Bus()
    slow = bus.subscribe("slow", maxsize=10)
    fast = bus.subscribe("fast", maxsize=100_000)
    start = time.perf_counter()
    for i in range(50_000):
        bus.publish(i)
    elapsed = time.perf_counter() - start
    assert elapsed < 5, "publishing must not wait for anyone"
    assert slow.pending() == 10
    assert slow.overflow == 49_990
    assert bus.overflow_total == 49_990
    assert fast.pending() == 50_000
    assert fast.overflow == 0
    # The slow subscriber keeps the newest events.
    assert slow.get_nowait() == 49_990
    stats = {s.name: s for s in bus.stats()}
    assert stats["slow"].overflow == 49_990


async def test_subscribers_receive_in_order_and_close_ends_iteration() -> None:
    bus = Bus()
    sub = bus.subscribe("reader")
    received: list[object] = []

    async def reader() -> None:
        async for item in sub:
            received.append(item)

    task = asyncio.create_task(reader())
    for i in range(5):
        bus.publish(i)
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    sub.close()
    await asyncio.wait_for(task, 1)
    assert received == [0, 1, 2, 3, 4]


async def test_type_filter_and_broken_subscriber_isolation() -> None:
    bus = Bus()
    ints = bus.subscribe("ints", types=(int,))
    bus.publish("text")
    bus.publish(7)
    assert ints.pending() == 1
    assert ints.get_nowait() == 7
    await bus.stop()
    bus.publish(8)
    assert ints.pending() == 0
