"""Limits benchmark, run by hand: ``.venv/bin/python bench/limits_bench.py [--queued 10000 --rounds 200]``.

(a) Outbox claim with a deep queue: ``--queued`` SMS wait in the outbox (automated and staff, many recipients,
    some with several messages each). Time per claim round of the ordered query (staff first, never ahead of an
    earlier pending message to the same number) against the plain FIFO query it replaced, both on the same
    database in the same run (read-only: the row is selected, not marked).
(b) Budget check: time of the automated-SMS budget count that every automated send runs in its transaction.
(c) Login reservation: time of one ``reserve_login_attempt`` write function (two keys).

Prints p50/p99 in microseconds and the ratio ordered/FIFO.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.store import limits as limits_sql  # noqa: E402
from gateway.store import sms as sms_sql  # noqa: E402
from gateway.store import web as web_sql  # noqa: E402
from gateway.store.db import configure_connection, migrate  # noqa: E402

FIFO = (
    "SELECT id, conversation_id, to_addr, body, attempts, automated, expires_at FROM outbox"
    " WHERE channel = 'sms' AND state = 'queued' AND next_attempt_at <= ? AND expires_at > ?"
    " ORDER BY next_attempt_at, id LIMIT 1"
)


def _fill(conn: sqlite3.Connection, queued: int, now: float) -> None:
    rnd = random.Random(7)
    conn.execute("INSERT INTO contacts(id, created_at, updated_at) VALUES (1, 0, 0)")
    conn.execute("INSERT INTO conversations(id, contact_id, created_at, updated_at) VALUES (1, 1, 0, 0)")
    rows = []
    for i in range(queued):
        to = f"+1202555{rnd.randrange(queued // 3 + 1):04d}"[:12]
        automated = 1 if rnd.random() < 0.8 else 0
        created = now - queued + i
        rows.append((to, f"message {i}", automated, created, now + 86400, created, created))
    conn.executemany(
        "INSERT INTO outbox(conversation_id, channel, to_addr, body, automated, next_attempt_at, expires_at,"
        " created_at, updated_at) VALUES (1, 'sms', ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()


def _time(fn: object, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1e6)
    return out


def _show(name: str, samples: list[float]) -> float:
    p50 = statistics.median(samples)
    p99 = sorted(samples)[int(len(samples) * 0.99) - 1]
    print(f"{name:<44} p50 {p50:8.1f} us   p99 {p99:8.1f} us")
    return p50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queued", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        conn = sqlite3.connect(path, isolation_level=None)
        configure_connection(conn, writer=True)
        migrate(conn, path)
        conn.isolation_level = "DEFERRED"
        now = time.time()
        _fill(conn, args.queued, now)
        print(f"outbox: {args.queued} queued SMS")
        fifo = _show(
            "(a) claim query, plain FIFO (before)",
            _time(lambda: conn.execute(FIFO, (now, now)).fetchone(), args.rounds),
        )
        ordered = _show(
            "(a) claim query, staff first + per-number order", _time(lambda: sms_sql.next_due(conn, now), args.rounds)
        )
        print(f"    ratio ordered/FIFO: {ordered / fifo:.2f}")
        _show("(a) next due time (sleep planning)", _time(lambda: sms_sql.next_attempt_at(conn), args.rounds))
        used = limits_sql.automated_sms_counts(conn, now)[1]
        _show(
            f"(b) budget count, {used} automated in 24 h",
            _time(lambda: limits_sql.automated_sms_counts(conn, now), args.rounds),
        )
        conn.execute(
            "DELETE FROM outbox WHERE automated = 1 AND id NOT IN"
            " (SELECT id FROM outbox WHERE automated = 1 ORDER BY id DESC LIMIT 200)"
        )
        conn.commit()
        _show(
            "(b) budget count, 200 automated in 24 h",
            _time(lambda: limits_sql.automated_sms_counts(conn, now), args.rounds),
        )
        keys = [("user:alice|198.51.100.7", 5), ("addr:198.51.100.7", 30)]

        def reserve() -> None:
            web_sql.reserve_login_attempt(conn, keys, time.time(), window=900, base_delay=1e-9, max_delay=1e-9)
            conn.commit()

        _show("(c) login attempt reservation (with commit)", _time(reserve, args.rounds))
        conn.close()


if __name__ == "__main__":
    main()
