"""SQL for the web layer: staff logins and sessions, chat visitors, API tokens, webhooks, inbox and search.

Every function is a plain synchronous function taking a :class:`sqlite3.Connection`; callers run them through
``Store.write`` (inside the single writer's transaction) or ``Store.read``. Secrets (session cookies, visitor tokens,
API tokens) are stored only as SHA-256 hashes, so a copy of the database cannot be used to log in.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, TypedDict

from gateway.domain.models import contact_label
from gateway.store import queries as q


@dataclass(frozen=True)
class StaffRow:
    """One staff member as the web layer needs it."""

    id: int
    username: str
    display_name: str
    extension: str
    password_hash: str
    role: str


@dataclass(frozen=True)
class SessionRow:
    """A live console session joined with its staff member."""

    staff: StaffRow
    csrf_token: str
    expires_at: float


@dataclass(frozen=True)
class VisitorRow:
    """A chat visitor (identified by the hash of the token in their browser)."""

    visitor_hash: str
    contact_id: int | None
    conversation_id: int | None
    created_at: float


@dataclass(frozen=True)
class WebhookDelivery:
    """One queued webhook call."""

    id: int
    url: str
    event_type: str
    payload: str
    attempts: int


def _staff(row: sqlite3.Row | tuple[Any, ...]) -> StaffRow:
    return StaffRow(
        id=int(row[0]),
        username=str(row[1]),
        display_name=str(row[2] or row[1]),
        extension=str(row[3] or ""),
        password_hash=str(row[4] or ""),
        role=str(row[5] or "staff"),
    )


# -------------------------------------------------------------------------------------------- login throttling


def reserve_login_attempt(
    conn: sqlite3.Connection,
    keys: list[tuple[str, int]],
    now: float,
    *,
    window: float,
    base_delay: float,
    max_delay: float,
) -> float:
    """Reserve one login attempt under every key, atomically; returns 0.0, or the seconds to wait first.

    ``keys`` pairs a key ('user:<name>|<addr>' or 'addr:<addr>') with the failures it may have before attempts are
    spaced out. The attempt is counted as a failure *before* the password is checked (a success gives it back), so
    concurrent guesses cannot all slip through while the first ones are being checked. Once a key reaches its free
    failures, each further attempt must wait ``base_delay`` seconds, doubling per failure up to ``max_delay``; a
    refused attempt costs nothing, so nobody can extend someone else's wait. Failures are forgotten after ``window``
    seconds without one.
    """
    rows: dict[str, tuple[int, float]] = {}
    wait = 0.0
    for key, _free in keys:
        row = conn.execute(
            "SELECT failures, last_failure, locked_until FROM web_login_failures WHERE key = ?", (key,)
        ).fetchone()
        if row is None or now - float(row[1]) > window:
            rows[key] = (0, 0.0)
            continue
        rows[key] = (int(row[0]), float(row[2]))
        wait = max(wait, float(row[2]) - now)
    if wait > 0:
        return wait
    for key, free in keys:
        failures = rows[key][0] + 1
        until = now + min(max_delay, base_delay * 2 ** (failures - free)) if failures >= free else 0.0
        conn.execute(
            "INSERT INTO web_login_failures(key, failures, last_failure, locked_until) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET failures = excluded.failures, last_failure = excluded.last_failure, "
            "locked_until = excluded.locked_until",
            (key, failures, now, until),
        )
    return 0.0


def login_succeeded(conn: sqlite3.Connection, user_key: str, address_key: str) -> None:
    """The password was right: forget the user's failures from this address, give the address its attempt back."""
    conn.execute("DELETE FROM web_login_failures WHERE key = ?", (user_key,))
    conn.execute(
        "UPDATE web_login_failures SET failures = MAX(0, failures - 1) WHERE key = ?",
        (address_key,),
    )


# --------------------------------------------------------------------------------------------------- sessions


