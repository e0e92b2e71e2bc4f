"""The supervisor: builds every part from the config, starts them in order and stops them in reverse.

Theory of operation: parts are started in dependency order -- store, bus, channels (SMS, voice, transcription),
web -- and each is registered for stopping only once its ``start()`` returned, so a failure half-way stops exactly
what was started, in reverse. ``stop()`` gives every part a share of ``gateway.shutdown_timeout``; a part that
overruns is abandoned with an ERROR, and any task still alive afterwards is cancelled and named in the log, so the
daemon never leaves work behind silently. SIGTERM and SIGINT trigger the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import resource
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gateway import health as checks
from gateway import sdnotify
from gateway.config import Config
from gateway.continuity.clock import Clock
from gateway.domain.bus import Bus
from gateway.domain.models import IdentityKind
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.domain.spine import SpineService
from gateway.errors import ValidationError
from gateway.log import RECENT
from gateway.store import meta
from gateway.store import web as web_sql
from gateway.store.backup import BackupScheduler
from gateway.store.db import Store
from gateway.supervise import cancel_and_wait, freeze_startup_objects
from gateway.values import Health, degraded, down, off, ok

if TYPE_CHECKING:  # the channel modules are imported only when configured
    from gateway.channels.sms.channel import SmsChannel
    from gateway.channels.voice.channel import VoiceChannel
    from gateway.continuity.engine import ContinuityEngine
    from gateway.continuity.promise_keeper import PromiseKeeper
    from gateway.domain.spine_learner import SpineLearner
    from gateway.transcribe.live import LiveSpeech, LiveSpeechPart
    from gateway.transcribe.service import TranscriptionService
    from gateway.web.app import WebServer

log = logging.getLogger(__name__)

StatusSource = Callable[[], Awaitable[Mapping[str, Any]]]
#: The status page's sparklines: 24 hours, one point every 5 minutes.
HISTORY_SERIES = ("modem_signal_dbm", "outbox_depth", "transcription_backlog")
HISTORY_STEP = 300.0
HISTORY_KEY = "status_history"


class Part(Protocol):
    """Anything the supervisor starts and stops."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _plain(value: Any) -> Any:
    """Dataclasses and the like as JSON-ready values for status pages."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class App:
    """One gateway daemon."""

    def __init__(self, config: Config, *, continuity_clock: Clock | None = None) -> None:
        self.config = config
        self.continuity_clock = continuity_clock
        """The rules' clock (None: wall time); tests and benchmarks move a manual one."""
        self.store = Store(
            config.db_path,
            readers=config.store.readers,
            max_batch=config.store.max_batch,
            backup_dir=config.backup_dir,
        )
        self.bus = Bus()
        self.service = ConversationService(
            self.store,
            self.bus,
            ServiceSettings(
                default_region=config.gateway.default_region,
                max_body_chars=config.store.max_body_chars,
                sms_enabled=config.sms.enabled,
                number_policy=config.gateway.number_policy(),
                staff_number_check=config.gateway.staff_number_check,
                automated_sms_per_hour=config.sms.automated_per_hour,
                automated_sms_per_day=config.sms.automated_per_day,
            ),
        )
        self.spine = SpineService(self.store, self.bus, config.spine, timezone=config.web.timezone)
        self.spine_learner: SpineLearner | None = None
        self.started_at: float | None = None
        self.sms: SmsChannel | None = None
        self.voice: VoiceChannel | None = None
        self.transcription: TranscriptionService | None = None
        self.web: WebServer | None = None
        self.history = checks.History(HISTORY_SERIES, step=HISTORY_STEP)
        self.backups: BackupScheduler | None = None
        if config.store.backup_interval_hours > 0:
            self.backups = BackupScheduler(
                self.store,
                config.backup_dir,
                interval=config.store.backup_interval_hours * 3600,
                keep=config.store.backup_keep,
            )
        self._sampler: asyncio.Task[None] | None = None
        self.continuity: ContinuityEngine | None = None
        self.promises: PromiseKeeper | None = None
        self.live_speech: LiveSpeechPart | None = None
        self._started: list[tuple[str, Part]] = []
        self._stopping = asyncio.Event()

    # -- building ----------------------------------------------------------------------------------------------------

    def _build_channels(self) -> list[tuple[str, Part]]:
        cfg = self.config
        parts: list[tuple[str, Part]] = []
        if cfg.spine.extract:
            parts.append(("spine", self._build_spine_learner()))
        if cfg.sms.enabled:
            from gateway.channels.sms.channel import SmsChannel  # noqa: PLC0415 - only when configured

            self.sms = SmsChannel(cfg.sms, self.store, self.service, self.bus, region=cfg.gateway.default_region)
            parts.append(("sms", self.sms))
        if cfg.voice.enabled:
            from gateway.channels.voice.channel import VoiceChannel  # noqa: PLC0415

            speech = self._build_live_speech(parts)
            self.voice = VoiceChannel(cfg.voice, self.service, self.bus, store=self.store, speech=speech)
            parts.append(("voice", self.voice))
        if cfg.transcribe.enabled:
            from gateway.transcribe.service import TranscriptionService  # noqa: PLC0415

            self.transcription = TranscriptionService(
                self.store, self.service, self.bus, cfg.transcribe, cfg.intent, sets_intent=not cfg.spine.extract
            )
            parts.append(("transcription", self.transcription))
        return parts

    def _build_live_speech(self, parts: list[tuple[str, Part]]) -> LiveSpeech | None:
        """The streaming recogniser for live call transcription, when it is on and can work."""
        from gateway.transcribe.live import LiveSpeech, LiveSpeechPart  # noqa: PLC0415 - only when configured
        from gateway.transcribe.model import check_model, resolve_model_path  # noqa: PLC0415

        cfg = self.config
        if not (cfg.voice.live_transcribe and cfg.transcribe.enabled):
            return None
        if not cfg.voice.ari_password.reveal():
            log.info("live call transcription is off: set voice.ari_password (ari.conf) to turn it on")
            return None
        model = resolve_model_path(cfg.transcribe.model_path)
        problem = check_model(model)
        if problem:
            log.warning("live call transcription is off: %s", problem)
            return None
        speech = LiveSpeech(
            model,
            workers=cfg.voice.live_workers,
            nice=cfg.transcribe.nice,
            idle=cfg.transcribe.idle_class,
            max_active=cfg.transcribe.max_active,
        )
        self.live_speech = LiveSpeechPart(speech)
        parts.append(("live-speech", self.live_speech))
        return speech

    def _build_spine_learner(self) -> Part:
        from gateway.domain.extract import SpineReader  # noqa: PLC0415 - dateparser is loaded only when used
        from gateway.domain.intent import IntentRules  # noqa: PLC0415
        from gateway.domain.spine_learner import SpineLearner  # noqa: PLC0415

        cfg = self.config
        reader = SpineReader(
            IntentRules.from_config(cfg.intent),
            cfg.spine.intents,
            region=cfg.gateway.default_region,
            timezone=cfg.web.timezone,
            fact_patterns=cfg.spine.fact_patterns,
            topic_keywords=cfg.spine.topic_keywords,
        )
        self.spine_learner = SpineLearner(self.spine, reader, self.bus)
        return self.spine_learner

    async def _click_to_call(self, staff_extension: str, customer_number: str) -> None:
        """Web -> voice adapter: the call lands in the conversation that owns the customer's number."""
        contact = await self.service.find_contact(IdentityKind.PHONE, customer_number)
        if contact is None:
            raise ValidationError(f"no conversation owns {customer_number!r}; open the customer's conversation first")
        if self.voice is None:
            raise ValidationError("click-to-call needs the voice channel: set [voice] enabled = true")
        await self.voice.click_to_call(staff_extension, customer_number, contact.conversation_id)

    def status_sources(self) -> dict[str, StatusSource]:
        """Per-part state for the status page and /status.json (the web layer adds store facts itself)."""
        sources: dict[str, StatusSource] = {"gateway": self._gateway_status, "backup": self._store_status}
        if self.sms is not None:
            sources["modem"] = self._modem_status
        if self.voice is not None:
            sources["asterisk"] = self._voice_status
        if self.transcription is not None:
            sources["transcription"] = self._transcription_status
        return sources

    def _build_continuity(self) -> Part:
        from gateway.continuity.engine import ContinuityEngine, HoursSettings  # noqa: PLC0415

        web_cfg = self.config.web
        self.continuity = ContinuityEngine(
            self.config.continuity,
            self.service,
            self.store,
            self.bus,
            HoursSettings(
                web_cfg.timezone,
                web_cfg.business_hours,
                web_cfg.business_name,
                self.config.spine.episode_window_minutes,
            ),
            dialer=self.voice.click_to_call if self.voice is not None else None,
            spine_ready=self.spine_learner.read_up_to_date if self.spine_learner is not None else None,
            clock=self.continuity_clock,
        )
        return self.continuity

    def _build_promises(self) -> Part:
        from gateway.continuity.promise_keeper import PromiseKeeper  # noqa: PLC0415
        from gateway.continuity.promises import Hours  # noqa: PLC0415
        from gateway.web.hours import ClosedDates  # noqa: PLC0415

        office = Hours(
            dict(self.config.web.business_hours),
            self.config.web.timezone,
            ClosedDates(self.config.continuity.closed_dates, self.config.continuity.holiday_country),
        )
        self.promises = PromiseKeeper(self.store, self.service, self.spine, self.bus, office)
        return self.promises

    def _build_web(self) -> Part:
        from gateway.leakage.service import LeakageService  # noqa: PLC0415
        from gateway.web.app import WebServer  # noqa: PLC0415
        from gateway.web.deps import WebDeps  # noqa: PLC0415
        from gateway.web.hours import ClosedDates  # noqa: PLC0415

        click = self._click_to_call if self.voice is not None else None
        deps = WebDeps(
            service=self.service,
            store=self.store,
            bus=self.bus,
            config=self.config.web,
            click_to_call=click,
            spine=self.spine,
            status_sources=self.status_sources(),
            region=self.config.gateway.default_region,
            sms_available=self.config.sms.enabled,
            health=self.health,
            history=self.history,
            continuity=self.continuity,
            promises=self.promises,
            leakage_config=self.config.leakage,
            transcription=self.transcription,
            leakage_warm=True,
            # Leakage deadlines skip the same closed days as the rules' reopening times.
            leakage=LeakageService(
                self.store,
                self.config.leakage,
                dict(self.config.web.business_hours),
                self.config.web.timezone,
                closed=ClosedDates(self.config.continuity.closed_dates, self.config.continuity.holiday_country),
            ),
        )
        self.web = WebServer(deps)
        return self.web

    # -- health ------------------------------------------------------------------------------------------------------

    def health(self) -> list[Health]:
        """Every part's verdict plus the box checks: what the status page and /metrics show."""
        cfg = self.config
        items = [ok("config", "Configuration", f"loaded from {cfg.source}"), self.store.health()]
        if self.sms is not None:
            items.append(self.sms.health())
        else:
            items.append(
                off(
                    "modem",
                    "SMS modem",
                    "SMS is off: texts are neither received nor sent, and nobody is promised a text",
                    "plug in a USB GSM modem and set [sms] enabled = true and sms.device (see udev/README.md)",
                )
            )
        if self.voice is not None:
            items.append(self.voice.health())
        else:
            items.append(
                off(
                    "asterisk",
                    "Asterisk (AMI)",
                    "calls are not tracked: the voice channel is off",
                    "set [voice] enabled = true with the AMI login from Asterisk's manager.conf",
                )
            )
        if self.transcription is not None:
            items.append(self.transcription.health())
        else:
            items.append(
                off(
                    "transcription",
                    "Voicemail transcription",
                    "voicemails are kept as audio only: transcription is off",
                    "set [transcribe] enabled = true and install a speech model",
                )
            )
        if self.continuity is not None:
            items.append(self.continuity.health())
        if self.live_speech is not None:
            items.append(self.live_speech.health())
        items.append(self._bus_health())
        items.append(
            ok("web", "Web console", f"serving {self.web.url}/console")
            if self.web is not None
            else down("web", "Web console", "the web console is not running", "restart the gateway; see its log")
        )
        items.extend(
            (
                self.backups.health() if self.backups is not None else checks.check_backup(cfg.backup_dir),
                checks.check_disk(cfg.data_dir),
                checks.check_clock(),
                checks.check_descriptors(),
            )
        )
        return items

    def _bus_health(self) -> Health:
        """The event bus: a subscriber that falls behind loses its oldest events (screen-pops, live updates)."""
        lossy = [st for st in self.bus.stats() if st.overflow]
        details: dict[str, str | int | float | bool | None] = {
            "published": self.bus.published,
            "dropped": self.bus.overflow_total,
        }
        if lossy:
            names = ", ".join(f"{st.name} ({st.overflow})" for st in lossy)
            return degraded(
                "bus",
                "Live updates",
                f"some listeners fell behind and missed events: {names}",
                "nothing is lost from the timeline (it is in the database); reload the console. If it keeps "
                "happening the box is overloaded: look at the CPU and the Open files card",
                details=details,
            )
        return ok("bus", "Live updates", f"{self.bus.published} events delivered, none dropped", details=details)

    async def sample_history(self, at: float | None = None) -> None:
        """Record one point of each sparkline (modem signal, outbox depth, transcription backlog)."""
        signal_dbm = (
            self.sms.modem_state.signal_dbm if self.sms is not None and self.sms.modem_state.connected else None
        )
        states = await self.store.read(web_sql.outbox_states)
        depth = sum(n for state, n in states.items() if state in ("queued", "sending"))
        backlog = (await self.transcription.snapshot()).backlog if self.transcription is not None else None
        self.history.add("modem_signal_dbm", signal_dbm, at)
        self.history.add("outbox_depth", depth, at)
        self.history.add("transcription_backlog", backlog, at)
        # Kept in the database so the sparklines survive a restart.
        saved = json.dumps(self.history.as_dict(), separators=(",", ":"))
        now = time.time()
        await self.store.write(lambda c: meta.put(c, HISTORY_KEY, saved, now))

    async def _load_history(self) -> None:
        saved = await self.store.read(lambda c: meta.get(c, HISTORY_KEY))
        if saved:
            with contextlib.suppress(ValueError):
                log.debug("status history: %d points loaded", self.history.load(json.loads(saved)))

    async def _sample_forever(self) -> None:
        while True:
            try:
                await self.sample_history()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not record the status history")
            await asyncio.sleep(self.history.step)

    # -- status ------------------------------------------------------------------------------------------------------

    async def _gateway_status(self) -> Mapping[str, Any]:
        return {
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0,
            "bus_published": self.bus.published,
            "bus_overflow": self.bus.overflow_total,
            "bus_subscribers": _plain(self.bus.stats()),
            "recent_errors": list(RECENT.records)[-20:],
        }

    async def _store_status(self) -> Mapping[str, Any]:
        backups = sorted(self.config.backup_dir.glob("*.db"), key=lambda p: p.stat().st_mtime)
        return {
            "path": str(self.store.path),
            "backup_dir": str(self.config.backup_dir),
            "last_backup": backups[-1].name if backups else None,
            "last_backup_at": backups[-1].stat().st_mtime if backups else None,
            "writer": _plain(self.store.stats),
        }

    async def _modem_status(self) -> Mapping[str, Any]:
        if self.sms is None:
            return {}
        state = self.sms.link_state
        return {
            "up": state.up,
            "since": state.since,
            "last_error": state.last_error,
            **_plain(self.sms.modem_state),
        }

    async def _voice_status(self) -> Mapping[str, Any]:
        if self.voice is None:
            return {}
        plain: Mapping[str, Any] = _plain(self.voice.snapshot())
        return plain

    async def _transcription_status(self) -> Mapping[str, Any]:
        if self.transcription is None:
            return {}
        plain: Mapping[str, Any] = _plain(await self.transcription.status())
        return plain

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every part in order; on failure stop what was started and re-raise."""
        self.started_at = time.time()
        try:
            await self._start_part("store", self.store)
            await self._start_part("bus", self.bus)
            if self.backups is not None:
                await self._start_part("backups", self.backups)
            for name, part in self._build_channels():
                await self._start_part(name, part)
            if cfg_continuity_enabled(self.config):
                await self._start_part("continuity", self._build_continuity())
            await self._start_part("promises", self._build_promises())
            await self._start_part("web", self._build_web())
            await self._load_history()
            self._sampler = asyncio.create_task(self._sample_forever(), name="status-history")
        except BaseException:
            await self.stop()
            raise
        frozen = freeze_startup_objects()
        log.info("gateway started: %s", ", ".join(name for name, _ in self._started))
        log.debug("%d objects loaded at start moved out of the garbage collector's scans", frozen)

    async def _start_part(self, name: str, part: Part) -> None:
        log.debug("starting %s", name)
        await part.start()
        self._started.append((name, part))

    async def stop(self) -> None:
        """Stop started parts in reverse order within the shutdown budget; cancel anything left behind."""
        budget = self.config.gateway.shutdown_timeout
        deadline = time.monotonic() + budget
        await cancel_and_wait(self._sampler, owner="gateway")
        self._sampler = None
        while self._started:
            name, part = self._started.pop()
            remaining = max(0.5, deadline - time.monotonic())
            try:
                async with asyncio.timeout(remaining):
                    await part.stop()
                log.debug("stopped %s", name)
            except TimeoutError:
                log.error("%s did not stop within %.1f s; abandoning it", name, remaining)  # noqa: TRY400 - no traceback to show
            except Exception:
                log.exception("%s failed while stopping", name)
        await _cancel_leftovers()

    def request_stop(self) -> None:
        """Ask ``run`` to stop (signal handlers call this)."""
        self._stopping.set()

    async def run(self) -> None:
        """Start, wait for SIGTERM/SIGINT, stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        before, after = raise_open_files_limit()
        log.info("open-files limit: %d (was %d)", after, before)
        pinger: asyncio.Task[None] | None = None
        try:
            await self.start()
            sdnotify.notify("READY=1")
            interval = sdnotify.watchdog_interval()
            if interval is not None:
                log.info("systemd watchdog: pinging every %.1f s", interval)
                pinger = asyncio.create_task(sdnotify.watchdog(interval), name="systemd-watchdog")
            await self._stopping.wait()
            log.info("stop requested; shutting down")
            sdnotify.notify("STOPPING=1")
        finally:
            await sdnotify.stop_task(pinger)
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)


def cfg_continuity_enabled(config: Config) -> bool:
    """True when the continuity rules run."""
    return bool(config.continuity.enabled)


async def _cancel_leftovers() -> None:
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if not leftovers:
        return
    for task in leftovers:
        log.warning("cancelling task left behind at shutdown: %s", task.get_name())
    await cancel_and_wait(*leftovers, timeout=2.0, owner="gateway")


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (before, after).

    Every chat visitor, staff console, AGI call and the modem hold a descriptor; the usual soft limit of 1024 is far
    below what the hard limit (and systemd's ``LimitNOFILE``) allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as err:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, err)
        return soft, soft
    return soft, target
