"""SQL of the voice channel: the call log and the staff extension bindings."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict

from gateway.domain.calls import CallDirection, CallOutcome, CallRecord, Transfer

_COLS = (
    "call_id, conversation_id, direction, caller, dialled, started_at, answered_at, ended_at,"
    " answered_by, extensions_rung, outcome, transfers, voicemail_path, hangup_cause"
)


def record_call(conn: sqlite3.Connection, rec: CallRecord) -> None:
    """Insert or update one call of the call log."""
    conn.execute(
        f"INSERT INTO calls({_COLS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(call_id) DO UPDATE SET conversation_id = COALESCE(excluded.conversation_id,"
        " calls.conversation_id), answered_at = excluded.answered_at, ended_at = excluded.ended_at,"
        " answered_by = excluded.answered_by, extensions_rung = excluded.extensions_rung,"
        " outcome = excluded.outcome, transfers = excluded.transfers,"
        " voicemail_path = COALESCE(excluded.voicemail_path, calls.voicemail_path),"
        " hangup_cause = excluded.hangup_cause",
        (
            rec.call_id,
            rec.conversation_id,
            rec.direction.value,
            rec.caller,
            rec.dialled,
            rec.started_at,
            rec.answered_at,
            rec.ended_at,
            rec.answered_by,
            json.dumps(list(rec.extensions_rung)),
            rec.outcome.value if rec.outcome else None,
            json.dumps([asdict(t) for t in rec.transfers]),
            rec.voicemail_path,
            rec.hangup_cause,
        ),
    )


def _row(r: tuple[object, ...]) -> CallRecord:
    transfers = tuple(Transfer(**t) for t in json.loads(str(r[11])))
    return CallRecord(
        call_id=str(r[0]),
        conversation_id=int(r[1]) if r[1] is not None else None,  # type: ignore[call-overload]
        direction=CallDirection(str(r[2])),
        caller=str(r[3]),
        caller_name="",
        dialled=str(r[4]),
        started_at=float(r[5]),  # type: ignore[arg-type]
        answered_at=float(r[6]) if r[6] is not None else None,  # type: ignore[arg-type]
        ended_at=float(r[7]) if r[7] is not None else None,  # type: ignore[arg-type]
        answered_by=str(r[8]) if r[8] is not None else None,
        extensions_rung=tuple(json.loads(str(r[9]))),
        outcome=CallOutcome(str(r[10])) if r[10] is not None else None,
        transfers=transfers,
        voicemail_path=str(r[12]) if r[12] is not None else None,
        hangup_cause=str(r[13]),
    )


def get_call(conn: sqlite3.Connection, call_id: str) -> CallRecord | None:
    """One call of the log."""
    row = conn.execute(f"SELECT {_COLS} FROM calls WHERE call_id = ?", (call_id,)).fetchone()
    return _row(row) if row else None


def calls_of_conversation(conn: sqlite3.Connection, conversation_id: int, limit: int = 50) -> list[CallRecord]:
    """The latest calls of one conversation, newest first."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM calls WHERE conversation_id = ? ORDER BY started_at DESC LIMIT ?",
        (conversation_id, limit),
    ).fetchall()
    return [_row(r) for r in rows]


def bind_extensions(conn: sqlite3.Connection, staff: Mapping[str, str], now: float) -> None:
    """Make the staff table's extensions match ``staff`` (extension -> username).

    Users that do not exist yet are created without a password (they cannot log in until one is
    set); extensions no longer in the map are unbound. Display names staff chose are kept.
    """
    wanted = {user: ext for ext, user in staff.items()}
    conn.execute(
        "UPDATE staff SET extension = NULL WHERE extension IS NOT NULL"
        f" AND username NOT IN ({','.join('?' * len(wanted))})",
        tuple(wanted),
    )
    for user, ext in wanted.items():
        conn.execute("UPDATE staff SET extension = NULL WHERE extension = ? AND username <> ?", (ext, user))
        conn.execute(
            "INSERT INTO staff(username, display_name, extension, role, created_at)"
            " VALUES (?, ?, ?, 'staff', ?)"
            " ON CONFLICT(username) DO UPDATE SET extension = excluded.extension",
            (user, user, ext, now),
        )


# -- recovery after downtime ---------------------------------------------------------------------------


def recovery_cursor(conn: sqlite3.Connection, source: str) -> tuple[int, int, str] | None:
    """(inode, byte offset, head hash) where the last recovery stopped reading ``source``."""
    row = conn.execute("SELECT inode, offset, head FROM recovery_cursors WHERE source = ?", (source,)).fetchone()
    return (int(row[0]), int(row[1]), str(row[2])) if row else None


def set_recovery_cursor(conn: sqlite3.Connection, source: str, cursor: tuple[int, int, str], now: float) -> None:
    """Remember how far ``source`` was read."""
    conn.execute(
        "INSERT INTO recovery_cursors(source, inode, offset, head, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(source) DO UPDATE SET inode = excluded.inode, offset = excluded.offset,"
        " head = excluded.head, updated_at = excluded.updated_at",
        (source, *cursor, now),
    )


def known_external_ids(conn: sqlite3.Connection, channel: str, external_ids: Iterable[str]) -> set[str]:
    """Which of ``external_ids`` are already on some timeline of ``channel``."""
    ids = list(dict.fromkeys(external_ids))
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT external_id FROM events WHERE channel = ? AND external_id IN ({marks})",
            (channel, *chunk),
        ).fetchall()
        found.update(str(r[0]) for r in rows)
    return found


def call_callers(conn: sqlite3.Connection, call_ids: Iterable[str]) -> dict[str, tuple[str, int | None]]:
    """call_id -> (caller, conversation_id) from the call log, for the ids it has."""
    ids = list(dict.fromkeys(call_ids))
    out: dict[str, tuple[str, int | None]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT call_id, caller, conversation_id FROM calls WHERE call_id IN ({marks})",
            chunk,
        ).fetchall()
        for r in rows:
            out[str(r[0])] = (str(r[1]), int(r[2]) if r[2] is not None else None)
    return out