def create_session(
    conn: sqlite3.Connection,
    token_hash: str,
    staff_id: int,
    csrf_token: str,
    now: float,
    ttl: float,
    remote: str = "",
) -> None:
    """Store a new console session."""
    conn.execute("DELETE FROM web_sessions WHERE expires_at < ?", (now,))
    conn.execute(
        "INSERT INTO web_sessions(token_hash, staff_id, csrf_token, created_at, expires_at, remote) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash, staff_id, csrf_token, now, now + ttl, remote),
    )


def session_by_hash(conn: sqlite3.Connection, token_hash: str, now: float) -> SessionRow | None:
    """The live session for a cookie hash, or None if unknown or expired."""
    row = conn.execute(
        "SELECT s.id, s.username, s.display_name, s.extension, s.password_hash, s.role, w.csrf_token, "
        "w.expires_at FROM web_sessions w JOIN staff s ON s.id = w.staff_id "
        "WHERE w.token_hash = ? AND w.expires_at > ?",
        (token_hash, now),
    ).fetchone()
    if row is None:
        return None
    return SessionRow(staff=_staff(row[:6]), csrf_token=str(row[6]), expires_at=float(row[7]))


def delete_session(conn: sqlite3.Connection, token_hash: str) -> None:
    """Log a session out."""
    conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash,))


def delete_staff_sessions(conn: sqlite3.Connection, staff_id: int) -> int:
    """Log a staff member out everywhere; returns how many sessions ended."""
    return conn.execute("DELETE FROM web_sessions WHERE staff_id = ?", (staff_id,)).rowcount


# --------------------------------------------------------------------------------------------------- visitors


def visitor(conn: sqlite3.Connection, visitor_hash: str) -> VisitorRow | None:
    """A chat visitor by token hash."""
    row = conn.execute(
        "SELECT visitor_hash, contact_id, conversation_id, created_at FROM web_visitors WHERE visitor_hash = ?",
        (visitor_hash,),
    ).fetchone()
    if row is None:
        return None
    return VisitorRow(
        str(row[0]),
        int(row[1]) if row[1] is not None else None,
        int(row[2]) if row[2] is not None else None,
        float(row[3]),
    )


def upsert_visitor(
    conn: sqlite3.Connection,
    visitor_hash: str,
    now: float,
    *,
    remote: str = "",
    contact_id: int | None = None,
    conversation_id: int | None = None,
) -> None:
    """Create a visitor or refresh it; contact/conversation are only ever filled in, never cleared."""
    conn.execute(
        "INSERT INTO web_visitors(visitor_hash, contact_id, conversation_id, created_at, last_seen_at, remote) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(visitor_hash) DO UPDATE SET "
        "contact_id = COALESCE(excluded.contact_id, contact_id), "
        "conversation_id = COALESCE(excluded.conversation_id, conversation_id), "
        "last_seen_at = excluded.last_seen_at",
        (visitor_hash, contact_id, conversation_id, now, now, remote),
    )


def visitors_for_conversation(conn: sqlite3.Connection, conversation_id: int) -> list[str]:
    """Hashes of every visitor token bound to a conversation (to push staff replies)."""
    return [
        str(r[0])
        for r in conn.execute("SELECT visitor_hash FROM web_visitors WHERE conversation_id = ?", (conversation_id,))
    ]


# ------------------------------------------------------------------------------------------------- API tokens


SCOPES = ("read", "send", "admin")


@dataclass(frozen=True)
class ApiTokenRow:
    """A live API token: what it may do and until when."""

    id: int
    name: str
    scopes: frozenset[str]
    expires_at: float | None


def create_api_token(
    conn: sqlite3.Connection,
    name: str,
    token_hash: str,
    now: float,
    *,
    scopes: tuple[str, ...] = ("read",),
    expires_at: float | None = None,
) -> int:
    """Store a new API token's hash with its scopes and optional expiry; returns its id."""
    cur = conn.execute(
        "INSERT INTO api_tokens(name, token_hash, created_at, scopes, expires_at) VALUES (?, ?, ?, ?, ?)",
        (name, token_hash, now, ",".join(scopes), expires_at),
    )
    return int(cur.lastrowid or 0)


