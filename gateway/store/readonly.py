"""Read-only access to a running gateway's database from another process (``gateway demo``).

SQLite in WAL mode lets readers in other processes see every committed write without disturbing the daemon's single
writer; the connection is opened with ``mode=ro`` and ``query_only`` so it cannot write by mistake.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.domain.models import IdentityKind, TimelineEvent
from gateway.errors import StoreError
from gateway.store import limits as limits_sql
from gateway.store import queries as q


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.execute("PRAGMA query_only = ON")
    return conn


def conversation_of_phone(path: Path, e164: str) -> int | None:
    """The conversation that owns a phone number, if any."""
    conn = _connect(path)
    try:
        found = q.resolve_identity(conn, IdentityKind.PHONE.value, e164)
        return None if found is None else int(found[1])
    finally:
        conn.close()


def timeline(path: Path, conversation_id: int, limit: int = 500) -> list[TimelineEvent]:
    """A conversation's timeline, oldest first."""
    conn = _connect(path)
    try:
        return q.timeline(conn, conversation_id, limit=limit)
    finally:
        conn.close()


def automated_sms_counts(path: Path, now: float) -> tuple[int, int]:
    """Automated texts queued in the last hour and the last 24 hours."""
    try:
        conn = _connect(path)
        try:
            return limits_sql.automated_sms_counts(conn, now)
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"database {path}: {err}") from err
