"""SQL for the SMS channel (tables in migrations/0002_sms.sql; outbox and suppressions from 0001).

Every function is synchronous and runs inside ``Store.write``/``Store.read``: a function that changes several rows does
it in the caller's one transaction, which is what makes "suppression stored with the message" and "confirmation queued
exactly once" hold.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass

from gateway.store import queries as q


@dataclass(frozen=True)
class InboundPart:
    """A raw PDU as stored."""

    id: int
    storage: str
    sim_index: int
    pdu: str
    pdu_hash: str
    state: str
    seq: int | None
    received_at: float


@dataclass(frozen=True)
class PendingMessage:
    """An assembled inbound message not yet handed to the conversation service (or not
    confirmed)."""

    id: int
    external_id: str
    sender: str
    body: str
    sent_at: float | None
    parts: int
    parts_missing: int
    keyword: str | None
    conversation_id: int | None
    confirmation_outbox_id: int | None


@dataclass(frozen=True)
class OutboundRow:
    """An outbox row of channel 'sms' ready to be sent."""

    id: int
    conversation_id: int
    to_addr: str
    body: str
    attempts: int
    automated: bool
    expires_at: float


def pdu_hash(pdu_hex: str) -> str:
    """Stable identity of a PDU (case and surrounding space ignored)."""
    return hashlib.sha256(pdu_hex.strip().upper().encode("ascii", "replace")).hexdigest()


# -- inbound ---------------------------------------------------------------------------------------


def store_inbound_part(
    conn: sqlite3.Connection, modem: str, storage: str, sim_index: int, *, pdu_hex: str, now: float
) -> tuple[int, bool]:
    """Store one raw PDU read from the SIM. Returns (part id, newly stored?).

    The same PDU read again (a crash between store and delete, or the network sending it twice) is
    not
    stored twice: the first row's id comes back with ``False``.
    """
    h = pdu_hash(pdu_hex)
    cur = conn.execute(
        "INSERT OR IGNORE INTO sms_inbound_parts"
        "(modem, storage, sim_index, pdu, pdu_hash, received_at) VALUES (?, ?, ?, ?, ?, ?)",
        (modem, storage, sim_index, pdu_hex.strip().upper(), h, now),
    )
    if cur.rowcount:
        return int(cur.lastrowid or 0), True
    row = conn.execute("SELECT id FROM sms_inbound_parts WHERE modem = ? AND pdu_hash = ?", (modem, h)).fetchone()
    return int(row[0]), False


def _part(row: tuple[object, ...]) -> InboundPart:
    return InboundPart(
        int(row[0]),  # type: ignore[call-overload]
        str(row[1]),
        int(row[2]),  # type: ignore[call-overload]
        str(row[3]),
        str(row[4]),
        str(row[5]),
        None if row[6] is None else int(row[6]),  # type: ignore[call-overload]
        float(row[7]),  # type: ignore[arg-type]
    )


_PART_COLS = "id, storage, sim_index, pdu, pdu_hash, state, seq, received_at"


def parts_in_state(conn: sqlite3.Connection, state: str) -> list[InboundPart]:
    """Parts in one state, oldest first ('stored' = not yet decoded, e.g. after a crash)."""
    rows = conn.execute(f"SELECT {_PART_COLS} FROM sms_inbound_parts WHERE state = ? ORDER BY id", (state,)).fetchall()
    return [_part(r) for r in rows]


def mark_part_undecodable(conn: sqlite3.Connection, part_id: int, error: str) -> None:
    """Keep the raw PDU, record why it could not be read."""
    conn.execute(
        "UPDATE sms_inbound_parts SET state = 'undecodable', error = ? WHERE id = ?",
        (error, part_id),
    )


def mark_part_waiting(
    conn: sqlite3.Connection, part_id: int, *, sender: str, concat_key: str, seq: int, total: int
) -> None:
    """A part of a long message waits for its siblings."""
    conn.execute(
        "UPDATE sms_inbound_parts SET state = 'waiting', sender = ?, concat_key = ?, seq = ?,"
        " total = ? WHERE id = ? AND state = 'stored'",
        (sender, concat_key, seq, total, part_id),
    )


def waiting_parts(conn: sqlite3.Connection, concat_key: str) -> list[InboundPart]:
    """The parts of one long message received so far, by part number then arrival."""
    rows = conn.execute(
        f"SELECT {_PART_COLS} FROM sms_inbound_parts WHERE state = 'waiting' AND concat_key = ? ORDER BY seq, id",
        (concat_key,),
    ).fetchall()
    return [_part(r) for r in rows]


def stale_concat_keys(conn: sqlite3.Connection, older_than: float) -> list[str]:
    """Long messages whose first part arrived before ``older_than`` and are still incomplete."""
    rows = conn.execute(
        "SELECT concat_key FROM sms_inbound_parts WHERE state = 'waiting' GROUP BY concat_key"
        " HAVING MIN(received_at) < ?",
        (older_than,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def record_message(
    conn: sqlite3.Connection,
    *,
    external_id: str,
    sender: str,
    body: str,
    sent_at: float | None,
    parts: int,
    parts_missing: int,
    keyword: str | None,
    part_ids: list[int],
    suppress_address: str | None,
    now: float,
) -> int:
    """Store an assembled message, mark its parts, and apply its opt-out keyword: one transaction.

    ``keyword`` 'stop' suppresses ``suppress_address``; 'start' lifts the suppression.
    Returns the message id (the existing one if ``external_id`` was already recorded).
    """
    row = conn.execute("SELECT id FROM sms_messages WHERE external_id = ?", (external_id,)).fetchone()
    if row is not None:
        message_id = int(row[0])
    else:
        cur = conn.execute(
            "INSERT INTO sms_messages(external_id, sender, body, sent_at, parts, parts_missing,"
            " keyword, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (external_id, sender, body, sent_at, parts, parts_missing, keyword, now),
        )
        message_id = int(cur.lastrowid or 0)
        if suppress_address is not None and keyword == "stop":
            if not q.is_suppressed(conn, suppress_address):
                q.suppress(conn, suppress_address, "replied STOP by SMS", now)
        elif suppress_address is not None and keyword == "start":
            q.unsuppress(conn, suppress_address)
    conn.executemany(
        "UPDATE sms_inbound_parts SET state = 'assembled', message_id = ? WHERE id = ?",
        [(message_id, pid) for pid in part_ids],
    )
    return message_id


def pending_messages(conn: sqlite3.Connection) -> list[PendingMessage]:
    """Messages stored but not yet ingested into a conversation, oldest first."""
    rows = conn.execute(
        "SELECT id, external_id, sender, body, sent_at, parts, parts_missing, keyword,"
        " conversation_id, confirmation_outbox_id FROM sms_messages WHERE state = 'pending'"
        " ORDER BY id"
    ).fetchall()
    return [PendingMessage(*r) for r in rows]


def mark_ingested(conn: sqlite3.Connection, message_id: int, conversation_id: int, event_id: int) -> None:
    """The conversation service has the message."""
    conn.execute(
        "UPDATE sms_messages SET state = 'ingested', conversation_id = ?, event_id = ? WHERE id = ?",
        (conversation_id, event_id, message_id),
    )


def set_confirmation(conn: sqlite3.Connection, message_id: int, outbox_id: int) -> None:
    """Remember which outbox row answered a keyword message (the conversation service queued it)."""
    conn.execute("UPDATE sms_messages SET confirmation_outbox_id = ? WHERE id = ?", (outbox_id, message_id))


# Parts set aside on purpose (a status report, a draft the SIM keeps) are not "unreadable".
_HANDLED = ("status report (handled)", "an outgoing message stored on the SIM")


def unreadable_count(conn: sqlite3.Connection) -> int:
    """Received texts that could not be decoded (kept raw; the status page counts them)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM sms_inbound_parts WHERE state = 'undecodable' AND COALESCE(error, '') NOT IN (?, ?)",
        _HANDLED,
    ).fetchone()
    return int(row[0])


