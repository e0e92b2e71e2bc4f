"""Store benchmark (run by hand): acknowledged ingest throughput and timeline read latency.

    .venv/bin/python bench/store_bench.py [--events 60000] [--callers 1000] [--big 1000000] [--ingest-only]

(a) events/s acknowledged through ConversationService.ingest (durable group commit, many concurrent callers)
    against the raw ceiling of plain sqlite3 executemany of the same rows into the same schema, and the ratio;
    with the CPU time per event of each (steadier than events/s on a shared machine);
    also, for reference, the same rows in one transaction through the multi-row INSERTs the service uses
    (queries.insert_events), so the service's own overhead can be read off too;
(b) "last 50 events of a conversation" latency, p50/p99, warm, with --big events stored.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.store import queries as q
from gateway.store.db import Store, configure_connection, migrate

print = functools.partial(print, flush=True)


def items(n: int, contacts: int) -> list[Inbound]:
    return [
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            f"+1555{i % contacts:07d}",
            f"bench-{i}",
            f"message number {i} about the roof estimate",
        )
        for i in range(n)
    ]


async def service_throughput(path: Path, batch: list[Inbound], callers: int) -> tuple[float, float]:
    """(events/s, CPU seconds of the whole process per event: event loop plus the store's writer thread)."""
    store = Store(path)
    await store.start()
    service = ConversationService(store, Bus())
    queue = list(reversed(batch))

    async def caller() -> None:
        while queue:
            await service.ingest(queue.pop())

    start, cpu0 = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(caller() for _ in range(callers)))
    finally:
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        await store.stop()
    print(f"    {store.stats.writes} writes in {store.stats.batches} commits (largest {store.stats.largest_batch})")
    await store.stop()
    return len(batch) / elapsed, cpu / len(batch)


def raw_ceiling(path: Path, batch: list[Inbound], contacts: int, *, multi_row: bool = False) -> tuple[float, float]:
    """(events/s, CPU seconds per event) of one transaction of the same rows, by executemany or multi-row INSERTs."""
    conn = sqlite3.connect(path, isolation_level=None)
    configure_connection(conn, writer=True)
    migrate(conn, path)
    now = time.time()
    conn.execute("BEGIN")
    for c in range(contacts):
        q.create_contact(conn, "phone", f"+1555{c:07d}", f"+1555{c:07d}", True, None, now)
    conn.execute("COMMIT")
    rows = [
        (
            (i % contacts) + 1,
            (i % contacts) + 1,
            "message_in",
            "sms",
            it.body,
            "{}",
            it.external_id,
            None,
            now,
            now,
        )
        for i, it in enumerate(batch)
    ]
    start, cpu0 = time.perf_counter(), time.process_time()
    conn.execute("BEGIN")
    if multi_row:
        q.insert_events(conn, rows)
    else:
        conn.executemany(
            "INSERT INTO events(conversation_id, origin_conversation_id, kind, channel, body, meta, external_id,"
            " author, occurred_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    conn.close()
    return len(batch) / elapsed, cpu / len(batch)


def build_big(path: Path, total: int, contacts: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    configure_connection(conn, writer=True)
    migrate(conn, path)
    conn.execute("PRAGMA synchronous = OFF")
    now = time.time()
    conn.execute("BEGIN")
    for c in range(contacts):
        q.create_contact(conn, "phone", f"+1666{c:07d}", f"+1666{c:07d}", True, None, now)
    chunk = 50_000
    for base in range(0, total, chunk):
        rows = [
            (
                (i % contacts) + 1,
                (i % contacts) + 1,
                "message_in",
                "sms",
                f"event {i} body text",
                "{}",
                f"big-{i}",
                None,
                now,
                now,
            )
            for i in range(base, min(total, base + chunk))
        ]
        conn.executemany(
            "INSERT INTO events(conversation_id, origin_conversation_id, kind, channel, body, meta, external_id,"
            " author, occurred_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.execute("COMMIT")
    conn.close()


async def timeline_latency(path: Path, contacts: int, samples: int) -> tuple[float, float]:
    store = Store(path)
    await store.start()
    service = ConversationService(store, Bus())
    rng = random.Random(1)
    lat = []
    try:
        for _ in range(200):  # warm the page cache and the statement cache
            await service.timeline(rng.randint(1, contacts), 50)
        for _ in range(samples):
            conv = rng.randint(1, contacts)
            t0 = time.perf_counter()
            events = await service.timeline(conv, 50)
            lat.append((time.perf_counter() - t0) * 1000)
            if len(events) != 50:
                raise SystemExit(f"conversation {conv} has {len(events)} events; use a larger --big")
    finally:
        await store.stop()
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--callers", type=int, default=1000)
    ap.add_argument("--contacts", type=int, default=5_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=5_000)
    ap.add_argument("--ingest-only", action="store_true", help="skip (b)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        batch = items(args.events, args.contacts)
        print(f"(a) acknowledged ingest, {args.events} events, {args.callers} concurrent callers, synchronous=FULL")
        ours, ours_cpu = asyncio.run(service_throughput(Path(tmp) / "svc.db", batch, args.callers))
        raw, raw_cpu = raw_ceiling(Path(tmp) / "raw.db", batch, args.contacts)
        multi, multi_cpu = raw_ceiling(Path(tmp) / "multi.db", batch, args.contacts, multi_row=True)
        us = 1e6
        print(f"    service ingest (acknowledged): {ours:,.0f} events/s, CPU {ours_cpu * us:.1f} us/event")
        print(f"    raw sqlite3 executemany:       {raw:,.0f} events/s, CPU {raw_cpu * us:.1f} us/event")
        print(
            f"    ratio service/raw:             {ours / raw:.2f} (CPU per event raw/service {raw_cpu / ours_cpu:.2f})"
        )
        print(
            f"    raw multi-row INSERTs:         {multi:,.0f} events/s, CPU {multi_cpu * us:.1f} us/event"
            f" (ratio service/multi-row {ours / multi:.2f})"
        )
        if args.ingest_only:
            return
        print(f"(b) last 50 events of a conversation with {args.big:,} events stored")
        big = Path(tmp) / "big.db"
        t0 = time.perf_counter()
        build_big(big, args.big, 2_000)
        print(f"    (built in {time.perf_counter() - t0:.0f} s)")
        p50, p99 = asyncio.run(timeline_latency(big, 2_000, args.samples))
        print(f"    timeline(50): p50 {p50:.3f} ms, p99 {p99:.3f} ms over {args.samples} reads")


if __name__ == "__main__":
    main()
