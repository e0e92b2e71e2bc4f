"""Small facts kept in the ``gateway_meta`` table (migration 0017): which gateway wrote the database, the status
page's sparkline history, and the like. Values are text (JSON where structured)."""

from __future__ import annotations

import sqlite3


def get(conn: sqlite3.Connection, key: str) -> str | None:
    """The value stored under ``key``, if any."""
    row = conn.execute("SELECT value FROM gateway_meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def put(conn: sqlite3.Connection, key: str, value: str, now: float) -> None:
    """Store ``value`` under ``key`` (replacing what was there)."""
    conn.execute(
        "INSERT INTO gateway_meta(key, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, value, now),
    )
