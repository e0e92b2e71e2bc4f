"""The one owner of the modem's serial port: framing, one command at a time, per-command timeouts.

Theory of operation: :class:`SerialLink` opens the port with pyserial (non-blocking) and registers its file descriptor
with the event loop (``loop.add_reader``); every byte read goes through the sans-IO
:class:`~gateway.protocols.at.ATParser`. Unsolicited results go to a callback at once; response lines and the final
result go to the single command in flight. Commands are serialised by a lock, so exactly one command (or one ``AT+CMGS``
with its prompt and PDU) is in the modem at a time. A read error, an EOF or the device vanishing marks the link lost:
the command in flight fails with :class:`LinkLostError` and every later call fails at once, and the owner reopens the
port. A command that gets no final result in time raises :class:`ModemTimeoutError`; the owner treats that as a stalled
modem and reopens too, so a late answer can never be mistaken for the answer to the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import serial

from gateway.errors import TransientError
from gateway.protocols import at

log = logging.getLogger(__name__)


class LinkLostError(TransientError):
    """The serial device went away (unplug, I/O error) or was closed."""


class ModemTimeoutError(TransientError):
    """The modem did not finish a command in time: it is treated as stalled and reopened."""


class SendOutcomeUnknownError(TransientError):
    """The PDU went to the modem but no result came back: the message may or may not have been
    sent."""


@dataclass
class _InFlight:
    command: str
    done: asyncio.Future[at.FinalResult]
    prompt: asyncio.Future[None] | None = None
    lines: list[str] = field(default_factory=list)


class SerialLink:
    """An open AT port. Create with :meth:`open`, finish with :meth:`close`."""

    def __init__(
        self,
        device: str,
        *,
        baudrate: int = 115200,
        on_unsolicited: Callable[[at.Unsolicited], None] | None = None,
        max_line: int = 8192,
    ) -> None:
        self.device = device
        self.baudrate = baudrate
        self.on_unsolicited = on_unsolicited
        self.parser = at.ATParser(max_line=max_line)
        self.garbage_lines = 0
        self.bytes_in = 0
        self.last_rx = time.monotonic()
        self.first_cmgs_byte_at: float | None = None
        self.pdu_in_modem = False  # a PDU was written and its result has not come back yet
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._lock = asyncio.Lock()
        self._inflight: _InFlight | None = None
        self._lost: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Open the device; raises :class:`LinkLostError` with the reason if it cannot be opened."""
        self._loop = asyncio.get_running_loop()
        try:
            ser = serial.Serial()
            ser.port = self.device
            ser.baudrate = self.baudrate
            ser.timeout = 0
            ser.write_timeout = 0
            ser.exclusive = True
            ser.open()
        except (serial.SerialException, OSError, ValueError) as err:
            raise LinkLostError(f"cannot open modem port {self.device}: {err}") from err
        self._serial = ser
        self._fd = int(ser.fileno())
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)
        log.debug("modem %s: port open", self.device)

    @property
    def alive(self) -> bool:
        """True while the port is open and has not failed."""
        return self._fd is not None and self._lost is None

    def close(self) -> None:
        """Close the port (idempotent); a command in flight fails with :class:`LinkLostError`."""
        self._mark_lost(LinkLostError(f"modem port {self.device} closed"))
        if self._fd is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
        self._serial = None
        self._fd = None

    # -- reading ---------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError as err:
            self._mark_lost(LinkLostError(f"modem port {self.device} failed: {err}"))
            self._stop_reading()
            return
        if not data:
            self._mark_lost(LinkLostError(f"modem port {self.device} vanished (end of file)"))
            self._stop_reading()
            return
        self.bytes_in += len(data)
        self.last_rx = time.monotonic()
        for event in self.parser.feed(data):
            self._dispatch(event)

    def _stop_reading(self) -> None:
        if self._fd is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)

    def _dispatch(self, event: at.ATEvent) -> None:  # noqa: PLR0912 - one branch per event type
        inflight = self._inflight
        if isinstance(event, at.Unsolicited):
            if self.on_unsolicited is not None:
                try:
                    self.on_unsolicited(event)
                except Exception:  # a handler bug must not kill the reader
                    log.exception("modem %s: unsolicited handler failed", self.device)
        elif isinstance(event, at.Garbage):
            self.garbage_lines += 1
            log.debug("modem %s: ignored %s: %r", self.device, event.reason, event.raw[:32])
        elif isinstance(event, at.FinalResult):
            if inflight is not None and not inflight.done.done():
                inflight.done.set_result(event)
            else:
                log.debug("modem %s: final result %s with no command in flight", self.device, event)
        elif isinstance(event, at.Prompt):
            if inflight is not None and inflight.prompt is not None and not inflight.prompt.done():
                inflight.prompt.set_result(None)
        elif isinstance(event, at.ResponseLine):
            if inflight is not None:
                if len(inflight.lines) < 10_000:
                    inflight.lines.append(event.text)
            else:
                log.debug("modem %s: stray line %r", self.device, event.text[:80])

    def _mark_lost(self, err: BaseException) -> None:
        if self._lost is None:
            self._lost = err
        inflight = self._inflight
        if inflight is not None:
            for fut in (inflight.done, inflight.prompt):
                if fut is not None and not fut.done():
                    fut.set_exception(err)

    # -- writing ---------------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._lost is not None:
                raise LinkLostError(str(self._lost)) from self._lost
            assert self._fd is not None
            try:
                n = os.write(self._fd, view)
                view = view[n:]
            except BlockingIOError:
                await asyncio.sleep(0.005)
            except OSError as err:
                self._mark_lost(LinkLostError(f"modem port {self.device} failed: {err}"))
                raise LinkLostError(f"writing to modem port {self.device} failed: {err}") from err

    def _check(self) -> None:
        if self._fd is None:
            raise LinkLostError(f"modem port {self.device} is not open")
        if self._lost is not None:
            raise LinkLostError(str(self._lost)) from self._lost

    async def _await(
        self,
        fut: asyncio.Future[at.FinalResult],
        cmd: str,
        timeout: float,  # noqa: ASYNC109 - a per-command limit is part of the AT contract
    ) -> at.FinalResult:
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError as err:
            raise ModemTimeoutError(f"modem {self.device} gave no answer to {cmd} within {timeout:g} s") from err

    async def resync(self, *, quiet: float = 0.3, limit: float = 3.0) -> None:
        """Cancel a half-finished prompt (ESC), end any partial line (CR), and wait until the modem
        has been quiet for ``quiet`` seconds, so no late answer is taken for the next command's."""
        async with self._lock:
            self._check()
            await self._write(at.ESC + b"\r")
            start = time.monotonic()
            await asyncio.sleep(quiet)
            while time.monotonic() - self.last_rx < quiet and time.monotonic() - start < limit:  # noqa: ASYNC110 - polling the receive clock; no event marks silence
                await asyncio.sleep(quiet / 3)
            self.parser = at.ATParser(max_line=self.parser.max_line)

    async def _await_prompt(self, inflight: _InFlight, cmd: str, limit: float) -> None:
        assert inflight.prompt is not None
        waiting: list[asyncio.Future[Any]] = [inflight.prompt, inflight.done]
        try:
            async with asyncio.timeout(limit):
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            with contextlib.suppress(LinkLostError):
                await self._write(at.ESC)
            raise ModemTimeoutError(f"modem {self.device} gave no '> ' prompt for {cmd}") from None
        if inflight.prompt.done():
            inflight.prompt.result()  # raises LinkLostError if the link died
            return
        final = inflight.done.result()
        if not final.ok:
            raise at.error_for(cmd, final)
        raise ModemTimeoutError(f"modem {self.device} answered OK to {cmd} without a prompt")

    # -- commands --------------------------------------------------------------------------------

    async def command(self, cmd: str, *, timeout: float = 10.0) -> list[str]:  # noqa: ASYNC109 - a per-command limit is part of the AT contract
        """Run one AT command; return its response lines. Raises the mapped error on ERROR."""
        async with self._lock:
            self._check()
            assert self._loop is not None
            inflight = _InFlight(cmd, self._loop.create_future())
            self._inflight = inflight
            self.parser.expect(at.response_prefix(cmd))
            try:
                await self._write(at.command(cmd))
                final = await self._await(inflight.done, at.redact(cmd), timeout)
            finally:
                self._inflight = None
                self.parser.expect(None)
                _consume(inflight)
            if not final.ok:
                raise at.error_for(at.redact(cmd), final)
            return inflight.lines

    async def send_pdu(
        self,
        tpdu_length: int,
        pdu_hex: str,
        *,
        timeout: float = 120.0,  # noqa: ASYNC109 - a per-command limit is part of the AT contract
        prompt_timeout: float = 10.0,
    ) -> int:
        """``AT+CMGS`` one PDU; return the message reference the modem assigned.

        Errors before the PDU was written are ordinary (the message did not go out). A timeout or a
        lost
        link after it was written raises :class:`SendOutcomeUnknownError`.
        """
        cmd = f"AT+CMGS={tpdu_length}"
        async with self._lock:
            self._check()
            assert self._loop is not None
            inflight = _InFlight(cmd, self._loop.create_future(), self._loop.create_future())
            self._inflight = inflight
            self.parser.expect("+CMGS")
            written = False
            try:
                if self.first_cmgs_byte_at is None:  # the benchmark resets it per message
                    self.first_cmgs_byte_at = time.perf_counter()
                await self._write(at.command(cmd))
                await self._await_prompt(inflight, cmd, prompt_timeout)
                written = True
                self.pdu_in_modem = True
                await self._write(at.pdu_body(pdu_hex))
                final = await self._await(inflight.done, cmd, timeout)
                self.pdu_in_modem = False
            except (ModemTimeoutError, LinkLostError) as err:
                if written:
                    raise SendOutcomeUnknownError(
                        f"{err}; the PDU had been handed to the modem, so the message may or may not have been sent"
                    ) from err
                raise
            finally:
                self._inflight = None
                self.parser.expect(None)
                _consume(inflight)
            if not final.ok:
                raise at.error_for(cmd, final)
            for line in inflight.lines:
                fields = at.field(line, "+CMGS")
                if fields and fields[0].isdigit():
                    return int(fields[0])
            raise SendOutcomeUnknownError(f"modem {self.device} accepted the message but gave no message reference")


def _consume(inflight: _InFlight) -> None:
    """Retrieve exceptions of futures nobody awaited, so asyncio does not warn about them."""
    for fut in (inflight.done, inflight.prompt):
        if fut is not None and fut.done() and not fut.cancelled():
            fut.exception()


_ICCID = re.compile(r"([0-9]{18,22}F?)")


def find_iccid(lines: list[str]) -> str | None:
    """The ICCID in whatever form the vendor prints it (``+CCID:``, ``^ICCID:``, bare digits)."""
    for line in lines:
        m = _ICCID.search(line)
        if m:
            return m.group(1)
    return None
