"""Leakage metrics: pure functions from timeline rows to the conversations that slipped through.

Theory of operation
-------------------
The store hands over the timeline rows of a time window (oldest first), already grouped by the conversation each
row lives in now, so an event that moved in a merge is counted once, in the conversation that holds it. For each
conversation :func:`collect` walks its rows once and emits :class:`Item` s (one per leak, anchored at the moment the
leak began: the missed call, the voicemail, the chat's first message, the first unanswered text...) and
:class:`Sample` s (one per customer contact that waited for a first human response). :class:`DayTotals` adds them up
per local day, so any run of days, per owner or per channel, is a sum over day buckets; :class:`RunningTotals`
keeps such totals up to date conversation by conversation.

A *staff touch* is anything a person at the office did towards the customer: a message sent that is not automated
(``meta.automated`` is not true), a call answered, or an outbound call placed. Automated texts never count as an
answer. Deadlines are business time (:class:`gateway.web.hours.BusinessCalendar`): a call missed at 22:00 with a
30-minute threshold is returned in time if a touch happens by 09:30 on the next business morning. A leak whose
deadline is still ahead is not counted yet.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict

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


class Row(NamedTuple):
    """One timeline row as the metrics need it (no message bodies but a question's words)."""

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


class Item(NamedTuple):
    """One leak (or one counted fact such as an automated message) in one conversation.

    ``due`` is when it counts: a missed call not returned becomes a leak at its deadline, so until then it is not
    shown (a staff touch before the deadline changes the conversation, which is then judged again).
    """

    metric: str
    conversation_id: int
    at: float
    owner: str
    detail: str
    due: float


class Sample(NamedTuple):
    """One wait for a first human response; ``seconds`` is business time, None when nobody answered in time.

    ``due`` is when it counts (the answer, or the end of the response horizon for a wait still open).
    """

    channel: str
    conversation_id: int
    at: float
    owner: str
    seconds: float | None
    due: float


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
    *,
    next_steps: bool = True,
) -> Collected:
    """Items and samples anchored in ``[start, end)``, each with the moment it starts to count (``due``).

    ``rows_by_conversation`` must hold each conversation's rows oldest first, including some history before
    ``start`` (to know whether a customer was already waiting) and every row after it (to know whether a leak was
    answered in time). What is shown at a moment ``now`` is what is due by then (:func:`visible`); whatever happens
    later in a conversation changes its rows, and it is judged again. ``next_steps=False`` leaves the next-step
    metric to the caller (it depends on conversation fields only).
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
    items = out.items
    samples = out.samples
    for cid, rows in rows_by_conversation.items():
        info = infos.get(cid, empty)
        owner = info.owner
        touches = [r.at for r in rows if is_touch(r)]
        handoffs = [r.at for r in rows if r.kind == "handoff"]
        sms_waiting = False
        waiting_since: float | None = None
        waiting_channel = ""
        chat_start: float | None = None
        chat_last = 0.0
        for r in rows:
            at = r.at
            in_range = start <= at < end
            kind = r.kind
            # -- waits for a first human response (all channels) and text threads left waiting
            if is_touch(r):
                if waiting_since is not None:
                    if start <= waiting_since < end:
                        late = at - waiting_since > horizon_s
                        secs = None if late else calendar.business_seconds(waiting_since, at)
                        samples.append(Sample(waiting_channel, cid, waiting_since, owner, secs, at))
                    waiting_since = None
                elif kind == "call_answered" and r.direction != "outbound" and in_range:
                    samples.append(Sample("voice", cid, at, owner, 0.0, at))
                sms_waiting = False
            elif kind in _INBOUND:
                if waiting_since is None:
                    waiting_since, waiting_channel = at, r.channel
                if kind == "message_in" and r.channel == "sms" and not sms_waiting:
                    sms_waiting = True
                    if in_range:
                        deadline = calendar.deadline(at, sms_s)
                        got = _first_after(touches, at)
                        if got is None or got > deadline:
                            items.append(
                                Item("sms_threads_waiting", cid, at, owner, "text not answered in time", deadline)
                            )
            # -- chats: a chat is a run of chat messages with gaps shorter than chat_idle_minutes
            if r.channel == "chat" and kind in ("message_in", "message_out"):
                if chat_start is not None and at - chat_last > idle_s:
                    _end_chat(out, cid, info, chat_start, chat_last + idle_s, touches, handoffs, start, end)
                    chat_start = None
                if chat_start is None and kind == "message_in":
                    chat_start = at
                chat_last = at
            if not in_range:
                continue
            if kind in ("call_missed", "voicemail"):
                is_call = kind == "call_missed"
                deadline = calendar.deadline(at, missed_s if is_call else voicemail_s)
                got = _first_after(touches, at)
                if got is not None and got <= deadline:
                    what = "missed call returned in time" if is_call else "voicemail returned in time"
                    items.append(Item("recovered", cid, at, owner, what, got))
                elif is_call:
                    items.append(Item("missed_calls_unreturned", cid, at, owner, "missed call", deadline))
                else:
                    items.append(Item("voicemails_unreturned", cid, at, owner, "voicemail", deadline))
            elif kind == "call_abandoned":
                items.append(Item("calls_abandoned", cid, at, owner, "caller hung up before an answer", at))
            elif kind == "message_out":
                if r.automated:
                    items.append(Item("automated_sent", cid, at, owner, r.rule or "automated", at))
                if r.asks_for or r.question:
                    for name in asked_for(r, phrases):
                        captured = info.fact_times.get(name)
                        if captured is not None and captured < at:
                            items.append(Item("facts_asked_twice", cid, at, owner, f"asked again for {name}", at))
            elif kind == "automated" and r.decision in NOT_SENT_DECISIONS:
                detail = f"{r.rule or 'rule'}: {r.reason or r.decision}"
                items.append(Item("automated_not_sent", cid, at, owner, detail, at))
        if chat_start is not None:
            _end_chat(out, cid, info, chat_start, chat_last + idle_s, touches, handoffs, start, end)
        if waiting_since is not None and start <= waiting_since < end:
            samples.append(Sample(waiting_channel, cid, waiting_since, owner, None, waiting_since + horizon_s))
    if next_steps:
        out.items.extend(next_step_items(infos, start, end))
    return out


def next_step_items(infos: Mapping[int, ConversationInfo], start: float, end: float) -> list[Item]:
    """Next steps (not closed) whose due time falls in ``[start, end)``; each counts from its due time."""
    return [
        Item("next_steps_past_due", cid, info.next_step_due, info.owner, "next step past due", info.next_step_due)
        for cid, info in infos.items()
        if info.next_step_due is not None
        and info.next_step
        and info.status != "closed"
        and start <= info.next_step_due < end
    ]


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
) -> None:
    """A chat that began at ``began`` ends at ``ended``: a leak unless someone replied, handed off or set a step."""
    if not (start <= began < end):
        return
    replied = (got := _first_after(touches, began)) is not None and got <= ended
    handed = (got := _first_after(handoffs, began)) is not None and got <= ended
    if not replied and not handed and not info.next_step:
        out.items.append(Item("chats_without_next_step", cid, began, info.owner, "chat ended unanswered", ended))


def visible(collected: Collected, now: float) -> Collected:
    """What counts at ``now``: items and samples that are due by then."""
    return Collected([it for it in collected.items if it.due <= now], [s for s in collected.samples if s.due <= now])


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


class MetricCount(TypedDict):
    """One metric over a run of days: how often, in how many conversations, per owner."""

    count: int
    conversations: int
    by_owner: dict[str, int]


class OwnerResponse(TypedDict):
    """One owner's first responses on a channel."""

    answered: int
    median_seconds: float | None
    p90_seconds: float | None


