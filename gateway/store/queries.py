"""Core SQL: contacts, identities, conversations, timeline, outbox, staff, audit.

Every function here is synchronous and takes a ``sqlite3.Connection``: writers run inside the store's group-commit
transaction (``Store.write``), readers on a read connection (``Store.read``). Nothing here opens a transaction.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.domain.models import (
    ContactView,
    ConversationSummary,
    IdentityView,
    InboxRow,
    SearchHit,
    StaffUser,
    TimelineEvent,
    contact_label,
)

_EVENT_COLS = (
    "e.id, e.conversation_id, e.kind, e.channel, e.body, e.meta, e.external_id, e.author, e.occurred_at, o.state"
)
_EVENT_FROM = "events e LEFT JOIN outbox o ON o.event_id = e.id"


def _event(row: sqlite3.Row | tuple[Any, ...]) -> TimelineEvent:
    return TimelineEvent(
        id=row[0],
        conversation_id=row[1],
        kind=row[2],
        channel=row[3],
        body=row[4],
        meta=json.loads(row[5]) if row[5] and row[5] != "{}" else {},
        external_id=row[6],
        author=row[7],
        occurred_at=row[8],
        delivery=row[9],
    )


def dumps(value: Mapping[str, Any] | None) -> str:
    """JSON for meta/facts columns (compact, UTF-8 kept readable)."""
    if not value:
        return "{}"
    return json.dumps(dict(value or {}), ensure_ascii=False, separators=(",", ":"), default=str)


# -- identity resolution ---------------------------------------------------------------------------------------------


def resolve_contact(conn: sqlite3.Connection, contact_id: int) -> int:
    """Follow ``merged_into`` to the contact that is live now."""
    seen = set()
    while True:
        row = conn.execute("SELECT merged_into FROM contacts WHERE id = ?", (contact_id,)).fetchone()
        if row is None or row[0] is None or contact_id in seen:
            return contact_id
        seen.add(contact_id)
        contact_id = row[0]


def live_conversation(conn: sqlite3.Connection, conversation_id: int) -> int:
    """Follow conversation merges so callers holding an old id still land in the live timeline.

    Raises ``LookupError`` for a conversation that does not exist.
    """
    seen: set[int] = set()
    current = conversation_id
    while True:
        row = conn.execute("SELECT merged_into FROM conversations WHERE id = ?", (current,)).fetchone()
        if row is None:
            raise LookupError(f"conversation {conversation_id} does not exist")
        if row[0] is None or current in seen:
            return current
        seen.add(current)
        current = int(row[0])


def find_identity(conn: sqlite3.Connection, kind: str, value: str) -> int | None:
    """The live contact owning identity (kind, value), or None."""
    row = conn.execute("SELECT contact_id FROM identities WHERE kind = ? AND value = ?", (kind, value)).fetchone()
    if row is None:
        return None
    return resolve_contact(conn, row[0])


def resolve_identity(conn: sqlite3.Connection, kind: str, value: str) -> tuple[int, int, int] | None:
    """(live contact_id, live conversation_id, own conversation_id) for an identity in one indexed query.

    Merges are followed to the live contact; the identity's own conversation is where its events originate, so an
    undone merge gives them back to the contact they came from.
    """
    row = conn.execute(
        "SELECT i.contact_id, c.merged_into, v.id FROM identities i JOIN contacts c ON c.id = i.contact_id"
        " JOIN conversations v ON v.contact_id = i.contact_id WHERE i.kind = ? AND i.value = ?",
        (kind, value),
    ).fetchone()
    if row is None:
        return None
    if row[1] is None:
        return int(row[0]), int(row[2]), int(row[2])
    contact = resolve_contact(conn, int(row[0]))
    return contact, conversation_of(conn, contact), int(row[2])


def conversation_of(conn: sqlite3.Connection, contact_id: int) -> int:
    """The conversation of a (live) contact."""
    row = conn.execute("SELECT id FROM conversations WHERE contact_id = ?", (contact_id,)).fetchone()
    if row is None:
        raise LookupError(f"contact {contact_id} has no conversation")
    return int(row[0])


def contact_of(conn: sqlite3.Connection, conversation_id: int) -> int:
    """The contact a conversation belongs to."""
    row = conn.execute("SELECT contact_id FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    if row is None:
        raise LookupError(f"conversation {conversation_id} does not exist")
    return int(row[0])


def create_contact(
    conn: sqlite3.Connection, kind: str, value: str, raw: str, valid: bool, display_name: str | None, now: float
) -> tuple[int, int]:
    """A new contact with one identity and its conversation. Returns (contact_id, conversation_id)."""
    cur = conn.execute(
        "INSERT INTO contacts(display_name, created_at, updated_at) VALUES (?, ?, ?)", (display_name, now, now)
    )
    contact_id = int(cur.lastrowid or 0)
    conn.execute(
        "INSERT INTO identities(contact_id, kind, value, raw, valid, created_at, verified_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (contact_id, kind, value, raw, int(valid), now, now),
    )
    cur = conn.execute(
        "INSERT INTO conversations(contact_id, created_at, updated_at) VALUES (?, ?, ?)", (contact_id, now, now)
    )
    return contact_id, int(cur.lastrowid or 0)


def add_identity(
    conn: sqlite3.Connection, contact_id: int, kind: str, value: str, raw: str, valid: bool, now: float
) -> None:
    """Attach an identity to a contact, verified now (no-op if it is already there)."""
    conn.execute(
        "INSERT OR IGNORE INTO identities(contact_id, kind, value, raw, valid, created_at, verified_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (contact_id, kind, value, raw, int(valid), now, now),
    )


def reply_phone(conn: sqlite3.Connection, contact_id: int) -> str | None:
    """The number replies go to: the contact's OWN most recently verified valid phone, never an absorbed one's."""
    row = conn.execute(
        "SELECT value FROM identities WHERE contact_id = ? AND kind = 'phone' AND valid = 1"
        " ORDER BY COALESCE(verified_at, created_at) DESC, id DESC LIMIT 1",
        (contact_id,),
    ).fetchone()
    return str(row[0]) if row else None


def set_display_name_if_empty(conn: sqlite3.Connection, contact_id: int, name: str, now: float) -> None:
    """Learn a name from a channel (caller ID name, chat form) without overwriting what staff typed."""
    conn.execute(
        "UPDATE contacts SET display_name = ?, updated_at = ? WHERE id = ?"
        " AND (display_name IS NULL OR display_name = '')",
        (name, now, contact_id),
    )


def set_display_name(conn: sqlite3.Connection, contact_id: int, name: str | None, now: float) -> None:
    """Staff rename a contact."""
    conn.execute("UPDATE contacts SET display_name = ?, updated_at = ? WHERE id = ?", (name, now, contact_id))


# -- events ----------------------------------------------------------------------------------------------------------


def find_event_by_external(conn: sqlite3.Connection, channel: str, external_id: str) -> tuple[int, int] | None:
    """(event_id, conversation_id) of an already stored event with this external id."""
    row = conn.execute(
        "SELECT id, conversation_id FROM events WHERE channel = ? AND external_id = ?", (channel, external_id)
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def insert_event_once(
    conn: sqlite3.Connection,
    conversation_id: int,
    kind: str,
    channel: str,
    body: str,
    meta: str,
    external_id: str,
    author: str | None,
    occurred_at: float,
    now: float,
    origin: int | None = None,
) -> tuple[int, int, bool]:
    """Insert unless (channel, external_id) exists. Returns (event_id, conversation_id, inserted).

    The unique index does the duplicate check, so the common case costs one statement, not two. ``origin`` is the
    conversation of the contact the event came from (defaults to ``conversation_id``).
    """
    try:
        return (
            insert_event(
                conn, conversation_id, kind, channel, body, meta, external_id, author, occurred_at, now, origin
            ),
            conversation_id,
            True,
        )
    except sqlite3.IntegrityError:
        existing = find_event_by_external(conn, channel, external_id)
        if existing is None:
            raise
        return existing[0], existing[1], False


def insert_event(
    conn: sqlite3.Connection,
    conversation_id: int,
    kind: str,
    channel: str,
    body: str,
    meta: str,
    external_id: str | None,
    author: str | None,
    occurred_at: float,
    now: float,
    origin: int | None = None,
) -> int:
    """Append one timeline entry and keep the conversation's waiting/answered state in step.

    ``origin`` is the conversation of the contact the entry came from, when that contact is merged into the one
    whose timeline it joins (an undone merge gives it back); by default the timeline's own conversation.
    """
    origin_id = conversation_id if origin is None else origin
    cur = conn.execute(
        "INSERT INTO events(conversation_id, origin_conversation_id, kind, channel, body, meta, external_id, author,"
        " occurred_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, origin_id, kind, channel, body, meta, external_id, author, occurred_at, now),
    )
    # Conversation waiting/answered state is kept by triggers (migration 0001).
    return int(cur.lastrowid or 0)


#: One row for :func:`insert_events`: (conversation_id, origin_conversation_id, kind, channel, body, meta,
#: external_id, author, occurred_at, created_at).
EventRow = tuple[int, int, str, str, str, str, str | None, str | None, float, float]

#: Statement sizes (rows) that :func:`insert_events` uses, largest first: a few fixed texts keep the statement
#: cache hot, and 512 rows are 5,120 parameters, far below SQLite's limit.
_EVENT_CHUNKS = (512, 128, 32, 8, 2, 1)
_INSERT_EVENTS = {
    size: "INSERT INTO events(conversation_id, origin_conversation_id, kind, channel, body, meta, external_id, author,"
    " occurred_at, created_at) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * size)
    for size in _EVENT_CHUNKS
}


def insert_events(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> list[int]:
    """Append many timeline entries with few statements; returns their ids, in the order of ``rows``.

    Same rows, same triggers (full-text index, waiting state) as :func:`insert_event` row by row, but the rows go in
    as multi-row INSERTs: FTS5 flushes its pending index data into a new segment at the start of every statement that
    writes to it, so one statement per row costs about three times the SQLite work. Each statement gives its rows
    consecutive ids (SQLite picks one more than the largest id for each new row; nothing else inserts into
    ``events`` within the statement), so the ids are read back from ``lastrowid``. All or nothing: a constraint
    failure (a duplicate external id) undoes every row of this call (a savepoint) and is raised.
    """
    ids: list[int] = []
    start, total = 0, len(rows)
    conn.execute("SAVEPOINT insert_events")
    try:
        for size in _EVENT_CHUNKS:
            while total - start >= size:
                part = rows[start : start + size]
                params = [value for row in part for value in row]
                cur = conn.execute(_INSERT_EVENTS[size], params)
                last = int(cur.lastrowid or 0)
                ids.extend(range(last - size + 1, last + 1))
                start += size
    except BaseException:
        conn.execute("ROLLBACK TO insert_events")
        conn.execute("RELEASE insert_events")
        raise
    conn.execute("RELEASE insert_events")
    return ids


def get_event(conn: sqlite3.Connection, event_id: int) -> TimelineEvent | None:
    """One timeline entry by id."""
    row = conn.execute(f"SELECT {_EVENT_COLS} FROM {_EVENT_FROM} WHERE e.id = ?", (event_id,)).fetchone()
    return _event(row) if row else None


def update_event_meta(conn: sqlite3.Connection, event_id: int, patch: Mapping[str, Any]) -> None:
    """Merge keys into an event's meta (e.g. a voicemail's transcription state)."""
    row = conn.execute("SELECT meta FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        raise LookupError(f"event {event_id} does not exist")
    meta = json.loads(row[0] or "{}")
    meta.update(patch)
    conn.execute("UPDATE events SET meta = ? WHERE id = ?", (dumps(meta), event_id))


def timeline(
    conn: sqlite3.Connection, conversation_id: int, limit: int = 50, before_id: int | None = None
) -> list[TimelineEvent]:
    """The last ``limit`` events of a conversation (oldest first), optionally before an event id."""
    if before_id is None:
        rows = conn.execute(
            f"SELECT {_EVENT_COLS} FROM {_EVENT_FROM} WHERE e.conversation_id = ? ORDER BY e.id DESC LIMIT ?",
            (conversation_id, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_EVENT_COLS} FROM {_EVENT_FROM} WHERE e.conversation_id = ? AND e.id < ?"
            " ORDER BY e.id DESC LIMIT ?",
            (conversation_id, before_id, limit),
        ).fetchall()
    return [_event(r) for r in reversed(rows)]


_FTS_TOKEN = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """Turn what a person typed into a safe FTS5 query: every word quoted, prefix-matched, ANDed."""
    words = _FTS_TOKEN.findall(text)
    if not words:
        return None
    return " ".join(f'"{w}"*' for w in words[:16])


def search(conn: sqlite3.Connection, text: str, limit: int = 50) -> list[SearchHit]:
    """Full-text search over message bodies, notes and transcripts, newest first."""
    query = fts_query(text)
    if query is None:
        return []
    rows = conn.execute(
        f"SELECT {_EVENT_COLS}, snippet(events_fts, 0, '[', ']', '…', 12), c.display_name"
        " FROM events_fts JOIN events e ON e.id = events_fts.rowid LEFT JOIN outbox o ON o.event_id = e.id"
        " JOIN conversations v ON v.id = e.conversation_id JOIN contacts c ON c.id = v.contact_id"
        " WHERE events_fts MATCH ? ORDER BY e.id DESC LIMIT ?",
        (query, limit),
    ).fetchall()
    return [SearchHit(event=_event(r[:10]), snippet=r[10], display_name=r[11]) for r in rows]


# -- conversations ---------------------------------------------------------------------------------------------------

_CONV_FIELDS = ("status", "intent", "next_step", "urgent", "owner", "preferred_channel", "facts")


def update_conversation(conn: sqlite3.Connection, conversation_id: int, fields: Mapping[str, Any], now: float) -> None:
    """Set conversation fields (only known columns; ``facts`` is merged into the existing object)."""
    sets: list[str] = []
    args: list[Any] = []
    for key, given in fields.items():
        if key not in _CONV_FIELDS:
            raise ValueError(f"unknown conversation field {key!r}")
        value: Any = given
        if key == "facts":
            row = conn.execute("SELECT facts FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            merged = json.loads(row[0] if row else "{}")
            merged.update(given or {})
            value = dumps(merged)
        elif key == "urgent":
            value = int(bool(given))
        sets.append(f"{key} = ?")
        args.append(value)
    if not sets:
        return
    args.extend([now, conversation_id])
    cur = conn.execute(f"UPDATE conversations SET {', '.join(sets)}, updated_at = ? WHERE id = ?", args)
    if cur.rowcount == 0:
        raise LookupError(f"conversation {conversation_id} does not exist")


def identities(conn: sqlite3.Connection, contact_id: int) -> tuple[IdentityView, ...]:
    """Identities of a contact and of every contact merged into it."""
    ids = [contact_id] + [
        r[0]
        for r in conn.execute(
            "WITH RECURSIVE m(id) AS (SELECT id FROM contacts WHERE merged_into = ?"
            " UNION SELECT c.id FROM contacts c JOIN m ON c.merged_into = m.id) SELECT id FROM m",
            (contact_id,),
        )
    ]
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT kind, value, raw, valid FROM identities WHERE contact_id IN ({marks}) ORDER BY id", ids
    ).fetchall()
    return tuple(IdentityView(kind=r[0], value=r[1], raw=r[2], valid=bool(r[3])) for r in rows)


def contact_view(conn: sqlite3.Connection, contact_id: int) -> ContactView | None:
    """A contact with identities and conversation id."""
    row = conn.execute(
        "SELECT c.id, c.display_name, v.id FROM contacts c JOIN conversations v ON v.contact_id = c.id WHERE c.id = ?",
        (contact_id,),
    ).fetchone()
    if row is None:
        return None
    return ContactView(id=row[0], display_name=row[1], conversation_id=row[2], identities=identities(conn, row[0]))


def summary(conn: sqlite3.Connection, conversation_id: int) -> ConversationSummary | None:
    """Everything staff need at a glance about one conversation."""
    row = conn.execute(
        "SELECT v.id, v.contact_id, c.display_name, v.status, v.intent, v.next_step, v.urgent, v.owner,"
        " v.preferred_channel, v.facts, v.awaiting_since FROM conversations v JOIN contacts c ON c.id = v.contact_id"
        " WHERE v.id = ?",
        (conversation_id,),
    ).fetchone()
    if row is None:
        return None
    last_by_channel: dict[str, TimelineEvent] = {}
    for channel_row in conn.execute(
        "SELECT channel, MAX(id) FROM events WHERE conversation_id = ? AND kind IN ('message_in', 'message_out',"
        " 'voicemail', 'call_missed', 'call_answered', 'call_ended') GROUP BY channel",
        (conversation_id,),
    ).fetchall():
        ev = get_event(conn, channel_row[1])
        if ev is not None:
            last_by_channel[channel_row[0]] = ev
    tr = conn.execute(
        "SELECT MAX(id) FROM events WHERE conversation_id = ? AND kind = 'transcript'", (conversation_id,)
    ).fetchone()
    latest_transcript = get_event(conn, tr[0]) if tr and tr[0] else None
    idents = identities(conn, row[1])
    phone = reply_phone(conn, row[1])
    return ConversationSummary(
        conversation_id=row[0],
        contact_id=row[1],
        display_name=row[2],
        status=row[3],
        intent=row[4],
        next_step=row[5],
        urgent=bool(row[6]),
        owner=row[7],
        preferred_channel=row[8],
        facts=json.loads(row[9] or "{}"),
        phone=phone,
        last_by_channel=last_by_channel,
        latest_transcript=latest_transcript,
        last_staff_extension=last_staff_extension(conn, conversation_id),
        awaiting_since=row[10],
        label=contact_label(row[2], idents),
    )


def last_staff_extension(conn: sqlite3.Connection, conversation_id: int) -> str | None:
    """The extension of the staff member who last handled this customer (answered a call or replied)."""
    row = conn.execute(
        "SELECT e.kind, json_extract(e.meta, '$.extension'), s.extension FROM events e"
        " LEFT JOIN staff s ON s.username = e.author"
        " WHERE e.conversation_id = ? AND ((e.kind = 'call_answered' AND json_extract(e.meta, '$.extension') IS NOT"
        " NULL) OR (e.kind = 'message_out' AND s.extension IS NOT NULL)) ORDER BY e.id DESC LIMIT 1",
        (conversation_id,),
    ).fetchone()
    if row is None:
        return None
    return str(row[1] if row[0] == "call_answered" else row[2])


def inbox(conn: sqlite3.Connection, limit: int = 100, owner: str | None = None) -> list[InboxRow]:
    """Conversations, the customer who has waited longest for an answer first, then the most recently active.

    The preview is the latest event that is not a spine change (those are bookkeeping, not conversation)."""
    where = "v.merged_into IS NULL AND v.status <> 'closed'"
    args: list[Any] = []
    if owner is not None:
        where += " AND v.owner = ?"
        args.append(owner)
    args.append(limit)
    rows = conn.execute(
        "SELECT v.id, v.contact_id, c.display_name, v.awaiting_since, v.intent, v.next_step, v.urgent, v.owner,"
        " v.updated_at, (SELECT MAX(id) FROM events WHERE conversation_id = v.id AND kind <> 'spine')"
        f" FROM conversations v JOIN contacts c ON c.id = v.contact_id WHERE {where}"
        " ORDER BY v.awaiting_since IS NULL, v.awaiting_since, v.updated_at DESC LIMIT ?",
        args,
    ).fetchall()
    out = []
    for r in rows:
        idents = identities(conn, r[1])
        phone = next((i.value for i in idents if i.kind == "phone" and i.valid), None)
        out.append(
            InboxRow(
                conversation_id=r[0],
                contact_id=r[1],
                display_name=r[2],
                phone=phone,
                awaiting_since=r[3],
                last_event=get_event(conn, r[9]) if r[9] else None,
                intent=r[4],
                next_step=r[5],
                urgent=bool(r[6]),
                owner=r[7],
                updated_at=r[8],
                label=contact_label(r[2], idents),
            )
        )
    return out


# -- merges ----------------------------------------------------------------------------------------------------------


def merge_contacts(
    conn: sqlite3.Connection, keep: int, merged: int, reason: str, author: str | None, now: float
) -> tuple[int, int, int]:
    """Make ``merged`` part of ``keep``: one timeline, fields filled in, the merge recorded.

    Returns (merge_id, kept_conversation_id, merged_conversation_id). Identities stay attached to their original
    contact, which points at the kept one, so the merge can be undone exactly.
    """
    keep_conv = conversation_of(conn, keep)
    merged_conv = conversation_of(conn, merged)
    conn.execute("UPDATE contacts SET merged_into = ?, updated_at = ? WHERE id = ?", (keep, now, merged))
    conn.execute("UPDATE conversations SET merged_into = ?, updated_at = ? WHERE id = ?", (keep_conv, now, merged_conv))
    conn.execute("UPDATE events SET conversation_id = ? WHERE conversation_id = ?", (keep_conv, merged_conv))
    conn.execute(
        "UPDATE conversations SET"
        " intent = COALESCE(intent, (SELECT intent FROM conversations WHERE id = :m)),"
        " next_step = COALESCE(next_step, (SELECT next_step FROM conversations WHERE id = :m)),"
        " urgent = MAX(urgent, (SELECT urgent FROM conversations WHERE id = :m)),"
        " awaiting_since = CASE WHEN awaiting_since IS NULL"
        "   THEN (SELECT awaiting_since FROM conversations WHERE id = :m)"
        "   ELSE MIN(awaiting_since,"
        "     COALESCE((SELECT awaiting_since FROM conversations WHERE id = :m), awaiting_since))"
        " END, updated_at = :now WHERE id = :k",
        {"m": merged_conv, "k": keep_conv, "now": now},
    )
    conn.execute(
        "UPDATE contacts SET display_name = COALESCE(NULLIF(display_name, ''), (SELECT display_name FROM contacts"
        " WHERE id = :m)) WHERE id = :k",
        {"m": merged, "k": keep},
    )
    cur = conn.execute(
        "INSERT INTO merges(kept_contact_id, merged_contact_id, reason, author, created_at) VALUES (?, ?, ?, ?, ?)",
        (keep, merged, reason, author, now),
    )
    return int(cur.lastrowid or 0), keep_conv, merged_conv


def subtree_conversations(conn: sqlite3.Connection, contact_id: int) -> list[int]:
    """The conversation of a contact and of every contact merged into it, directly or through a chain."""
    rows = conn.execute(
        "WITH RECURSIVE m(id) AS (SELECT ? UNION SELECT c.id FROM contacts c JOIN m ON c.merged_into = m.id)"
        " SELECT v.id FROM conversations v JOIN m ON v.contact_id = m.id",
        (contact_id,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def unmerge(conn: sqlite3.Connection, merge_id: int, author: str | None, now: float) -> tuple[int, int, int, int]:
    """Undo a merge: every event that came from the merged contact (or from contacts merged into it, for chains)
    goes back to the merged contact's own conversation, wherever the chain had moved it.

    Merges may be undone in any order: an event always lives in the live conversation its origin resolves to.
    Returns (kept_contact_id, merged_contact_id, kept_conversation_id, merged_conversation_id).
    """
    row = conn.execute(
        "SELECT kept_contact_id, merged_contact_id, undone_at FROM merges WHERE id = ?", (merge_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"merge {merge_id} does not exist")
    if row[2] is not None:
        raise ValueError(f"merge {merge_id} was already undone")
    keep, merged = int(row[0]), int(row[1])
    keep_conv = conversation_of(conn, keep)
    merged_conv = conversation_of(conn, merged)
    conn.execute("UPDATE contacts SET merged_into = NULL, updated_at = ? WHERE id = ?", (now, merged))
    conn.execute("UPDATE conversations SET merged_into = NULL, updated_at = ? WHERE id = ?", (now, merged_conv))
    subtree = subtree_conversations(conn, merged)
    marks = ",".join("?" * len(subtree))
    conn.execute(
        f"UPDATE events SET conversation_id = ? WHERE origin_conversation_id IN ({marks})",
        (merged_conv, *subtree),
    )
    conn.execute("UPDATE merges SET undone_at = ?, undone_by = ? WHERE id = ?", (now, author, merge_id))
    return keep, merged, keep_conv, merged_conv


def merges_of(conn: sqlite3.Connection, contact_id: int) -> list[dict[str, Any]]:
    """Merges that involve a contact, newest first (for the console's undo button)."""
    rows = conn.execute(
        "SELECT id, kept_contact_id, merged_contact_id, reason, author, created_at, undone_at FROM merges"
        " WHERE kept_contact_id = ? OR merged_contact_id = ? ORDER BY id DESC",
        (contact_id, contact_id),
    ).fetchall()
    keys = ("id", "kept_contact_id", "merged_contact_id", "reason", "author", "created_at", "undone_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


# -- outbox and suppressions -----------------------------------------------------------------------------------------


def is_suppressed(conn: sqlite3.Connection, address: str) -> bool:
    """True when ``address`` opted out of messages."""
    return conn.execute("SELECT 1 FROM suppressions WHERE address = ?", (address,)).fetchone() is not None


def suppress(conn: sqlite3.Connection, address: str, reason: str, now: float) -> None:
    """Record an opt-out."""
    conn.execute(
        "INSERT INTO suppressions(address, reason, created_at) VALUES (?, ?, ?) ON CONFLICT(address) DO NOTHING",
        (address, reason, now),
    )


def unsuppress(conn: sqlite3.Connection, address: str) -> bool:
    """Lift an opt-out. Returns True when there was one."""
    return conn.execute("DELETE FROM suppressions WHERE address = ?", (address,)).rowcount > 0


def insert_outbox(
    conn: sqlite3.Connection,
    conversation_id: int,
    channel: str,
    to_addr: str,
    body: str,
    parts: int,
    automated: bool,
    author: str | None,
    event_id: int,
    now: float,
    expires_at: float,
) -> int:
    """Queue an outbound message."""
    cur = conn.execute(
        "INSERT INTO outbox(conversation_id, channel, to_addr, body, parts, automated, author, event_id,"
        " next_attempt_at, expires_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, channel, to_addr, body, parts, int(automated), author, event_id, now, expires_at, now, now),
    )
    return int(cur.lastrowid or 0)


def outbox_event_id(conn: sqlite3.Connection, outbox_id: int) -> int:
    """The timeline event of an outbox row (0 if none)."""
    row = conn.execute("SELECT event_id FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def outbox_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Outbox rows per state (status page)."""
    return {r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")}


# -- staff and audit -------------------------------------------------------------------------------------------------


def _staff(row: tuple[Any, ...]) -> StaffUser:
    return StaffUser(
        id=row[0], username=row[1], display_name=row[2], extension=row[3], role=row[4], password_hash=row[5]
    )


_STAFF_COLS = "id, username, display_name, extension, role, password_hash"


def upsert_staff(
    conn: sqlite3.Connection, username: str, display_name: str, extension: str | None, role: str, now: float
) -> int:
    """Create or update a staff user (the password is set separately)."""
    if extension:
        conn.execute("UPDATE staff SET extension = NULL WHERE extension = ? AND username <> ?", (extension, username))
    conn.execute(
        "INSERT INTO staff(username, display_name, extension, role, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(username) DO UPDATE SET display_name = excluded.display_name, extension = excluded.extension,"
        " role = excluded.role",
        (username, display_name, extension, role, now),
    )
    row = conn.execute("SELECT id FROM staff WHERE username = ?", (username,)).fetchone()
    return int(row[0])


def set_password_hash(conn: sqlite3.Connection, username: str, password_hash: str) -> None:
    """Store an (argon2) password hash."""
    if conn.execute("UPDATE staff SET password_hash = ? WHERE username = ?", (password_hash, username)).rowcount == 0:
        raise LookupError(f"no staff user {username!r}")


def staff_by_username(conn: sqlite3.Connection, username: str) -> StaffUser | None:
    """A staff user by login name."""
    row = conn.execute(f"SELECT {_STAFF_COLS} FROM staff WHERE username = ?", (username,)).fetchone()
    return _staff(row) if row else None


def staff_by_extension(conn: sqlite3.Connection, extension: str) -> StaffUser | None:
    """The staff user bound to a SIP extension."""
    row = conn.execute(f"SELECT {_STAFF_COLS} FROM staff WHERE extension = ?", (extension,)).fetchone()
    return _staff(row) if row else None


def all_staff(conn: sqlite3.Connection) -> list[StaffUser]:
    """Every staff user."""
    return [_staff(r) for r in conn.execute(f"SELECT {_STAFF_COLS} FROM staff ORDER BY username")]


def audit(
    conn: sqlite3.Connection, actor: str, action: str, subject: str | None, detail: Mapping[str, Any], now: float
) -> None:
    """Append to the audit log."""
    conn.execute(
        "INSERT INTO audit_log(at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        (now, actor, action, subject, dumps(detail)),
    )


def recent_audit(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Latest audit entries."""
    keys = ("id", "at", "actor", "action", "subject", "detail")
    rows = conn.execute(
        "SELECT id, at, actor, action, subject, detail FROM audit_log ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return [dict(zip(keys, r, strict=True)) for r in rows]


def counts_since(conn: sqlite3.Connection, since: float) -> dict[str, int]:
    """Timeline entries per kind since a time (today's counts on the status page)."""
    return {
        r[0]: r[1]
        for r in conn.execute("SELECT kind, COUNT(*) FROM events WHERE occurred_at >= ? GROUP BY kind", (since,))
    }


def now() -> float:
    """Wall-clock seconds (one place, so tests can reason about it)."""
    return time.time()


def chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    """Split an iterable into lists of ``size``."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
