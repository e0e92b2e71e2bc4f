"""The SMS channel: modem lifecycle, inbound polling, outbox sending, health on the bus.

Theory of operation: :meth:`SmsChannel.start` starts two owned tasks: the inbound pipeline (works from the store only,
so it runs even while the modem is away) and the modem supervisor, which runs :meth:`_session` under
:func:`gateway.supervise.reconnect_loop`. One session is one open port:

1. find the device (a path or a glob, because a replugged modem may come back as another ttyUSB), open it, and
   initialise: echo off, ``+CMEE=1``, PDU mode, the profile's quirks, ``+CNMI`` with status reports; the SIM PIN is
   tried at most once per process, so a wrong PIN can never lock the SIM; registration, signal, operator,
   IMEI/IMSI/ICCID;
2. run, in one task group, the poller (``AT+CMGL=4`` per storage on every ``+CMTI`` and every ``poll_interval``: store
   the PDUs durably, then ``AT+CMGD`` exactly those indexes), the outbox worker and the prober (``AT+CSQ``/``AT+CREG?``
   every ``probe_interval``).

A command timeout means a stalled modem, a read error or EOF means an unplug: either ends the session, the task group
cancels its siblings, the port is closed, and the supervisor reopens it with backoff. So a modem that stops answering is
reopened within ``probe_interval + command_timeout`` (25 s by default).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import time
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.channels.sms.config import SmsConfig
from gateway.channels.sms.health import modem_verdict
from gateway.channels.sms.inbound import InboundPipeline
from gateway.channels.sms.link import LinkLostError, SerialLink, find_iccid
from gateway.channels.sms.outbound import OutboxWorker
from gateway.channels.sms.profiles import PROFILES_DIR, ModemProfile, load_profile
from gateway.domain.bus import Bus, Subscription
from gateway.domain.events import ModemHealth, OutboxQueued, SmsStorageWarning
from gateway.domain.ports import ConversationPort, StorePort
from gateway.errors import ConfigError, TransientError
from gateway.protocols import at
from gateway.protocols import pdu as pducodec
from gateway.supervise import LinkState, TaskSet, reconnect_loop
from gateway.values import Health

log = logging.getLogger(__name__)


class SimPinError(ConfigError):
    """The SIM needs a PIN we do not have, or rejected the one we tried (never retried)."""


class SmsChannel:
    """The SMS channel of the gateway. ``await start()``, ``await stop()``."""

    def __init__(
        self,
        config: SmsConfig,
        store: StorePort,
        service: ConversationPort,
        bus: Bus,
        *,
        region: str = "US",
        profile: ModemProfile | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        if profile is None:
            directory = Path(config.profiles_dir) if config.profiles_dir else PROFILES_DIR
            profile = load_profile(config.profile, directory)
        self.profile = profile
        self.outbox = OutboxWorker(
            store,
            bus,
            send_timeout=config.send_timeout,
            retry_base=config.retry_base,
            retry_cap=config.retry_cap,
            max_attempts=config.max_attempts,
            status_reports=config.status_reports,
            validity_minutes=config.validity_minutes,
        )
        self.inbound = InboundPipeline(
            store,
            service,
            bus,
            policy=config.optout_policy(),
            multipart_timeout=config.multipart_timeout,
            region=region,
            on_status_report=self.outbox.status_report,
        )
        self.link_state = LinkState("modem")
        self.modem_state = ModemHealth(device=None, connected=False, connected_since=None, profile=self.profile.name)
        self.modem_id = "unknown"
        self.link: SerialLink | None = None
        self._tasks = TaskSet("sms")
        self._poll_now = asyncio.Event()
        self._pin_tried = False
        self._pin_ok = False
        self._pin_rejected: str | None = None
        self._sub: Subscription | None = None
        self.sessions = 0
        self.storage_usage: dict[str, tuple[int, int]] = {}
        self._storage_full: set[str] = set()
        self.polls = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover interrupted sends, then start the pipeline and the modem supervisor."""
        await self.outbox.recover()
        self._sub = self.bus.subscribe("sms-outbox", maxsize=100, types=(OutboxQueued,))
        self._spawn(self.inbound.run(), "sms-inbound")
        self._spawn(self._watch_outbox(self._sub), "sms-outbox-wake")
        self._spawn(
            reconnect_loop("modem", self._session, base=0.5, cap=30.0, state=self.link_state),
            "sms-modem",
        )

    def health(self) -> Health:
        """The modem's verdict for the status page, ``gateway doctor`` and /metrics."""
        st = self.link_state
        return modem_verdict(
            self.modem_state,
            configured_device=self.config.device,
            up=st.up and self.modem_state.connected,
            since=st.since,
            last_error=self.modem_state.last_error or st.last_error,
            pin_problem=self._pin_rejected,
            storage_warn_percent=self.config.sim_warn_percent,
        )

    async def stop(self) -> None:
        """Cancel every task (the port is closed by the session on its way out)."""
        if self._sub is not None:
            self._sub.close()
        # Bounded: a task stuck on a vanished modem must not hold up the daemon's exit.
        await self._tasks.cancel_all(timeout=10.0)
        self.outbox.flush_reports()  # the store, stopped after the channels, writes them before it closes
        if self.link is not None:
            self.link.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.spawn(coro, name)

    def poll_now(self) -> None:
        """Read the SIM now (used on +CMTI and by tests)."""
        self._poll_now.set()

    async def _watch_outbox(self, sub: Subscription) -> None:
        async for event in sub:
            match event:
                case OutboxQueued(channel="sms"):
                    self.outbox.wake()

    # -- one session -----------------------------------------------------------------------------

    def _find_device(self) -> str:
        pattern = self.config.device
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise TransientError(
                    f"no device matches sms.device = {pattern!r}: plug the modem in, or fix the pattern"
                )
            return matches[0]
        if not os.path.exists(pattern):
            raise TransientError(
                f"sms.device = {pattern!r} does not exist: plug the modem in, or check the udev rule (udev/README.md)"
            )
        return pattern

    async def _session(self, state: LinkState) -> None:
        if self._pin_rejected is not None:
            raise SimPinError(self._pin_rejected)
        device = self._find_device()
        link = SerialLink(device, baudrate=self.config.baudrate, on_unsolicited=self._unsolicited)
        self.sessions += 1
        await link.open()
        self.link = link
        was_up = False
        try:
            await self._initialise(link)
            state.mark_up()
            was_up = True
            self._set_health(connected=True, connected_since=time.time(), last_error=None)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._poller(link))
                tg.create_task(self.outbox.run(link))
                tg.create_task(self._prober(link))
        except BaseExceptionGroup as group:
            first = _leaf(group)
            self._set_health(connected=False, last_error=str(first))
            raise first from None
        except Exception as err:
            self._set_health(connected=False, last_error=str(err))
            raise
        finally:
            link.close()
            self.link = None
            if was_up:
                self._set_health(connected=False, reopen_count=self.modem_state.reopen_count + 1)

    async def _initialise(self, link: SerialLink) -> None:
        t = self.config.command_timeout
        # A modem left mid-prompt by a previous session: ESC cancels, a bare CR flushes the line.
        await link.resync(quiet=0.3, limit=3.0)
        await link.command("ATE0", timeout=t)
        await link.command("AT+CMEE=1", timeout=t)
        await self._pin(link)
        await link.command("AT+CMGF=0", timeout=t)
        for quirk in self.profile.init_quirks:
            try:
                await link.command(quirk, timeout=t)
            except at.ModemCommandError as err:
                log.info("modem %s: quirk %s not accepted (%s)", link.device, quirk, err.words)
        cnmi = self.profile.cnmi
        if not self.config.status_reports:
            cnmi = cnmi.rsplit(",", 2)[0] + ",0,0"
        await link.command(cnmi, timeout=t)
        imei = _first(await _try(link, "AT+CGSN", t))
        imsi = _first(await _try(link, "AT+CIMI", t))
        iccid = find_iccid(await _try(link, self.profile.iccid_command, t))
        self.modem_id = imsi or iccid or imei or link.device
        self._set_health(device=link.device, imei=imei, imsi=imsi, iccid=iccid)
        await self._probe(link)
        log.info("modem %s: ready (%s)", link.device, self.profile.name)

    async def _pin(self, link: SerialLink) -> None:
        lines = await link.command("AT+CPIN?", timeout=self.config.command_timeout)
        status = next((f[0] for f in (at.field(x, "+CPIN") for x in lines) if f), "READY")
        if status.upper() == "READY":
            return
        if status.upper() != "SIM PIN":
            self._pin_rejected = f"the SIM asks for {status!r}; unlock it in a phone, then restart the gateway"
            raise SimPinError(self._pin_rejected)
        pin = self.config.pin.reveal()
        if not pin:
            self._pin_rejected = "the SIM needs a PIN: set sms.pin, then restart the gateway"
            raise SimPinError(self._pin_rejected)
        if self._pin_tried and not self._pin_ok:
            # One attempt without a clear answer (timeout, unplug): never a second one.
            self._pin_rejected = (
                "the SIM asks for its PIN again after an attempt with no clear answer; not "
                "retrying so the SIM cannot be locked. Check the SIM, then restart the gateway"
            )
            raise SimPinError(self._pin_rejected)
        self._pin_tried = True
        try:
            await link.command(f'AT+CPIN="{pin}"', timeout=self.config.command_timeout)
        except at.ModemCommandError as err:
            self._pin_rejected = (
                f"the SIM rejected sms.pin ({err.words}); it was tried once and will not be tried "
                "again, so the SIM cannot be locked. Fix sms.pin and restart the gateway"
            )
            raise SimPinError(self._pin_rejected) from err
        self._pin_ok = True
        for _ in range(20):  # the SIM needs a moment after the PIN
            lines = await link.command("AT+CPIN?", timeout=self.config.command_timeout)
            if any("READY" in x.upper() for x in lines):
                return
            await asyncio.sleep(0.5)
        raise TransientError("the SIM accepted the PIN but did not become ready")

    # -- tasks of a session ----------------------------------------------------------------------

    async def _poller(self, link: SerialLink) -> None:
        while True:
            await self.poll_once(link)
            self._poll_now.clear()
            try:
                async with asyncio.timeout(self.config.poll_interval):
                    await self._poll_now.wait()
            except TimeoutError:
                pass

    async def poll_once(self, link: SerialLink) -> int:
        """Read every storage: store the PDUs, then delete exactly those indexes. Returns new
        parts."""
        self.polls += 1
        t = self.config.command_timeout
        new = 0
        for storage in self.profile.storages:
            try:
                usage = await link.command(f'AT+CPMS="{storage}"', timeout=t)
            except at.ModemCommandError as err:
                log.debug("modem %s: storage %s unavailable (%s)", link.device, storage, err.words)
                continue
            self._storage_usage(storage, usage)
            try:
                lines = await link.command("AT+CMGL=4", timeout=max(t, 30.0))
            except at.ModemCommandError as err:  # e.g. SIM busy right after boot: next round
                log.warning("modem %s: cannot list %s (%s)", link.device, storage, err.words)
                continue
            listed, problems = at.parse_cmgl(lines)
            for problem in problems:
                log.warning("modem %s: %s", link.device, problem)
            # Received messages only (stat 0 unread, 1 read); drafts and sent copies (2, 3) that
            # someone keeps on the SIM are none of our business and stay where they are.
            stored = [item for item in listed if item.stat in (0, 1)]
            if not stored:
                continue
            new += await self.inbound.store_listing(self.modem_id, storage, stored)
            for item in stored:  # only what is now durably stored, one index at a time
                try:
                    await link.command(f"AT+CMGD={item.index}", timeout=t)
                except at.ModemCommandError as err:
                    # Stored already; if it stays on the SIM the next listing dedupes it.
                    log.warning(
                        "modem %s: could not delete %s index %d (%s)",
                        link.device,
                        storage,
                        item.index,
                        err.words,
                    )
            usage = await link.command(f'AT+CPMS="{storage}"', timeout=t)
            self._storage_usage(storage, usage)
        return new

    def _storage_usage(self, storage: str, lines: list[str]) -> None:
        """Record one storage's usage; warn once when it crosses the threshold, not every round."""
        for line in lines:
            pairs = at.parse_cpms(line)
            if not pairs:
                continue
            used, total = pairs[0]
            self.storage_usage[storage] = (used, total)
            percent = int(100 * used / total) if total else 0
            worst = max(int(100 * u / t) if t else 0 for u, t in self.storage_usage.values())
            sim = self.storage_usage.get("SM", (used, total))
            self._set_health(sim_used=sim[0], sim_total=sim[1], storage_percent=worst)
            if percent > self.config.sim_warn_percent and storage not in self._storage_full:
                self._storage_full.add(storage)
                log.warning(
                    "modem: message storage %s is %d%% full (%d of %d); it is being emptied",
                    storage,
                    percent,
                    used,
                    total,
                )
                self.bus.publish(SmsStorageWarning(storage, used, total))
            elif percent <= self.config.sim_warn_percent and storage in self._storage_full:
                self._storage_full.discard(storage)
                log.info("modem: message storage %s is back to %d%%", storage, percent)
            return

    async def _prober(self, link: SerialLink) -> None:
        while True:
            await asyncio.sleep(self.config.probe_interval)
            await self._probe(link)

    async def _probe(self, link: SerialLink) -> None:
        t = self.config.command_timeout
        dbm = self.modem_state.signal_dbm
        for line in await link.command("AT+CSQ", timeout=t):
            if line.startswith("+CSQ"):
                dbm = at.parse_csq(line)[0]
        reg = self.modem_state.registration
        for line in await link.command("AT+CREG?", timeout=t):
            f = at.field(line, "+CREG")
            if f is not None:
                reg = at.parse_creg(line.split(":", 1)[1], solicited=True)
        operator = self.modem_state.operator
        for line in await _try(link, "AT+COPS?", t):
            f = at.field(line, "+COPS")
            if f is not None and len(f) >= 3:
                operator = f[2]
        self._set_health(
            signal_dbm=dbm,
            registration=reg,
            registration_text=at.REGISTRATION_WORDS.get(reg, None) if reg is not None else None,
            operator=operator,
            garbage_lines=link.garbage_lines,
        )

    # -- unsolicited -----------------------------------------------------------------------------

    def _unsolicited(self, urc: at.Unsolicited) -> None:
        if urc.name in ("+CMTI", "+CDSI"):
            self.poll_now()
        elif urc.name == "+CDS" and urc.pdu:
            try:
                report = pducodec.decode(urc.pdu)
            except pducodec.PduDecodeError as err:
                log.warning("modem: unreadable status report ignored: %s", err)
                return
            if isinstance(report, pducodec.SmsStatusReport):
                self.outbox.status_report_soon(report)
        elif urc.name == "+CREG":
            reg = at.parse_creg(urc.args, solicited=False)
            if reg is not None:
                self._set_health(registration=reg, registration_text=at.REGISTRATION_WORDS.get(reg))
        elif urc.name in ("RING", "+CLIP"):
            log.debug("modem: voice call indication ignored (%s)", urc.name)
        else:
            log.debug("modem: unsolicited %s %s", urc.name, urc.args[:40])

    def _set_health(self, **changes: object) -> None:
        if "last_error" not in changes and self.link_state.last_error and not self.link_state.up:
            changes["last_error"] = self.link_state.last_error
        new = replace(self.modem_state, **changes)  # type: ignore[arg-type]
        if new != self.modem_state:
            self.modem_state = new
            self.bus.publish(new)


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error inside a (nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _leaf(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def _try(link: SerialLink, cmd: str, timeout: float) -> list[str]:  # noqa: ASYNC109 - a per-command limit is part of the AT contract
    """A command whose failure only means "this modem does not know it"."""
    try:
        return await link.command(cmd, timeout=timeout)
    except at.ModemCommandError:
        return []


def _first(lines: list[str]) -> str | None:
    for line in lines:
        text = line.strip()
        if text and text[0].isalnum():
            return text
    return None


__all__ = ["ConfigError", "LinkLostError", "SimPinError", "SmsChannel"]
