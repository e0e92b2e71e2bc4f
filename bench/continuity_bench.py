"""Continuity benchmark (run by hand): decision cost, delayed-send punctuality, restart recovery.

    .venv/bin/python bench/continuity_bench.py [--decisions 100000] [--sends 40] [--jobs 10000]

(a) decision cost per event: the pure rules + restraint for a mix of events (missed call, voicemail, transcript,
    after-hours message, staff reply), p50/p99, against the floor every text-back pays: formatting one template
    with ``str.format`` (the peer); also the engine's whole handling of an event with its store reads and writes;
(b) punctuality: delayed texts scheduled on the wall clock, through the real engine and SMS channel, to the pty
    modem emulator: seconds from the moment to the modem's +CMGS, p50/p99/max; the peer is a staff message queued
    directly in the same run (queue -> modem);
(c) restart: a store holding N scheduled sends; time to open the store, settle interrupted jobs and know the next
    due moment, against plain sqlite3 opening the file and counting the rows (the peer).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.channels.sms.channel import SmsChannel
from gateway.channels.sms.config import SmsConfig
from gateway.config import Secret
from gateway.continuity import restraint, rules
from gateway.continuity.clock import ManualClock
from gateway.continuity.config import ContinuityConfig
from gateway.continuity.engine import ContinuityEngine, HoursSettings
from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.emulator import ModemEmulator
from gateway.store import continuity as sql
from gateway.store.db import Store
from gateway.web import hours

print = functools.partial(print, flush=True)

HOURS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "08:00-12:00, 13:30-18:00")
TZ = "America/New_York"


async def poll(predicate: Callable[[], object], limit_s: float) -> None:
    """Wait until ``predicate`` is truthy (or give up after ``limit_s`` seconds)."""
    deadline = time.monotonic() + limit_s
    while True:
        if predicate() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def decisions(n: int) -> None:
    cfg = ContinuityConfig()
    ctx = rules.Context(cfg, "Roof Pros", TZ, HOURS, hours.ClosedDates())
    state = rules.State(conversation_id=1, phone="+12025550143", intent="estimate", facts={"name": "Dana"})
    pending = rules.State(conversation_id=1, phone="+12025550143", pending=frozenset({"missed_call", "voicemail_ack"}))
    history = restraint.History(sends=(0.0,), contacts=(1_796_650_000.0,), human_at=None)
    now = 1_796_659_200.0  # a Monday 11:00 in the business time zone
    triggers = [
        (rules.Trigger("call_missed", "voice", 1, 1), state),
        (rules.Trigger("voicemail", "voice", 1, 2), pending),
        (rules.Trigger("transcript", "voice", 1, 3, "the roof leaks", {"confidence": 0.9}), pending),
        (rules.Trigger("message_in", "sms", 1, 4, "are you open?"), state),
        (rules.Trigger("message_out", "sms", 1, 5, "on our way", {"automated": False}), pending),
    ]
    ours: list[float] = []
    peer: list[float] = []
    template = cfg.missed_call_template
    values = {"intent_phrase": " about your estimate", "next_slot": "today", "business_name": "Roof Pros"}
    for i in range(n):
        trigger, st = triggers[i % len(triggers)]
        at = now + (i % 7) * 5400  # open, lunch, evening...
        t0 = time.perf_counter()
        for d in rules.on_event(trigger, st, ctx, at):
            if isinstance(d, rules.Send):
                restraint.check(cfg, history, at, channel=d.channel, timezone=TZ)
        t1 = time.perf_counter()
        template.format_map(values)
        t2 = time.perf_counter()
        ours.append((t1 - t0) * 1e6)
        peer.append((t2 - t1) * 1e6)
    due = rules.on_due("missed_call", {}, state, ctx, now)
    assert isinstance(due, rules.Send)
    print(f"(a) decision per event, {n} events (pure rules + restraint):")
    print(f"    p50 {statistics.median(ours):.1f} us   p99 {pct(ours, 0.99):.1f} us   max {max(ours):.1f} us")
    print(f"    peer str.format of one template: p50 {statistics.median(peer):.2f} us  p99 {pct(peer, 0.99):.2f} us")
    print(f"    ratio p99 ours/peer: {pct(ours, 0.99) / pct(peer, 0.99):.0f}")


async def engine_handling(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "gw.db")
        await store.start()
        bus = Bus()
        service = ConversationService(store, bus, ServiceSettings(default_region="US"))
        clock = ManualClock(1_796_659_200.0)
        engine = ContinuityEngine(ContinuityConfig(), service, store, bus, HoursSettings(TZ, HOURS), clock=clock)
        await engine.prepare()
        took: list[float] = []
        for i in range(n):
            res = await service.ingest(
                Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.PHONE, f"+1202555{i % 500:04d}", f"c{i}")
            )
            trigger = rules.Trigger("call_missed", "voice", res.conversation_id, res.event_id)
            t0 = time.perf_counter()
            await engine.handle(trigger)
            took.append((time.perf_counter() - t0) * 1000)
        await store.stop()
    print(f"    whole engine handling (store read + write + timeline entry), {n} missed calls:")
    print(f"    p50 {statistics.median(took):.2f} ms   p99 {pct(took, 0.99):.2f} ms")


async def punctuality(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        emu = ModemEmulator("huawei-e3372", link=Path(tmp) / "ttyUSB0", seed=3)
        emu.start()
        store = Store(Path(tmp) / "gw.db")
        await store.start()
        bus = Bus()
        # The global automated-SMS budget (sms.automated_per_hour) would stop a burst of 40: raised for the bench.
        budget = ServiceSettings(default_region="US", automated_sms_per_hour=10_000, automated_sms_per_day=10_000)
        service = ConversationService(store, bus, budget)
        sms = SmsChannel(
            SmsConfig(enabled=True, device=str(emu.link), profile="huawei-e3372", pin=Secret(""), poll_interval=1.0),
            store,
            service,
            bus,
            region="US",
        )
        await sms.start()
        always = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00-23:59")
        cfg = ContinuityConfig(quiet_hours="", missed_call_delay_seconds=0)
        engine = ContinuityEngine(cfg, service, store, bus, HoursSettings("UTC", always))
        await engine.start()
        await poll(lambda: sms.modem_state.connected, 20)
        # The peer: a staff message queued directly, queue -> modem.
        res = await service.ingest(Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025559999", "p"))
        t0 = time.time()
        await service.enqueue_outbound(res.conversation_id, Channel.SMS, "+12025559999", "peer", automated=False)
        await poll(lambda: emu.sent, 20)
        peer = emu.sent[0].at - t0
        # Ours: jobs due every 250 ms from 2 s from now, each to its own customer.
        start = time.time() + 2.0
        due: dict[str, float] = {}
        for i in range(count):
            number = f"+1202555{i:04d}"
            r = await service.ingest(Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.PHONE, number, f"m{i}"))
            at = start + i * 0.25
            due[number] = at
            await store.write(
                functools.partial(
                    sql.schedule_job,
                    rule="missed_call",
                    conversation_id=r.conversation_id,
                    due_at=at,
                    payload={},
                    now=time.time(),
                )
            )
        engine.wake()
        await poll(lambda: len([s for s in emu.sent if s.recipient in due]) >= count, count * 0.25 + 30)
        late = [s.at - due[s.recipient] for s in emu.sent if s.recipient in due]
        await engine.stop()
        await sms.stop()
        await store.stop()
        emu.stop()
    print(f"(b) delayed text, moment -> modem +CMGS, {len(late)}/{count} sends:")
    print(f"    p50 {statistics.median(late):.3f} s   p99 {pct(late, 0.99):.3f} s   max {max(late):.3f} s")
    print(f"    peer staff message queue -> modem: {peer:.3f} s   ratio p99/peer: {pct(late, 0.99) / peer:.2f}")


async def restart(jobs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gw.db"
        store = Store(path)
        await store.start()
        bus = Bus()
        service = ConversationService(store, bus)
        res = await service.ingest(
            Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.PHONE, "+12025550143", "x")
        )
        now = time.time()
        payload = json.dumps({})
        rows = [("missed_call", res.conversation_id, now + 3600 + i, payload, now) for i in range(jobs)]
        await store.write(lambda c: sql.schedule_many(c, rows))
        await store.write(lambda c: c.execute("UPDATE continuity_jobs SET state = 'sending' WHERE id <= 10"))
        await store.stop()

        t0 = time.perf_counter()
        store = Store(path)
        await store.start()
        bus = Bus()
        service = ConversationService(store, bus)
        engine = ContinuityEngine(ContinuityConfig(), service, store, bus, HoursSettings())
        await engine.prepare()
        waiting = await store.read(sql.count_scheduled)
        nxt = await store.read(sql.next_due)
        ours = time.perf_counter() - t0
        await store.stop()
        assert waiting == jobs
        assert nxt is not None

        t0 = time.perf_counter()
        conn = sqlite3.connect(path)
        conn.execute("SELECT COUNT(*), MIN(due_at) FROM continuity_jobs WHERE state = 'scheduled'").fetchone()
        conn.close()
        peer = time.perf_counter() - t0
    print(f"(c) restart with {jobs} scheduled sends (10 interrupted mid-send): {ours * 1000:.0f} ms to recover")
    print(f"    peer plain sqlite3 open + count: {peer * 1000:.1f} ms   ratio {ours / peer:.0f}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--handled", type=int, default=2000)
    parser.add_argument("--sends", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    decisions(args.decisions)
    await engine_handling(args.handled)
    await punctuality(args.sends)
    await restart(args.jobs)


if __name__ == "__main__":
    asyncio.run(main())
