"""The conversation spine: what the customer wants, what we know, what happens next and how to reach them.

Theory of operation: every conversation carries one :class:`Spine`:

* ``intent`` from a configured vocabulary (default book, reschedule, cancel, question, status, estimate, problem,
  other) and an ``urgent`` flag;
* ``facts``: typed key/values (name, callback number, availability, address, and whatever the office configures,
  e.g. "insurance" or "roof type"), each a :class:`Fact` that says where it came from, who set it, when, and how sure
  the reader was;
* a ``next_step`` with an optional due time and owner, and the conversation's ``owner``;
* a ``channel_preference`` (sms, voice, chat) with the reason it is what it is ("said 'text me'", "texts failed").

:class:`SpineService` is the only writer. Each setter compares with what is stored and, when something changes,
updates the row and appends ONE timeline entry of kind ``spine`` (channel ``system``) whose meta says which field,
the new and the previous value, ``set_by`` (a staff username, or ``extractor`` / a rule name) and ``source``
(``staff``, ``api``, ``sms``, ``chat``, ``voicemail``...). Unchanged values write nothing. A fact set by staff is
never overwritten by the extractor: staff corrections win until staff change them again.

Merges: facts stay on the conversation they were captured in; :meth:`SpineService.spine` reads the whole merged
chain (newest value per name wins), so a merge shows both sides' facts and undoing it gives each side its own back.

Episodes: contacts from one person on any channel (messages in, calls, voicemails) whose gaps are at most the
window (default 30 min) form one :class:`Episode`. They are computed from the timeline, not stored, so they can never
disagree with it; :meth:`SpineService.episode_of` gives the episode a moment belongs to, with the number of automated
messages already sent in it, for the rules' per-episode budget.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from gateway.domain.bus import Bus
from gateway.domain.events import ConversationUpdated, TimelineEventAdded
from gateway.domain.models import Channel, EventKind, TimelineEvent
from gateway.domain.ports import StorePort
from gateway.errors import ValidationError
from gateway.store import queries as q
from gateway.store import spine as sq

log = logging.getLogger(__name__)

SPINE_EVENT_KIND = "spine"
"""Timeline kind of every spine change (channel ``system``)."""

EXTRACTOR = "extractor"
"""``set_by`` of values read automatically from messages and transcripts."""

DEFAULT_INTENTS = ("book", "reschedule", "cancel", "question", "status", "estimate", "problem", "other")

SYSTEM = "system"
"""``set_by`` of changes the gateway itself makes (a chat hand-off, a call-back request) without a person."""

CHANNEL_PREFERENCES = ("sms", "voice", "chat")

_CONTACT_KINDS = (
    EventKind.MESSAGE_IN.value,
    EventKind.CALL_MISSED.value,
    EventKind.CALL_ABANDONED.value,
    EventKind.CALL_ANSWERED.value,
    EventKind.VOICEMAIL.value,
)
"""Timeline kinds that are the customer reaching out (outbound calls are filtered by ``meta.direction``)."""

_FACT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _default_intents() -> list[str]:
    return list(DEFAULT_INTENTS)


def _default_fact_patterns() -> dict[str, list[str]]:
    return {
        "insurance": [
            r"\binsurance\s+(?:is\s+|with\s+|through\s+|from\s+)?(?P<value>(?-i:[A-Z][\w&.-]*(?: [A-Z][\w&.-]*)*))"
        ]
    }


@dataclass(frozen=True)
class SpineConfig:
    """The conversation spine: intent vocabulary, episode window, and what is read from messages."""

    intents: list[str] = field(
        default_factory=_default_intents,
        metadata={"doc": "the intents a conversation can have (staff pick from these; anything else is refused)"},
    )
    episode_window_minutes: float = field(
        default=30.0,
        metadata={"doc": "contacts from one person closer than this (any channel) form one episode"},
    )
    extract: bool = field(
        default=True,
        metadata={"doc": "read intent, urgency, facts and channel preference from chat, SMS and voicemail transcripts"},
    )
    fact_patterns: dict[str, list[str]] = field(
        default_factory=_default_fact_patterns,
        metadata={
            "doc": "office facts: name -> regular expressions (case-insensitive); the group 'value' (else the whole "
            "match) becomes the fact, e.g. roof_type = ['(?P<value>shingle|metal|tile|flat) roof']"
        },
    )
    topic_keywords: list[str] = field(
        default_factory=list,
        metadata={
            "doc": "phrases that say what a conversation is about, e.g. ['chipped tooth', 'roof leak']; the first "
            "one heard becomes the 'topic' fact that the one-line summary shows"
        },
    )

    def validate(self) -> None:
        """Check the vocabulary and the window, so a bad value fails at start."""
        if not self.intents:
            raise ValueError("intents must list at least one intent, e.g. ['book', 'question', 'other']")
        for name in self.intents:
            if not name.strip() or name != name.strip().lower():
                raise ValueError(f"intent {name!r} must be a non-empty lower-case word")
        if self.episode_window_minutes <= 0:
            raise ValueError("episode_window_minutes must be positive")
        for name, patterns in self.fact_patterns.items():
            if not (0 < len(name) <= 40) or not set(name) <= _FACT_NAME_CHARS:
                raise ValueError(f"fact_patterns.{name}: use 1-40 lower-case letters, digits or '_' as fact name")
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"fact_patterns.{name}: {pattern!r} is not a regular expression: {err}") from err


def check_fact_name(name: str) -> str:
    """A fact name is lower-case letters, digits and underscores, 1-40 characters."""
    if not (0 < len(name) <= 40) or not set(name) <= _FACT_NAME_CHARS:
        raise ValidationError(
            f"fact name {name[:40]!r} is not usable: use 1-40 lower-case letters, digits or '_' (e.g. roof_type)"
        )
    return name


@dataclass(frozen=True, slots=True)
class Fact:
    """One captured fact: its value and where it came from.

    ``value`` is a string or number for most facts; ``availability`` is ``{"text": "Saturday morning",
    "start": "2026-12-05T09:00:00-05:00"}`` (``start`` absent when no moment could be read).
    """

    name: str
    value: Any
    source: str
    set_by: str
    at: float
    confidence: float = 1.0
    event_id: int | None = None

    def text(self) -> str:
        """The value as one line for people."""
        if isinstance(self.value, Mapping):
            return str(self.value.get("text") or json.dumps(self.value, ensure_ascii=False))
        return str(self.value)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who or what set a spine field, from where, when."""

    set_by: str
    source: str
    at: float


