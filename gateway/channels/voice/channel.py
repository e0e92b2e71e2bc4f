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
calls that vanished meanwhile. Then :mod:`gateway.channels.voice.recovery` stores what Asterisk
recorded while nobody listened (calls from its CDR file, voicemails from the recordings directory),
in an owned task, without holding up the live events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from gateway.channels.voice import recovery as rc
from gateway.channels.voice.agi_server import AgiServer, CallerContext, InboundRouter
from gateway.channels.voice.ami_link import AmiEventDict, AmiLink
from gateway.channels.voice.ari import AriClient
from gateway.channels.voice.health import ami_verdict
from gateway.channels.voice.label import context_label, sanitize_label, stored_name
from gateway.channels.voice.live import LiveCalls, SpeechPort
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
from gateway.domain.calls import CallDirection, CallOutcome, CallRecord
from gateway.domain.events import CallAnswered, CallEnded, CallRinging, VoicemailRecorded
from gateway.domain.models import (
    Channel,
    ConversationSummary,
    EventKind,
    IdentityKind,
    Inbound,
)
from gateway.domain.ports import ConversationPort, StorePort
from gateway.errors import PermanentError, TransientError, ValidationError
from gateway.store import voice as voice_sql
from gateway.supervise import TaskSet, cancel_and_wait
from gateway.transcribe.audio import AudioError, probe_audio
from gateway.values import Health

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between resyncs of the call tracker with Asterisk's channel list while the link is up.
RECONCILE_SECONDS = 300.0

_NUMBER_RE = re.compile(r"^\+?[0-9]{2,20}$")


_TERMINAL_KIND = {
    CallOutcome.ANSWERED: EventKind.CALL_ENDED,
    CallOutcome.VOICEMAIL: EventKind.CALL_ENDED,
    CallOutcome.MISSED: EventKind.CALL_MISSED,
    CallOutcome.BUSY: EventKind.CALL_MISSED,
    CallOutcome.ABANDONED: EventKind.CALL_ABANDONED,
}


def _check_recording(path: str) -> tuple[float | None, str | None]:
    """(seconds, None) for a readable recording, (None, reason) for one that is not. Blocking."""
    try:
        _codec, _rate, seconds = probe_audio(path)
    except AudioError as err:
        return None, str(err).removeprefix(f"{path}: ")
    except OSError as err:
        return None, f"cannot read it: {err.strerror or err}"
    return seconds, None


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
    recovered_calls: int = 0
    recovered_voicemails: int = 0
    recovered_unusable_recordings: int = 0
    last_recovery_at: float | None = None
    last_recovery_error: str | None = None


