"""SQL for the limits: the automated-SMS budget counts and the pruning of tables that only grow."""

from __future__ import annotations

import sqlite3

HOUR = 3600.0
DAY = 24 * HOUR


def automated_sms_counts(conn: sqlite3.Connection, now: float) -> tuple[int, int]:
    """Automated SMS queued in the last hour and in the last 24 hours (every state: a sent text was spent)."""
    row = conn.execute(
        "SELECT COALESCE(SUM(created_at > ?), 0), COUNT(*) FROM outbox"
        " WHERE automated = 1 AND channel = 'sms' AND created_at > ?",
        (now - HOUR, now - DAY),
    ).fetchone()
    return int(row[0]), int(row[1])


def prune(conn: sqlite3.Connection, now: float, *, keep_seconds: float, login_keep_seconds: float) -> dict[str, int]:
    """Delete rows of tables that only grow and are no longer needed; returns rows deleted per table.

    * login throttling rows whose last failure is older than ``login_keep_seconds`` and whose wait is over;
    * chat visitors not seen for ``keep_seconds`` that never started a conversation;
    * webhook deliveries that finished (delivered or given up) more than ``keep_seconds`` ago.
    """
    cutoff = now - keep_seconds
    out = {}
    cur = conn.execute(
        "DELETE FROM web_login_failures WHERE last_failure < ? AND locked_until < ?", (now - login_keep_seconds, now)
    )
    out["web_login_failures"] = cur.rowcount
    cur = conn.execute("DELETE FROM web_visitors WHERE last_seen_at < ? AND conversation_id IS NULL", (cutoff,))
    out["web_visitors"] = cur.rowcount
    cur = conn.execute("DELETE FROM webhook_deliveries WHERE state <> 'queued' AND created_at < ?", (cutoff,))
    out["webhook_deliveries"] = cur.rowcount
    return out


def only_claimed(conn: sqlite3.Connection, conversation_id: int, phone: str) -> bool:
    """True when ``phone`` is merely claimed on this conversation (a pending claim someone typed) and is not one of
    the contact's own identities: texting or calling it then needs a person's explicit confirmation."""
    pending = conn.execute(
        "SELECT 1 FROM identity_claims WHERE conversation_id = ? AND kind = 'phone' AND value = ?"
        " AND state = 'pending'",
        (conversation_id, phone),
    ).fetchone()
    if pending is None:
        return False
    owned = conn.execute(
        "SELECT 1 FROM identities i JOIN conversations v ON v.contact_id = i.contact_id"
        " WHERE v.id = ? AND i.kind = 'phone' AND i.value = ?",
        (conversation_id, phone),
    ).fetchone()
    return owned is None
