"""SQL of the continuity rules: durable scheduled sends and what the restraint counts.

Times here are the continuity clock's unix seconds (the engine's injectable clock), so a test that moves the clock
moves every figure the restraint reads consistently.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JobRow:
    """One scheduled send."""

    id: int
    rule: str
    conversation_id: int
    due_at: float
    state: str
    payload: Mapping[str, Any]
    reason: str
    attempts: int
    created_at: float


_JOB_COLS = "id, rule, conversation_id, due_at, state, payload, reason, attempts, created_at"


def _job(row: tuple[Any, ...]) -> JobRow:
    return JobRow(row[0], row[1], row[2], row[3], row[4], json.loads(row[5] or "{}"), row[6], row[7], row[8])


def live_conversation(conn: sqlite3.Connection, conversation_id: int) -> int:
    """Follow conversation merges (the id may have been merged away since a job was scheduled)."""
    current, seen = conversation_id, set()
    while current not in seen:
        seen.add(current)
        row = conn.execute("SELECT merged_into FROM conversations WHERE id = ?", (current,)).fetchone()
        if row is None or row[0] is None:
            return current
        current = int(row[0])
    return current


def schedule_job(
    conn: sqlite3.Connection, rule: str, conversation_id: int, due_at: float, payload: Mapping[str, Any], now: float
) -> int:
    """Store a send for later; returns the job id."""
    cur = conn.execute(
        "INSERT INTO continuity_jobs (rule, conversation_id, due_at, payload, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (rule, conversation_id, due_at, json.dumps(dict(payload), ensure_ascii=False), now, now),
    )
    return int(cur.lastrowid or 0)


def pending_job_at(conn: sqlite3.Connection, rule: str, conversation_id: int, due_at: float) -> int | None:
    """A scheduled job of ``rule`` for the conversation within a minute of ``due_at`` (the same booking twice)."""
    row = conn.execute(
        "SELECT id FROM continuity_jobs WHERE rule = ? AND conversation_id = ? AND state = 'scheduled'"
        " AND due_at BETWEEN ? AND ?",
        (rule, conversation_id, due_at - 60, due_at + 60),
    ).fetchone()
    return int(row[0]) if row is not None else None


def schedule_many(conn: sqlite3.Connection, rows: Iterable[tuple[str, int, float, str, float]]) -> None:
    """Bulk insert (rule, conversation_id, due_at, payload_json, now) rows (benchmarks, imports)."""
    conn.executemany(
        "INSERT INTO continuity_jobs (rule, conversation_id, due_at, payload, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?5)",
        rows,
    )


def pending_jobs(conn: sqlite3.Connection, conversation_id: int, rules: Iterable[str] | None = None) -> list[JobRow]:
    """Scheduled (not yet sent) jobs of a conversation, optionally of some rules only."""
    rows = conn.execute(
        f"SELECT {_JOB_COLS} FROM continuity_jobs WHERE conversation_id = ? AND state = 'scheduled' ORDER BY due_at",
        (conversation_id,),
    ).fetchall()
    jobs = [_job(r) for r in rows]
    if rules is None:
        return jobs
    wanted = set(rules)
    return [j for j in jobs if j.rule in wanted]


def jobs_of(conn: sqlite3.Connection, conversation_id: int, limit: int = 50) -> list[JobRow]:
    """The latest jobs of a conversation, newest first (console)."""
    rows = conn.execute(
        f"SELECT {_JOB_COLS} FROM continuity_jobs WHERE conversation_id = ? ORDER BY id DESC LIMIT ?",
        (conversation_id, limit),
    ).fetchall()
    return [_job(r) for r in rows]


def get_job(conn: sqlite3.Connection, job_id: int) -> JobRow | None:
    """One job by id."""
    row = conn.execute(f"SELECT {_JOB_COLS} FROM continuity_jobs WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row else None


def finish_job(conn: sqlite3.Connection, job_id: int, state: str, reason: str, now: float) -> bool:
    """Move a scheduled or sending job to a final state; False if it was already final."""
    cur = conn.execute(
        "UPDATE continuity_jobs SET state = ?, reason = ?, updated_at = ?"
        " WHERE id = ? AND state IN ('scheduled', 'sending')",
        (state, reason, now, job_id),
    )
    return cur.rowcount == 1


def reschedule_job(conn: sqlite3.Connection, job_id: int, due_at: float, reason: str, now: float) -> None:
    """Put a job back to wait until ``due_at`` (deferred by quiet hours, a retry)."""
    conn.execute(
        "UPDATE continuity_jobs SET state = 'scheduled', due_at = ?, reason = ?, attempts = attempts + 1,"
        " updated_at = ? WHERE id = ?",
        (due_at, reason, now, job_id),
    )


def claim_job(conn: sqlite3.Connection, job_id: int, now: float) -> bool:
    """scheduled -> sending; False when someone cancelled it first."""
    cur = conn.execute(
        "UPDATE continuity_jobs SET state = 'sending', updated_at = ? WHERE id = ? AND state = 'scheduled'",
        (now, job_id),
    )
    return cur.rowcount == 1


def due_jobs(conn: sqlite3.Connection, until: float, limit: int = 500) -> list[JobRow]:
    """Scheduled jobs due at or before ``until``, earliest first."""
    rows = conn.execute(
        f"SELECT {_JOB_COLS} FROM continuity_jobs WHERE state = 'scheduled' AND due_at <= ?"
        " ORDER BY due_at, id LIMIT ?",
        (until, limit),
    ).fetchall()
    return [_job(r) for r in rows]


def next_due(conn: sqlite3.Connection) -> float | None:
    """The earliest due time of a scheduled job."""
    row = conn.execute("SELECT MIN(due_at) FROM continuity_jobs WHERE state = 'scheduled'").fetchone()
    return float(row[0]) if row and row[0] is not None else None


def count_scheduled(conn: sqlite3.Connection) -> int:
    """How many jobs wait."""
    row = conn.execute("SELECT COUNT(*) FROM continuity_jobs WHERE state = 'scheduled'").fetchone()
    return int(row[0])


def interrupted_jobs(conn: sqlite3.Connection) -> list[JobRow]:
    """Jobs caught between claim and finish by a stop or crash."""
    rows = conn.execute(f"SELECT {_JOB_COLS} FROM continuity_jobs WHERE state = 'sending'").fetchall()
    return [_job(r) for r in rows]


def call_of_job(conn: sqlite3.Connection, conversation_id: int, job_id: int) -> str | None:
    """The id of the call a call-back job placed (its "ringing ... first" timeline entry names it), if any."""
    row = conn.execute(
        "SELECT json_extract(meta, '$.call_id') FROM events WHERE conversation_id = ? AND kind = 'automated'"
        " AND json_extract(meta, '$.job_id') = ? AND json_extract(meta, '$.call_id') IS NOT NULL"
        " ORDER BY id DESC LIMIT 1",
        (conversation_id, job_id),
    ).fetchone()
    return str(row[0]) if row else None


def call_end(conn: sqlite3.Connection, call_id: str) -> tuple[str, float] | None:
    """(outcome, talk seconds) of a call whose end is on the timeline, else None."""
    row = conn.execute(
        "SELECT json_extract(meta, '$.outcome'), json_extract(meta, '$.talk_seconds') FROM events"
        " WHERE kind = 'call_ended' AND json_extract(meta, '$.call_id') = ? ORDER BY id DESC LIMIT 1",
        (call_id,),
    ).fetchone()
    return (str(row[0]), float(row[1] or 0.0)) if row else None


def message_of_job(conn: sqlite3.Connection, conversation_id: int, job_id: int) -> int | None:
    """The outbound event a job already produced (its meta carries the job id), if any."""
    row = conn.execute(
        "SELECT id FROM events WHERE conversation_id = ? AND kind = 'message_out'"
        " AND json_extract(meta, '$.job_id') = ? LIMIT 1",
        (conversation_id, job_id),
    ).fetchone()
    return int(row[0]) if row else None


def record_send(conn: sqlite3.Connection, conversation_id: int, rule: str, address: str, at: float) -> None:
    """Count one automated send for the restraint."""
    conn.execute(
        "INSERT INTO continuity_sends (conversation_id, rule, address, at) VALUES (?, ?, ?, ?)",
        (conversation_id, rule, address, at),
    )


def sends_since(conn: sqlite3.Connection, conversation_id: int, since: float) -> list[float]:
    """Times of automated sends to a conversation since ``since``."""
    rows = conn.execute(
        "SELECT at FROM continuity_sends WHERE conversation_id = ? AND at >= ? AND rule <> 'stalled_thread'"
        " ORDER BY at",
        (conversation_id, since),
    ).fetchall()
    return [float(r[0]) for r in rows]


def last_send_to(conn: sqlite3.Connection, address: str, rule: str) -> float | None:
    """When ``rule`` last texted ``address`` (per-number cooldown)."""
    row = conn.execute(
        "SELECT MAX(at) FROM continuity_sends WHERE address = ? AND rule = ?", (address, rule)
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def record_contact(conn: sqlite3.Connection, conversation_id: int, at: float) -> None:
    """Remember a customer contact (episodes are chains of contacts close together)."""
    conn.execute("INSERT INTO continuity_contacts (conversation_id, at) VALUES (?, ?)", (conversation_id, at))


def contacts_since(conn: sqlite3.Connection, conversation_id: int, since: float) -> list[float]:
    """Times of customer contacts since ``since``, oldest first."""
    rows = conn.execute(
        "SELECT at FROM continuity_contacts WHERE conversation_id = ? AND at >= ? ORDER BY at",
        (conversation_id, since),
    ).fetchall()
    return [float(r[0]) for r in rows]


def set_human(conn: sqlite3.Connection, conversation_id: int, at: float) -> None:
    """Remember that a person answered the customer at ``at``."""
    conn.execute(
        "INSERT INTO continuity_human (conversation_id, at) VALUES (?, ?)"
        " ON CONFLICT(conversation_id) DO UPDATE SET at = MAX(at, excluded.at)",
        (conversation_id, at),
    )


def human_at(conn: sqlite3.Connection, conversation_id: int) -> float | None:
    """When a person last answered the customer (continuity clock)."""
    row = conn.execute("SELECT at FROM continuity_human WHERE conversation_id = ?", (conversation_id,)).fetchone()
    return float(row[0]) if row else None


def last_sms_failed(conn: sqlite3.Connection, address: str) -> bool:
    """True when the latest SMS to ``address`` failed for good (a learned unreachable number)."""
    row = conn.execute(
        "SELECT state FROM outbox WHERE to_addr = ? AND channel = 'sms' ORDER BY id DESC LIMIT 1", (address,)
    ).fetchone()
    return bool(row) and row[0] == "failed"


def recent_customer_messages(conn: sqlite3.Connection, conversation_id: int, limit: int = 20) -> list[tuple[str, str]]:
    """(channel, body) of the customer's latest messages, newest first."""
    rows = conn.execute(
        "SELECT channel, body FROM events WHERE conversation_id = ? AND kind = 'message_in' ORDER BY id DESC LIMIT ?",
        (conversation_id, limit),
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def waiting_conversations(conn: sqlite3.Connection) -> list[tuple[int, float]]:
    """(conversation_id, waiting since) of live conversations whose customer waits for an answer.

    Who waits is the timeline's verdict (``awaiting_since``); since when is read on the rules' own clock: the first
    customer contact the rules recorded after the last time a person answered (both stamped by the engine), so the
    stalled-thread check never compares the timeline's wall-clock times with the rules' clock. A conversation with
    no such contact (a person acted after the customer's last contact) is not waiting on the rules' clock.
    """
    rows = conn.execute(
        "SELECT v.id, (SELECT MIN(k.at) FROM continuity_contacts k WHERE k.conversation_id = v.id"
        "   AND k.at >= COALESCE((SELECT h.at FROM continuity_human h WHERE h.conversation_id = v.id), -1)) AS since"
        " FROM conversations v WHERE v.awaiting_since IS NOT NULL AND v.merged_into IS NULL"
    ).fetchall()
    return [(int(r[0]), float(r[1])) for r in rows if r[1] is not None]


def cursor(conn: sqlite3.Connection) -> int | None:
    """The last event id the rules handled (None before the first start)."""
    row = conn.execute("SELECT event_id FROM continuity_cursor WHERE id = 1").fetchone()
    return int(row[0]) if row else None


def set_cursor(conn: sqlite3.Connection, event_id: int) -> None:
    """Move the cursor forward."""
    conn.execute(
        "INSERT INTO continuity_cursor (id, event_id) VALUES (1, ?)"
        " ON CONFLICT(id) DO UPDATE SET event_id = MAX(event_id, excluded.event_id)",
        (event_id,),
    )


def max_event_id(conn: sqlite3.Connection) -> int:
    """The newest event id (0 on an empty store)."""
    row = conn.execute("SELECT MAX(id) FROM events").fetchone()
    return int(row[0] or 0)


def events_after(conn: sqlite3.Connection, after: int, limit: int = 200) -> list[tuple[Any, ...]]:
    """(id, conversation_id, kind, channel, body, meta_json, author) of events after ``after``."""
    return conn.execute(
        "SELECT id, conversation_id, kind, channel, body, meta, author FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()


def conversation_basics(conn: sqlite3.Connection, conversation_id: int) -> dict[str, Any] | None:
    """The conversation fields the rules read, with the contact's name, first valid phone and owner's extension."""
    row = conn.execute(
        "SELECT v.contact_id, c.display_name, v.intent, v.next_step, v.urgent, v.owner, v.preferred_channel, v.facts"
        " FROM conversations v JOIN contacts c ON c.id = v.contact_id WHERE v.id = ?",
        (conversation_id,),
    ).fetchone()
    if row is None:
        return None
    phones = conn.execute(
        "SELECT value, raw, valid FROM identities WHERE contact_id = ? AND kind = 'phone' ORDER BY valid DESC, id",
        (row[0],),
    ).fetchall()
    owner_ext = None
    if row[5]:
        found = conn.execute("SELECT extension FROM staff WHERE username = ?", (row[5],)).fetchone()
        owner_ext = found[0] if found else None
    return {
        "contact_id": row[0],
        "display_name": row[1],
        "intent": row[2],
        "next_step": row[3],
        "urgent": bool(row[4]),
        "owner": row[5],
        "preferred_channel": row[6],
        "facts": json.loads(row[7] or "{}"),
        "phones": [(str(p[0]), str(p[1]), bool(p[2])) for p in phones],
        "owner_extension": owner_ext,
    }


def is_suppressed(conn: sqlite3.Connection, address: str) -> bool:
    """True when the address opted out (STOP)."""
    return conn.execute("SELECT 1 FROM suppressions WHERE address = ?", (address,)).fetchone() is not None


def alerted_since(conn: sqlite3.Connection, conversation_id: int, rule: str, since: float) -> bool:
    """True when ``rule`` already acted on this conversation at or after ``since``."""
    row = conn.execute(
        "SELECT 1 FROM continuity_sends WHERE conversation_id = ? AND rule = ? AND at >= ? LIMIT 1",
        (conversation_id, rule, since),
    ).fetchone()
    return row is not None


def call_back_ringer(
    conn: sqlite3.Connection, conversation_id: int, fallback_extension: str
) -> tuple[str | None, str | None]:
    """(extension a call-back rings first, the staff member it belongs to) for a conversation: the owner's own
    extension, else ``fallback_extension`` (``continuity.call_me_extension``); (None, None) when neither exists."""
    conv = live_conversation(conn, conversation_id)
    row = conn.execute(
        "SELECT s.extension, s.username FROM conversations v JOIN staff s ON s.username = v.owner"
        " WHERE v.id = ? AND s.extension IS NOT NULL AND s.extension != ''",
        (conv,),
    ).fetchone()
    if row is not None:
        return str(row[0]), str(row[1])
    if not fallback_extension:
        return None, None
    found = conn.execute("SELECT username FROM staff WHERE extension = ?", (fallback_extension,)).fetchone()
    return fallback_extension, (str(found[0]) if found else None)


def call_backs_without_phone(conn: sqlite3.Connection, any_owner: bool = False) -> int:
    """Booked call-backs (not yet due) on conversations whose owner has no extension to ring (``any_owner``: all
    of them, when the voice channel is off).

    Asked only when ``continuity.call_me_extension`` is empty or voice is off: then nothing else could be rung.
    """
    row = conn.execute(
        "SELECT COUNT(*) FROM continuity_jobs j JOIN conversations v ON v.id = j.conversation_id"
        " LEFT JOIN staff s ON s.username = v.owner"
        " WHERE j.rule = 'call_me' AND j.state = 'scheduled' AND json_extract(j.payload, '$.channel') IS NULL"
        " AND (? OR s.extension IS NULL OR s.extension = '')",
        (any_owner,),
    ).fetchone()
    return int(row[0])