class FirstResponse(TypedDict):
    """First responses on one channel: answered and not, median and 90th percentile, per owner."""

    answered: int
    unanswered: int
    median_seconds: float | None
    p90_seconds: float | None
    by_owner: dict[str, OwnerResponse]


class Summary(TypedDict):
    """Every metric over a run of days, the reasons automated messages were not sent, and first responses."""

    metrics: dict[str, MetricCount]
    automated_not_sent_by_reason: dict[str, int]
    first_response: dict[str, FirstResponse]


class Roi(TypedDict):
    """The ROI estimate and what it is made of."""

    recovered: int
    close_rate: float
    average_job_value: float
    estimate: float


def roi(recovered: int, close_rate: float, average_job_value: float) -> Roi:
    """The ROI estimate: recovered conversations x close rate x average job value."""
    value = recovered * close_rate * average_job_value
    return {
        "recovered": recovered,
        "close_rate": close_rate,
        "average_job_value": average_job_value,
        "estimate": round(value, 2),
    }


class DayTotals:
    """Items and samples that count at ``now``, added up per local day of a window, so that any run of days (today,
    7 or 30 days, the period before) is a sum over at most a few dozen buckets instead of a pass over every item.

    Every bucket can also be taken away from (:class:`RunningTotals` keeps one up to date conversation by
    conversation): conversations and owners are counted, waits are keyed by conversation and moment.
    """

    def __init__(self, day_starts: Sequence[float], end: float) -> None:
        self.day_starts = list(day_starts)
        self.end = end
        n = len(self.day_starts)
        self.counts: dict[str, list[int]] = {m: [0] * n for m in METRICS}
        self.convs: dict[str, list[dict[int, int]]] = {m: [{} for _ in range(n)] for m in METRICS}
        self.owners: dict[str, list[dict[str, int]]] = {m: [{} for _ in range(n)] for m in METRICS}
        self.reasons: list[dict[str, int]] = [{} for _ in range(n)]
        self.waits: dict[str, list[dict[tuple[int, float], tuple[float, str]]]] = {}
        self.unanswered: dict[str, list[int]] = {}
        self._memo: dict[tuple[int, int], Summary] = {}

    def _day(self, at: float) -> int:
        """The day bucket of ``at``, or -1 outside the window."""
        if not self.day_starts or at < self.day_starts[0] or at >= self.end:
            return -1
        return bisect.bisect_right(self.day_starts, at) - 1

    @staticmethod
    def _bump(counter: dict[Any, int], key: Any, sign: int) -> None:
        n = counter.get(key, 0) + sign
        if n:
            counter[key] = n
        else:
            counter.pop(key, None)

    def _item(self, it: Item, sign: int) -> None:
        d = self._day(it.at)
        if d < 0:
            return
        m = it.metric
        self.counts[m][d] += sign
        self._bump(self.convs[m][d], it.conversation_id, sign)
        self._bump(self.owners[m][d], it.owner, sign)
        if m == "automated_not_sent":
            self._bump(self.reasons[d], it.detail, sign)

    def _sample(self, s: Sample, sign: int) -> None:
        d = self._day(s.at)
        if d < 0:
            return
        per_day = self.waits.get(s.channel)
        if per_day is None:
            n = len(self.day_starts)
            per_day = self.waits[s.channel] = [{} for _ in range(n)]
            self.unanswered[s.channel] = [0] * n
        if s.seconds is None:
            self.unanswered[s.channel][d] += sign
        elif sign > 0:
            per_day[d][(s.conversation_id, s.at)] = (s.seconds, s.owner)
        else:
            per_day[d].pop((s.conversation_id, s.at), None)

    def add(self, collected: Collected, now: float) -> None:
        """Add what is due by ``now`` and anchored inside the window."""
        self._memo.clear()
        for it in collected.items:
            if it.due <= now:
                self._item(it, 1)
        for smp in collected.samples:
            if smp.due <= now:
                self._sample(smp, 1)

    def summary(self, i: int, j: int) -> Summary:
        """Counts, distinct conversations and owners per metric, not-sent reasons, and first-response times per
        channel and owner (median, 90th percentile), for days ``i`` (included) to ``j`` (excluded); kept once
        computed (treat the result as read-only)."""
        got = self._memo.get((i, j))
        if got is None:
            got = self._memo[(i, j)] = self._summary(i, j)
        return got

    def _summary(self, i: int, j: int) -> Summary:
        metrics: dict[str, MetricCount] = {}
        for m in METRICS:
            convs: set[int] = set()
            owners: dict[str, int] = {}
            for d in range(i, j):
                convs.update(self.convs[m][d])
                for o, c in self.owners[m][d].items():
                    owners[o] = owners.get(o, 0) + c
            metrics[m] = {
                "count": sum(self.counts[m][i:j]),
                "conversations": len(convs),
                "by_owner": dict(sorted(owners.items())),
            }
        reasons: dict[str, int] = {}
        for d in range(i, j):
            for r, c in self.reasons[d].items():
                reasons[r] = reasons.get(r, 0) + c
        first: dict[str, FirstResponse] = {}
        for ch in sorted(self.waits):
            vals = [w for d in range(i, j) for w in self.waits[ch][d].values()]
            missing = sum(self.unanswered[ch][i:j])
            if not vals and not missing:
                continue
            by_owner: dict[str, list[float]] = {}
            for secs, owner in vals:
                by_owner.setdefault(owner, []).append(secs)
            seconds = [v for v, _ in vals]
            first[ch] = {
                "answered": len(seconds),
                "unanswered": missing,
                "median_seconds": percentile(seconds, 0.5),
                "p90_seconds": percentile(seconds, 0.9),
                "by_owner": {
                    o: {"answered": len(v), "median_seconds": percentile(v, 0.5), "p90_seconds": percentile(v, 0.9)}
                    for o, v in sorted(by_owner.items())
                },
            }
        return {
            "metrics": metrics,
            "automated_not_sent_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "first_response": first,
        }

    def daily(self, i: int, j: int) -> tuple[dict[str, list[int]], list[float | None]]:
        """Counts per day for every metric, and the median first response per day, for days ``i``..``j``."""
        series = {m: self.counts[m][i:j] for m in METRICS}
        medians = []
        for d in range(i, j):
            vals = [v for ch in self.waits for v, _ in self.waits[ch][d].values()]
            medians.append(percentile(vals, 0.5))
        return series, medians