@dataclass(frozen=True, slots=True)
class LastContact:
    """The customer's latest contact, for "texted 10 min ago"."""

    kind: str
    channel: str
    at: float

    def verb(self) -> str:
        """What the customer did, in words."""
        if self.kind == EventKind.MESSAGE_IN.value:
            return {"sms": "texted", "chat": "chatted", "email": "e-mailed"}.get(self.channel, "wrote")
        return {
            EventKind.CALL_MISSED.value: "missed call",
            EventKind.CALL_ABANDONED.value: "hung up waiting",
            EventKind.VOICEMAIL.value: "left a voicemail",
        }.get(self.kind, "called")


@dataclass(frozen=True, slots=True)
class Spine:
    """Everything a conversation carries besides its timeline. Read it with :meth:`SpineService.spine`."""

    conversation_id: int
    contact_id: int
    display_name: str | None
    phone: str | None
    intent: str | None
    urgent: bool
    facts: Mapping[str, Fact]
    next_step: str | None
    next_step_due: float | None
    next_step_owner: str | None
    owner: str | None
    channel_preference: str | None
    preference_why: str | None
    provenance: Mapping[str, Provenance]
    last_contact: LastContact | None
    summary: str = ""
    """The one-line summary, e.g. "Maria R - chipped tooth, urgent - texted 10 min ago"."""
    episode: Episode | None = None
    """The episode open at the moment of reading (None when the last contact is older than the window)."""

    def fact_value(self, name: str) -> Any:
        """A fact's value, or None."""
        fact = self.facts.get(name)
        return fact.value if fact is not None else None


@dataclass(frozen=True, slots=True)
class EpisodeContact:
    """One customer contact inside an episode."""

    event_id: int
    kind: str
    channel: str
    at: float