def use_api_token(conn: sqlite3.Connection, token_hash: str, now: float) -> None:
    """Touch a token's last use."""
    conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE token_hash = ?", (now, token_hash))


def find_api_token(conn: sqlite3.Connection, token_hash: str, now: float) -> ApiTokenRow | None:
    """A live token with this hash: not revoked and not expired."""
    row = conn.execute(
        "SELECT id, name, scopes, expires_at FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > ?)",
        (token_hash, now),
    ).fetchone()
    if row is None:
        return None
    scopes = frozenset(x for x in str(row[2]).split(",") if x)
    return ApiTokenRow(int(row[0]), str(row[1]), scopes, None if row[3] is None else float(row[3]))


class ApiTokenInfo(TypedDict):
    """An API token as the admin list shows it (never its hash)."""

    id: int
    name: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    scopes: list[str]
    expires_at: float | None


class SnippetPart(TypedDict):
    """A piece of a search snippet; ``hit`` pieces matched the search words."""

    text: str
    hit: bool


class SearchEvent(TypedDict):
    """The timeline event a search hit is in (reported under the live conversation)."""

    id: int
    conversation_id: int
    kind: str
    channel: str
    body: str
    meta: dict[str, Any]
    author: str | None
    occurred_at: float


class SearchHitRow(TypedDict):
    """One full-text search hit: the event, its snippet (whole and in parts) and whose conversation it is."""

    event: SearchEvent
    snippet: str
    snippet_parts: list[SnippetPart]
    display_name: str | None
    label: str


def list_api_tokens(conn: sqlite3.Connection) -> list[ApiTokenInfo]:
    """Every token without its hash."""
    return [
        {
            "id": r[0],
            "name": r[1],
            "created_at": r[2],
            "last_used_at": r[3],
            "revoked_at": r[4],
            "scopes": [x for x in str(r[5]).split(",") if x],
            "expires_at": r[6],
        }
        for r in conn.execute(
            "SELECT id, name, created_at, last_used_at, revoked_at, scopes, expires_at FROM api_tokens ORDER BY id"
        )
    ]


def revoke_api_token(conn: sqlite3.Connection, token_id: int, now: float) -> bool:
    """Revoke a token; False if it did not exist or was already revoked."""
    cur = conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, token_id))
    return cur.rowcount > 0


# --------------------------------------------------------------------------------------------------- webhooks


def enqueue_webhooks(conn: sqlite3.Connection, urls: list[str], event_type: str, payload: str, now: float) -> int:
    """Queue one delivery per URL; returns how many were queued."""
    conn.executemany(
        "INSERT INTO webhook_deliveries(url, event_type, payload, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?)",
        [(u, event_type, payload, now, now) for u in urls],
    )
    return len(urls)


def due_webhooks(conn: sqlite3.Connection, now: float, limit: int = 20) -> list[WebhookDelivery]:
    """Queued deliveries whose time has come, oldest first."""
    return [
        WebhookDelivery(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]))
        for r in conn.execute(
            "SELECT id, url, event_type, payload, attempts FROM webhook_deliveries "
            "WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
            (now, limit),
        )
    ]


def next_webhook_due(conn: sqlite3.Connection) -> float | None:
    """When the next queued delivery is due, or None if the queue is empty."""
    row = conn.execute("SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = 'queued'").fetchone()
    return float(row[0]) if row and row[0] is not None else None


def webhook_delivered(conn: sqlite3.Connection, delivery_id: int, now: float) -> None:
    """Mark a delivery done."""
    conn.execute(
        "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = ?, "
        "last_error = NULL WHERE id = ?",
        (now, delivery_id),
    )


