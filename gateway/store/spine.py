"""SQL of the conversation spine: spine fields on ``conversations``, captured facts, episodes (see domain/spine.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.store.queries import dumps

SPINE_COLUMNS = (
    "intent",
    "urgent",
    "next_step",
    "next_step_due",
    "next_step_owner",
    "owner",
    "preferred_channel",
    "preference_why",
)
"""Columns of ``conversations`` that :func:`set_fields` may write."""


def chain(conn: sqlite3.Connection, conversation_id: int) -> list[int]:
    """The live conversation and every conversation merged into it (directly or through a chain), live first."""
    rows = conn.execute(
        "WITH RECURSIVE c(id) AS (SELECT ? UNION SELECT v.id FROM conversations v JOIN c ON v.merged_into = c.id)"
        " SELECT id FROM c",
        (conversation_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def spine_row(conn: sqlite3.Connection, conversation_id: int) -> dict[str, Any] | None:
    """The spine columns of one conversation plus its contact's name, or None."""
    row = conn.execute(
        "SELECT v.id, v.contact_id, c.display_name, v.intent, v.urgent, v.next_step, v.next_step_due,"
        " v.next_step_owner, v.owner, v.preferred_channel, v.preference_why, v.spine_provenance"
        " FROM conversations v JOIN contacts c ON c.id = v.contact_id WHERE v.id = ?",
        (conversation_id,),
    ).fetchone()
    if row is None:
        return None
    keys = (
        "conversation_id",
        "contact_id",
        "display_name",
        "intent",
        "urgent",
        "next_step",
        "next_step_due",
        "next_step_owner",
        "owner",
        "preferred_channel",
        "preference_why",
        "spine_provenance",
    )
    out = dict(zip(keys, row, strict=True))
    out["urgent"] = bool(out["urgent"])
    out["spine_provenance"] = json.loads(out["spine_provenance"] or "{}")
    return out


def facts(conn: sqlite3.Connection, conversation_ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """Fact rows of these conversations as (name, value_json, source, set_by, at, confidence, event_id), oldest
    first, so a caller keeping the last row per name keeps the newest."""
    if not conversation_ids:
        return []
    marks = ",".join("?" * len(conversation_ids))
    return conn.execute(
        "SELECT name, value, source, set_by, at, confidence, event_id FROM conversation_facts"
        f" WHERE conversation_id IN ({marks}) ORDER BY at, rowid",
        tuple(conversation_ids),
    ).fetchall()


def upsert_fact(
    conn: sqlite3.Connection,
    conversation_id: int,
    name: str,
    value: Any,
    source: str,
    set_by: str,
    at: float,
    confidence: float,
    event_id: int | None,
) -> None:
    """Store a fact on a conversation (one row per name; a newer value replaces the older one)."""
    conn.execute(
        "INSERT INTO conversation_facts(conversation_id, name, value, source, set_by, at, confidence, event_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(conversation_id, name) DO UPDATE SET value = excluded.value,"
        " source = excluded.source, set_by = excluded.set_by, at = excluded.at, confidence = excluded.confidence,"
        " event_id = excluded.event_id",
        (conversation_id, name, json.dumps(value, ensure_ascii=False), source, set_by, at, confidence, event_id),
    )


def delete_fact(conn: sqlite3.Connection, conversation_ids: Sequence[int], name: str) -> int:
    """Forget a fact everywhere in the merged chain. Returns the rows removed."""
    marks = ",".join("?" * len(conversation_ids))
    cur = conn.execute(
        f"DELETE FROM conversation_facts WHERE name = ? AND conversation_id IN ({marks})",
        (name, *conversation_ids),
    )
    return int(cur.rowcount)


def mirror_fact_values(conn: sqlite3.Connection, conversation_id: int, values: Mapping[str, Any], now: float) -> None:
    """Keep ``conversations.facts`` (plain name -> value) in step with the fact table, for older readers."""
    conn.execute(
        "UPDATE conversations SET facts = ?, updated_at = ? WHERE id = ?", (dumps(values), now, conversation_id)
    )


def set_fields(
    conn: sqlite3.Connection,
    conversation_id: int,
    fields: Mapping[str, Any],
    provenance: Mapping[str, Mapping[str, Any]],
    now: float,
) -> None:
    """Write spine columns and merge the provenance of each field into ``spine_provenance``."""
    sets: list[str] = []
    params: list[Any] = []
    for key, value in fields.items():
        if key not in SPINE_COLUMNS:
            raise ValueError(f"unknown spine field {key!r}")
        sets.append(f"{key} = ?")
        params.append(int(value) if isinstance(value, bool) else value)
    row = conn.execute("SELECT spine_provenance FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    merged = json.loads(row[0] or "{}") if row is not None else {}
    merged.update({k: dict(v) for k, v in provenance.items()})
    sets += ["spine_provenance = ?", "updated_at = ?"]
    params += [dumps(merged), now, conversation_id]
    conn.execute(f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?", params)


def contact_events(
    conn: sqlite3.Connection, conversation_id: int, kinds: Iterable[str], until: float, limit: int
) -> list[tuple[int, str, str, float, str]]:
    """Customer contacts up to ``until``, newest first: (event id, kind, channel, occurred_at, meta json)."""
    kinds = tuple(kinds)
    marks = ",".join("?" * len(kinds))
    return conn.execute(
        "SELECT id, kind, channel, occurred_at, meta FROM events WHERE conversation_id = ?"
        f" AND kind IN ({marks}) AND occurred_at <= ? ORDER BY occurred_at DESC, id DESC LIMIT ?",
        (conversation_id, *kinds, until, limit),
    ).fetchall()


def automated_sent_between(conn: sqlite3.Connection, conversation_id: int, since: float, until: float) -> int:
    """Automated outbound messages recorded on the timeline in [since, until]."""
    row = conn.execute(
        "SELECT COUNT(*) FROM events WHERE conversation_id = ? AND kind = 'message_out'"
        " AND json_extract(meta, '$.automated') IS 1 AND occurred_at >= ? AND occurred_at <= ?",
        (conversation_id, since, until),
    ).fetchone()
    return int(row[0])


def phone_of(conn: sqlite3.Connection, contact_id: int) -> str | None:
    """A valid phone number of the contact or of any contact merged into it."""
    row = conn.execute(
        "WITH RECURSIVE c(id) AS (SELECT ? UNION SELECT k.id FROM contacts k JOIN c ON k.merged_into = c.id)"
        " SELECT value FROM identities WHERE kind = 'phone' AND valid = 1 AND contact_id IN (SELECT id FROM c)"
        " ORDER BY id LIMIT 1",
        (contact_id,),
    ).fetchone()
    return str(row[0]) if row is not None else None


def outbox_conversation(conn: sqlite3.Connection, outbox_id: int) -> int | None:
    """The conversation of an outbox row."""
    row = conn.execute("SELECT conversation_id FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
    return int(row[0]) if row is not None else None


def last_read_event_id(conn: sqlite3.Connection, conversation_ids: Sequence[int]) -> int:
    """The newest message or transcript of these conversations that the spine reads (0: none)."""
    marks = ",".join("?" * len(conversation_ids))
    row = conn.execute(
        f"SELECT MAX(id) FROM events WHERE conversation_id IN ({marks}) AND kind IN ('message_in', 'transcript')",
        tuple(conversation_ids),
    ).fetchone()
    return int(row[0] or 0)
