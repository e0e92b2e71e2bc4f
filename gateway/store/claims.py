"""SQL for claimed identities, chat hand-off limits and what a chat visitor may see.

Every function is synchronous and takes a ``sqlite3.Connection`` (``Store.write`` or ``Store.read``).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from gateway.domain.claims import IdentityClaim

_CLAIM_COLS = (
    "id, conversation_id, contact_id, visitor_hash, kind, value, raw, state, method, code_expires_at,"
    " code_attempts, texted_at, merge_id, created_at, verified_at, verified_by"
)


def _claim(row: tuple[Any, ...]) -> IdentityClaim:
    return IdentityClaim(*row)


def add_claim(
    conn: sqlite3.Connection,
    conversation_id: int,
    contact_id: int,
    visitor_hash: str | None,
    kind: str,
    value: str,
    raw: str,
    now: float,
) -> IdentityClaim:
    """Record a claim on the claimant's conversation; a pending claim of the same value there is reused."""
    row = conn.execute(
        f"SELECT {_CLAIM_COLS} FROM identity_claims WHERE conversation_id = ? AND kind = ? AND value = ?"
        " AND state = 'pending' ORDER BY id DESC LIMIT 1",
        (conversation_id, kind, value),
    ).fetchone()
    if row is not None:
        return _claim(row)
    cur = conn.execute(
        "INSERT INTO identity_claims(conversation_id, contact_id, visitor_hash, kind, value, raw, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, contact_id, visitor_hash, kind, value, raw, now),
    )
    found = get_claim(conn, int(cur.lastrowid or 0))
    assert found is not None
    return found


def get_claim(conn: sqlite3.Connection, claim_id: int) -> IdentityClaim | None:
    """One claim by id."""
    row = conn.execute(f"SELECT {_CLAIM_COLS} FROM identity_claims WHERE id = ?", (claim_id,)).fetchone()
    return _claim(row) if row else None


def claims_for_conversations(conn: sqlite3.Connection, conversation_ids: list[int]) -> list[IdentityClaim]:
    """Claims recorded on any of these conversations, newest first."""
    if not conversation_ids:
        return []
    marks = ",".join("?" * len(conversation_ids))
    rows = conn.execute(
        f"SELECT {_CLAIM_COLS} FROM identity_claims WHERE conversation_id IN ({marks}) ORDER BY id DESC",
        conversation_ids,
    ).fetchall()
    return [_claim(r) for r in rows]


def latest_pending_claim_of_visitor(conn: sqlite3.Connection, visitor_hash: str) -> IdentityClaim | None:
    """The newest pending claim a chat visitor made that carries a one-time code."""
    row = conn.execute(
        f"SELECT {_CLAIM_COLS} FROM identity_claims WHERE visitor_hash = ? AND state = 'pending'"
        " AND code_hash IS NOT NULL ORDER BY id DESC LIMIT 1",
        (visitor_hash,),
    ).fetchone()
    return _claim(row) if row else None


def texted_claim_for(conn: sqlite3.Connection, kind: str, value: str, since: float) -> IdentityClaim | None:
    """The newest pending claim of ``value`` whose conversation queued a text to that number since ``since``.

    Only a text that really went into the outbox counts (whoever queued it: the chat channel or the continuity
    rules); a refused one (opted out, number policy) does not, so a later SMS from that number verifies nothing.
    """
    row = conn.execute(
        f"SELECT {_CLAIM_COLS} FROM identity_claims c WHERE kind = ? AND value = ? AND state = 'pending'"
        " AND EXISTS (SELECT 1 FROM outbox o WHERE o.conversation_id = c.conversation_id AND o.to_addr = c.value"
        " AND o.channel = 'sms' AND o.created_at >= c.created_at AND o.created_at >= ?)"
        " ORDER BY id DESC LIMIT 1",
        (kind, value, since),
    ).fetchone()
    return _claim(row) if row else None


