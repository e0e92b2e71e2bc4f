"""Spine benchmark (run by hand): what reading and serving the spine costs.

    .venv/bin/python bench/spine_bench.py [--rounds 200] [--conversations 2000]

(a) reading a message: :meth:`SpineReader.read` (intent, facts with dateparser/libphonenumber/pyap, preference) over
    a mix of real-looking customer messages, p50/p99 per message, against the keyword intent spotting voicemails
    already pay (the peer, same messages, same run);
(b) serving it: ``SpineService.spine()`` (summary line, facts over the merge chain, last contact) and ``episode_of``
    on a store with N conversations of ten events each, p50/p99, against ``ConversationService.summary()`` (the
    screen-pop's existing read, the peer) in the same run;
(c) writing it: ``set_fact`` (one durable write with its timeline entry) p50/p99, against ``append_event`` of a note
    (the peer).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.domain.bus import Bus
from gateway.domain.extract import SpineReader
from gateway.domain.intent import IntentConfig, IntentRules
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.domain.spine import EXTRACTOR, SpineConfig, SpineService
from gateway.store.db import Store

print = functools.partial(print, flush=True)

MESSAGES = [
    "My son chipped a tooth - do you handle emergencies?",
    "Saturday morning works, text me. Insurance is Delta Dental",
    "Hi this is Maria Rodriguez, call me back at (415) 555-2671 after 3pm",
    "Need an estimate for a metal roof at 123 Main Street, Springfield, IL 62704",
    "ok thanks!",
    "Can I reschedule my cleaning to next Monday at 9am?",
    "The roof is leaking again, can someone come tomorrow at 10?",
    "Are you open on Sundays?",
]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def line(name: str, values: list[float]) -> tuple[float, float]:
    p50, p99 = statistics.median(values) * 1000, pct(values, 0.99) * 1000
    print(f"  {name:<42} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   (n={len(values)})")
    return p50, p99


def bench_reading(rounds: int) -> None:
    cfg = SpineConfig(topic_keywords=["chipped tooth", "roof leak", "estimate"])
    rules = IntentRules.from_config(IntentConfig())
    reader = SpineReader(
        rules,
        cfg.intents,
        region="US",
        timezone="America/New_York",
        fact_patterns=cfg.fact_patterns,
        topic_keywords=cfg.topic_keywords,
    )
    t0 = time.perf_counter()
    reader.warm()
    print(f"(a) reading messages; warm-up (dateparser data, once at start): {time.perf_counter() - t0:.2f} s")
    now = time.time()
    spine_t: list[float] = []
    peer_t: list[float] = []
    for _ in range(rounds):
        for msg in MESSAGES:
            a = time.perf_counter()
            reader.read(msg, now)
            b = time.perf_counter()
            rules.decide(rules.spot(msg))
            c = time.perf_counter()
            spine_t.append(b - a)
            peer_t.append(c - b)
    s50, s99 = line("SpineReader.read (everything)", spine_t)
    p50, p99 = line("peer: keyword intent spotting only", peer_t)
    print(f"  ratio spine/peer: p50 {s50 / p50:.0f}x, p99 {s99 / p99:.0f}x")


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        a = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - a)
    return out


async def bench_store(conversations: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        await store.start()
        bus = Bus()
        service = ConversationService(store, bus)
        spines = SpineService(store, bus, SpineConfig())
        base = time.time() - 86400
        convs: list[int] = []
        for i in range(conversations):
            number = f"+1415555{i:04d}"
            items = [
                Inbound(
                    Channel.SMS if k % 2 else Channel.VOICE,
                    EventKind.MESSAGE_IN if k % 2 else EventKind.CALL_MISSED,
                    IdentityKind.PHONE,
                    number,
                    f"b{i}-{k}",
                    "hello" if k % 2 else "",
                    occurred_at=base + i + k * 120,
                )
                for k in range(10)
            ]
            res = await asyncio.gather(*(service.ingest(it) for it in items))
            convs.append(res[0].conversation_id)
        for conv in convs[:: max(1, conversations // 200)]:
            await spines.set_fact(conv, "topic", "roof leak", source="sms", set_by=EXTRACTOR)
            await spines.set_intent(conv, "problem", urgent=True, source="sms", set_by=EXTRACTOR)
        print(f"(b) serving the spine: {conversations} conversations x 10 events")
        picks = [convs[(i * 7919) % len(convs)] for i in range(rounds)]
        it = iter(picks * 3)
        spine_t = await timed(lambda: spines.spine(next(it)), rounds)
        episode_t = await timed(lambda: spines.episode_of(next(it), base + conversations + 1200), rounds)
        peer_t = await timed(lambda: service.summary(next(it)), rounds)
        s50, s99 = line("SpineService.spine()", spine_t)
        _e50, e99 = line("SpineService.episode_of()", episode_t)
        p50, p99 = line("peer: ConversationService.summary()", peer_t)
        print(f"  ratio spine/peer: p50 {s50 / p50:.2f}, p99 {s99 / p99:.2f}; episode/peer p99 {e99 / p99:.2f}")
        print("(c) writing it")
        counter = iter(range(10**9))
        fact_t = await timed(
            lambda: spines.set_fact(picks[0], "note_count", next(counter), source="staff", set_by="bench"), rounds
        )
        note_t = await timed(
            lambda: service.append_event(picks[0], EventKind.NOTE, Channel.NOTE, "bench note", author="bench"),
            rounds,
        )
        f50, f99 = line("SpineService.set_fact() (+ timeline entry)", fact_t)
        n50, n99 = line("peer: append_event(note)", note_t)
        print(f"  ratio set_fact/note: p50 {f50 / n50:.2f}, p99 {f99 / n99:.2f}")
        await store.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=2000)
    args = parser.parse_args()
    bench_reading(args.rounds)
    asyncio.run(bench_store(args.conversations, args.rounds))


if __name__ == "__main__":
    main()
