"""Domain vocabulary: channels, identities, timeline events, and the records the service returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Channel(StrEnum):
    """Where an event happened."""

    CHAT = "chat"
    SMS = "sms"
    VOICE = "voice"
    EMAIL = "email"
    NOTE = "note"
    SYSTEM = "system"


class IdentityKind(StrEnum):
    """How a person is known to a channel."""

    PHONE = "phone"
    CHAT = "chat"
    EMAIL = "email"
    SIP = "sip"


class EventKind(StrEnum):
    """What happened, as a timeline entry."""

    MESSAGE_IN = "message_in"
    MESSAGE_OUT = "message_out"
    CALL_RINGING = "call_ringing"
    CALL_ANSWERED = "call_answered"
    CALL_MISSED = "call_missed"
    CALL_ABANDONED = "call_abandoned"
    CALL_ENDED = "call_ended"
    VOICEMAIL = "voicemail"
    TRANSCRIPT = "transcript"
    NOTE = "note"
    HANDOFF = "handoff"
    AUTOMATED = "automated"
    MERGE = "merge"
    UNMERGE = "unmerge"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    CLAIM = "claim"


INBOUND_KINDS = frozenset({EventKind.MESSAGE_IN, EventKind.VOICEMAIL, EventKind.CALL_MISSED})
"""Kinds that leave the customer waiting for an answer (the store's triggers in migration 0001 mirror this)."""

ANSWER_KINDS = frozenset({EventKind.MESSAGE_OUT, EventKind.CALL_ANSWERED})
"""Kinds that count as the business answering, unless ``meta.automated`` is true (an automatic text-back is not
an answer)."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """Anything that arrives from outside, before the domain knows who it belongs to.

    ``identity_value`` is raw: the service normalizes phone numbers and e-mail addresses.
    ``external_id`` makes ingest idempotent: the same (channel, external_id) is stored once.
    """

    channel: Channel
    kind: EventKind
    identity_kind: IdentityKind
    identity_value: str
    external_id: str
    body: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: float | None = None
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Where an inbound item landed."""

    contact_id: int
    conversation_id: int
    event_id: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One entry of a conversation's timeline."""

    id: int
    conversation_id: int
    kind: str
    channel: str
    body: str
    meta: Mapping[str, Any]
    external_id: str | None
    author: str | None
    occurred_at: float
    delivery: str | None = None  # outbox state of an outbound message (queued, sent, delivered, failed...)


@dataclass(frozen=True, slots=True)
class IdentityView:
    """An identity of a contact."""

    kind: str
    value: str
    raw: str
    valid: bool


WITHHELD_PREFIX = "withheld:"


def contact_label(display_name: str | None, identities: Sequence[IdentityView]) -> str:
    """What identifies a contact to staff: its name, else its phone number, else the sender as the channel gave
    it (an alphanumeric SMS sender such as "BANK", an e-mail address), "Withheld number" for a withheld caller,
    and "Web visitor" only for a contact that is nothing but a chat visitor."""
    if display_name and display_name.strip():
        return display_name.strip()
    for ident in identities:
        if ident.kind == IdentityKind.PHONE and ident.valid:
            return ident.value
    for ident in identities:
        if ident.kind == IdentityKind.SIP and ident.value.startswith(WITHHELD_PREFIX):
            return "Withheld number"
        if ident.kind in (IdentityKind.PHONE, IdentityKind.EMAIL, IdentityKind.SIP):
            return ident.raw or ident.value
    if any(ident.kind == IdentityKind.CHAT for ident in identities):
        return "Web visitor"
    return "Unknown contact"


@dataclass(frozen=True, slots=True)
class ContactView:
    """A contact with its identities and its conversation."""

    id: int
    display_name: str | None
    conversation_id: int
    identities: tuple[IdentityView, ...]

    def phone(self) -> str | None:
        """The first valid E.164 phone number, if any."""
        for ident in self.identities:
            if ident.kind == IdentityKind.PHONE and ident.valid:
                return ident.value
        return None


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """What staff need to know in one glance (screen-pop, phone display, rules)."""

    conversation_id: int
    contact_id: int
    display_name: str | None
    status: str
    intent: str | None
    next_step: str | None
    urgent: bool
    owner: str | None
    preferred_channel: str | None
    facts: Mapping[str, Any]
    phone: str | None
    last_by_channel: Mapping[str, TimelineEvent]
    latest_transcript: TimelineEvent | None
    last_staff_extension: str | None
    awaiting_since: float | None
    label: str = ""
    """What identifies the contact (:func:`contact_label`): name, number, sender; "Web visitor" only for one."""


@dataclass(frozen=True, slots=True)
class ReplyRoutes:
    """Which channels can reach a conversation's customer now, and why the others cannot."""

    channels: tuple[str, ...]
    phone: str | None
    chat_visitor: str | None
    unavailable: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """A staff reply that was recorded (and, for SMS, queued in the outbox)."""

    channel: str
    event_id: int
    outbox_id: int | None
    to: str


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One line of the staff inbox."""

    conversation_id: int
    contact_id: int
    display_name: str | None
    phone: str | None
    awaiting_since: float | None
    last_event: TimelineEvent | None
    intent: str | None
    next_step: str | None
    urgent: bool
    owner: str | None
    updated_at: float
    label: str = ""
    """What identifies the contact (:func:`contact_label`)."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A full-text search result."""

    event: TimelineEvent
    snippet: str
    display_name: str | None


@dataclass(frozen=True, slots=True)
class StaffUser:
    """A staff member who can log in and may own a SIP extension."""

    id: int
    username: str
    display_name: str
    extension: str | None
    role: str
    password_hash: str | None
