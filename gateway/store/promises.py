"""SQL of staff promises (table ``promises``, migration 0018). A promise follows its event through merges: the
conversation it belongs to is always the one its event lives in now."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PromiseRow:
    """One promise as stored, with the conversation its event lives in now."""

    id: int
    conversation_id: int
    event_id: int
    step: str
    due: float | None
    phrase: str
    said_by: str | None
    status: str
    created_at: float
    decided_by: str | None
    decided_at: float | None


_COLUMNS = (
    "p.id, e.conversation_id, p.event_id, p.step, p.due, p.phrase, p.said_by, p.status, p.created_at,"
    " p.decided_by, p.decided_at"
)

#: A staff contact with the customer: a reply that was not automated, or a call someone answered.
_STAFF_CONTACT = (
    "(x.kind = 'message_out' AND COALESCE(json_extract(x.meta, '$.automated'), 0) = 0) OR x.kind = 'call_answered'"
)


def _row(r: sqlite3.Row | tuple[object, ...]) -> PromiseRow:
    return PromiseRow(*r)


def insert(
    conn: sqlite3.Connection,
    conversation_id: int,
    event_id: int,
    step: str,
    due: float | None,
    phrase: str,
    said_by: str | None,
    now: float,
) -> int | None:
    """Store a proposed promise once per (event, step); the new id, or None when it was already there."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO promises(conversation_id, event_id, step, due, phrase, said_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, event_id, step, due, phrase, said_by, now),
    )
    return int(cur.lastrowid) if cur.rowcount and cur.lastrowid is not None else None


def for_conversation(conn: sqlite3.Connection, conversation_id: int) -> list[PromiseRow]:
    """Promises heard in a conversation (newest first), dismissed ones included."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM promises p JOIN events e ON e.id = p.event_id"
        " WHERE e.conversation_id = ? ORDER BY p.created_at DESC, p.id DESC",
        (conversation_id,),
    ).fetchall()
    return [_row(r) for r in rows]


def get(conn: sqlite3.Connection, promise_id: int) -> PromiseRow | None:
    """One promise."""
    r = conn.execute(
        f"SELECT {_COLUMNS} FROM promises p JOIN events e ON e.id = p.event_id WHERE p.id = ?", (promise_id,)
    ).fetchone()
    return _row(r) if r is not None else None


def decide(conn: sqlite3.Connection, promise_id: int, status: str, who: str, now: float) -> PromiseRow | None:
    """Confirm or dismiss a proposed promise; None when there is no such promise."""
    conn.execute(
        "UPDATE promises SET status = ?, decided_by = ?, decided_at = ? WHERE id = ?", (status, who, now, promise_id)
    )
    return get(conn, promise_id)


def not_kept(conn: sqlite3.Connection, now: float, since: float = 0.0) -> list[PromiseRow]:
    """Confirmed promises past their due time with no staff contact between when they were made and when due."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM promises p JOIN events e ON e.id = p.event_id"
        " WHERE p.status = 'confirmed' AND p.due IS NOT NULL AND p.due < ? AND p.created_at >= ?"
        " AND NOT EXISTS (SELECT 1 FROM events x WHERE x.conversation_id = e.conversation_id"
        f" AND x.occurred_at > p.created_at AND x.occurred_at <= p.due AND ({_STAFF_CONTACT}))"
        " ORDER BY p.due",
        (now, since),
    ).fetchall()
    return [_row(r) for r in rows]