def webhook_failed_attempt(
    conn: sqlite3.Connection, delivery_id: int, error: str, next_attempt_at: float | None
) -> None:
    """Record a failed attempt; ``next_attempt_at=None`` gives up for good."""
    if next_attempt_at is None:
        conn.execute(
            "UPDATE webhook_deliveries SET state = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
            (error[:500], delivery_id),
        )
    else:
        conn.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
            (error[:500], next_attempt_at, delivery_id),
        )


def webhook_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Deliveries per state (for the status page)."""
    return {str(r[0]): int(r[1]) for r in conn.execute("SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state")}


# ----------------------------------------------------------------------------------------------------- status


def outbox_states(conn: sqlite3.Connection) -> dict[str, int]:
    """Outbox rows per state."""
    return {str(r[0]): int(r[1]) for r in conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")}


def database_bytes(conn: sqlite3.Connection) -> int:
    """Size of the main database in bytes (pages in use times page size)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(pages) * int(size)


# ----------------------------------------------------------------------------------------------------- search


#: Hit markers in FTS5 snippets: private-use characters, and trusted only when the text itself has none.
MARK_ON, MARK_OFF = "\ue000", "\ue001"


def snippet_parts(marked: str, body: str) -> list[SnippetPart]:
    """A snippet with hit markers -> ``[{"text": ..., "hit": bool}, ...]``.

    Customer text is never parsed for markers: when the stored text contains a marker character itself,
    the snippet is returned as plain text without highlighting rather than mis-highlighted.
    """
    if MARK_ON in body or MARK_OFF in body:
        return [{"text": marked.replace(MARK_ON, "").replace(MARK_OFF, ""), "hit": False}]
    parts: list[SnippetPart] = []
    rest = marked
    while rest:
        start = rest.find(MARK_ON)
        end = rest.find(MARK_OFF, start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            parts.append({"text": rest.replace(MARK_ON, "").replace(MARK_OFF, ""), "hit": False})
            break
        if start:
            parts.append({"text": rest[:start], "hit": False})
        parts.append({"text": rest[start + 1 : end], "hit": True})
        rest = rest[end + 1 :]
    return [p for p in parts if p["text"]]


def search(conn: sqlite3.Connection, match: str, limit: int = 50) -> list[SearchHitRow]:
    """Full-text hits for an FTS5 ``match`` expression, newest first, as JSON-ready dicts.

    Hits in merged-away conversations are reported under the live conversation.
    """
    rows = conn.execute(
        "SELECT e.id, COALESCE(v.merged_into, e.conversation_id), e.kind, e.channel, e.body, e.meta,"
        " e.author, e.occurred_at, snippet(events_fts, 0, ?, ?, '…', 12), c.display_name, c.id"
        " FROM events_fts JOIN events e ON e.id = events_fts.rowid"
        " JOIN conversations v ON v.id = e.conversation_id JOIN contacts c ON c.id = v.contact_id"
        " WHERE events_fts MATCH ? ORDER BY e.id DESC LIMIT ?",
        (MARK_ON, MARK_OFF, match, limit),
    ).fetchall()
    out: list[SearchHitRow] = []
    for r in rows:
        try:
            meta = json.loads(r[5]) if r[5] else {}
        except ValueError:
            meta = {}
        event: SearchEvent = {
            "id": r[0],
            "conversation_id": r[1],
            "kind": r[2],
            "channel": r[3],
            "body": r[4],
            "meta": meta,
            "author": r[6],
            "occurred_at": r[7],
        }
        parts = snippet_parts(str(r[8] or ""), str(r[4] or ""))
        out.append(
            {
                "event": event,
                "snippet": "".join(p["text"] for p in parts),
                "snippet_parts": parts,
                "display_name": r[9],
                "label": contact_label(r[9], q.identities(conn, int(r[10]))),
            }
        )
    return out
