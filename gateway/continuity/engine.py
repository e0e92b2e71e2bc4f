"""The continuity engine: applies the rules, keeps scheduled sends in the store, records every decision.

Theory of operation: one task owns all decisions, so a cancel and a send can never race. It loops: (1) read the
timeline events after its cursor (the bus only wakes it; the store is the source of truth, so an event that arrived
just before a stop is still handled after the restart), turn each into decisions with :func:`rules.on_event`, apply
them, move the cursor; (2) run every stored job that is due: claim it (``scheduled`` -> ``sending``), decide again
with :func:`rules.on_due` on fresh state, pass the restraint, queue the message, then mark the job ``done``; (3) wait
on the clock until the next job is due, a new event arrives, or the stalled-thread check is due.

Exactly once: the queued message carries ``meta.job_id``. A job found in ``sending`` at start was interrupted
between queueing and marking: if its message exists it is marked done, otherwise it goes back to ``scheduled`` and is
decided again. Every decision lands on the timeline as an ``automated`` event with meta ``rule``, ``decision``
(sent / suppressed / deferred / cancelled) and ``reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from gateway.continuity import restraint, rules
from gateway.continuity.clock import Clock, SystemClock
from gateway.continuity.config import TEMPLATE_KEYS, ContinuityConfig
from gateway.continuity.promises import Hours, requested_call_time
from gateway.continuity.state import Loaded, load
from gateway.continuity.templates import render
from gateway.domain.bus import Bus, Subscription
from gateway.domain.calls import CallOutcome
from gateway.domain.events import CallEnded, StalledThread, TimelineEventAdded
from gateway.domain.models import Channel, EventKind
from gateway.domain.ports import StorePort
from gateway.domain.service import ConversationService
from gateway.domain.spine import SYSTEM, SpineService
from gateway.errors import GatewayError, PermanentError
from gateway.store import continuity as sql
from gateway.store.continuity import JobRow
from gateway.supervise import cancel_and_wait
from gateway.values import Health, degraded, down, off, ok
from gateway.web import hours

log = logging.getLogger(__name__)

AUTHOR = "continuity"
POLL_SECONDS = 5.0
LATE_SECONDS = 120.0
"""A scheduled send this much past its moment makes the rules' health degraded."""
Dialer = Callable[[str, str, int], Awaitable[str]]
"""(staff extension, customer number, conversation id) -> call id: the voice channel's click-to-call."""

CALL_HORIZON_DAYS = 14
"""How far ahead a customer may pick a call-back time."""
SLOT_SECONDS = 1800.0
"""Call-back slots offered in the chat start on the half hour."""
SLOT_LEAD_SECONDS = 600.0
"""The first slot offered is at least this far away (time to see the booking)."""
CALL_BACK_STEP = "Call back"
"""The next step every booked call-back sets (due at the booked time, owned by whoever's phone rings first)."""
STAFF_CALL_BACK_EARLY_SECONDS = 900.0
"""A staff call that connects this long before a "Call back" step's due time, or later, completes the step."""
NO_PHONE = (
    "no phone is named to ring (the conversation has no owner with an extension"
    " and continuity.call_me_extension is empty)"
)


@dataclass(frozen=True, slots=True)
class CallTime:
    """A call-back moment a customer asked for, fitted to when the office can call.

    ``at`` is the moment booked (None: refused, ``why`` says so in words for the customer); ``moved`` is "" when
    booked as asked, "past" when the moment had passed, "closed" when the office is closed or quiet then.
    """

    at: float | None
    moved: str = ""
    why: str = ""


RULE_TITLES: Mapping[str, str] = {
    rules.MISSED_CALL: "Missed-call text-back",
    rules.VOICEMAIL_ACK: "Voicemail acknowledgement",
    rules.CHAT_SMS: "Chat continued by text",
    rules.AFTER_HOURS: "After-hours reply",
    rules.CALL_ME: "Call back at the chosen time",
    rules.CALL_RECAP: "Call recap",
    rules.STALLED: "Stalled-thread alert",
}


@dataclass(frozen=True, slots=True)
class HoursSettings:
    """The business hours the rules read (from the ``[web]`` section)."""

    timezone: str = "UTC"
    business_hours: Mapping[str, str] | None = None
    business_name: str = "Our office"
    episode_minutes: float = 30.0
    """The spine's episode window (``spine.episode_window_minutes``)."""


