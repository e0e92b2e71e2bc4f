"""The voice channel: AMI link + FastAGI server + call tracker, wired to the conversation service.

Theory of operation
-------------------
Every AMI event goes through :class:`~gateway.channels.voice.tracker.CallTracker` synchronously,
in arrival order. What the tracker reports is handled in two lanes:

* the fast lane, inside the event callback: bus events that staff are waiting for. When the
  FastAGI router already resolved the caller (it ran before the phones rang), ``CallRinging``
  carries the conversation summary and is published right away, with no store write in the way.
  For a first-time caller the router's report starts creating the conversation at once, while
  the dialplan moves on to ``Dial``, so usually that caller takes the fast lane too;
* the ordered lane, one owned worker task: timeline events through the conversation service
  (``ingest`` for the first event of an unknown caller, which creates the conversation;
  ``append_event`` after that), the call log row, and the bus events that need the store first
  (``CallRinging`` of a caller nobody had looked up yet, ``VoicemailRecorded`` with its event id).

Every timeline event has an external id derived from the call id, so a resync or a replay never
stores a call twice. After an AMI reconnect, and every ``RECONCILE_SECONDS`` while connected,
``resync`` asks Asterisk for its channels (``CoreShowChannels``) and lets the tracker end the
calls that vanished meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.channels.voice.agi_server import AgiServer, CallerContext, InboundRouter
from gateway.channels.voice.ami_link import AmiEventDict, AmiLink
from gateway.channels.voice.label import context_label, sanitize_label
from gateway.channels.voice.settings import VoiceSettings
from gateway.channels.voice.tracker import (
    Answered,
    CallStarted,
    CallTracker,
    Ended,
    Ringing,
    TrackerEffect,
    Transferred,
    VoicemailLeft,
)
from gateway.channels.voice.whisper import WhisperMaker, WhisperSettings
from gateway.domain.calls import (
    CallAnswered,
    CallDirection,
    CallEnded,
    CallOutcome,
    CallRecord,
    CallRinging,
    VoicemailRecorded,
)
from gateway.domain.models import (
    Channel,
    ContactView,
    ConversationSummary,
    EventKind,
    IdentityKind,
    Inbound,
    IngestResult,
)
from gateway.errors import PermanentError, TransientError, ValidationError
from gateway.store import voice as voice_sql

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between resyncs of the call tracker with Asterisk's channel list while the link is up.
RECONCILE_SECONDS = 300.0

_NUMBER_RE = re.compile(r"^\+?[0-9]{2,20}$")


class ConversationPort(Protocol):
    """The parts of ConversationService the voice channel uses."""

    async def ingest(self, item: Inbound) -> IngestResult: ...

    async def append_event(
        self,
        conversation_id: int,
        kind: EventKind | str,
        channel: Channel | str,
        body: str = "",
        meta: Mapping[str, Any] | None = None,
        external_id: str | None = None,
        author: str | None = None,
        occurred_at: float | None = None,
    ) -> int: ...

    async def find_contact(self, kind: IdentityKind, raw_value: str) -> ContactView | None: ...

    async def summary(self, conversation_id: int) -> ConversationSummary | None: ...


class StoreWriter(Protocol):
    """The store's write entry point (for the call log)."""

    async def write(self, fn: Callable[[Any], T]) -> T: ...


_TERMINAL_KIND = {
    CallOutcome.ANSWERED: EventKind.CALL_ENDED,
    CallOutcome.VOICEMAIL: EventKind.CALL_ENDED,
    CallOutcome.MISSED: EventKind.CALL_MISSED,
    CallOutcome.BUSY: EventKind.CALL_MISSED,
    CallOutcome.ABANDONED: EventKind.CALL_ABANDONED,
}


def _reveal(secret: object) -> str:
    """The secret's value whether the config gave a Secret or a plain string."""
    reveal = getattr(secret, "reveal", None)
    return str(reveal()) if callable(reveal) else str(secret)


