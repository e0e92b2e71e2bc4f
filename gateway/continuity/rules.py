"""The rules: pure functions of (event, conversation state, clock) that return decisions.

Theory of operation: the engine turns every new timeline event into a :class:`Trigger`, loads the conversation's
:class:`State` and calls :func:`on_event`, which returns decisions: :class:`Send` (now), :class:`Schedule` (at a
moment, stored durably), :class:`Cancel` (pending sends of some rules, with the reason), :class:`Skip` (this rule will
not act, and why) and :class:`Call` (ring the owner, then the customer). When a stored job falls due the engine calls
:func:`on_due` with fresh state, so a send whose moment passed while the daemon was down is decided again on what is
true *now*. Nothing here does I/O or reads the wall clock: ``now`` is an argument, which makes the rules cheap to
test and to measure. Every customer-facing :class:`Send` then passes the restraint (``restraint.py``) in the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.continuity.config import ContinuityConfig
from gateway.continuity.templates import render
from gateway.web import hours

MISSED_CALL = "missed_call"
VOICEMAIL_ACK = "voicemail_ack"
CHAT_SMS = "chat_sms"
AFTER_HOURS = "after_hours"
CALL_ME = "call_me"
CALL_RECAP = "call_recap"
STALLED = "stalled_thread"
RESTRAINT = "restraint"

VERIFY_WAIT = 24 * 3600.0
"""How long a chat continuation waits for the customer to confirm the number they typed."""

RULES = (MISSED_CALL, VOICEMAIL_ACK, CHAT_SMS, AFTER_HOURS, CALL_ME, CALL_RECAP, STALLED)

INTENT_TOPICS: Mapping[str, str] = {
    "book": "your appointment",
    "reschedule": "moving your appointment",
    "cancel": "your cancellation",
    "question": "your question",
    "status": "your request",
    "estimate": "your estimate",
    "problem": "the problem you reported",
}
"""How an intent is named in a text (``{topic}``, ``{intent_phrase}``); other intents are named as they are."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """A timeline event as the rules see it."""

    kind: str
    channel: str
    conversation_id: int
    event_id: int
    body: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    author: str | None = None


@dataclass(frozen=True, slots=True)
class State:
    """What the rules know about a conversation when they decide (filled by the engine's adapter)."""

    conversation_id: int
    phone: str | None = None
    """The customer's E.164 number, None when withheld or unknown."""
    phone_digits: int = 0
    first_name: str | None = None
    intent: str | None = None
    urgent: bool = False
    facts: Mapping[str, Any] = field(default_factory=dict)
    next_step: str | None = None
    next_step_due: float | None = None
    owner_extension: str | None = None
    opted_out: bool = False
    textable: bool = True
    unreachable: bool = False
    unreachable_why: str = ""
    open_question: str | None = None
    pending: frozenset[str] = frozenset()
    last_missed_call_text: float | None = None
    """When the missed-call rule last texted this number (per-number cooldown)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send a message now (after the restraint)."""

    rule: str
    channel: str
    to: str
    body: str
    reason: str
    reply_to_customer: bool = False
    """An instant answer to something the customer just sent (quiet hours may let it through)."""
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Decide again at ``at`` (a stored job); ``replace`` drops a pending job of the same rule first."""

    rule: str
    at: float
    reason: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    replace: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel pending jobs of ``rules`` because of ``reason``."""

    rules: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    """``rule`` does not act; ``reason`` says why (recorded as suppressed)."""

    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class Call:
    """Ring ``extension`` first, then bridge to ``to`` (call me at a time)."""

    rule: str
    extension: str
    to: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Tell staff (never the customer)."""

    rule: str
    reason: str


Decision = Send | Schedule | Cancel | Skip | Call | Alert


@dataclass(frozen=True)
class Context:
    """Static facts the rules need: the config and the business hours."""

    config: ContinuityConfig
    business_name: str
    timezone: str
    business_hours: Mapping[str, str]
    closed: hours.ClosedDates

    def is_open(self, now: float) -> bool:
        """True inside business hours."""
        return hours.is_open(self.business_hours, self.timezone, now, self.closed)

    def next_open(self, now: float) -> float | None:
        """When the office is next open (``now`` if open)."""
        return hours.next_open(self.business_hours, self.timezone, now, self.closed)

    def words_for(self, moment: float | None, now: float) -> str:
        """A moment in words for a text; 'as soon as we can' when unknown."""
        if moment is None:
            return "as soon as we can"
        if moment <= now:
            return "today"
        return hours.describe_moment(moment, self.timezone, now)


# -- variables -------------------------------------------------------------------------------------------------------


def topic_of(state: State) -> str:
    """What the conversation is about, in words."""
    if state.intent:
        return INTENT_TOPICS.get(state.intent, state.intent)
    return ""


def _ask_missing(state: State, config: ContinuityConfig) -> str:
    missing = [config.fact_questions[name] for name in config.wanted_facts if not state.facts.get(name)]
    if not missing:
        return ""
    listed = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
    return f"Could you send us {listed}?"


def variables(state: State, ctx: Context, now: float, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every template variable for this conversation at ``now``."""
    topic = topic_of(state)
    next_open = ctx.next_open(now)
    reopen = ctx.words_for(next_open, now)
    due = ""
    if state.next_step_due is not None:
        due = ", " + hours.describe_moment(state.next_step_due, ctx.timezone, now)
    values = {
        "next_slots": _slots(ctx, now),
        "first_name": state.first_name or "",
        "business_name": ctx.business_name,
        "intent_phrase": f" about {topic}" if topic else "",
        "topic": topic or "your call",
        "next_slot": "today" if next_open is not None and next_open <= now else reopen,
        "reopen_time": reopen,
        "heard": "",
        "open_question": state.open_question or "",
        "quote": f'You asked: "{state.open_question}"' if state.open_question else "",
        "missing_ask": _ask_missing(state, ctx.config),
        "next_step": state.next_step or "we will be in touch",
        "next_step_due": due,
    }
    if extra:
        values.update(extra)
    return values


def _slots(ctx: Context, now: float, count: int = 3, step: float = 1800.0) -> str:
    """The next ``count`` half-hour starts inside business hours, in words: "at 13:30, at 14:00 or at 14:30"."""
    moment = (now // step + 1) * step  # the next full half hour
    found: list[float] = []
    for _ in range(count * 4):
        opening = ctx.next_open(moment)
        if opening is None:
            break
        if opening > moment:
            moment = (opening + step - 1) // step * step
            continue
        found.append(moment)
        if len(found) == count:
            break
        moment += step
    words = [hours.describe_moment(m, ctx.timezone, now) for m in found]
    if not words:
        return "as soon as we can"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# -- who may be texted -----------------------------------------------------------------------------------------------


def why_not_textable(state: State, config: ContinuityConfig) -> str | None:
    """The reason this customer cannot get an automated text, or None."""
    if state.phone is None:
        if state.phone_digits and state.phone_digits <= config.internal_max_digits:
            return "the number is an internal extension"
        return "the number is withheld or unknown"
    if state.opted_out:
        return "the customer opted out (STOP)"
    if not state.textable:
        return "the number cannot receive texts (landline or service number)"
    if state.unreachable:
        return state.unreachable_why or "texts to this number failed before"
    return None


# -- events ------------------------------------------------------------------------------------------------------------

_HUMAN_CALL_KINDS = frozenset({"call_answered", "call_ringing", "call_ended"})


def is_human_answer(trigger: Trigger) -> bool:
    """True when a person at the office answered the customer (a reply or a call)."""
    if trigger.kind == "message_out":
        return not trigger.meta.get("automated")
    if trigger.kind in _HUMAN_CALL_KINDS and trigger.meta.get("direction") == "outbound":
        return True
    return trigger.kind == "call_answered"


def is_customer_contact(trigger: Trigger) -> bool:
    """True for something the customer did (a message, a call, a voicemail, a chat hand-off)."""
    if trigger.kind in {"message_in", "call_missed", "voicemail", "handoff", "call_abandoned"}:
        return True
    return trigger.kind == "call_ringing" and trigger.meta.get("direction") != "outbound"


def on_event(trigger: Trigger, state: State, ctx: Context, now: float) -> list[Decision]:  # noqa: PLR0912
    """Decisions for one new timeline event."""
    cfg = ctx.config
    kind = trigger.kind
    if kind == "opt_out":
        return [Cancel(tuple(state.pending), "the customer opted out (STOP)")] if state.pending else []
    if is_human_answer(trigger):
        if MISSED_CALL not in state.pending:
            return []
        if trigger.kind == "message_out":
            return [Cancel((MISSED_CALL,), "staff replied during the delay")]
        if trigger.meta.get("direction") == "outbound":
            return [Cancel((MISSED_CALL,), "staff called back during the delay")]
        return [Cancel((MISSED_CALL,), "the customer was answered on another call")]
    if kind == "call_missed":
        return _missed_call(state, ctx, now)
    if kind == "voicemail":
        out: list[Decision] = []
        if MISSED_CALL in state.pending:
            out.append(Cancel((MISSED_CALL,), "the caller left a voicemail; the voicemail acknowledgement answers"))
        if cfg.voicemail_enabled:
            why = why_not_textable(state, cfg)
            if why:
                out.append(Skip(VOICEMAIL_ACK, why))
            else:
                out.append(Schedule(VOICEMAIL_ACK, now + cfg.voicemail_wait_seconds, "waiting for the transcript", {}))
        return out
    if kind == "transcript":
        if not cfg.voicemail_enabled or VOICEMAIL_ACK not in state.pending:
            return []
        heard = heard_from(trigger)
        confidence = trigger.meta.get("confidence")
        return [
            Schedule(
                VOICEMAIL_ACK,
                now,
                "the transcript is ready",
                {"heard": heard, "confidence": confidence if isinstance(confidence, int | float) else None},
                replace=True,
            )
        ]
    if kind == "handoff":
        return _handoff(trigger, state, ctx, now)
    if kind == "claim" and trigger.meta.get("verified") and CHAT_SMS in state.pending:
        return [Schedule(CHAT_SMS, now, "the customer confirmed the number", {}, replace=True)]
    if kind == "message_in" and trigger.channel in {"chat", "sms"}:
        return _after_hours(trigger, state, ctx, now)
    return []


def heard_from(trigger: Trigger) -> str:
    """What a transcript says the voicemail was about: its keywords, else its first words."""
    keywords = trigger.meta.get("keywords")
    if isinstance(keywords, list):
        names = [str(k.get("keyword")) for k in keywords if isinstance(k, dict) and k.get("keyword")]
        if names:
            return ", ".join(dict.fromkeys(names))
    text = trigger.body.split("\nkeywords:")[0].strip()
    words = text.split()
    return " ".join(words[:8]) + (" ..." if len(words) > 8 else "")


def _missed_call(state: State, ctx: Context, now: float) -> list[Decision]:
    cfg = ctx.config
    if not cfg.missed_call_enabled:
        return []
    why = why_not_textable(state, cfg)
    if why:
        return [Skip(MISSED_CALL, why)]
    if MISSED_CALL in state.pending:
        return [Skip(MISSED_CALL, "a text-back for this episode is already scheduled")]
    last = state.last_missed_call_text
    cooldown = cfg.missed_call_cooldown_minutes * 60
    if last is not None and now - last < cooldown:
        return [Skip(MISSED_CALL, f"cooldown: this number was texted {int((now - last) // 60)} min ago")]
    return [Schedule(MISSED_CALL, now + cfg.missed_call_delay_seconds, "text back after the delay")]


def _handoff(trigger: Trigger, state: State, ctx: Context, now: float) -> list[Decision]:
    cfg = ctx.config
    mode = trigger.meta.get("handoff")
    phone = trigger.meta.get("phone")
    if mode == "sms" and cfg.chat_sms_enabled:
        target = state if state.phone else _with_phone(state, phone, trigger.meta.get("phone_opted_out"))
        why = why_not_textable(target, cfg)
        if why:
            return [Skip(CHAT_SMS, why)]
        if trigger.meta.get("text_by") == "chat":
            # The chat channel texts the typed number a confirmation first; the chat's content (the open question)
            # goes only to a number the customer has confirmed, by answering that text or typing its code.
            return [
                Schedule(CHAT_SMS, now + VERIFY_WAIT, "waiting until the customer confirms the number", {"await": 1})
            ]
        body = render(cfg.chat_sms_template, variables(target, ctx, now))
        return [Send(CHAT_SMS, "sms", str(target.phone), body, "continue the chat by text", reply_to_customer=True)]
    if mode == "call_me" and cfg.call_me_enabled:
        at = trigger.meta.get("at")
        if not isinstance(at, int | float):
            return []
        payload: dict[str, Any] = {"attempt": 0}
        if isinstance(phone, str) and phone and state.phone is None:
            # The number the visitor typed is only a claim: it is rung (with staff on the line first), but the
            # chat, not that number, hears that nobody could be reached.
            payload["to"] = phone
        return [Schedule(CALL_ME, float(at), "the visitor picked a call-back time in the chat", payload)]
    return []


def _with_phone(state: State, phone: object, opted_out: object = False) -> State:
    """The state as if the typed number were the customer's (its opt-out read by the engine: ``phone_opted_out``)."""
    from dataclasses import replace  # noqa: PLC0415 - rare path

    number = phone if isinstance(phone, str) and phone else None
    return replace(state, phone=number, opted_out=state.opted_out or opted_out is True)


def _after_hours(trigger: Trigger, state: State, ctx: Context, now: float) -> list[Decision]:
    cfg = ctx.config
    if not cfg.after_hours_enabled or ctx.is_open(now):
        return []
    if trigger.channel == "sms" and CHAT_SMS in state.pending:
        return []  # the chat's continuation answers this text, with the reopening time in it
    if trigger.channel == "sms":
        why = why_not_textable(state, cfg)
        if why:
            return [Skip(AFTER_HOURS, why)]
        to = str(state.phone)
    else:
        to = "chat"
    body = render(cfg.after_hours_template, variables(state, ctx, now))
    return [Send(AFTER_HOURS, trigger.channel, to, body, "the office is closed", reply_to_customer=True)]


# -- stored jobs ------------------------------------------------------------------------------------------------------


def on_due(rule: str, payload: Mapping[str, Any], state: State, ctx: Context, now: float) -> Decision:  # noqa: PLR0912 - one branch per rule
    """The decision for a stored job whose moment came (decided again on the current state)."""
    cfg = ctx.config
    if rule == MISSED_CALL:
        if not cfg.missed_call_enabled:
            return Skip(rule, "the rule was switched off")
        why = why_not_textable(state, cfg)
        if why:
            return Skip(rule, why)
        body = render(cfg.missed_call_template, variables(state, ctx, now))
        return Send(rule, "sms", str(state.phone), body, "missed call, nobody called back within the delay")
    if rule == VOICEMAIL_ACK:
        if not cfg.voicemail_enabled:
            return Skip(rule, "the rule was switched off")
        why = why_not_textable(state, cfg)
        if why:
            return Skip(rule, why)
        heard = str(payload.get("heard") or "")
        confidence = payload.get("confidence")
        sure = isinstance(confidence, int | float) and confidence >= cfg.voicemail_min_confidence
        if heard and sure:
            body = render(cfg.voicemail_template, variables(state, ctx, now, {"heard": heard}))
            return Send(rule, "sms", str(state.phone), body, f"voicemail heard with confidence {confidence:.2f}")
        reason = "no transcript" if not heard else f"transcript confidence {confidence} below the threshold"
        body = render(cfg.voicemail_generic_template, variables(state, ctx, now))
        return Send(rule, "sms", str(state.phone), body, f"voicemail; generic acknowledgement ({reason})")
    if rule == CALL_ME and payload.get("channel"):
        # The "we could not reach you" text (deferred by quiet hours, or interrupted by a stop): never a new call.
        why = why_not_textable(state, cfg)
        if why:
            return Skip(rule, why)
        body = render(cfg.call_me_failed_template, variables(state, ctx, now))
        return Send(rule, "sms", str(state.phone), body, str(payload.get("reason", "every call-back attempt failed")))
    if rule == CALL_ME:
        if not cfg.call_me_enabled:
            return Skip(rule, "the rule was switched off")
        extension = state.owner_extension or cfg.call_me_extension
        number = state.phone or str(payload.get("to") or "") or None
        if number is None:
            return Skip(rule, "no number to call")
        if not extension:
            return Skip(
                rule,
                "no phone is named to ring (no owner with an extension, continuity.call_me_extension is empty):"
                " nobody was rung and the customer was not texted; the call-back is the next step for staff",
            )
        attempt = int(payload.get("attempt", 0))
        return Call(rule, extension, number, attempt, f"call-back attempt {attempt + 1}")
    if rule == CHAT_SMS and not payload.get("body"):
        if payload.get("await"):
            return Skip(rule, "the customer never confirmed the number, so the chat was not continued by text")
        if not cfg.chat_sms_enabled:
            return Skip(rule, "the rule was switched off")
        why = why_not_textable(state, cfg)
        if why:
            return Skip(rule, why)
        body = render(cfg.chat_sms_template, variables(state, ctx, now))
        return Send(rule, "sms", str(state.phone), body, "continue the chat by text", reply_to_customer=True)
    if rule in {CHAT_SMS, AFTER_HOURS, CALL_RECAP} or payload.get("body"):
        # A deferred message: re-check who may be texted, and refresh an after-hours reply's reopening time.
        channel = str(payload.get("channel", "sms"))
        if channel == "sms":
            why = why_not_textable(state, cfg)
            if why:
                return Skip(rule, why)
        if rule == AFTER_HOURS and ctx.is_open(now):
            return Skip(rule, "the office is open again; staff answer in person")
        body = str(payload.get("body", ""))
        if rule == AFTER_HOURS:
            body = render(cfg.after_hours_template, variables(state, ctx, now))
        to = str(payload.get("to") or state.phone or "")
        return Send(rule, channel, to, body, str(payload.get("reason", "deferred message")))
    return Skip(rule, "no rule of that name")