class VoiceChannel:
    """Owns the AMI link, the FastAGI server, the tracker and the timeline worker."""

    def __init__(
        self,
        settings: VoiceSettings,
        service: ConversationPort,
        bus: Any,
        *,
        store: StorePort | None = None,
        clock: Callable[[], float] = time.time,
        speech: SpeechPort | None = None,
    ) -> None:
        settings.validate()
        self.settings = settings
        self.service = service
        self.bus = bus
        self.store = store
        self.clock = clock
        self.tracker = CallTracker(staff=settings.staff, abandon_seconds=settings.abandon_seconds)
        # One speech cache for the whisper and the callers' transcription notice (both played by Asterisk).
        self._speaker = (
            WhisperMaker(WhisperSettings(directory=Path(settings.whisper_dir), voice=settings.whisper_voice))
            if settings.whisper or (settings.live_transcribe and settings.consent_announcement.strip())
            else None
        )
        self.whisper = self._speaker if settings.whisper else None
        self.ari: AriClient | None = None
        self.live: LiveCalls | None = None
        password = settings.ari_password.reveal()
        if settings.live_transcribe and speech is not None and password:
            self.ari = AriClient(settings.ari_url, settings.ari_username, password)
            self.live = LiveCalls(self.ari, speech, service, bus.publish, consent=self._consent_sound)
            live = self.live
            self.ari.on_lost = live.ari_lost
            self.ari.on_event = live.ari_event
            self.ari.on_up = lambda: self._own(live.ari_back(), "live-ari-back")
        self.router = InboundRouter(
            service,
            settings,
            busy_extensions=self.tracker.busy_extensions,
            on_context=self._on_context,
            whisper=self.whisper,
            clock=clock,
            fallback_recording=self._fallback_recording if self.live is not None else None,
        )
        self.agi = AgiServer(
            {"inbound": self.router},
            host=settings.agi_host,
            port=settings.agi_port,
            header_timeout=settings.agi_header_timeout,
            reply_timeout=settings.agi_reply_timeout,
            max_clients=settings.agi_max_clients,
            allowed_peers=settings.agi_allowed_peers,
        )
        self.ami = AmiLink(
            host=settings.ami_host,
            port=settings.ami_port,
            username=settings.ami_username,
            secret=settings.ami_secret.reveal(),
            on_event=self.on_ami_event,
            on_connected=self._on_connected,
            ping_interval=settings.ami_ping_interval,
            ping_timeout=settings.ami_ping_timeout,
        )
        self._fallback: dict[str, str] = {}
        self._contexts: OrderedDict[str, CallerContext] = OrderedDict()
        self._rang: OrderedDict[tuple[str, str, float], None] = OrderedDict()
        self._queue: asyncio.Queue[TrackerEffect] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tasks = TaskSet("voice")
        self._resync_lock = asyncio.Lock()
        self._reconciler: asyncio.Task[None] | None = None
        self.resyncs = 0
        self.write_errors = 0
        self._connected_at = 0.0
        self._recovery: asyncio.Task[None] | None = None
        self._recover_again = False
        self._unusable_seen: set[str] = set()
        self.recovered_calls = 0
        self.recovered_voicemails = 0
        self.recovered_unusable = 0
        self.last_recovery_at: float | None = None
        self.last_recovery_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind staff extensions, start the worker, the FastAGI server, then the AMI link."""
        if self.store is not None and self.settings.staff:
            staff = dict(self.settings.staff)
            await self.store.write(lambda c: voice_sql.bind_extensions(c, staff, time.time()))
        self._worker = asyncio.create_task(self._work(), name="voice-timeline")
        await self.agi.start()
        if self.ari is not None:
            await self.ari.start()
            self._consent_sound()  # synthesised now, so the first transcribed call can already hear it
        await self.ami.start()
        self._reconciler = asyncio.create_task(self._reconcile(), name="voice-reconcile")

    async def stop(self) -> None:
        """Stop in reverse order; let the worker drain what is queued (bounded)."""
        await cancel_and_wait(self._recovery, self._reconciler, owner="voice")
        self._recovery = self._reconciler = None
        await self.ami.stop()
        await self.agi.stop()
        await self.router.stop()
        if self.live is not None:
            await self.live.stop()
        if self.ari is not None:
            await self.ari.stop()
        if self._speaker is not None:
            await self._speaker.stop()
        await self._tasks.wait()
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._queue.join()
            await cancel_and_wait(self._worker, owner="voice")
            self._worker = None

    def health(self) -> Health:
        """The AMI link's verdict for the status page, ``gateway doctor`` and /metrics."""
        st = self.ami.state
        return ami_verdict(self.settings, up=self.ami.connected, since=st.since, last_error=st.last_error)

    def snapshot(self) -> VoiceHealth:
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
            recovered_calls=self.recovered_calls,
            recovered_voicemails=self.recovered_voicemails,
            recovered_unusable_recordings=self.recovered_unusable,
            last_recovery_at=self.last_recovery_at,
            last_recovery_error=self.last_recovery_error,
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
            self._tasks.spawn(self._precreate(ctx), f"voice-new-{ctx.uniqueid}")

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
                    display_name=stored_name(ctx.caller_name) or None,
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
                if self.live is not None and rec.answered_at == fx.at:
                    self._own(self.live.start(rec, fx.extension, self._conversation_of(rec)), f"live-{rec.call_id}")
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
                if self.live is not None:
                    recording = self._fallback.pop(rec.call_id, None)
                    path = Path(recording + ".wav") if recording is not None else None
                    self._own(self.live.finish(rec, self._conversation_of(rec), path), f"live-end-{rec.call_id}")
            self._queue.put_nowait(fx)

    def _consent_sound(self) -> Path | None:
        """The spoken transcription notice for callers, once it has been synthesised (None: none, or not yet)."""
        text = self.settings.consent_announcement.strip()
        if not text or self._speaker is None:
            return None
        path = self._speaker.prepare(text)
        return path if path.exists() else None

    def _fallback_recording(self, uniqueid: str) -> str | None:
        """Where Asterisk records an answered call (MixMonitor) as the safety net of live transcription.

        Always while ARI is down at the answer (the recording is then the only transcript, made after the call);
        with ``voice.live_safety_recording`` also while ARI is up, so that a link lost mid-call loses no words (the
        recording is deleted after the call when live audio covered all of it). None: no recording.
        """
        if self.ari is None or not self.settings.recordings_dir:
            return None
        if self.ari.connected and not self.settings.live_safety_recording:
            return None
        safe = "".join(c for c in uniqueid if c.isalnum() or c in "._-")[:64]
        path = str(Path(self.settings.recordings_dir) / f"call-{safe}")
        self._fallback[uniqueid] = path
        while len(self._fallback) > 1000:
            self._fallback.pop(next(iter(self._fallback)))
        return path

    def _own(self, work: Coroutine[Any, Any, object], name: str) -> None:
        """Run ``work`` as a task this channel owns (awaited at stop); its failure is logged, never raised."""

        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("voice: %s failed", name)

        self._tasks.spawn(run(), name)

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

    async def _on_connected(self) -> None:
        self._connected_at = self.clock()
        await self.resync()
        self.request_recovery()

    def request_recovery(self) -> None:
        """Start a recovery run in an owned task (or one more after the running one)."""
        if self._recovery is not None and not self._recovery.done():
            self._recover_again = True
            return
        self._recovery = asyncio.get_running_loop().create_task(self._recover_loop(), name="voice-recovery")

    async def recovery_idle(self) -> None:
        """Wait until no recovery run is going on (tests, benchmarks)."""
        while self._recovery is not None and not self._recovery.done():
            await asyncio.wait([self._recovery])

    async def _recover_loop(self) -> None:
        while True:
            self._recover_again = False
            try:
                again = await self.recover()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.last_recovery_error = f"{type(err).__name__}: {err}"
                log.exception("recovery after downtime failed; it runs again at the next AMI reconnect")
                return
            if again:
                # A recording was still being written: look once more when it has settled.
                await asyncio.sleep(rc.SETTLE_SECONDS)
                self._recover_again = True
            if not self._recover_again:
                return

    async def recover(self) -> bool:
        """Store the calls and voicemails Asterisk recorded while the gateway was away (idempotent).

        Returns True when a recording was too fresh to judge and another run should follow.
        """
        if self.store is None:
            return False
        now = self.clock()
        since = now - self.settings.recovery_window_hours * 3600.0
        cutoff = self._connected_at or now
        active = frozenset(r.call_id for r in self.tracker.active_calls())
        errors: list[str] = []

        recordings: list[rc.RecordingFile] = []
        found: list[rc.RecordingFile] = []
        fresh = False
        if self.settings.recordings_dir:
            try:
                found = await asyncio.to_thread(rc.scan_recordings, Path(self.settings.recordings_dir), since=since)
            except OSError as err:
                errors.append(f"recordings directory {self.settings.recordings_dir}: {err.strerror or err}")
            recordings = rc.wanted(found, now=now, active=active)
            fresh = len(recordings) < len([r for r in found if r.linkedid not in active])
        known = await self.store.write(
            lambda c: voice_sql.known_external_ids(c, Channel.VOICE.value, [r.external_id for r in recordings])
        )
        new_recordings = [r for r in recordings if r.external_id not in known and r.path not in self._unusable_seen]
        checked: list[tuple[rc.RecordingFile, float | None, str | None]] = []
        for r in new_recordings:
            seconds, problem = await asyncio.to_thread(_check_recording, r.path)
            if problem is None and seconds is not None and seconds < rc.MIN_RECORDING_SECONDS:
                # The caller hung up at the beep; the call itself is recovered from the call records.
                self._unusable_seen.add(r.path)
                log.info("recovery: %s holds no speech (%.2f s); not a voicemail", r.name, seconds)
                continue
            checked.append((r, seconds, problem))
        # Which calls left a voicemail: known ones, new usable ones, and ones still settling (size alone).
        voicemails: dict[str, str | None] = {
            r.linkedid: r.path
            for r in found
            if r.linkedid and r.linkedid not in active and r.size > rc.MIN_RECORDING_BYTES and r not in recordings
        }
        voicemails |= {r.linkedid: r.path for r in recordings if r.linkedid and r.external_id in known}
        voicemails |= {r.linkedid: r.path for r, _s, problem in checked if r.linkedid and problem is None}

        calls: list[CallRecord] = []
        if self.settings.cdr_file:
            try:
                calls = await self._recovered_calls(since, cutoff, active, voicemails)
            except OSError as err:
                errors.append(f"call records {self.settings.cdr_file}: {err.strerror or err}")
        by_id = {c.call_id: c for c in calls}
        orphan_ids = [r.linkedid for r, _s, _p in checked if r.linkedid and r.linkedid not in by_id]
        if orphan_ids and self.settings.cdr_file:
            with contextlib.suppress(OSError):
                chunk = await asyncio.to_thread(rc.read_cdr, Path(self.settings.cdr_file), None)
                wanted_ids = set(orphan_ids)
                for rec in rc.calls_from_legs(
                    [leg for leg in chunk.legs if leg.linkedid in wanted_ids],
                    abandon_seconds=self.settings.abandon_seconds,
                    voicemails=voicemails,
                ):
                    by_id.setdefault(rec.call_id, rec)
        logged = await self.store.write(lambda c: voice_sql.call_callers(c, orphan_ids)) if orphan_ids else {}

        for rec in calls:
            await self._store_recovered_call(rec)
        for r, seconds, problem in checked:
            await self._store_recovered_recording(r, seconds, problem, by_id.get(r.linkedid or ""), logged)

        self.last_recovery_at = self.clock()
        self.last_recovery_error = "; ".join(errors) or None
        for e in errors:
            log.warning("recovery after downtime: %s", e)
        return fresh

    async def _recovered_calls(
        self, since: float, cutoff: float, active: frozenset[str], voicemails: Mapping[str, str | None]
    ) -> list[CallRecord]:
        assert self.store is not None
        path = Path(self.settings.cdr_file)
        source = str(path)
        cursor = await self.store.write(lambda c: voice_sql.recovery_cursor(c, source))
        try:
            chunk = await asyncio.to_thread(rc.read_cdr, path, cursor)
        except FileNotFoundError as err:
            if path.parent.is_dir():
                # cdr_custom writes the file with the first call that ends: no calls yet, nothing to recover.
                log.debug("recovery: %s does not exist yet (no call has ended since Asterisk was set up)", path)
                return []
            raise FileNotFoundError(
                err.errno,
                "no such directory; enable cdr_custom as in asterisk-config/cdr_custom.conf or set voice.cdr_file",
            ) from err
        if chunk.bad_lines:
            log.warning("recovery: %d line(s) of %s are not in the gw1 layout; skipped", chunk.bad_lines, path)
        calls = [
            rec
            for rec in rc.calls_from_legs(
                chunk.legs, abandon_seconds=self.settings.abandon_seconds, voicemails=voicemails
            )
            if (rec.ended_at or 0.0) >= since
            and (rec.ended_at or 0.0) < cutoff
            and rec.call_id not in active
            and self.tracker.call(rec.call_id) is None
        ]
        # Legs of a call still going on are written when it ends: read them again next time.
        pending = [leg for leg in chunk.legs if leg.linkedid in active]
        new_cursor: tuple[int, int, str] | None = chunk.cursor
        if pending:
            # Keep the old place (or none): the next run reads these legs again, complete by then.
            new_cursor = cursor if cursor is not None and chunk.inode == cursor[0] else None
        if new_cursor is not None:
            keep = new_cursor
            await self.store.write(lambda c: voice_sql.set_recovery_cursor(c, source, keep, time.time()))
        return calls

    def _recovered_identity(self, rec: CallRecord | None, fallback: str) -> tuple[IdentityKind, str]:
        if rec is not None and rec.caller:
            return IdentityKind.PHONE, rec.caller
        if rec is not None:
            return IdentityKind.SIP, f"withheld:{rec.call_id}"
        return IdentityKind.SIP, f"unknown-caller:{fallback}"

    async def _store_recovered_call(self, rec: CallRecord) -> None:
        outcome = rec.outcome
        assert outcome is not None
        kind, value = self._recovered_identity(rec, rec.call_id)
        res = await self.service.ingest(
            Inbound(
                channel=Channel.VOICE,
                kind=_TERMINAL_KIND[outcome],
                identity_kind=kind,
                identity_value=value,
                external_id=f"{rec.call_id}:end",
                meta={**_call_meta(rec), "recovered": rc.RECOVERED_MARK},
                occurred_at=rec.ended_at,
                display_name=rec.caller_name or None,
            )
        )
        if res.duplicate:
            return
        rec = replace(rec, conversation_id=res.conversation_id)
        await self._log_call(rec)
        self.recovered_calls += 1
        log.info("call %s: recovered after downtime (%s)", rec.call_id, outcome.value)
        self.bus.publish(CallEnded(rec.call_id, rec.caller, res.conversation_id, outcome, rec, recovered=True))

    async def _store_recovered_recording(
        self,
        r: rc.RecordingFile,
        seconds: float | None,
        problem: str | None,
        rec: CallRecord | None,
        logged: Mapping[str, tuple[str, int | None]],
    ) -> None:
        if rec is None and r.linkedid and r.linkedid in logged and logged[r.linkedid][0]:
            kind, value = IdentityKind.PHONE, logged[r.linkedid][0]
        else:
            kind, value = self._recovered_identity(rec, r.linkedid or r.name)
        meta: dict[str, Any] = {
            "path": r.path,
            "duration": round(seconds or 0.0, 1),
            "call_id": r.linkedid,
            "recovered": rc.RECOVERED_MARK,
        }
        body = ""
        if problem is not None:
            meta |= {"transcription": "failed", "error": problem, "unusable": True}
            body = f"A recording was found after downtime but cannot be played or transcribed: {problem}"
        res = await self.service.ingest(
            Inbound(
                channel=Channel.VOICE,
                kind=EventKind.VOICEMAIL,
                identity_kind=kind,
                identity_value=value,
                external_id=r.external_id,
                body=body,
                meta=meta,
                occurred_at=rec.ended_at if rec is not None and rec.ended_at else r.mtime,
                display_name=(rec.caller_name if rec is not None else "") or None,
            )
        )
        if res.duplicate:
            return
        if problem is not None:
            self.recovered_unusable += 1
            log.warning("recovery: %s is not a usable recording: %s", r.name, problem)
            return
        self.recovered_voicemails += 1
        log.info("voicemail %s: recovered after downtime", r.name)
        self.bus.publish(
            VoicemailRecorded(
                r.linkedid or r.name,
                rec.caller if rec is not None else "",
                res.conversation_id,
                res.event_id,
                r.path,
                seconds or 0.0,
                recovered=True,
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
        # Toll fraud: premium-rate, satellite, foreign... numbers are refused here, before Asterisk is asked, and
        # again by the shipped dialplan.
        self.service.check_number(number, purpose="dial")
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
                display_name=stored_name(rec.caller_name) or None,
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
