"""Leakage metrics: pure functions from timeline rows to the conversations that slipped through.

Theory of operation
-------------------
The store hands over the timeline rows of a time window (oldest first), already grouped by the conversation each
row lives in now, so an event that moved in a merge is counted once, in the conversation that holds it. For each
conversation :func:`collect` walks its rows once and emits :class:`Item` s (one per leak, anchored at the moment the
leak began: the missed call, the voicemail, the chat's first message, the first unanswered text...) and
:class:`Sample` s (one per customer contact that waited for a first human response). Summaries for any sub-range, per
day, per owner or per channel are then cheap filters over those lists.

A *staff touch* is anything a person at the office did towards the customer: a message sent that is not automated
(``meta.automated`` is not true), a call answered, or an outbound call placed. Automated texts never count as an
answer. Deadlines are business time (:class:`gateway.web.hours.BusinessCalendar`): a call missed at 22:00 with a
30-minute threshold is returned in time if a touch happens by 09:30 on the next business morning. A leak whose
deadline is still ahead is not counted yet.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.leakage.config import LeakageConfig
from gateway.web.hours import BusinessCalendar

#: Metric keys, in the order the page shows them, with a short title.
METRICS: dict[str, str] = {
    "missed_calls_unreturned": "Missed calls not returned in time",
    "calls_abandoned": "Calls abandoned",
    "voicemails_unreturned": "Voicemails not returned in time",
    "chats_without_next_step": "Chats ended without a next step, handoff or reply",
    "sms_threads_waiting": "Texts left waiting",
    "facts_asked_twice": "Facts asked for twice",
    "next_steps_past_due": "Next steps past due",
    "automated_sent": "Automated messages sent",
    "automated_not_sent": "Automated messages not sent",
    "recovered": "Recovered: missed calls and voicemails returned in time",
}

#: Metrics that are leaks (the ROI and digest speak of these); the rest are context.
LEAKS = (
    "missed_calls_unreturned",
    "calls_abandoned",
    "voicemails_unreturned",
    "chats_without_next_step",
    "sms_threads_waiting",
    "facts_asked_twice",
    "next_steps_past_due",
)

#: Decisions of the continuity rules that mean "this automated message did not go out".
NOT_SENT_DECISIONS = frozenset({"suppressed", "cancelled"})

_INBOUND = frozenset({"message_in", "voicemail", "call_missed"})


@dataclass(frozen=True, slots=True)
class Row:
    """One timeline row as the metrics need it (no message bodies)."""

    conversation_id: int
    kind: str
    channel: str
    at: float
    automated: bool = False
    direction: str | None = None
    asks_for: tuple[str, ...] = ()
    question: str | None = None  # lower-cased text of an outbound message with a question mark
    decision: str | None = None
    rule: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """What the metrics need of a conversation besides its rows."""

    owner: str = ""
    next_step: str = ""
    next_step_due: float | None = None
    status: str = "open"
    fact_times: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Item:
    """One leak (or one counted fact such as an automated message) in one conversation."""

    metric: str
    conversation_id: int
    at: float
    owner: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    """One wait for a first human response; ``seconds`` is business time, None when nobody answered in time."""

    channel: str
    conversation_id: int
    at: float
    owner: str
    seconds: float | None


@dataclass
class Collected:
    """Everything :func:`collect` found in a window."""

    items: list[Item] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


def is_touch(row: Row) -> bool:
    """True if the row is a person at the office reaching the customer (never an automated message)."""
    if row.kind == "message_out":
        return not row.automated
    if row.kind == "call_answered":
        return True
    return row.kind in ("call_ringing", "call_ended") and row.direction == "outbound"


def asked_for(row: Row, phrases: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """The facts an outbound message asks for: named in ``meta.asks_for`` or matched by a question phrase."""
    names = list(dict.fromkeys(row.asks_for))
    if row.question:
        names.extend(n for n, ps in phrases if n not in names and any(p in row.question for p in ps))
    return names


def _first_after(times: Sequence[float], at: float) -> float | None:
    i = bisect.bisect_right(times, at)
    return times[i] if i < len(times) else None


def collect(  # noqa: PLR0912, PLR0915 - one pass per conversation, one branch per metric
    rows_by_conversation: Mapping[int, Sequence[Row]],
    infos: Mapping[int, ConversationInfo],
    calendar: BusinessCalendar,
    cfg: LeakageConfig,
    start: float,
    end: float,
    now: float,
) -> Collected:
    """Items and samples anchored in ``[start, end)`` as they stand at ``now``.

    ``rows_by_conversation`` must hold each conversation's rows oldest first, including some history before
    ``start`` (to know whether a customer was already waiting) and the rows after ``end`` up to the longest
    deadline (to know whether a leak was answered in time).
    """
    out = Collected()
    missed_s = cfg.missed_call_minutes * 60.0
    voicemail_s = cfg.voicemail_minutes * 60.0
    sms_s = cfg.sms_wait_hours * 3600.0
    idle_s = cfg.chat_idle_minutes * 60.0
    horizon_s = cfg.response_horizon_days * 86400.0
    empty = ConversationInfo()
    phrases = [
        (name, [p.strip().lower() for p in spec.split("|") if p.strip()]) for name, spec in cfg.fact_questions.items()
    ]
    for cid, rows in rows_by_conversation.items():
        info = infos.get(cid, empty)
        owner = info.owner
        touches = [r.at for r in rows if is_touch(r)]
        handoffs = [r.at for r in rows if r.kind == "handoff"]

        def answered_by(at: float, deadline: float, touches: list[float] = touches) -> bool:
            got = _first_after(touches, at)
            return got is not None and got <= deadline

        sms_waiting = False
        waiting_since: float | None = None
        waiting_channel = ""
        chat_start: float | None = None
        chat_last = 0.0
        for r in rows:
            in_range = start <= r.at < end
            kind = r.kind
            # -- waits for a first human response (all channels) and text threads left waiting
            if is_touch(r):
                if waiting_since is not None:
                    if start <= waiting_since < end:
                        secs = calendar.business_seconds(waiting_since, r.at)
                        late = r.at - waiting_since > horizon_s
                        out.samples.append(Sample(waiting_channel, cid, waiting_since, owner, None if late else secs))
                    waiting_since = None
                elif kind == "call_answered" and r.direction != "outbound" and in_range:
                    out.samples.append(Sample("voice", cid, r.at, owner, 0.0))
                sms_waiting = False
            elif kind in _INBOUND:
                if waiting_since is None:
                    waiting_since, waiting_channel = r.at, r.channel
                if kind == "message_in" and r.channel == "sms" and not sms_waiting:
                    sms_waiting = True
                    if in_range:
                        deadline = calendar.deadline(r.at, sms_s)
                        if deadline <= now and not answered_by(r.at, deadline):
                            out.items.append(Item("sms_threads_waiting", cid, r.at, owner, "text not answered in time"))
            # -- chats: a chat is a run of chat messages with gaps shorter than chat_idle_minutes
            if r.channel == "chat" and kind in ("message_in", "message_out"):
                if chat_start is not None and r.at - chat_last > idle_s:
                    _end_chat(out, cid, info, chat_start, chat_last + idle_s, touches, handoffs, start, end, now)
                    chat_start = None
                if chat_start is None and kind == "message_in":
                    chat_start = r.at
                chat_last = r.at
            if not in_range:
                continue
            if kind == "call_missed":
                deadline = calendar.deadline(r.at, missed_s)
                if deadline <= now:
                    if answered_by(r.at, deadline):
                        out.items.append(Item("recovered", cid, r.at, owner, "missed call returned in time"))
                    else:
                        out.items.append(Item("missed_calls_unreturned", cid, r.at, owner, "missed call"))
            elif kind == "call_abandoned":
                out.items.append(Item("calls_abandoned", cid, r.at, owner, "caller hung up before an answer"))
            elif kind == "voicemail":
                deadline = calendar.deadline(r.at, voicemail_s)
                if deadline <= now:
                    if answered_by(r.at, deadline):
                        out.items.append(Item("recovered", cid, r.at, owner, "voicemail returned in time"))
                    else:
                        out.items.append(Item("voicemails_unreturned", cid, r.at, owner, "voicemail"))
            elif kind == "message_out":
                if r.automated:
                    out.items.append(Item("automated_sent", cid, r.at, owner, r.rule or "automated"))
                for name in asked_for(r, phrases):
                    captured = info.fact_times.get(name)
                    if captured is not None and captured < r.at:
                        out.items.append(Item("facts_asked_twice", cid, r.at, owner, f"asked again for {name}"))
            elif kind == "automated" and r.decision in NOT_SENT_DECISIONS:
                out.items.append(
                    Item("automated_not_sent", cid, r.at, owner, f"{r.rule or 'rule'}: {r.reason or r.decision}")
                )
        if chat_start is not None and chat_last + idle_s <= now:
            _end_chat(out, cid, info, chat_start, chat_last + idle_s, touches, handoffs, start, end, now)
        if waiting_since is not None and start <= waiting_since < end and now - waiting_since > horizon_s:
            out.samples.append(Sample(waiting_channel, cid, waiting_since, owner, None))
    for cid, info in infos.items():
        due = info.next_step_due
        if due is not None and info.next_step and info.status != "closed" and start <= due < min(end, now):
            out.items.append(Item("next_steps_past_due", cid, due, info.owner, "next step past due"))
    return out


def _end_chat(
    out: Collected,
    cid: int,
    info: ConversationInfo,
    began: float,
    ended: float,
    touches: Sequence[float],
    handoffs: Sequence[float],
    start: float,
    end: float,
    now: float,
) -> None:
    """A chat that began at ``began`` ended at ``ended``: a leak unless someone replied, handed off or set a step."""
    if not (start <= began < end) or ended > now:
        return
    replied = (got := _first_after(touches, began)) is not None and got <= ended
    handed = (got := _first_after(handoffs, began)) is not None and got <= ended
    if not replied and not handed and not info.next_step:
        out.items.append(Item("chats_without_next_step", cid, began, info.owner, "chat ended unanswered"))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarize(collected: Collected, start: float, end: float) -> dict[str, Any]:
    """Counts, distinct conversations, per-owner counts, not-sent reasons and response times for ``[start, end)``."""
    counts: dict[str, int] = dict.fromkeys(METRICS, 0)
    convs: dict[str, set[int]] = {k: set() for k in METRICS}
    owners: dict[str, dict[str, int]] = {k: {} for k in METRICS}
    reasons: dict[str, int] = {}
    for it in collected.items:
        if not start <= it.at < end:
            continue
        counts[it.metric] += 1
        convs[it.metric].add(it.conversation_id)
        by = owners[it.metric]
        by[it.owner] = by.get(it.owner, 0) + 1
        if it.metric == "automated_not_sent":
            reasons[it.detail] = reasons.get(it.detail, 0) + 1
    return {
        "metrics": {
            k: {"count": counts[k], "conversations": len(convs[k]), "by_owner": dict(sorted(owners[k].items()))}
            for k in METRICS
        },
        "automated_not_sent_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "first_response": response_times(collected.samples, start, end),
    }


def response_times(samples: Iterable[Sample], start: float, end: float) -> dict[str, dict[str, Any]]:
    """Per channel (and per owner): median and 90th percentile of business seconds to a first human response."""
    by_channel: dict[str, list[float]] = {}
    unanswered: dict[str, int] = {}
    by_owner: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        if not start <= s.at < end:
            continue
        if s.seconds is None:
            unanswered[s.channel] = unanswered.get(s.channel, 0) + 1
            by_channel.setdefault(s.channel, [])
            continue
        by_channel.setdefault(s.channel, []).append(s.seconds)
        by_owner.setdefault(s.channel, {}).setdefault(s.owner, []).append(s.seconds)
    result: dict[str, dict[str, Any]] = {}
    for ch in sorted(by_channel):
        vals = by_channel[ch]
        result[ch] = {
            "answered": len(vals),
            "unanswered": unanswered.get(ch, 0),
            "median_seconds": percentile(vals, 0.5),
            "p90_seconds": percentile(vals, 0.9),
            "by_owner": {
                o: {"answered": len(v), "median_seconds": percentile(v, 0.5), "p90_seconds": percentile(v, 0.9)}
                for o, v in sorted(by_owner.get(ch, {}).items())
            },
        }
    return result


def roi(recovered: int, close_rate: float, average_job_value: float) -> dict[str, Any]:
    """The ROI estimate: recovered conversations x close rate x average job value."""
    value = recovered * close_rate * average_job_value
    return {
        "recovered": recovered,
        "close_rate": close_rate,
        "average_job_value": average_job_value,
        "estimate": round(value, 2),
    }
