"""The in-process bus: typed subscriptions, bounded queues, overflow counted, publish never blocks."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from pathlib import Path

import pytest
from mypy import api as mypy_api

from gateway.domain import events as ev
from gateway.domain.bus import Bus
from gateway.domain.calls import CallDirection, CallOutcome, CallRecord
from gateway.domain.models import TimelineEvent

ROOT = Path(__file__).resolve().parents[2]


def one_of_each() -> list[ev.Event]:
    """One instance of every bus event class."""
    entry = TimelineEvent(1, 2, "message_in", "sms", "hi", {}, None, None, 0.0)
    call = CallRecord("c1", CallDirection.INBOUND, "+15550001", "", "100", 0.0, outcome=CallOutcome.MISSED)
    return [
        ev.TimelineEventAdded(2, 3, entry),
        ev.ConversationUpdated(2, {"intent": "quote"}),
        ev.ContactsMerged(1, 3, 4, 2, 5),
        ev.OutboxQueued(9, 2, "sms"),
        ev.CallRinging("201", "c1", "+15550001", 2, None),
        ev.CallAnswered("201", "c1", "+15550001", 2),
        ev.CallEnded("c1", "+15550001", 2, CallOutcome.MISSED, call),
        ev.VoicemailRecorded("c1", "+15550001", 2, 7, "/tmp/vm.wav", 3.0),
        ev.LiveTranscript("c1", 2, "201", "caller", "hello"),
        ev.TranscriptReady(2, 7, 8, None, False, ()),
        ev.TranscriptionFailed(2, 7, 1, "bad audio"),
        ev.TranscriptionHealth("/model", None, 1, 1, (123,), None, None),
        ev.ModemHealth("/dev/ttyUSB0", True, 0.0, "generic"),
        ev.SmsOutboundState(9, 2, "sent"),
        ev.SmsStorageWarning("SM", 9, 10),
        ev.StalledThread(2, 0.0, 4.5),
    ]


def test_every_event_class_is_in_the_vocabulary_frozen_and_slotted() -> None:
    samples = one_of_each()
    assert [type(e) for e in samples] == list(ev.ALL_EVENTS), "add a sample of every new event to one_of_each()"
    for event in samples:
        assert not hasattr(event, "__dict__"), f"{type(event)} is not slotted"
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, dataclasses.fields(event)[0].name, None)
        assert (type(event).__doc__ or "").count("Published by") == 1, f"{type(event)} does not say who publishes it"


def test_a_subscriber_gets_exactly_the_types_it_declared() -> None:
    bus = Bus()
    calls = bus.subscribe("calls", types=(ev.CallRinging, ev.CallAnswered, ev.CallEnded))
    outbox = bus.subscribe("outbox", types=(ev.OutboxQueued,))
    everything = bus.subscribe("all", types=ev.ALL_EVENTS)
    samples = one_of_each()
    for event in samples:
        bus.publish(event)

    def drain(sub: object) -> list[type]:
        got = []
        while (item := sub.get_nowait()) is not None:  # type: ignore[attr-defined]
            got.append(type(item))
        return got

    assert drain(calls) == [ev.CallRinging, ev.CallAnswered, ev.CallEnded]
    assert drain(outbox) == [ev.OutboxQueued]
    assert drain(everything) == list(ev.ALL_EVENTS)


def test_a_subscriber_must_declare_its_types() -> None:
    with pytest.raises(ValueError, match="must declare"):
        Bus().subscribe("lazy", types=())


def test_no_event_is_read_by_class_name_or_getattr() -> None:
    offenders = []
    pattern = re.compile(r"type\(event\)\.__name__|getattr\(event\b|hasattr\(event\b")
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_a_renamed_field_fails_the_type_check(tmp_path: Path) -> None:
    reader = tmp_path / "reader.py"
    reader.write_text(
        "from gateway.domain.events import CallRinging, Event\n"
        "def by_pattern(event: Event) -> str:\n"
        "    match event:\n"
        "        case CallRinging(extensoin=ext):\n"
        "            return str(ext)\n"
        "    return ''\n"
        "def by_attribute(event: Event) -> str:\n"
        "    match event:\n"
        "        case CallRinging():\n"
        "            return str(event.extensoin)\n"
        "    return ''\n"
    )
    out, _err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(reader)]
    )
    assert status == 1, out
    assert 'has no attribute "extensoin"' in out
    assert out.count("error:") == 2, out


async def test_slow_subscriber_never_stalls_publish_and_overflow_is_counted() -> None:
    bus = Bus()
    slow = bus.subscribe("slow", maxsize=10, types=(ev.OutboxQueued,))
    fast = bus.subscribe("fast", maxsize=100_000, types=(ev.OutboxQueued,))
    start = time.perf_counter()
    for i in range(50_000):
        bus.publish(ev.OutboxQueued(i, 1, "sms"))
    elapsed = time.perf_counter() - start
    assert elapsed < 5, "publishing must not wait for anyone"
    assert slow.pending() == 10
    assert slow.overflow == 49_990
    assert bus.overflow_total == 49_990
    assert fast.pending() == 50_000
    assert fast.overflow == 0
    # The slow subscriber keeps the newest events.
    assert slow.get_nowait() == ev.OutboxQueued(49_990, 1, "sms")
    stats = {s.name: s for s in bus.stats()}
    assert stats["slow"].overflow == 49_990


async def test_subscribers_receive_in_order_and_close_ends_iteration() -> None:
    bus = Bus()
    sub = bus.subscribe("reader", types=(ev.OutboxQueued,))
    received: list[object] = []

    async def reader() -> None:
        async for item in sub:
            received.append(item)

    task = asyncio.create_task(reader())
    for i in range(5):
        bus.publish(ev.OutboxQueued(i, 1, "sms"))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    sub.close()
    await asyncio.wait_for(task, 1)
    assert received == [ev.OutboxQueued(i, 1, "sms") for i in range(5)]


async def test_type_filter_and_stop_closes_subscriptions() -> None:
    bus = Bus()
    outbox = bus.subscribe("outbox", types=(ev.OutboxQueued,))
    bus.publish(ev.SmsStorageWarning("SM", 9, 10))
    bus.publish(ev.OutboxQueued(7, 1, "sms"))
    assert outbox.pending() == 1
    assert outbox.get_nowait() == ev.OutboxQueued(7, 1, "sms")
    await bus.stop()
    bus.publish(ev.OutboxQueued(8, 1, "sms"))
    assert outbox.pending() == 0