class RunningTotals(DayTotals):
    """Day totals kept up to date conversation by conversation: :meth:`replace` takes a conversation's old items and
    samples away and adds its new ones; :meth:`advance` lets in what has fallen due since (the clock only moves on).
    """

    def __init__(self, day_starts: Sequence[float], end: float) -> None:
        super().__init__(day_starts, end)
        self._applied: dict[int, tuple[list[Item], list[Sample]]] = {}
        # Not counted yet: (due, tie, conversation, its generation, what). A replaced conversation's old entries stay
        # in the heap and are skipped when their generation is no longer the conversation's.
        self._pending: list[tuple[float, int, int, int, Item | Sample]] = []
        self._gen: dict[int, int] = {}
        self._tie = itertools.count()
        self.now = float("-inf")

    def replace(self, cid: int, items: Sequence[Item], samples: Sequence[Sample]) -> None:
        """Conversation ``cid`` now has ``items`` and ``samples`` (empty: it is gone, e.g. merged away)."""
        self._memo.clear()
        old = self._applied.pop(cid, None)
        if old is not None:
            for it in old[0]:
                self._item(it, -1)
            for smp in old[1]:
                self._sample(smp, -1)
        gen = self._gen[cid] = self._gen.get(cid, 0) + 1
        applied: tuple[list[Item], list[Sample]] = ([], [])
        for it in items:
            if it.due <= self.now:
                self._item(it, 1)
                applied[0].append(it)
            else:
                heapq.heappush(self._pending, (it.due, next(self._tie), cid, gen, it))
        for smp in samples:
            if smp.due <= self.now:
                self._sample(smp, 1)
                applied[1].append(smp)
            else:
                heapq.heappush(self._pending, (smp.due, next(self._tie), cid, gen, smp))
        if applied[0] or applied[1]:
            self._applied[cid] = applied

    def advance(self, now: float) -> None:
        """Count what fell due by ``now``."""
        self.now = max(self.now, now)
        while self._pending and self._pending[0][0] <= self.now:
            _, _, cid, gen, what = heapq.heappop(self._pending)
            if gen != self._gen.get(cid):
                continue  # replaced since
            self._memo.clear()
            applied = self._applied.setdefault(cid, ([], []))
            if isinstance(what, Item):
                self._item(what, 1)
                applied[0].append(what)
            else:
                self._sample(what, 1)
                applied[1].append(what)


class TotalsView:
    """Days ``offset``.. of a :class:`DayTotals`, addressed from 0 (a window inside a longer one)."""

    def __init__(self, base: DayTotals, offset: int) -> None:
        self.base = base
        self.offset = offset

    def summary(self, i: int, j: int) -> Summary:
        """See :meth:`DayTotals.summary`."""
        return self.base.summary(i + self.offset, j + self.offset)

    def daily(self, i: int, j: int) -> tuple[dict[str, list[int]], list[float | None]]:
        """See :meth:`DayTotals.daily`."""
        return self.base.daily(i + self.offset, j + self.offset)