def latest_pending_claim_at(conn: sqlite3.Connection) -> float:
    """When a pending claim was last made or texted (0 when there is none)."""
    row = conn.execute(
        "SELECT MAX(MAX(created_at, COALESCE(texted_at, 0))) FROM identity_claims WHERE state = 'pending'"
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def mark_texted(conn: sqlite3.Connection, claim_id: int, now: float) -> None:
    """An SMS to the claimed number left the claimant's conversation."""
    conn.execute("UPDATE identity_claims SET texted_at = ? WHERE id = ?", (now, claim_id))


def set_code(conn: sqlite3.Connection, claim_id: int, code_hash: str, expires_at: float) -> None:
    """Store a fresh one-time code's hash (the attempt count starts again)."""
    conn.execute(
        "UPDATE identity_claims SET code_hash = ?, code_expires_at = ?, code_attempts = 0 WHERE id = ?",
        (code_hash, expires_at, claim_id),
    )


def code_state(conn: sqlite3.Connection, claim_id: int) -> tuple[str | None, float | None, int]:
    """(code hash, expiry, attempts so far) of a claim."""
    row = conn.execute(
        "SELECT code_hash, code_expires_at, code_attempts FROM identity_claims WHERE id = ?", (claim_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"claim {claim_id} does not exist")
    return row[0], row[1], int(row[2])


def count_code_attempt(conn: sqlite3.Connection, claim_id: int) -> None:
    """One more code typed for this claim."""
    conn.execute("UPDATE identity_claims SET code_attempts = code_attempts + 1 WHERE id = ?", (claim_id,))


def mark_verified(
    conn: sqlite3.Connection, claim_id: int, method: str, by: str | None, merge_id: int | None, now: float
) -> None:
    """The claim is proven; the code is spent."""
    conn.execute(
        "UPDATE identity_claims SET state = 'verified', method = ?, verified_by = ?, merge_id = ?, verified_at = ?,"
        " code_hash = NULL WHERE id = ?",
        (method, by, merge_id, now, claim_id),
    )


# -- chat hand-offs --------------------------------------------------------------------------------------------------


def handoff_decision(conn: sqlite3.Connection, visitor_hash: str, client_id: str) -> str | None:
    """The decision already taken for this visitor's client id (idempotent hand-offs), or None."""
    row = conn.execute(
        "SELECT decision FROM chat_handoffs WHERE visitor_hash = ? AND client_id = ?", (visitor_hash, client_id)
    ).fetchone()
    return str(row[0]) if row else None


def handoff_moment(conn: sqlite3.Connection, external_id: str) -> float | None:
    """The call-back moment a chat hand-off booked (its timeline entry's ``meta.at``), or None."""
    row = conn.execute(
        "SELECT json_extract(meta, '$.at') FROM events WHERE channel = 'chat' AND external_id = ?", (external_id,)
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def handoffs_since(conn: sqlite3.Connection, visitor_hash: str, conversation_id: int, mode: str, since: float) -> int:
    """Hand-offs of this mode that did not hit a limit, by this visitor or in this conversation, since a time."""
    row = conn.execute(
        "SELECT COUNT(*) FROM chat_handoffs WHERE mode = ? AND created_at >= ? AND decision <> 'limited'"
        " AND (visitor_hash = ? OR conversation_id = ?)",
        (mode, since, visitor_hash, conversation_id),
    ).fetchone()
    return int(row[0])


def record_handoff(
    conn: sqlite3.Connection,
    visitor_hash: str,
    conversation_id: int,
    mode: str,
    client_id: str,
    decision: str,
    now: float,
) -> None:
    """Remember a hand-off and what was decided."""
    conn.execute(
        "INSERT OR IGNORE INTO chat_handoffs(visitor_hash, conversation_id, mode, client_id, decision, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (visitor_hash, conversation_id, mode, client_id, decision, now),
    )


# -- what a visitor may see ------------------------------------------------------------------------------------------


def visitor_history(
    conn: sqlite3.Connection,
    conversation_id: int,
    own_conversation_id: int,
    message_prefix: str,
    identity: str,
    verified_conversations: list[int],
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The timeline entries one chat visitor may see, oldest first.

    Always: its own chat messages (their external id starts with ``message_prefix``) and the chat replies
    addressed to its identity (older replies without an address count when they were written in the visitor's own
    conversation). With a number proven by a one-time code also the messages, of any channel, that originate in
    ``verified_conversations``. Never notes, calls, system entries or another contact's messages.
    """
    marks = ",".join("?" * len(verified_conversations)) or "NULL"
    rows = conn.execute(
        "SELECT id, conversation_id, kind, channel, body, meta, occurred_at FROM events"
        " WHERE conversation_id = ? AND kind IN ('message_in', 'message_out') AND ("
        " (channel = 'chat' AND kind = 'message_in' AND substr(external_id, 1, ?) = ?)"
        " OR (channel = 'chat' AND kind = 'message_out' AND (json_extract(meta, '$.to') = ?"
        "     OR (json_extract(meta, '$.to') IS NULL AND origin_conversation_id = ?)))"
        f" OR (channel IN ('chat', 'sms') AND origin_conversation_id IN ({marks}))"
        ") ORDER BY id DESC LIMIT ?",
        (
            conversation_id,
            len(message_prefix),
            message_prefix,
            identity,
            own_conversation_id,
            *verified_conversations,
            limit,
        ),
    ).fetchall()
    keys = ("id", "conversation_id", "kind", "channel", "body", "meta", "occurred_at")
    out = []
    for r in reversed(rows):
        item = dict(zip(keys, r, strict=True))
        item["meta"] = json.loads(item["meta"] or "{}")
        out.append(item)
    return out


def latest_chat_visitor(conn: sqlite3.Connection, conversation_id: int, contact_id: int) -> str | None:
    """The chat identity a staff chat reply in this conversation is addressed to.

    The visitor who wrote last by chat; else the contact's own chat identity; else None (no chat route).
    """
    row = conn.execute(
        "SELECT json_extract(meta, '$.visitor') FROM events WHERE conversation_id = ? AND channel = 'chat'"
        " AND kind = 'message_in' AND json_extract(meta, '$.visitor') IS NOT NULL ORDER BY id DESC LIMIT 1",
        (conversation_id,),
    ).fetchone()
    if row is not None:
        return str(row[0])
    row = conn.execute(
        "SELECT value FROM identities WHERE contact_id = ? AND kind = 'chat' ORDER BY id DESC LIMIT 1", (contact_id,)
    ).fetchone()
    return str(row[0]) if row else None


def set_visitor_verified(conn: sqlite3.Connection, visitor_hash: str, contact_id: int) -> None:
    """The visitor proved a number of ``contact_id`` with a one-time code."""
    conn.execute("UPDATE web_visitors SET verified_contact_id = ? WHERE visitor_hash = ?", (contact_id, visitor_hash))


def visitor_verified_contact(conn: sqlite3.Connection, visitor_hash: str) -> int | None:
    """The contact whose number this visitor proved, if any."""
    row = conn.execute(
        "SELECT verified_contact_id FROM web_visitors WHERE visitor_hash = ?", (visitor_hash,)
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def no_phone_reason(conn: sqlite3.Connection, contact_id: int) -> str:
    """Why a contact has no number replies can go to, in words staff understand."""
    rows = conn.execute(
        "SELECT raw, valid FROM identities WHERE contact_id = ? AND kind = 'phone' ORDER BY id DESC", (contact_id,)
    ).fetchall()
    for raw, valid in rows:
        if not valid:
            text = str(raw).strip()
            if not text or text.lower() in {"anonymous", "unknown", "withheld", "private", "restricted"}:
                return "the caller withheld their number"
            if any(ch.isalpha() for ch in text):
                return f"the sender {text[:20]!r} is a name, not a number: it cannot receive texts"
            return f"{text[:20]!r} is not a complete phone number"
    return "no verified phone number is known for this customer (a number typed in the chat is only a claim)"