@dataclass(frozen=True, slots=True)
class Episode:
    """Contacts from one person, on any channel, with no gap longer than the window.

    ``key`` is stable for the episode's life (``"<conversation>:<first event id>"``): rules may record it in the
    meta of what they send, and count against it. ``automated_sent`` counts automated outbound messages on the
    timeline from ``started_at`` up to the moment asked about.
    """

    conversation_id: int
    key: str
    started_at: float
    last_at: float
    contacts: tuple[EpisodeContact, ...]
    automated_sent: int

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels used in the episode, in order of first use."""
        return tuple(dict.fromkeys(c.channel for c in self.contacts))


# -- the one-line summary -------------------------------------------------------------------------------------------


def short_name(display_name: str) -> str:
    """ "Maria Rodriguez" -> "Maria R"; one word stays as it is."""
    parts = display_name.split()
    if len(parts) <= 1:
        return display_name.strip()
    return f"{parts[0]} {parts[-1][0]}"


def ago(seconds: float) -> str:
    """ "just now", "10 min ago", "3 h ago", "2 days ago"."""
    s = max(0.0, seconds)
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400:
        return f"{int(s // 3600)} h ago"
    days = int(s // 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def summary_line(
    *,
    display_name: str | None,
    phone: str | None,
    intent: str | None,
    urgent: bool,
    facts: Mapping[str, Fact],
    next_step: str | None,
    last_contact: LastContact | None,
    now: float,
) -> str:
    """ "Maria R - chipped tooth, urgent - texted 10 min ago": who, what about, how recently.

    Who: the short name (else the captured name, else the number). What about: the ``topic`` fact, else the intent,
    else the next step; ", urgent" when urgent. Parts that are unknown are left out.
    """
    name_fact = facts.get("name")
    who = short_name(display_name or (name_fact.text() if name_fact else "") or "") or (phone or "")
    topic = facts.get("topic")
    about = (topic.text() if topic else "") or (intent or "") or (next_step or "")
    if urgent:
        about = f"{about}, urgent" if about else "urgent"
    parts = [p for p in (who, about) if p]
    if last_contact is not None:
        parts.append(f"{last_contact.verb()} {ago(now - last_contact.at)}")
    return " - ".join(parts)


# -- the service -----------------------------------------------------------------------------------------------------


class SpineService:
    """Read and change conversation spines. One instance per daemon; every change lands on the timeline."""

    def __init__(
        self,
        store: StorePort,
        bus: Bus,
        config: SpineConfig | None = None,
        clock: Callable[[], float] = time.time,
        timezone: str = "UTC",
    ) -> None:
        """``timezone`` (IANA name, the business's) is how due times are written on the timeline."""
        self.store = store
        self.bus = bus
        self.config = config or SpineConfig()
        self.clock = clock
        self.timezone = timezone

    @property
    def intents(self) -> tuple[str, ...]:
        """The configured intent vocabulary."""
        return tuple(self.config.intents)

    # -- reading -----------------------------------------------------------------------------------------------------

    async def spine(self, conversation_id: int) -> Spine:
        """The spine of a conversation (following merges). Raises LookupError for an unknown conversation."""
        now = self.clock()
        window = self.config.episode_window_minutes * 60.0
        return await self.store.read(lambda c: _read_spine(c, q.live_conversation(c, conversation_id), now, window))

    async def summary_line(self, conversation_id: int) -> str:
        """The one-line summary of a conversation ("Maria R - chipped tooth, urgent - texted 10 min ago")."""
        return (await self.spine(conversation_id)).summary

    async def missing_facts(self, conversation_id: int, wanted: Iterable[str]) -> list[str]:
        """Those of ``wanted`` that are not captured yet, in the order given (templates ask only for these)."""
        spine = await self.spine(conversation_id)
        return [name for name in dict.fromkeys(wanted) if name not in spine.facts]

    async def episode_of(self, conversation_id: int, at: float | None = None) -> Episode | None:
        """The episode the moment ``at`` (default now) belongs to, or None when no contact happened within the
        window before it (a contact at ``at`` would start a new episode)."""
        when = self.clock() if at is None else at
        window = self.config.episode_window_minutes * 60.0
        return await self.store.read(lambda c: _episode(c, q.live_conversation(c, conversation_id), when, window))

    async def conversation_of_outbox(self, outbox_id: int) -> int | None:
        """The conversation an outbound message belongs to (delivery reports name only the message)."""
        return await self.store.read(lambda c: sq.outbox_conversation(c, outbox_id))

    # -- changing ----------------------------------------------------------------------------------------------------

    async def set_fact(
        self,
        conversation_id: int,
        name: str,
        value: Any,
        *,
        source: str,
        set_by: str,
        confidence: float = 1.0,
        event_id: int | None = None,
    ) -> bool:
        """Capture or correct a fact. Returns False when nothing changed (same value, or the extractor tried to
        overwrite a fact staff set)."""
        check_fact_name(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValidationError(f"fact {name!r} needs a value; to remove it use clear_fact")
        if isinstance(value, str):
            value = value.strip()[:500]
        now = self.clock()

        def op(conn: sqlite3.Connection) -> SpineChange | None:
            conv = q.live_conversation(conn, conversation_id)
            ids = sq.chain(conn, conv)
            current = _facts(conn, ids)
            old = current.get(name)
            if old is not None and old.value == value:
                return None
            if old is not None and set_by == EXTRACTOR and old.set_by != EXTRACTOR:
                return None
            sq.upsert_fact(conn, conv, name, value, source, set_by, now, confidence, event_id)
            current[name] = Fact(name, value, source, set_by, now, confidence, event_id)
            sq.mirror_fact_values(conn, conv, {k: f.value for k, f in current.items()}, now)
            shown = current[name].text()
            body = f"{_label(name)}: {shown}" + (f" (was {old.text()})" if old is not None else "")
            meta = {
                "field": f"fact.{name}",
                "value": value,
                "previous": old.value if old is not None else None,
                "source": source,
                "set_by": set_by,
                "confidence": confidence,
                "from_event_id": event_id,
            }
            return _record(conn, conv, f"{body} - set by {_who(set_by, source)}", meta, set_by, now)

        return await self._apply(op, {"facts": name})

    async def clear_fact(self, conversation_id: int, name: str, *, set_by: str, source: str = "staff") -> bool:
        """Forget a fact (staff found it wrong). Returns False when there was none."""
        check_fact_name(name)
        now = self.clock()

        def op(conn: sqlite3.Connection) -> SpineChange | None:
            conv = q.live_conversation(conn, conversation_id)
            ids = sq.chain(conn, conv)
            old = _facts(conn, ids).get(name)
            if old is None or sq.delete_fact(conn, ids, name) == 0:
                return None
            sq.mirror_fact_values(conn, conv, {k: f.value for k, f in _facts(conn, ids).items()}, now)
            meta = {"field": f"fact.{name}", "value": None, "previous": old.value, "source": source, "set_by": set_by}
            body = f"{_label(name)} removed (was {old.text()}) - by {_who(set_by, source)}"
            return _record(conn, conv, body, meta, set_by, now)

        return await self._apply(op, {"facts": name})

    async def set_intent(
        self, conversation_id: int, intent: str | None, *, source: str, set_by: str, urgent: bool | None = None
    ) -> bool:
        """Set the intent (one of the configured vocabulary, or None to clear) and optionally the urgent flag."""
        if intent is not None and intent not in self.config.intents:
            raise ValidationError(f"intent {intent[:40]!r} is not in the vocabulary; use one of {self.intents}")
        fields: dict[str, Any] = {"intent": intent}
        if urgent is not None:
            fields["urgent"] = urgent
        return await self._set_fields(conversation_id, fields, source=source, set_by=set_by)

    async def set_urgent(self, conversation_id: int, urgent: bool, *, source: str, set_by: str) -> bool:
        """Mark or unmark the conversation urgent."""
        return await self._set_fields(conversation_id, {"urgent": urgent}, source=source, set_by=set_by)

    async def set_next_step(
        self,
        conversation_id: int,
        step: str | None,
        *,
        source: str,
        set_by: str,
        due: float | None = None,
        owner: str | None = None,
    ) -> bool:
        """Set what happens next ("Call back", "Send time slots"...), with an optional due time (unix seconds) and
        owner (a staff username). ``step=None`` clears the step, its due time and its owner."""
        if step is not None:
            step = step.strip()[:200]
            if not step:
                raise ValidationError("the next step is empty: write what should happen, e.g. 'Call back'")
        if step is None:
            due, owner = None, None
        if due is not None:
            due = float(int(due // 60) * 60)  # whole minutes: what people pick and what the console sends back
        return await self._set_fields(
            conversation_id,
            {"next_step": step, "next_step_due": due, "next_step_owner": owner},
            source=source,
            set_by=set_by,
        )

    async def set_owner(self, conversation_id: int, owner: str | None, *, source: str, set_by: str) -> bool:
        """Give the conversation to a staff member (None: nobody)."""
        return await self._set_fields(conversation_id, {"owner": owner}, source=source, set_by=set_by)

    async def set_channel_preference(
        self, conversation_id: int, channel: str | None, why: str, *, source: str, set_by: str
    ) -> bool:
        """Record how the customer wants to be reached (sms, voice or chat) and why."""
        if channel is not None and channel not in CHANNEL_PREFERENCES:
            raise ValidationError(f"channel preference {channel[:20]!r} is not one of {CHANNEL_PREFERENCES}")
        return await self._set_fields(
            conversation_id,
            {"preferred_channel": channel, "preference_why": why.strip()[:200] or None},
            source=source,
            set_by=set_by,
        )

    # -- internals ---------------------------------------------------------------------------------------------------

    async def _set_fields(self, conversation_id: int, fields: Mapping[str, Any], *, source: str, set_by: str) -> bool:
        now = self.clock()

        def op(conn: sqlite3.Connection) -> SpineChange | None:
            return write_fields(
                conn, conversation_id, fields, source=source, set_by=set_by, now=now, timezone=self.timezone
            )

        return await self._apply(op, dict(fields))

    async def _apply(self, op: Callable[[sqlite3.Connection], SpineChange | None], fields: Mapping[str, Any]) -> bool:
        change = await self.store.write(op)
        if change is None:
            return False
        self.bus.publish(TimelineEventAdded(change.event.conversation_id, change.contact_id, change.event))
        self.bus.publish(ConversationUpdated(change.event.conversation_id, dict(fields)))
        return True


_PROTECTS = {"preference_why": "preferred_channel", "next_step_due": "next_step", "next_step_owner": "next_step"}
"""Fields that share their sibling's provenance for the staff-wins rule."""


@dataclass(frozen=True, slots=True)
class SpineChange:
    """A spine change as stored: its timeline entry (publish it once the write committed)."""

    event: TimelineEvent
    contact_id: int


def write_fields(
    conn: sqlite3.Connection,
    conversation_id: int,
    fields: Mapping[str, Any],
    *,
    source: str,
    set_by: str,
    now: float,
    timezone: str = "UTC",
) -> SpineChange | None:
    """Inside a write transaction: set spine columns, record who set them and add the timeline entry.

    The one place spine fields are written (the spine service, and ``ConversationService.update_conversation`` for
    older callers). Unchanged values are skipped; the extractor never overwrites a field someone else set. Returns
    None when nothing changed.
    """
    conv = q.live_conversation(conn, conversation_id)
    row = sq.spine_row(conn, conv)
    if row is None:
        raise LookupError(f"conversation {conversation_id} does not exist")
    changed = {k: v for k, v in fields.items() if row[k] != v}
    if set_by == EXTRACTOR:  # staff corrections win: automatic reading never overwrites them
        prov_of = row["spine_provenance"]
        changed = {
            k: v
            for k, v in changed.items()
            if not isinstance(prov_of.get(_PROTECTS.get(k, k)), Mapping)
            or prov_of[_PROTECTS.get(k, k)].get("set_by") == EXTRACTOR
        }
    if not changed:
        return None
    prov = {k: {"set_by": set_by, "source": source, "at": now} for k in changed}
    sq.set_fields(conn, conv, changed, prov, now)
    words = ", ".join(_describe(k, v, timezone) for k, v in changed.items())
    meta = {
        "field": ",".join(changed),
        "value": dict(changed),
        "previous": {k: row[k] for k in changed},
        "source": source,
        "set_by": set_by,
    }
    return _record(conn, conv, f"{words} - set by {_who(set_by, source)}", meta, set_by, now)


def _who(set_by: str, source: str) -> str:
    if set_by == EXTRACTOR:
        return f"the extractor (from {source})"
    if set_by == SYSTEM:
        return "the gateway" if source == SYSTEM else f"the gateway ({source})"
    return set_by if source in ("staff", "api", set_by) else f"{set_by} ({source})"


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _describe(key: str, value: Any, timezone: str = "UTC") -> str:
    if key == "urgent":
        return "marked urgent" if value else "no longer urgent"
    if key == "next_step_due":
        if not value:
            return "no due time"
        moment = dt.datetime.fromtimestamp(value, ZoneInfo(timezone))
        return f"due {moment.strftime('%a %Y-%m-%d %H:%M %Z')}"
    if key == "preference_why":
        return f"because {value}" if value else "no reason given"
    label = {"preferred_channel": "Preferred channel", "next_step_owner": "Next step owner"}.get(key, _label(key))
    return f"{label}: {value}" if value not in (None, "") else f"{label} cleared"


def _record(
    conn: sqlite3.Connection, conv: int, body: str, meta: Mapping[str, Any], set_by: str, now: float
) -> SpineChange:
    author = None if set_by in (EXTRACTOR, SYSTEM) else set_by
    meta_d = dict(meta)
    event_id = q.insert_event(
        conn, conv, SPINE_EVENT_KIND, Channel.SYSTEM.value, body, q.dumps(meta_d), None, author, now, now
    )
    event = TimelineEvent(event_id, conv, SPINE_EVENT_KIND, Channel.SYSTEM.value, body, meta_d, None, author, now)
    return SpineChange(event, q.contact_of(conn, conv))


def _facts(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[str, Fact]:
    out: dict[str, Fact] = {}
    for name, value, source, set_by, at, confidence, event_id in sq.facts(conn, ids):
        out[str(name)] = Fact(
            str(name), json.loads(value), str(source), str(set_by), float(at), float(confidence), event_id
        )
    return out


def _is_inbound(meta_json: str) -> bool:
    return '"direction":"outbound"' not in meta_json.replace(" ", "")


def _last_contact(conn: sqlite3.Connection, conv: int) -> LastContact | None:
    for event_id, kind, channel, at, meta in sq.contact_events(conn, conv, _CONTACT_KINDS, float("inf"), 20):
        del event_id
        if _is_inbound(meta):
            return LastContact(kind, channel, at)
    return None


def _read_spine(conn: sqlite3.Connection, conv: int, now: float, window: float = 1800.0) -> Spine:
    row = sq.spine_row(conn, conv)
    if row is None:
        raise LookupError(f"conversation {conv} does not exist")
    facts = _facts(conn, sq.chain(conn, conv))
    phone = sq.phone_of(conn, int(row["contact_id"]))
    last = _last_contact(conn, conv)
    prov = {
        k: Provenance(str(v.get("set_by", "")), str(v.get("source", "")), float(v.get("at", 0.0)))
        for k, v in row["spine_provenance"].items()
        if isinstance(v, Mapping)
    }
    line = summary_line(
        display_name=row["display_name"],
        phone=phone,
        intent=row["intent"],
        urgent=row["urgent"],
        facts=facts,
        next_step=row["next_step"],
        last_contact=last,
        now=now,
    )
    return Spine(
        conversation_id=conv,
        contact_id=int(row["contact_id"]),
        display_name=row["display_name"],
        phone=phone,
        intent=row["intent"],
        urgent=row["urgent"],
        facts=facts,
        next_step=row["next_step"],
        next_step_due=row["next_step_due"],
        next_step_owner=row["next_step_owner"],
        owner=row["owner"],
        channel_preference=row["preferred_channel"],
        preference_why=row["preference_why"],
        provenance=prov,
        last_contact=last,
        summary=line,
        episode=_episode(conn, conv, now, window),
    )


def _episode(conn: sqlite3.Connection, conv: int, at: float, window: float) -> Episode | None:
    contacts: list[EpisodeContact] = []
    seen: set[int] = set()
    edge = at
    # Walk back from ``at`` while the gaps stay within the window, a page of rows at a time.
    while True:
        rows = sq.contact_events(conn, conv, _CONTACT_KINDS, edge, _PAGE)
        fresh = 0
        ended = False
        for event_id, kind, channel, when, meta in rows:
            if event_id in seen:
                continue
            seen.add(event_id)
            fresh += 1
            if not _is_inbound(meta):
                continue
            if (contacts[-1].at if contacts else at) - when > window:
                ended = True
                break
            contacts.append(EpisodeContact(int(event_id), str(kind), str(channel), float(when)))
        if ended or len(rows) < _PAGE or fresh == 0:
            break
        edge = float(rows[-1][3])
    if not contacts:
        return None
    contacts.reverse()
    first = contacts[0]
    sent = sq.automated_sent_between(conn, conv, first.at, at)
    return Episode(conv, f"{conv}:{first.event_id}", first.at, contacts[-1].at, tuple(contacts), sent)


_PAGE = 500
