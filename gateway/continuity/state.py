"""The adapter between the conversation spine and the rules: one read builds a rule's :class:`State`.

This is the only module of the rules that knows where the spine keeps intent, facts, next step (with its due time),
owner and channel preference (``gateway.store.spine``, the spine's own read functions, run inside the same read as
everything else so a decision sees one consistent snapshot); the rules see plain values. Facts captured with
provenance (``conversation_facts``) win over the plain ``conversations.facts`` mirror; an availability fact
(``{"text": "Saturday morning", "start": ...}``) reads as its text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers

from gateway.continuity import rules
from gateway.continuity.restraint import DAY, History
from gateway.store import continuity as sql
from gateway.store import spine as spine_sql

_NOT_TEXTABLE = frozenset(
    {
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.VOICEMAIL,
        phonenumbers.PhoneNumberType.PAGER,
    }
)

_UNREACHABLE_WORDS = ("cannot receive texts", "texts failed", "can't text", "no texts")


def textable(e164: str) -> bool:
    """False for numbers that cannot receive texts (landlines, service numbers), as far as libphonenumber knows."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) not in _NOT_TEXTABLE


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("text") or value.get("value") or value
    return value


def fact_values(conn: sqlite3.Connection, conversation_id: int, mirror: Mapping[str, Any]) -> dict[str, Any]:
    """The conversation's facts as plain values: the spine's captured facts (whole merge chain), else the mirror."""
    out = {name: _plain(value) for name, value in mirror.items()}
    for row in spine_sql.facts(conn, spine_sql.chain(conn, conversation_id)):
        out[str(row[0])] = _plain(json.loads(row[1]))
    return out


def _first_name(name: object) -> str | None:
    if not isinstance(name, str):
        return None
    first = name.strip().split(" ")[0] if name.strip() else ""
    if not first or any(ch.isdigit() for ch in first) or (first.isupper() and len(first) > 3):
        return None  # caller-ID noise ("WIRELESS CALLER", "+1555...") is not a name
    return first


def _open_question(messages: list[tuple[str, str]]) -> str | None:
    chat = [body.strip() for channel, body in messages if channel == "chat" and body.strip()]
    for body in chat:
        if "?" in body:
            return body[:160]
    return chat[0][:160] if chat else None


@dataclass(frozen=True, slots=True)
class Loaded:
    """A conversation's rule state plus the restraint's history, read together."""

    conversation_id: int
    state: rules.State
    history: History


def load(conn: sqlite3.Connection, conversation_id: int, now: float) -> Loaded | None:
    """Read everything the rules and the restraint need about one conversation."""
    conv = sql.live_conversation(conn, conversation_id)
    basics = sql.conversation_basics(conn, conv)
    if basics is None:
        return None
    facts = fact_values(conn, conv, basics["facts"])
    spine_row = spine_sql.spine_row(conn, conv) or {}
    phone: str | None = None
    digits = 0
    for value, raw, valid in basics["phones"]:
        if valid:
            phone = value
            break
        digits = sum(ch.isdigit() for ch in raw)
    opted_out = bool(phone) and sql.is_suppressed(conn, str(phone))
    unreachable, why = False, ""
    if phone is not None and sql.last_sms_failed(conn, phone):
        unreachable, why = True, "the last text to this number failed (learned unreachable)"
    elif basics["preferred_channel"] != "sms" and any(
        word in str(spine_row.get("preference_why") or "").lower() for word in _UNREACHABLE_WORDS
    ):
        unreachable, why = True, f"learned unreachable: {spine_row.get('preference_why')}"
    pending = frozenset(job.rule for job in sql.pending_jobs(conn, conv))
    due = spine_row.get("next_step_due")
    state = rules.State(
        conversation_id=conv,
        phone=phone,
        phone_digits=digits if phone is None else 0,
        first_name=_first_name(facts.get("name") or basics["display_name"]),
        intent=basics["intent"],
        urgent=basics["urgent"],
        facts=facts,
        next_step=basics["next_step"],
        next_step_due=float(due) if isinstance(due, int | float) else None,
        owner_extension=basics["owner_extension"],
        opted_out=opted_out,
        textable=textable(phone) if phone else True,
        unreachable=unreachable,
        unreachable_why=why,
        open_question=_open_question(sql.recent_customer_messages(conn, conv)),
        pending=pending,
        last_missed_call_text=sql.last_send_to(conn, phone, rules.MISSED_CALL) if phone else None,
    )
    history = History(
        sends=sql.sends_since(conn, conv, now - DAY),
        contacts=sql.contacts_since(conn, conv, now - DAY),
        human_at=sql.human_at(conn, conv),
        opted_out=opted_out,
    )
    return Loaded(conv, state, history)