def _call_meta(rec: CallRecord) -> dict[str, Any]:
    return {
        "call_id": rec.call_id,
        "direction": rec.direction.value,
        "dialled": rec.dialled,
        "extensions_rung": list(rec.extensions_rung),
        "answered_by": rec.answered_by,
        "last_answered_by": rec.last_answered_by,
        "outcome": rec.outcome.value if rec.outcome else None,
        "talk_seconds": round(rec.talk_seconds, 1),
        "ring_seconds": round(rec.ring_seconds, 1),
        "transfers": [asdict(t) for t in rec.transfers],
        "hangup_cause": rec.hangup_cause,
    }


@dataclass(frozen=True, slots=True)
class VoiceHealth:
    """What the status page shows about the voice channel."""

    ami_up: bool
    ami_since: float
    ami_attempts: int
    ami_last_error: str | None
    ami_events: int
    ami_connects: int
    resyncs: int
    agi_served: int
    agi_refused: int
    agi_active: int
    lookup_timeouts: int
    last_answer_ms: float
    active_calls: int
    malformed_events: int
    timeline_backlog: int
    write_errors: int


class VoiceChannel:
    """Owns the AMI link, the FastAGI server, the tracker and the timeline worker."""

    def __init__(
        self,
        settings: VoiceSettings,
        service: ConversationPort,
        bus: Any,
        *,
        store: StoreWriter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings.validate()
        self.settings = settings
        self.service = service
        self.bus = bus
        self.store = store
        self.clock = clock
        self.tracker = CallTracker(staff=settings.staff, abandon_seconds=settings.abandon_seconds)
        self.whisper = (
            WhisperMaker(WhisperSettings(directory=Path(settings.whisper_dir), voice=settings.whisper_voice))
            if settings.whisper
            else None
        )
        self.router = InboundRouter(
            service,
            settings,
            busy_extensions=self.tracker.busy_extensions,
            on_context=self._on_context,
            whisper=self.whisper,
            clock=clock,
        )
        self.agi = AgiServer(
            {"inbound": self.router},
            host=settings.agi_host,
            port=settings.agi_port,
            header_timeout=settings.agi_header_timeout,
            reply_timeout=settings.agi_reply_timeout,
            max_clients=settings.agi_max_clients,
        )
        self.ami = AmiLink(
            host=settings.ami_host,
            port=settings.ami_port,
            username=settings.ami_username,
            secret=_reveal(settings.ami_secret),
            on_event=self.on_ami_event,
            on_connected=self.resync,
            ping_interval=settings.ami_ping_interval,
            ping_timeout=settings.ami_ping_timeout,
        )
        self._contexts: OrderedDict[str, CallerContext] = OrderedDict()
        self._rang: OrderedDict[tuple[str, str, float], None] = OrderedDict()
        self._queue: asyncio.Queue[TrackerEffect] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resync_lock = asyncio.Lock()
        self._reconciler: asyncio.Task[None] | None = None
        self.resyncs = 0
        self.write_errors = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind staff extensions, start the worker, the FastAGI server, then the AMI link."""
        if self.store is not None and self.settings.staff:
            staff = dict(self.settings.staff)
            await self.store.write(lambda c: voice_sql.bind_extensions(c, staff, time.time()))
        self._worker = asyncio.create_task(self._work(), name="voice-timeline")
        await self.agi.start()
        await self.ami.start()
        self._reconciler = asyncio.create_task(self._reconcile(), name="voice-reconcile")

    async def stop(self) -> None:
        """Stop in reverse order; let the worker drain what is queued (bounded)."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            # gather: the child's cancellation is collected, our own is not swallowed
            await asyncio.gather(self._reconciler, return_exceptions=True)
            self._reconciler = None
        await self.ami.stop()
        await self.agi.stop()
        await self.router.stop()
        if self.whisper is not None:
            await self.whisper.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._queue.join()
            self._worker.cancel()
            # gather: the child's cancellation is collected, our own is not swallowed
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    def health(self) -> VoiceHealth:
        """A snapshot for the status page and /metrics."""
        st = self.ami.state
        return VoiceHealth(
            ami_up=self.ami.connected,
            ami_since=st.since,
            ami_attempts=st.attempts,
            ami_last_error=st.last_error,
            ami_events=self.ami.events,
            ami_connects=self.ami.connects,
            resyncs=self.resyncs,
            agi_served=self.agi.served,
            agi_refused=self.agi.refused,
            agi_active=self.agi.active,
            lookup_timeouts=self.router.timeouts,
            last_answer_ms=self.router.last_answer_ms,
            active_calls=len(self.tracker.active_calls()),
            malformed_events=self.tracker.malformed,
            timeline_backlog=self._queue.qsize(),
            write_errors=self.write_errors,
        )

    async def idle(self) -> None:
        """Wait until every queued timeline write is done (tests, shutdown)."""
        await self._queue.join()

    # -- inputs ----------------------------------------------------------------------------------

    def staff_of(self, extension: str | None) -> str | None:
        """The staff username bound to ``extension`` in the config."""
        return self.settings.staff.get(extension or "")

    def _on_context(self, ctx: CallerContext) -> None:
        self._contexts[ctx.uniqueid] = ctx
        self._contexts.move_to_end(ctx.uniqueid)
        while len(self._contexts) > 1000:
            self._contexts.popitem(last=False)
        if ctx.conversation_id is not None:
            self.tracker.set_conversation(ctx.uniqueid, ctx.conversation_id)
        elif not ctx.withheld and ctx.caller and not ctx.timed_out:
            # A first-time caller: create the conversation now, while the dialplan moves on to Dial,
            # so the screen-pop need not wait for a durable write when the phones start ringing.
            task = asyncio.get_running_loop().create_task(self._precreate(ctx), name=f"voice-new-{ctx.uniqueid}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _precreate(self, ctx: CallerContext) -> None:
        try:
            res = await self.service.ingest(
                Inbound(
                    channel=Channel.VOICE,
                    kind=EventKind.CALL_RINGING,
                    identity_kind=IdentityKind.PHONE,
                    identity_value=ctx.caller,
                    external_id=f"{ctx.uniqueid}:ringing",
                    meta={"call_id": ctx.uniqueid, "direction": CallDirection.INBOUND.value},
                    display_name=sanitize_label(ctx.caller_name, 64) or None,
                )
            )
            summary = await self.service.summary(res.conversation_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: could not create the caller's conversation early", ctx.uniqueid)
            return
        self._contexts[ctx.uniqueid] = replace(
            ctx, contact_id=res.contact_id, conversation_id=res.conversation_id, summary=summary
        )
        self.tracker.set_conversation(ctx.uniqueid, res.conversation_id)

    def on_ami_event(self, event: AmiEventDict) -> None:
        """Feed one AMI event (also used by replays and tests)."""
        self._handle(self.tracker.feed(event, self.clock()))

    def _handle(self, effects: list[TrackerEffect]) -> None:
        for fx in effects:
            if isinstance(fx, Ringing):
                self._ring_fast(fx)
            elif isinstance(fx, Answered):
                rec = fx.call
                self.bus.publish(
                    CallAnswered(
                        extension=fx.extension,
                        call_id=rec.call_id,
                        caller=rec.caller,
                        conversation_id=self._conversation_of(rec),
                        staff=self.staff_of(fx.extension),
                        occurred_at=fx.at,
                    )
                )
            elif isinstance(fx, Ended):
                rec = fx.call
                assert rec.outcome is not None
                self.bus.publish(CallEnded(rec.call_id, rec.caller, self._conversation_of(rec), rec.outcome, rec))
            self._queue.put_nowait(fx)

    def _conversation_of(self, rec: CallRecord) -> int | None:
        if rec.conversation_id is not None:
            return rec.conversation_id
        ctx = self._contexts.get(rec.call_id)
        return ctx.conversation_id if ctx else None

    def _ring_fast(self, fx: Ringing) -> None:
        rec = fx.call
        ctx = self._contexts.get(rec.call_id)
        conv = self._conversation_of(rec)
        if conv is None and not (ctx is not None and ctx.withheld):
            return  # the worker resolves the conversation first, then publishes
        self._publish_ringing(fx, conv, ctx.summary if ctx else None)

    def _publish_ringing(self, fx: Ringing, conv: int | None, summary: ConversationSummary | None) -> None:
        rec = fx.call
        key = (rec.call_id, fx.extension, fx.at)
        if key in self._rang:
            return
        self._rang[key] = None
        while len(self._rang) > 5000:
            self._rang.popitem(last=False)
        self.bus.publish(
            CallRinging(
                extension=fx.extension,
                call_id=rec.call_id,
                caller=rec.caller,
                conversation_id=conv,
                summary=summary,
                staff=self.staff_of(fx.extension),
                caller_name=rec.caller_name,
                direction=rec.direction,
                occurred_at=fx.at,
            )
        )

    async def resync(self) -> None:
        """After (re)connecting, and every few minutes: confirm live channels, end the ones that vanished."""
        async with self._resync_lock:
            await self._resync_once()

    async def _reconcile(self) -> None:
        # AMI over TCP loses nothing while connected, but an operator's eventfilter or an Asterisk bug can swallow
        # a Hangup; a periodic resync bounds how long a phone can look busy or a call stay open.
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            if self.ami.connected:
                try:
                    await self.resync()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("periodic AMI resync failed")

    async def _resync_once(self) -> None:
        self.tracker.begin_resync()
        try:
            channels = await self.ami.core_show_channels()
        except TransientError as err:
            log.warning("AMI resync failed: %s; calls stay as they were", err)
            self.tracker.end_resync_abort()
            return
        now = self.clock()
        effects: list[TrackerEffect] = []
        for ch in channels:
            effects += self.tracker.feed(ch, now)
        effects += self.tracker.end_resync(now)
        self.resyncs += 1
        log.info(
            "AMI resync: %d live channel(s), %d call(s) active",
            len(channels),
            len(self.tracker.active_calls()),
        )
        self._handle(effects)

    # -- click-to-call ---------------------------------------------------------------------------

    async def click_to_call(self, staff_extension: str, customer_number: str, conversation_id: int) -> str:
        """Ring ``staff_extension`` first, then dial ``customer_number`` through the trunk.

        Returns the call id (the Linkedid the call will carry). The Originate is sent once: if the
        link drops before Asterisk answers it, a TransientError says the outcome is unknown.
        """
        ext = staff_extension.strip()
        if not ext.isalnum() or len(ext) > 32:
            raise ValidationError(f"staff extension {staff_extension!r} is not a valid extension")
        if self.settings.staff and ext not in self.settings.staff:
            raise ValidationError(f"extension {ext} is not in voice.staff; add it there to allow click-to-call")
        number = re.sub(r"[\s().-]", "", customer_number)
        if not _NUMBER_RE.match(number):
            raise ValidationError(f"customer number {customer_number!r} is not dialable: use digits and an optional +")
        summary = None
        with contextlib.suppress(Exception):
            summary = await self.service.summary(conversation_id)
        label = context_label(
            summary,
            caller_number=number,
            caller_name="",
            withheld=False,
            max_chars=self.settings.label_max_chars,
        )
        label = sanitize_label(label, self.settings.label_max_chars)
        call_id = f"gw-c2c-{uuid.uuid4().hex}"
        self.tracker.expect_outbound(call_id, customer=number, extension=ext, conversation_id=conversation_id)
        # The staff phone's screen-pop shows the same context as for an inbound call.
        self._on_context(
            CallerContext(
                uniqueid=call_id,
                caller=number,
                withheld=False,
                contact_id=summary.contact_id if summary else None,
                conversation_id=conversation_id,
                summary=summary,
                label=label,
                first="",
                timed_out=False,
            )
        )
        fields = {
            "Action": "Originate",
            "Channel": f"PJSIP/{ext}",
            "Context": self.settings.click_to_call_context,
            "Exten": number,
            "Priority": "1",
            "CallerID": f'"{label}" <{number}>',
            "Timeout": str(self.settings.click_to_call_ring_s * 1000),
            "Async": "true",
            "ChannelId": call_id,
            "Variable": f"__GW_CONVERSATION_ID={conversation_id}",
        }
        try:
            resp = await self.ami.action(fields, timeout=10.0, as_list=False)
        except TransientError:
            log.warning("call %s: click-to-call Originate outcome unknown (AMI link)", call_id)
            raise
        if not resp.success:
            self.tracker.forget_expected(call_id)
            raise PermanentError(f"Asterisk refused the Originate: {resp.get('Message', '')}")
        log.info("call %s: click-to-call from extension %s queued", call_id, ext)
        return call_id

    # -- the ordered lane ------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            fx = await self._queue.get()
            try:
                await self._apply(fx)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.write_errors += 1
                log.exception("call %s: could not record %s", fx.call.call_id, type(fx).__name__)
            finally:
                self._queue.task_done()

    def _identity(self, rec: CallRecord) -> tuple[IdentityKind, str] | None:
        if rec.direction is CallDirection.OUTBOUND and self.tracker.is_extension(rec.dialled):
            return None  # internal call between staff phones: not a customer conversation
        if not rec.caller:
            return IdentityKind.SIP, f"withheld:{rec.call_id}"
        return IdentityKind.PHONE, rec.caller

    async def _record(
        self,
        rec: CallRecord,
        kind: EventKind,
        suffix: str,
        *,
        body: str = "",
        meta: Mapping[str, Any] | None = None,
        author: str | None = None,
        at: float | None = None,
    ) -> tuple[int, int] | None:
        """Put one timeline event for ``rec``; returns (conversation_id, event_id)."""
        conv = self._conversation_of(rec)
        external_id = f"{rec.call_id}:{suffix}"
        full_meta = {**_call_meta(rec), **(meta or {})}
        if conv is not None:
            event_id = await self.service.append_event(
                conv, kind, Channel.VOICE, body, full_meta, external_id, author, at
            )
            return conv, event_id
        ident = self._identity(rec)
        if ident is None:
            return None
        res = await self.service.ingest(
            Inbound(
                channel=Channel.VOICE,
                kind=kind,
                identity_kind=ident[0],
                identity_value=ident[1],
                external_id=external_id,
                body=body,
                meta=full_meta,
                occurred_at=at,
                display_name=sanitize_label(rec.caller_name, 64) or None,
            )
        )
        self.tracker.set_conversation(rec.call_id, res.conversation_id)
        return res.conversation_id, res.event_id

    async def _apply(self, fx: TrackerEffect) -> None:
        rec = self.tracker.call(fx.call.call_id) or fx.call
        if isinstance(fx, CallStarted):
            return
        if isinstance(fx, Ringing):
            got = await self._record(rec, EventKind.CALL_RINGING, "ringing", meta={"extension": fx.extension}, at=fx.at)
            if (rec.call_id, fx.extension, fx.at) not in self._rang:
                conv = got[0] if got else None
                summary = await self.service.summary(conv) if conv is not None else None
                self._publish_ringing(fx, conv, summary)
            return
        if isinstance(fx, Answered):
            staff = self.staff_of(fx.extension)
            await self._record(
                rec,
                EventKind.CALL_ANSWERED,
                f"answered:{fx.extension}",
                meta={"extension": fx.extension, "staff": staff},
                author=staff,
                at=fx.at,
            )
            return
        if isinstance(fx, Transferred):
            return
        if isinstance(fx, VoicemailLeft):
            got = await self._record(
                rec,
                EventKind.VOICEMAIL,
                "voicemail",
                meta={"path": fx.path, "duration": fx.duration},
                at=fx.at,
            )
            if got is not None:
                self.bus.publish(VoicemailRecorded(rec.call_id, rec.caller, got[0], got[1], fx.path, fx.duration))
            if fx.late:
                await self._log_call(rec)
            return
        if isinstance(fx, Ended):
            assert rec.outcome is not None
            # An unanswered outbound call is not a customer waiting for us: never call_missed.
            kind = EventKind.CALL_ENDED if rec.direction is CallDirection.OUTBOUND else _TERMINAL_KIND[rec.outcome]
            got = await self._record(
                rec,
                kind,
                "end",
                meta={"staff": self.staff_of(rec.answered_by)},
                at=rec.ended_at,
            )
            conv = got[0] if got else self._conversation_of(rec)
            if conv is not None and rec.conversation_id != conv:
                rec = replace(rec, conversation_id=conv)
            await self._log_call(rec)

    async def _log_call(self, rec: CallRecord) -> None:
        if self.store is None:
            return
        await self.store.write(lambda c: voice_sql.record_call(c, rec))