def inbound_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Parts per state (status page, tests)."""
    return {str(r[0]): int(r[1]) for r in conn.execute("SELECT state, COUNT(*) FROM sms_inbound_parts GROUP BY state")}


# -- outbound --------------------------------------------------------------------------------------


def recover_interrupted_sends(conn: sqlite3.Connection, now: float) -> list[int]:
    """Rows left in 'sending' by a crash become 'unknown': they may or may not have gone out, and
    resending could text the customer twice. Staff decide (the console shows the reason)."""
    rows = conn.execute("SELECT id, parts FROM outbox WHERE channel = 'sms' AND state = 'sending'").fetchall()
    for outbox_id, parts in rows:
        done = conn.execute("SELECT COUNT(*) FROM sms_sent_parts WHERE outbox_id = ?", (outbox_id,)).fetchone()[0]
        conn.execute(
            "UPDATE outbox SET state = 'unknown', last_error = ?, updated_at = ? WHERE id = ?",
            (
                f"the gateway stopped while this message was being sent; {done} of {parts} part(s) "
                "were confirmed by the modem, so it may or may not have reached the customer. "
                "It was not resent automatically.",
                now,
                outbox_id,
            ),
        )
    return [int(r[0]) for r in rows]


def expire_overdue(conn: sqlite3.Connection, now: float) -> list[int]:
    """Queued rows past their expiry become 'expired'."""
    rows = conn.execute(
        "SELECT id FROM outbox WHERE channel = 'sms' AND state = 'queued' AND expires_at <= ?",
        (now,),
    ).fetchall()
    conn.executemany(
        "UPDATE outbox SET state = 'expired', last_error = ?, updated_at = ? WHERE id = ?",
        [("not sent before it expired (modem down or kept failing)", now, r[0]) for r in rows],
    )
    return [int(r[0]) for r in rows]


# A queued row may go only when no earlier row to the same number is still pending (queued, possibly waiting for
# a retry, or being sent): a later message never overtakes an earlier one to the same person, also across retries.
_IN_ORDER = (
    "NOT EXISTS (SELECT 1 FROM outbox p WHERE p.to_addr = o.to_addr AND p.id < o.id"
    " AND p.state IN ('queued', 'sending') AND p.channel = 'sms')"
)


def next_due(conn: sqlite3.Connection, now: float) -> OutboundRow | None:
    """The next queued SMS whose time has come: staff replies before automated messages, then oldest first, and
    never ahead of an earlier pending message to the same number."""
    row = conn.execute(
        "SELECT o.id, o.conversation_id, o.to_addr, o.body, o.attempts, o.automated, o.expires_at FROM outbox o"
        # "+o.next_attempt_at": not a range for the planner, so it walks outbox_send_order in send order and stops
        # at the first row that may go (instead of sorting every due row: 20 ms at 10,000 queued).
        " WHERE o.channel = 'sms' AND o.state = 'queued' AND +o.next_attempt_at <= ? AND o.expires_at > ?"
        f" AND {_IN_ORDER} ORDER BY o.automated, o.next_attempt_at, o.id LIMIT 1",
        (now, now),
    ).fetchone()
    if row is None:
        return None
    return OutboundRow(int(row[0]), int(row[1]), str(row[2]), str(row[3]), int(row[4]), bool(row[5]), float(row[6]))


def next_attempt_at(conn: sqlite3.Connection) -> float | None:
    """When the earliest queued SMS that may go next becomes due (to sleep until then)."""
    row = conn.execute(
        f"SELECT MIN(o.next_attempt_at) FROM outbox o WHERE o.channel = 'sms' AND o.state = 'queued' AND {_IN_ORDER}"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def sent_part_numbers(conn: sqlite3.Connection, outbox_id: int) -> dict[int, int]:
    """Parts already accepted by the modem: part number -> message reference."""
    rows = conn.execute("SELECT part, reference FROM sms_sent_parts WHERE outbox_id = ?", (outbox_id,)).fetchall()
    return {int(p): int(r) for p, r in rows}


def record_sent_part(
    conn: sqlite3.Connection,
    outbox_id: int,
    part: int,
    *,
    reference: int,
    recipient: str,
    now: float,
) -> None:
    """The modem accepted one part (+CMGS: reference)."""
    conn.execute(
        "INSERT OR REPLACE INTO sms_sent_parts(outbox_id, part, reference, recipient, sent_at) VALUES (?, ?, ?, ?, ?)",
        (outbox_id, part, reference, recipient, now),
    )


def mark_sent(conn: sqlite3.Connection, outbox_id: int, now: float) -> None:
    """sending -> sent, with the references of every part as provider_ref."""
    refs = ",".join(str(r) for _, r in sorted(sent_part_numbers(conn, outbox_id).items()))
    conn.execute(
        "UPDATE outbox SET state = 'sent', provider_ref = ?, last_error = NULL, updated_at = ?"
        " WHERE id = ? AND state = 'sending'",
        (refs, now, outbox_id),
    )


def mark_retry(conn: sqlite3.Connection, outbox_id: int, error: str, retry_at: float, now: float) -> None:
    """sending -> queued again after a transient failure."""
    conn.execute(
        "UPDATE outbox SET state = 'queued', last_error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
        (error, retry_at, now, outbox_id),
    )


def mark_final(conn: sqlite3.Connection, outbox_id: int, state: str, error: str, now: float) -> None:
    """-> failed / expired with the reason in words."""
    conn.execute(
        "UPDATE outbox SET state = ?, last_error = ?, updated_at = ? WHERE id = ?",
        (state, error, now, outbox_id),
    )


def apply_status_report(
    conn: sqlite3.Connection,
    reference: int,
    recipient: str,
    status: int,
    *,
    delivered: bool,
    final: bool,
    words: str,
    since: float,
    now: float,
) -> tuple[int, str] | None:
    """Match a status report to the most recent part sent with that reference (and recipient, when
    the report carries one) after ``since``; update the outbox row. Returns (outbox id, state)."""
    rows = conn.execute(
        "SELECT id, outbox_id, recipient FROM sms_sent_parts WHERE reference = ? AND sent_at >= ?"
        " ORDER BY sent_at DESC, id DESC",
        (reference, since),
    ).fetchall()
    match = next((r for r in rows if _same_number(str(r[2]), recipient)), None)
    if match is None:
        return None
    part_id, outbox_id = int(match[0]), int(match[1])
    conn.execute("UPDATE sms_sent_parts SET status = ?, status_at = ? WHERE id = ?", (status, now, part_id))
    if not final:
        return outbox_id, "sent"
    state_row = conn.execute("SELECT state, parts FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
    if state_row is None or state_row[0] not in ("sent", "sending", "unknown"):
        return outbox_id, str(state_row[0]) if state_row else "sent"
    if not delivered:
        mark_final(conn, outbox_id, "failed", f"the network reports: {words}", now)
        return outbox_id, "failed"
    statuses = conn.execute("SELECT status FROM sms_sent_parts WHERE outbox_id = ?", (outbox_id,)).fetchall()
    all_in = len(statuses) >= int(state_row[1]) and all(s[0] is not None and s[0] < 0x20 for s in statuses)
    if all_in:
        conn.execute(
            "UPDATE outbox SET state = 'delivered', last_error = NULL, updated_at = ? WHERE id = ?",
            (now, outbox_id),
        )
        return outbox_id, "delivered"
    return outbox_id, str(state_row[0])


def _same_number(a: str, b: str) -> bool:
    if not b:
        return True
    da, db = a.lstrip("+"), b.lstrip("+")
    return da == db or da.endswith(db) or db.endswith(da)


def outbox_row(conn: sqlite3.Connection, outbox_id: int) -> dict[str, object] | None:
    """One outbox row as a dict (tests, status page)."""
    cur = conn.execute("SELECT * FROM outbox WHERE id = ?", (outbox_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def is_keyword_reply(conn: sqlite3.Connection, outbox_id: int) -> bool:
    """True for the confirmation of a STOP/START/HELP (it may go to a number just opted out).

    Known from the transaction that queued it (its timeline entry is the keyword's automated ':reply', which only
    ``ConversationService.answer_keyword`` writes), so a claim in that same group commit, before the inbound
    message links it (``set_confirmation``), sees it too."""
    row = conn.execute(
        "SELECT 1 FROM outbox o JOIN events e ON e.id = o.event_id WHERE o.id = ? AND o.automated = 1"
        " AND e.author = 'system' AND e.external_id LIKE '%:reply' AND json_extract(e.meta, '$.keyword_reply') IS 1"
        " UNION ALL SELECT 1 FROM sms_messages WHERE confirmation_outbox_id = ?",
        (outbox_id, outbox_id),
    ).fetchone()
    return row is not None


@dataclass(frozen=True)
class Claim:
    """What one outbox round found: the row to send now (already marked 'sending'), the parts
    the modem accepted on earlier attempts, whether it is blocked by an opt-out, the rows that
    expired, and when the next queued row is due."""

    row: OutboundRow | None
    done_parts: dict[int, int]
    blocked: bool
    expired: list[int]
    next_at: float | None


def claim_next(conn: sqlite3.Connection, now: float) -> Claim:
    """One transaction per round: expire overdue rows, take the next due row and mark it
    'sending' (counting the attempt) before any byte of it reaches the modem."""
    expired = expire_overdue(conn, now)
    row = next_due(conn, now)
    if row is None:
        return Claim(None, {}, False, expired, next_attempt_at(conn))
    blocked = row.automated and q.is_suppressed(conn, row.to_addr)
    blocked = blocked and not is_keyword_reply(conn, row.id)
    if not blocked:
        conn.execute(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = ?"
            " WHERE id = ? AND state = 'queued'",
            (now, row.id),
        )
    return Claim(row, sent_part_numbers(conn, row.id), blocked, expired, None)


def record_part_and_maybe_sent(
    conn: sqlite3.Connection,
    outbox_id: int,
    part: int,
    *,
    parts: int,
    reference: int,
    recipient: str,
    now: float,
) -> Claim | None:
    """Record one accepted part; after the last one (parts go out in order) the row becomes 'sent' and the next
    round is claimed (:func:`claim_next`), all in the same transaction: that claim is returned (None before the
    last part)."""
    record_sent_part(conn, outbox_id, part, reference=reference, recipient=recipient, now=now)
    if part != parts:
        return None
    conn.execute("UPDATE outbox SET parts = ? WHERE id = ?", (parts, outbox_id))
    mark_sent(conn, outbox_id, now)
    return claim_next(conn, now)


def peek_due(conn: sqlite3.Connection, now: float) -> tuple[bool, float | None]:
    """Read-only look before a round: is any SMS due (or overdue to expire), and when is the
    next one due? Lets an idle outbox skip the write transaction."""
    row = conn.execute(
        "SELECT MIN(o.next_attempt_at), MIN(o.expires_at) FROM outbox o WHERE o.channel = 'sms' AND o.state = 'queued'"
        f" AND {_IN_ORDER}"
    ).fetchone()
    # The oldest queued row per number is never held back, so nothing found means nothing queued.
    if row is None or row[0] is None:
        return False, None
    next_at, first_expiry = float(row[0]), float(row[1])
    return next_at <= now or first_expiry <= now, min(next_at, first_expiry)