class ContinuityEngine:
    """Rules, restraint and durable scheduling. One per daemon; ``start``/``stop`` like every part."""

    def __init__(
        self,
        config: ContinuityConfig,
        service: ConversationService,
        store: StorePort,
        bus: Bus,
        hours_settings: HoursSettings | None = None,
        *,
        clock: Clock | None = None,
        dialer: Dialer | None = None,
        spine_ready: Callable[[int], Awaitable[object]] | None = None,
        spines: SpineService | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.store = store
        self.bus = bus
        self.clock: Clock = clock or SystemClock()
        self.dialer = dialer
        self.spine_ready = spine_ready
        """Waits until the spine has read a conversation's newest message (the daemon's SpineLearner)."""
        hs = hours_settings or HoursSettings()
        self.spines = spines or SpineService(store, bus, clock=self.clock.now, timezone=hs.timezone)
        """The spine's one writer: a booked call-back becomes the conversation's next step through it."""
        self.episode_minutes = hs.episode_minutes
        self.ctx = rules.Context(
            config=config,
            business_name=config.business_name or hs.business_name,
            timezone=hs.timezone,
            business_hours=dict(hs.business_hours or {}),
            closed=hours.ClosedDates(config.closed_dates, config.holiday_country),
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._cursor = 0
        self._calls: dict[str, int] = {}  # call id -> job id of a call-back in progress
        self._placed: dict[str, None] = {}  # ids of the calls the rules placed (oldest first, bounded)
        self._call_results: list[CallEnded] = []
        self._ended_on_timeline: list[tuple[str, str, float]] = []  # (call id, outcome, talk seconds)
        self._next_stalled: float | None = None
        self.handled = 0
        self.sent = 0
        self.waiting = 0
        self.without_phone = 0
        """Booked call-backs that no phone would ring (shown on the status page)."""
        self.next_due: float | None = None
        self.last_error: str | None = None
        self.error_since: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Pick up where the last run stopped, then run the loop."""
        await self.prepare()
        self._sub = self.bus.subscribe("continuity", maxsize=10_000, types=(TimelineEventAdded, CallEnded))
        self._listener = asyncio.create_task(self._listen(self._sub), name="continuity-listen")
        self._task = asyncio.create_task(self._run(), name="continuity-engine")
        waiting = await self.store.read(sql.count_scheduled)
        log.info("continuity started: %d scheduled send(s) waiting", waiting)

    async def prepare(self) -> None:
        """Load the cursor and settle jobs a stop interrupted (``start`` does this; tests may drive ``tick``)."""
        cursor = await self.store.read(sql.cursor)
        if cursor is None:
            latest = await self.store.read(sql.max_event_id)
            await self.store.write(lambda c: sql.set_cursor(c, latest))
            cursor = latest
        self._cursor = cursor
        await self._recover()

    async def tick(self) -> None:
        """One pass of the loop without waiting: new events, due jobs, call outcomes, stalled threads.

        For callers that drive the engine themselves after :meth:`prepare` (tests, benchmarks); never while
        :meth:`start`'s loop runs, which owns every decision so that two passes never handle one event twice.
        """
        await self.process_events()
        await self.run_due()
        await self._check_calls()
        await self._maybe_check_stalled()
        self.without_phone = await self._count_without_phone()

    async def stop(self) -> None:
        """Stop the loop; scheduled sends stay in the store for the next start."""
        if self._sub is not None:
            self._sub.close()
        await cancel_and_wait(self._task, self._listener, owner="continuity")
        self._task = self._listener = None

    def wake(self) -> None:
        """Re-check events and due jobs now."""
        self._wake.set()

    async def _listen(self, sub: Subscription) -> None:
        async for item in sub:
            if isinstance(item, CallEnded) and item.call_id in self._calls:
                self._call_results.append(item)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()
                await self.tick()
                due = await self.store.read(sql.next_due)
                self.next_due = due
                self.waiting = await self.store.read(sql.count_scheduled)
                self.last_error = self.error_since = None
                nxt = min((t for t in (due, self._next_stalled) if t is not None), default=None)
                # The store is the source of truth and not every write is announced on the bus (a claim verified by
                # a code is not): look again at least every few seconds.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self.clock.wait_until(nxt, self._wake)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.exception("continuity loop failed; retrying in 1 s")
                self.last_error = f"{type(err).__name__}: {err}"
                self.error_since = self.error_since or time.time()
                await asyncio.sleep(1.0)

    async def _recover(self) -> None:
        now = self.clock.now()
        for job in await self.store.read(sql.interrupted_jobs):
            if job.rule == rules.CALL_ME and not job.payload.get("channel"):
                await self._recover_call(job, now)
                continue
            await self.store.write(partial(self._recover_job, job=job, now=now))

    async def _recover_call(self, job: JobRow, now: float) -> None:
        """A call-back caught by a stop: never ring twice. Not placed yet: it waits for its moment again. Placed:
        its end (on the timeline already, or still to come) decides, as if the daemon had never stopped."""
        call_id = await self.store.read(partial(sql.call_of_job, conversation_id=job.conversation_id, job_id=job.id))
        if call_id is None:
            await self.store.write(
                partial(
                    sql.reschedule_job, job_id=job.id, due_at=job.due_at, reason="interrupted before calling", now=now
                )
            )
            return
        self._calls[call_id] = job.id
        self._placed[call_id] = None
        ended = await self.store.read(partial(sql.call_end, call_id=call_id))
        if ended is not None:
            self._ended_on_timeline.append((call_id, *ended))
        log.info("call-back job %d: call %s was placed before the stop; waiting for its outcome", job.id, call_id)

    def _recover_job(self, c: Any, job: JobRow, now: float) -> None:
        if sql.message_of_job(c, job.conversation_id, job.id) is not None:
            self._mark_sent(c, job.conversation_id, job.rule, job, now)
            log.info("job %d was sent before the stop; marked done", job.id)
            return
        sql.reschedule_job(c, job.id, job.due_at, "interrupted before sending", now)

    # -- events ----------------------------------------------------------------------------------------------------

    async def process_events(self) -> int:
        """Handle every timeline event after the cursor; returns how many."""
        count = 0
        while True:
            after = self._cursor
            rows = await self.store.read(partial(sql.events_after, after=after))
            if not rows:
                return count
            for row in rows:
                trigger = rules.Trigger(
                    kind=row[2],
                    channel=row[3],
                    conversation_id=row[1],
                    event_id=row[0],
                    body=row[4],
                    meta=json.loads(row[5] or "{}"),
                    author=row[6],
                )
                call_id = str(trigger.meta.get("call_id", ""))
                if trigger.kind == EventKind.CALL_ENDED.value and call_id in self._calls:
                    # The timeline is the source of truth: a call-back's end counts even if the bus dropped it.
                    talk = trigger.meta.get("talk_seconds")
                    outcome = str(trigger.meta.get("outcome", ""))
                    self._ended_on_timeline.append((call_id, outcome, float(talk or 0.0)))
                own = trigger.kind == EventKind.AUTOMATED.value or trigger.author == AUTHOR
                if not own and not self._rules_call_attempt(trigger):
                    await self.handle(trigger)
                count += 1
            last = rows[-1][0]
            self._cursor = last
            await self.store.write(partial(sql.set_cursor, event_id=last))

    def _rules_call_attempt(self, trigger: rules.Trigger) -> bool:
        """True for the ringing and the end of a call-back the rules placed themselves.

        Nobody at the office chose to call: ringing the owner's phone is not "a person answered" (which would hold
        back the "we could not reach you" text for ``human_quiet_minutes``), nor a staff call-back that cancels a
        pending text. Once the customer's leg answers, ``call_answered`` is a real conversation and counts.
        """
        return trigger.kind in {"call_ringing", "call_ended"} and str(trigger.meta.get("call_id")) in self._placed

    async def handle(self, trigger: rules.Trigger) -> list[rules.Decision]:
        """Decide and apply what one event calls for."""
        now = self.clock.now()
        conv = trigger.conversation_id
        contact = rules.is_customer_contact(trigger)
        human = rules.is_human_answer(trigger)

        def read(c: Any) -> Loaded | None:
            return load(c, conv, now)

        if contact or human:

            def mark(c: Any) -> Loaded | None:
                live = sql.live_conversation(c, conv)
                if contact:
                    sql.record_contact(c, live, now)
                if human:
                    sql.set_human(c, live, now)
                return load(c, live, now)

            loaded = await self.store.write(mark)
        else:
            loaded = await self.store.read(read)
        self.handled += 1
        if loaded is None or not self.config.enabled:
            return []
        typed = trigger.meta.get("phone")
        if trigger.kind == EventKind.HANDOFF.value and loaded.state.phone is None and isinstance(typed, str) and typed:
            # A number typed in the chat: the rules see whether it opted out, so the "no" says why.
            stopped = await self.store.read(partial(sql.is_suppressed, address=typed))
            trigger = replace(trigger, meta={**trigger.meta, "phone_opted_out": stopped})
        decisions = rules.on_event(trigger, loaded.state, self.ctx, now)
        for decision in decisions:
            await self._apply(decision, loaded, None, now)
        await self._customer_picked_a_time(trigger, loaded, now)
        await self._staff_called_back(trigger, loaded, now)
        return decisions

    async def _staff_called_back(self, trigger: rules.Trigger, loaded: Loaded, now: float) -> None:
        """Staff phoned the customer and talked, at or after a "Call back" step's due time, with no call-back of
        the gateway's still to come (none could ring, or every attempt failed): that step is done."""
        state = loaded.state
        meta = trigger.meta
        if (
            trigger.kind != EventKind.CALL_ENDED.value
            or meta.get("direction") != "outbound"
            or meta.get("outcome") != CallOutcome.ANSWERED.value
            or not isinstance(meta.get("talk_seconds"), int | float)
            or float(meta["talk_seconds"]) <= 0
            or state.next_step != CALL_BACK_STEP
            or state.next_step_due is None
            or now < state.next_step_due - STAFF_CALL_BACK_EARLY_SECONDS
            or rules.CALL_ME in state.pending
        ):
            return
        staff = meta.get("staff") or trigger.author
        who = staff if isinstance(staff, str) and staff else SYSTEM
        await self.spines.set_next_step(loaded.conversation_id, None, source="voice", set_by=who)

    async def _customer_picked_a_time(self, trigger: rules.Trigger, loaded: Loaded, now: float) -> None:
        """A customer's own "call me at 3" (chat or SMS) books the call-back at that slot."""
        if not self.config.call_me_enabled or trigger.kind != EventKind.MESSAGE_IN.value:
            return
        office = Hours(self.ctx.business_hours, self.ctx.timezone, self.ctx.closed)
        asked = requested_call_time(trigger.body, now, office)
        if asked is None:
            return
        fitted = self.fit_call_time(asked)
        if fitted.at is None:
            when = hours.describe_moment(asked, self.ctx.timezone, now)
            reason = f"the customer asked for a call-back {when}: {fitted.why}"
            await self.record(loaded.conversation_id, rules.CALL_ME, "suppressed", reason)
            return
        try:
            await self.schedule_call(
                loaded.conversation_id,
                fitted.at,
                author="the customer",
                asked=asked if fitted.moved else None,
                source=trigger.channel,
            )
        except PermanentError as err:
            log.info("conversation %d: the customer's call-back time was not booked: %s", loaded.conversation_id, err)

    # -- jobs --------------------------------------------------------------------------------------------------------

    async def run_due(self) -> int:
        """Run every job whose moment has come; returns how many."""
        count = 0
        while True:
            now = self.clock.now()
            jobs = await self.store.read(partial(sql.due_jobs, until=now, limit=200))
            if not jobs:
                return count
            for job in jobs:
                await self._run_job(job)
                count += 1

    async def _run_job(self, job: JobRow) -> None:
        now = self.clock.now()
        claimed = await self.store.write(lambda c: sql.claim_job(c, job.id, now))
        if not claimed:
            return
        if self.spine_ready is not None:
            # Compose from what the customer said last (a name in the answer that made this job due).
            await self.spine_ready(job.conversation_id)
        loaded = await self.store.read(lambda c: load(c, job.conversation_id, now))
        if loaded is None:
            await self.store.write(lambda c: sql.finish_job(c, job.id, "cancelled", "conversation gone", now))
            return
        if not self.config.enabled:
            decision: rules.Decision = rules.Skip(job.rule, "continuity is switched off")
        else:
            decision = rules.on_due(job.rule, job.payload, loaded.state, self.ctx, now)
        await self._apply(decision, loaded, job, now)

    # -- applying decisions ------------------------------------------------------------------------------------------

    async def _apply(self, decision: rules.Decision, loaded: Loaded, job: JobRow | None, now: float) -> None:
        conv = loaded.conversation_id
        if isinstance(decision, rules.Send):
            await self._send(decision, loaded, job, now)
        elif isinstance(decision, rules.Schedule):
            await self._schedule(decision, conv, now)
        elif isinstance(decision, rules.Cancel):
            await self._cancel(conv, decision.rules, decision.reason, now)
        elif isinstance(decision, rules.Skip):
            if job is not None:
                await self.store.write(lambda c: sql.finish_job(c, job.id, "suppressed", decision.reason, now))
            await self.record(conv, decision.rule, "suppressed", decision.reason, job_id=job.id if job else None)
        elif isinstance(decision, rules.Call):
            await self._call(decision, conv, job, now)
        elif isinstance(decision, rules.Alert):
            await self.record(conv, decision.rule, "sent", decision.reason, audience="staff")

    async def _schedule(self, decision: rules.Schedule, conv: int, now: float) -> None:
        rule, at, payload = decision.rule, decision.at, dict(decision.payload)

        def op(c: Any) -> int:
            if decision.replace:
                for old in sql.pending_jobs(c, conv, (rule,)):
                    sql.finish_job(c, old.id, "cancelled", "replaced: " + decision.reason, now)
            return sql.schedule_job(c, rule, conv, at, payload, now)

        booking = rule == rules.CALL_ME and not payload.get("channel")
        if booking:
            payload.setdefault("booked", at)
        job_id = await self.store.write(op)
        if at > now:
            when = hours.describe_moment(at, self.ctx.timezone, now)
            reason = f"{decision.reason}: due {when}"
            if booking:  # the visitor picked a time in the chat's call-back picker
                reason += await self._call_back_step(conv, at, set_by=SYSTEM, source="chat")
            await self.record(conv, rule, "deferred", reason, job_id=job_id, due_at=at)
        self._wake.set()

    async def _cancel(self, conv: int, which: tuple[str, ...], reason: str, now: float) -> None:
        def op(c: Any) -> list[JobRow]:
            jobs = sql.pending_jobs(c, conv, which)
            for job in jobs:
                sql.finish_job(c, job.id, "cancelled", reason, now)
            return jobs

        for job in await self.store.write(op):
            await self.record(conv, job.rule, "cancelled", reason, job_id=job.id)

    async def _send(self, send: rules.Send, loaded: Loaded, job: JobRow | None, now: float) -> None:
        conv = loaded.conversation_id
        verdict = restraint.check(
            self.config,
            loaded.history,
            now,
            channel=send.channel,
            timezone=self.ctx.timezone,
            reply_to_customer=send.reply_to_customer,
            episode_minutes=self.episode_minutes,
        )
        job_id = job.id if job else None
        if isinstance(verdict, restraint.Suppress):
            if job is not None:
                await self.store.write(lambda c: sql.finish_job(c, job.id, "suppressed", verdict.reason, now))
            await self.record(conv, send.rule, "suppressed", verdict.reason, job_id=job_id)
            return
        if isinstance(verdict, restraint.Defer):
            payload = {
                "channel": send.channel,
                "to": send.to,
                "body": send.body,
                "reason": send.reason,
                **dict(send.payload),
            }
            if job is not None:
                await self.store.write(lambda c: sql.reschedule_job(c, job.id, verdict.until, verdict.reason, now))
            else:
                job_id = await self.store.write(
                    lambda c: sql.schedule_job(c, send.rule, conv, verdict.until, payload, now)
                )
            await self.record(conv, send.rule, "deferred", verdict.reason, job_id=job_id, due_at=verdict.until)
            return
        if job is None:
            # Claim a job row for this instant send too, so a crash mid-send cannot send it twice either.
            job_id = await self.store.write(
                lambda c: self._instant_job(c, send.rule, conv, now, {"channel": send.channel, "to": send.to})
            )
        meta = {"rule": send.rule, "job_id": job_id}
        try:
            if send.channel == Channel.CHAT.value:
                await self.service.append_event(
                    conv,
                    EventKind.MESSAGE_OUT,
                    Channel.CHAT,
                    send.body,
                    {"automated": True, **meta},
                    author=AUTHOR,
                )
            else:
                await self.service.enqueue_outbound(
                    conv, Channel.SMS, send.to, send.body, automated=True, author=AUTHOR, event_meta=meta
                )
        except PermanentError as err:
            # Opt-out, the number-type policy, the automated-SMS budget, a bad number: recorded, never retried.
            reason = str(err)
            await self.store.write(lambda c: sql.finish_job(c, int(job_id or 0), "suppressed", reason, now))
            await self.record(conv, send.rule, "suppressed", reason, job_id=job_id)
            return
        except GatewayError as err:
            reason = f"could not queue the message: {err}"
            await self.store.write(lambda c: sql.finish_job(c, int(job_id or 0), "suppressed", reason, now))
            await self.record(conv, send.rule, "suppressed", reason, job_id=job_id)
            return
        done_job = job_id
        if send.channel == Channel.SMS.value:
            await self.store.write(lambda c: self._mark_sent(c, conv, send.rule, done_job, now, send.to))
        else:  # chat answers are not texts: not counted by the caps
            await self.store.write(
                partial(sql.finish_job, job_id=int(done_job or 0), state="done", reason="sent", now=now)
            )
        self.sent += 1
        await self.record(conv, send.rule, "sent", send.reason, job_id=job_id, channel=send.channel)

    @staticmethod
    def _instant_job(c: Any, rule: str, conv: int, now: float, payload: Mapping[str, Any]) -> int:
        job_id = sql.schedule_job(c, rule, conv, now, payload, now)
        sql.claim_job(c, job_id, now)
        return job_id

    @staticmethod
    def _mark_sent(c: Any, conv: int, rule: str, job: JobRow | int | None, now: float, address: str = "") -> None:
        job_id = job.id if isinstance(job, JobRow) else job
        if job_id is not None:
            sql.finish_job(c, job_id, "done", "sent", now)
        if not address and isinstance(job, JobRow):
            address = str(job.payload.get("to", ""))
        if not address:
            basics = sql.conversation_basics(c, conv)
            phones = basics["phones"] if basics else []
            address = phones[0][0] if phones else ""
        sql.record_send(c, conv, rule, address, now)

    # -- call me at a time -------------------------------------------------------------------------------------------

    async def _call(self, call: rules.Call, conv: int, job: JobRow | None, now: float) -> None:
        if job is None:
            return
        if self.dialer is None:
            await self.store.write(lambda c: sql.finish_job(c, job.id, "suppressed", "voice is off", now))
            why = "the voice channel is off: nobody was rung; the call-back is the next step for staff"
            await self.record(conv, call.rule, "suppressed", why, job_id=job.id)
            return
        try:
            call_id = await self.dialer(call.extension, call.to, conv)
        except GatewayError as err:
            await self._call_failed(conv, job, call.attempt, f"the call could not be started: {err}")
            return
        self._calls[call_id] = job.id
        self._placed[call_id] = None
        while len(self._placed) > 1000:
            del self._placed[next(iter(self._placed))]
        await self.record(
            conv,
            call.rule,
            "sent",
            f"ringing extension {call.extension} first, then the customer (attempt {call.attempt + 1})",
            job_id=job.id,
            call_id=call_id,
        )

    async def _check_calls(self) -> None:
        results = [(e.call_id, e.outcome.value, e.call.talk_seconds) for e in self._call_results]
        results += self._ended_on_timeline
        self._call_results, self._ended_on_timeline = [], []
        for call_id, outcome, talk_seconds in results:
            job_id = self._calls.pop(call_id, None)
            if job_id is None:
                continue  # handled already (the bus and the timeline both tell)
            job = await self.store.read(partial(sql.get_job, job_id=job_id))
            if job is None:
                continue
            attempt = int(job.payload.get("attempt", 0))
            if outcome == CallOutcome.ANSWERED.value and talk_seconds > 0:
                now = self.clock.now()
                await self.store.write(
                    partial(sql.finish_job, job_id=job.id, state="done", reason="connected", now=now)
                )
                await self.record(job.conversation_id, rules.CALL_ME, "sent", "call-back connected", job_id=job.id)
                await self._call_back_done(job)
            else:
                await self._call_failed(job.conversation_id, job, attempt, f"nobody answered ({outcome})")

    async def _call_failed(self, conv: int, job: JobRow, attempt: int, why: str) -> None:
        now = self.clock.now()
        if attempt < self.config.call_me_retries:
            at = now + self.config.call_me_retry_minutes * 60
            payload = {**dict(job.payload), "attempt": attempt + 1}

            def op(c: Any) -> None:
                sql.finish_job(c, job.id, "done", why, now)
                sql.schedule_job(c, rules.CALL_ME, conv, at, payload, now)

            await self.store.write(op)
            when = hours.describe_moment(at, self.ctx.timezone, now)
            await self.record(conv, rules.CALL_ME, "deferred", f"{why}; trying again {when}", job_id=job.id)
            return
        await self.store.write(lambda c: sql.finish_job(c, job.id, "done", why, now))
        loaded = await self.store.read(lambda c: load(c, conv, now))
        if loaded is None:
            return
        body = render(self.config.call_me_failed_template, rules.variables(loaded.state, self.ctx, now))
        reason = f"{why}; every call-back attempt failed"
        if loaded.state.phone is not None:
            send = rules.Send(rules.CALL_ME, "sms", loaded.state.phone, body, reason)
        elif job.payload.get("to"):
            # A number typed in the chat is only a claim: the visitor hears it in the chat, the number gets no text.
            send = rules.Send(rules.CALL_ME, "chat", "chat", body, reason + " (told in the chat)")
        else:
            return
        await self._send(send, loaded, None, now)

    # -- stalled threads ---------------------------------------------------------------------------------------------

    async def _maybe_check_stalled(self) -> None:
        if not self.config.stalled_enabled:
            self._next_stalled = None
            return
        now = self.clock.now()
        if self._next_stalled is not None and now < self._next_stalled:
            return
        self._next_stalled = now + self.config.stalled_check_seconds
        await self.check_stalled()

    async def check_stalled(self) -> int:
        """Alert staff about every customer waiting too long in business hours; returns how many alerts."""
        now = self.clock.now()
        limit = self.config.stalled_business_hours * 3600
        alerts = 0
        for conv, since in await self.store.read(sql.waiting_conversations):
            waited = hours.open_seconds_between(self.ctx.business_hours, self.ctx.timezone, since, now, self.ctx.closed)
            if waited < limit:
                continue
            already = await self.store.read(
                partial(sql.alerted_since, conversation_id=conv, rule=rules.STALLED, since=since)
            )
            if already:
                continue
            await self.store.write(
                partial(sql.record_send, conversation_id=conv, rule=rules.STALLED, address="staff", at=now)
            )
            reason = f"the customer has waited {waited / 3600:.1f} business hours for an answer"
            await self.record(conv, rules.STALLED, "sent", reason, audience="staff")
            self.bus.publish(StalledThread(conv, since, round(waited / 3600, 2)))
            log.info("conversation %d: stalled-thread alert (%.1f business hours)", conv, waited / 3600)
            alerts += 1
        return alerts

    # -- health --------------------------------------------------------------------------------------------------

    def health(self) -> Health:
        """The rules' verdict for the status page and /metrics."""
        details = {"scheduled": self.waiting, "events_handled": self.handled, "sent": self.sent}
        if not self.config.enabled:
            return off("continuity", "Automated messages", "every rule is switched off ([continuity] enabled = false)")
        if self.last_error is not None:
            return down(
                "continuity",
                "Automated messages",
                f"the rules loop fails: {self.last_error}",
                "see the log for the traceback; scheduled sends wait in the store and go once it recovers",
                since=self.error_since,
                details=details,
            )
        details["call_backs_without_phone"] = self.without_phone
        late = self.next_due is not None and self.clock.now() - self.next_due > LATE_SECONDS
        if late:
            return degraded(
                "continuity",
                "Automated messages",
                "scheduled sends are late",
                "check the store and the log: the rules loop is not keeping up",
                details=details,
            )
        if self.without_phone:
            return degraded(
                "continuity",
                "Automated messages",
                f"{self.without_phone} booked call-back(s) have no phone to ring",
                "set continuity.call_me_extension, or give those conversations an owner with an extension; until"
                " then staff call those customers back (each is the conversation's next step, due at the booked time)",
                details=details,
            )
        return ok("continuity", "Automated messages", f"{self.waiting} scheduled send(s) waiting", details=details)

    # -- staff actions ------------------------------------------------------------------------------------------------

    async def recap(self, conversation_id: int, *, author: str) -> int:
        """Staff one click: text the customer what was agreed (intent, next step, time). Returns the outbox id."""
        if not self.config.recap_enabled:
            raise PermanentError("the call recap is switched off (continuity.recap_enabled)")
        now = self.clock.now()
        loaded = await self.store.read(lambda c: load(c, conversation_id, now))
        if loaded is None:
            raise LookupError(f"conversation {conversation_id} does not exist")
        if loaded.state.phone is None:
            raise PermanentError("this customer has no phone number to text the recap to")
        body = render(self.config.recap_template, rules.variables(loaded.state, self.ctx, now))
        outbox_id = await self.service.enqueue_outbound(
            loaded.conversation_id,
            Channel.SMS,
            loaded.state.phone,
            body,
            automated=False,
            author=author,
            event_meta={"rule": rules.CALL_RECAP},
        )
        await self.record(loaded.conversation_id, rules.CALL_RECAP, "sent", f"{author} sent the call recap")
        return outbox_id

    def can_call(self) -> bool:
        """True when the chat may offer call-back times: rules and call-me on, the voice channel there, and an
        extension to ring (a chat visitor's new conversation has no owner yet; never promise a call nobody makes)."""
        cfg = self.config
        return cfg.enabled and cfg.call_me_enabled and self.dialer is not None and bool(cfg.call_me_extension)

    def _callable(self, moment: float) -> bool:
        quiet = self.config.quiet_hours
        return self.ctx.is_open(moment) and not (quiet and hours.in_quiet_hours(quiet, self.ctx.timezone, moment))

    def _next_callable(self, moment: float) -> float | None:
        """The first moment at or after ``moment`` inside business hours and outside quiet hours."""
        quiet = self.config.quiet_hours
        limit = moment + (CALL_HORIZON_DAYS + 7) * 86400
        while moment < limit:
            opening = self.ctx.next_open(moment)
            if opening is None:
                return None
            if not (quiet and hours.in_quiet_hours(quiet, self.ctx.timezone, opening)):
                return opening
            moment = hours.quiet_ends(quiet, self.ctx.timezone, opening)
        return None

    def call_slots(self, count: int = 8) -> list[float]:
        """The next ``count`` half-hour starts at which the office can call (business hours, outside quiet hours,
        open days only), on the rules' clock, within :data:`CALL_HORIZON_DAYS`."""
        now = self.clock.now()
        limit = now + CALL_HORIZON_DAYS * 86400
        moment = ((now + SLOT_LEAD_SECONDS) // SLOT_SECONDS + 1) * SLOT_SECONDS
        found: list[float] = []
        while len(found) < count and moment < limit:
            if self._callable(moment):
                found.append(moment)
                moment += SLOT_SECONDS
                continue
            nxt = self._next_callable(moment)
            if nxt is None:
                break
            moment = max(moment + SLOT_SECONDS, -(-nxt // SLOT_SECONDS) * SLOT_SECONDS)
        return found

    def fit_call_time(self, at: float) -> CallTime:
        """Check a call-back moment a customer picked: a past moment moves to the first slot, a moment when the
        office is closed (closed day, lunch break, quiet hours) moves to the first time it can call; more than
        :data:`CALL_HORIZON_DAYS` ahead is refused."""
        now = self.clock.now()
        if at > now + CALL_HORIZON_DAYS * 86400:
            return CallTime(None, why=f"please pick a time within the next {CALL_HORIZON_DAYS} days")
        if at < now + 60:
            slots = self.call_slots(1)
            if not slots:
                return CallTime(None, why="the office has no opening hours in the next days")
            return CallTime(slots[0], "past")
        if self._callable(at):
            return CallTime(at)
        nxt = self._next_callable(at)
        if nxt is None or nxt > now + CALL_HORIZON_DAYS * 86400:
            return CallTime(None, why="the office has no opening hours in the next days")
        return CallTime(nxt, "closed")

    async def schedule_call(
        self, conversation_id: int, at: float, *, author: str, asked: float | None = None, source: str = "api"
    ) -> int:
        """Call the customer back at ``at`` (the slot they picked): owner's phone first, then the customer.

        Returns the job id. The booking becomes the conversation's next step ("Call back", due ``at``, owned by the
        staff member whose phone rings first, when known), set by ``author`` (staff) or the gateway (the customer's
        own words, ``source`` their channel). The call is decided again at that moment (rules switched off, no
        number, no phone to ring); when no phone would ring, the timeline says so at once and the step waits for
        staff.
        """
        if not self.config.call_me_enabled:
            raise PermanentError("call-backs at a chosen time are switched off (continuity.call_me_enabled)")
        now = self.clock.now()
        if at < now - 60:
            raise PermanentError("that moment has passed; pick a time from now on")

        def book(c: Any) -> tuple[int, bool]:
            same = sql.pending_job_at(c, rules.CALL_ME, conversation_id, at)
            if same is not None:  # the customer and staff booked the same slot: one call
                return same, False
            new_id = sql.schedule_job(
                c,
                rule=rules.CALL_ME,
                conversation_id=conversation_id,
                due_at=at,
                payload={"attempt": 0, "by": author, "booked": at},
                now=now,
            )
            return new_id, True

        job_id, created = await self.store.write(book)
        if not created:
            return int(job_id)
        when = hours.describe_moment(at, self.ctx.timezone, now)
        reason = f"{author} booked a call-back {when}"
        if asked is not None:
            said = hours.describe_moment(asked, self.ctx.timezone, now)
            why = "that moment has passed" if asked < now + 60 else "the office is closed then"
            reason = f"{author} asked for a call-back {said}; {why}, so it is booked {when}"
        customer = author == "the customer"
        reason += await self._call_back_step(
            conversation_id, at, set_by=SYSTEM if customer else author, source=source if customer else "api"
        )
        await self.record(conversation_id, rules.CALL_ME, "deferred", reason, job_id=job_id)
        self._wake.set()
        return int(job_id)

    async def _call_back_step(self, conversation_id: int, at: float, *, set_by: str, source: str) -> str:
        """Make a booked call-back the conversation's next step; returns words for the booking's timeline entry
        when no phone would ring (then the step is for staff, and nothing promises the customer a call)."""
        extension, staff = await self.store.read(
            partial(
                sql.call_back_ringer, conversation_id=conversation_id, fallback_extension=self.config.call_me_extension
            )
        )
        try:
            await self.spines.set_next_step(
                conversation_id, CALL_BACK_STEP, source=source, set_by=set_by, due=at, owner=staff
            )
        except LookupError:
            return ""
        if extension is None:
            return f"; {NO_PHONE}, so nobody will be rung unless one is set by then: staff call back (the next step)"
        if self.dialer is None:
            return "; the voice channel is off, so nobody will be rung: staff call back (the next step)"
        return ""

    async def _call_back_done(self, job: JobRow) -> None:
        """A call-back connected: its "Call back" next step is done (unless staff or a newer booking changed it)."""
        booked = job.payload.get("booked")
        try:
            spine = await self.spines.spine(job.conversation_id)
        except LookupError:
            return
        if spine.next_step != CALL_BACK_STEP:
            return
        due = spine.next_step_due
        if isinstance(booked, int | float) and due is not None and abs(due - float(booked)) >= 60:
            return  # a later booking: that one is the next step now
        await self.spines.set_next_step(job.conversation_id, None, source="voice", set_by=SYSTEM)

    async def _count_without_phone(self) -> int:
        if not self.config.call_me_enabled:
            return 0
        if self.dialer is None:
            return await self.store.read(partial(sql.call_backs_without_phone, any_owner=True))
        if self.config.call_me_extension:
            return 0
        return await self.store.read(sql.call_backs_without_phone)

    def settings(self) -> dict[str, Any]:
        """The active rules, restraint and templates, for the console's read-only settings view."""
        cfg = self.config
        active = {
            rules.MISSED_CALL: cfg.missed_call_enabled,
            rules.VOICEMAIL_ACK: cfg.voicemail_enabled,
            rules.CHAT_SMS: cfg.chat_sms_enabled,
            rules.AFTER_HOURS: cfg.after_hours_enabled,
            rules.CALL_ME: cfg.call_me_enabled,
            rules.CALL_RECAP: cfg.recap_enabled,
            rules.STALLED: cfg.stalled_enabled,
        }
        return {
            "enabled": cfg.enabled,
            "business_name": self.ctx.business_name,
            "timezone": self.ctx.timezone,
            "business_hours": dict(self.ctx.business_hours),
            "closed_dates": list(cfg.closed_dates),
            "holiday_country": cfg.holiday_country,
            "rules": [
                {"rule": name, "title": RULE_TITLES[name], "enabled": cfg.enabled and on} for name, on in active.items()
            ],
            "restraint": {
                "max_per_contact_per_day": cfg.max_per_contact_per_day,
                "max_per_episode": cfg.max_per_episode,
                "episode_minutes": self.episode_minutes,
                "human_quiet_minutes": cfg.human_quiet_minutes,
                "quiet_hours": cfg.quiet_hours,
                "missed_call_delay_seconds": cfg.missed_call_delay_seconds,
                "missed_call_cooldown_minutes": cfg.missed_call_cooldown_minutes,
            },
            "templates": {key: getattr(cfg, key) for key in TEMPLATE_KEYS},
        }

    async def jobs(self, conversation_id: int) -> list[dict[str, Any]]:
        """Scheduled and finished sends of a conversation, newest first (console, API)."""
        rows = await self.store.read(lambda c: sql.jobs_of(c, conversation_id))
        return [{"id": j.id, "rule": j.rule, "due_at": j.due_at, "state": j.state, "reason": j.reason} for j in rows]

    # -- timeline ------------------------------------------------------------------------------------------------------

    async def record(self, conversation_id: int, rule: str, decision: str, reason: str, **extra: Any) -> None:
        """Put one decision on the timeline (kind ``automated``)."""
        title = RULE_TITLES.get(rule, rule)
        words = {"sent": "sent", "suppressed": "not sent", "deferred": "scheduled", "cancelled": "cancelled"}
        if rule == rules.STALLED:
            body = f"{title} for staff: {reason}"
        else:
            body = f"{title} {words.get(decision, decision)}: {reason}"
        meta = {"rule": rule, "decision": decision, "reason": reason}
        meta.update({k: v for k, v in extra.items() if v is not None})
        try:
            await self.service.append_event(
                conversation_id, EventKind.AUTOMATED, Channel.SYSTEM, body, meta, author=AUTHOR
            )
        except LookupError:
            log.warning("conversation %d vanished before decision %s/%s was recorded", conversation_id, rule, decision)
        log.info("conversation %d: %s %s (%s)", conversation_id, rule, decision, reason)
