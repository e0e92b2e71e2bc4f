"""Leakage benchmark (run by hand): the Leakage page's data and the leakage API over a big store, over real HTTP.

    .venv/bin/python bench/leakage_bench.py [--events 1000000] [--conversations 100000] [--days 365] [--requests 200]

Builds a store with ``--events`` timeline events in ``--conversations`` conversations spread evenly over the last
``--days`` days (a realistic mix: texts, chats, answered/missed/abandoned calls, voicemails, automated messages and
decisions, handoffs; owners and next-step due times), starts the real web server on it and measures, as a logged-in
integration (bearer token):

* ``GET /api/v1/leakage/overview`` (what the page shows: today, 7 and 30 days against the previous periods, so it
  reads 60 days, plus the 30-day daily series) and ``GET /api/v1/leakage?from=&to=`` for 30 days, warm, p50/p99 over
  ``--requests`` requests each (target p99 <= 200 ms);
* the first page request on a fresh start (the read model of 60 days is built), once;
* the same two after a write between every request (the changed conversation is judged again and the day totals
  added up again);
* beside them, in the same run, a plain SQL ``COUNT(*)`` of the same timeline rows of the same 30 days, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService
from gateway.leakage.config import LeakageConfig
from gateway.leakage.service import LeakageService
from gateway.store import leakage as leak_sql
from gateway.store import web as web_sql
from gateway.store.db import Store, configure_connection, migrate
from gateway.web.app import WebServer
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps
from gateway.web.pages import create_staff_user
from gateway.web.security import SESSION_COOKIE, new_token, token_hash

HOURS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00")
OWNERS = ["", "alice", "bob", "chris", "dana"]
# (kind, channel, meta, weight)
MIX = [
    ("message_in", "sms", "{}", 28),
    ("message_out", "sms", "{}", 18),
    ("message_out", "sms", '{"automated":true,"rule":"missed_call"}', 4),
    ("message_in", "chat", "{}", 10),
    ("message_out", "chat", "{}", 5),
    ("call_answered", "voice", '{"direction":"inbound"}', 10),
    ("call_missed", "voice", "{}", 6),
    ("call_abandoned", "voice", "{}", 2),
    ("voicemail", "voice", "{}", 3),
    ("call_ringing", "voice", '{"direction":"outbound"}', 4),
    ("automated", "system", '{"rule":"missed_call","decision":"suppressed","reason":"opted out"}', 2),
    ("automated", "system", '{"rule":"after_hours","decision":"sent","reason":"closed"}', 2),
    ("handoff", "chat", '{"handoff":"sms"}', 1),
    ("note", "note", "{}", 5),
]


def build(path: Path, events: int, conversations: int, days: int, now: float) -> None:
    """Write the store with plain sqlite3 (the schema's triggers dropped during the load, then restored)."""
    conn = sqlite3.connect(path, isolation_level=None)
    configure_connection(conn, writer=True)
    migrate(conn, path)
    conn.execute("PRAGMA synchronous = OFF")
    triggers = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
    ).fetchall()
    rnd = random.Random(7)
    conn.execute("BEGIN")
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    conn.executemany(
        "INSERT INTO contacts(id, display_name, created_at, updated_at) VALUES (?, ?, ?, ?)",
        ((i, f"Customer {i}", now, now) for i in range(1, conversations + 1)),
    )
    conn.executemany(
        "INSERT INTO identities(contact_id, kind, value, raw, valid, created_at) VALUES (?, 'phone', ?, ?, 1, ?)",
        ((i, f"+1666{i:07d}", f"+1666{i:07d}", now) for i in range(1, conversations + 1)),
    )

    def conv_row(i: int) -> tuple[object, ...]:
        due = now - rnd.uniform(0, days * 86400) if i % 10 == 0 else None
        return (i, i, OWNERS[i % len(OWNERS)] or None, "call back" if due else None, due, now, now)

    conn.executemany(
        "INSERT INTO conversations(id, contact_id, owner, next_step, next_step_due, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (conv_row(i) for i in range(1, conversations + 1)),
    )
    kinds = [m[:3] for m in MIX]
    weights = [m[3] for m in MIX]
    span = days * 86400.0
    chunk = 50_000
    for base in range(0, events, chunk):
        n = min(chunk, events - base)
        picks = rnd.choices(kinds, weights, k=n)
        times = sorted(now - rnd.random() * span for _ in range(n))
        rows = []
        for j in range(n):
            cid = rnd.randint(1, conversations)
            kind, channel, meta = picks[j]
            body = "is that your address?" if kind == "message_out" and j % 50 == 0 else ""
            rows.append((cid, cid, kind, channel, body, meta, times[j], times[j]))
        conn.executemany(
            "INSERT INTO events(conversation_id, origin_conversation_id, kind, channel, body, meta, occurred_at,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.execute("INSERT INTO events_fts(events_fts) VALUES ('rebuild')")
    for _, sql in triggers:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with http.get(url, headers=headers) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
    return (time.perf_counter() - t0) * 1000


async def run(args: argparse.Namespace) -> None:
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        build(path, args.events, args.conversations, args.days, now)
        print(f"store: {args.events:,} events, {args.conversations:,} conversations over {args.days} days "
              f"({time.perf_counter() - t0:.0f} s to build)")  # fmt: skip
        store = Store(path)
        await store.start()
        bus = Bus()
        leakage = LeakageService(store, LeakageConfig(), HOURS, "UTC")
        cfg = WebConfig(port=0, business_hours=HOURS)
        server = WebServer(
            WebDeps(service=ConversationService(store, bus), store=store, bus=bus, config=cfg, leakage=leakage)
        )
        await server.start()
        # A logged-in staff member's session, as the page uses (an API token would add a durable write per request:
        # its last-used stamp).
        staff_id = await create_staff_user(store, "owner", "bench password 1")
        session = new_token()
        await store.write(lambda c: web_sql.create_session(c, token_hash(session), staff_id, new_token(), now, 86400))
        headers = {"Cookie": f"{SESSION_COOKIE}={session}", "Accept": "application/json"}
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        first = today - dt.timedelta(days=29)
        page_url = f"{server.url}/api/v1/leakage/overview"
        api_url = f"{server.url}/api/v1/leakage?from={first}&to={today}"
        win = leakage.day_window(first, today)

        def count(c: sqlite3.Connection) -> int:
            return leak_sql.plain_count(c, win.start, win.end)

        rows = await store.read(count)
        print(f"30 days hold {rows:,} of the timeline rows the metrics read")
        results: dict[str, list[float]] = {}
        async with aiohttp.ClientSession() as http:
            me: list[float] = [await timed(http, f"{server.url}/api/v1/me", headers) for _ in range(args.requests)]
            cold = await timed(http, page_url, headers)
            print(f"first page request (builds the read model of 60 days): {cold:.0f} ms")
            for name, url in (("page", page_url), ("api", api_url)):
                await timed(http, url, headers)
                results[f"{name} warm"] = [await timed(http, url, headers) for _ in range(args.requests)]
            cold_n = max(5, args.requests // 20)
            for name, url in (("page", page_url), ("api", api_url)):
                samples = []
                for i in range(cold_n):
                    # A write between requests: the cache no longer matches the store's data version.
                    def touch(c: sqlite3.Connection, at: float = now + i) -> None:
                        c.execute("UPDATE conversations SET updated_at = ? WHERE id = 1", (at,))

                    await store.write(touch)
                    samples.append(await timed(http, url, headers))
                results[f"{name} after a write"] = samples
        sql_ms = []
        for _ in range(max(20, args.requests // 5)):
            t1 = time.perf_counter()
            await store.read(count)
            sql_ms.append((time.perf_counter() - t1) * 1000)
        data = await leakage.report(win)
        await server.stop()
        await store.stop()
    print(
        f"GET /api/v1/me (what any request costs: session check, JSON): p50 {statistics.median(me):.1f} ms, "
        f"p99 {pct(me, 0.99):.1f} ms"
    )
    print(
        f"plain SQL COUNT(*) of the same 30 days: p50 {statistics.median(sql_ms):.1f} ms, p99 {pct(sql_ms, 0.99):.1f} ms"
    )
    base = statistics.median(sql_ms)
    for name, vals in results.items():
        print(
            f"{name:>18}: n={len(vals)} p50 {statistics.median(vals):.1f} ms, p99 {pct(vals, 0.99):.1f} ms "
            f"(p50 / SQL count p50 = {statistics.median(vals) / base:.2f})"
        )
    leaks = {k: v["count"] for k, v in data["metrics"].items()}
    print("30-day counts:", json.dumps(leaks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--requests", type=int, default=200)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
