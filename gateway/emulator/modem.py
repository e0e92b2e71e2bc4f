"""A GSM modem on a pseudo-terminal, speaking 3GPP TS 27.005/27.007 in PDU mode.

Theory of operation: :meth:`ModemEmulator.start` opens a pty pair (``os.openpty()``), puts the slave in raw mode and
(optionally) points a symlink at it, so a driver opens it exactly like ``/dev/ttyUSB0``. One thread owns the master
side: it reads command lines ending in CR, answers them the way real modems do (echo until ``ATE0``,
``OK``/``ERROR``/``+CMS ERROR``, the ``> `` prompt of ``AT+CMGS``, ``Ctrl-Z`` to send), and writes unsolicited codes
(``+CMTI``, ``+CDS``, ``RING``, vendor noise) queued by the scripting methods. The scripting methods may be called from
any thread (tests, the control socket): they take the emulator's lock, change the SIM or the fault settings, and queue
output for the thread to write.

Faults are states, not special code paths in the driver's favour: a hang makes the thread read and drop input without
answering; an unplug closes both pty ends and removes the symlink (the device vanishes); a replug opens a new pty, maybe
under a new link name, and boots again with the profile's boot noise. A full SIM leaves new messages "in the network"
until a deletion frees a slot, as a real SMSC retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import heapq
import itertools
import logging
import os
import random
import re
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.channels.sms.profiles import ModemProfile, load_profile
from gateway.protocols import pdu as pducodec

log = logging.getLogger(__name__)

_CTRL_Z = 0x1A
_ESC = 0x1B


@dataclass(frozen=True)
class SentMessage:
    """One PDU the driver sent with ``AT+CMGS`` and the reference the emulator gave it."""

    reference: int
    recipient: str
    text: str
    pdu: str
    concat: pducodec.Concat | None
    status_report: bool
    at: float


@dataclass
class _Slot:
    stat: int  # 0 received unread, 1 received read, 2 stored unsent, 3 stored sent
    pdu: str


class ModemEmulator:
    """An emulated USB GSM modem. ``start()`` it, open :attr:`path` (or the link), script faults."""

    def __init__(
        self,
        profile: ModemProfile | str = "generic",
        *,
        link: str | Path | None = None,
        sim_pin: str | None = None,
        command_delay: float = 0.0,
        send_delay: float = 0.0,
        status_report_delay: float | None = 0.2,
        own_number: str = "+15550001111",
        seed: int | None = None,
    ) -> None:
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        ident = self.profile.emulator
        self.link = Path(link) if link else None
        self.sim_pin = sim_pin
        self.command_delay = command_delay
        self.send_delay = send_delay
        self.status_report_delay = status_report_delay
        self.own_number = own_number
        self.imei = "867530900012345"
        self.imsi = "001010123456789"
        self.iccid = "89000012345678901234"
        self.operator = "Gateway Test Network"
        self.rssi = 20
        self.registration = 1
        self.capacity = {"SM": ident.sm_capacity, "ME": ident.me_capacity}
        self.index_base = 0 if ident.manufacturer.lower() == "huawei" else 1
        self.slots: dict[str, dict[int, _Slot]] = {"SM": {}, "ME": {}}
        self.sent: list[SentMessage] = []
        self.deleted: list[tuple[str, int]] = []
        self.commands: list[str] = []
        self.delete_all_count = 0
        # Called as on_delete(storage, index, pdu) just before a message leaves the storage.
        self.on_delete: Callable[[str, int, str], None] | None = None
        self.pin_attempts = 0
        self.boots = 0
        self._rand = random.Random(seed)  # noqa: S311 - test noise, not cryptography
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._inbuf = bytearray()
        self._out = bytearray()
        self._in_pdu: int | None = None  # expected TPDU length while collecting after the prompt
        self._hung_until: float = 0.0
        self._send_failures: list[int] = []
        self._command_failures: list[tuple[str, int]] = []
        self._command_silences: list[tuple[str, float]] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._network_pending: list[str] = []
        self._concat_ref = self._rand.randrange(256)
        self._mr = self._rand.randrange(256)
        self._reset_settings()

    # -- lifecycle -------------------------------------------------------------------------------

    def _reset_settings(self) -> None:
        self.echo = True
        self.cmee = 0
        self.cmgf = 0
        self.cnmi = [0, 0, 0, 0, 0]
        self.creg_n = 0
        self.mem = ["SM", "SM", "SM"]
        self.pin_ready = self.sim_pin is None

    @property
    def path(self) -> str:
        """The pty slave device of the current plug (changes on every replug)."""
        if self._path is None:
            raise RuntimeError("the emulated modem is unplugged")
        return self._path

    @property
    def plugged(self) -> bool:
        """True while the device exists."""
        return self._master is not None

    def start(self) -> None:
        """Plug the modem in and start answering."""
        self._plug()
        self._thread = threading.Thread(target=self._run, name="modem-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Unplug and stop the thread."""
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._unplug_locked()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> ModemEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _plug(self) -> None:
        with self._lock:
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._master, self._slave = master, slave
            self._path = os.ttyname(slave)
            self._inbuf.clear()
            self._out.clear()
            self._in_pdu = None
            self._hung_until = 0.0
            self._reset_settings()
            self.boots += 1
            if self.link is not None:
                self.link.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    self.link.unlink()
                self.link.symlink_to(self._path)
            for line in self.profile.boot_noise:
                self._urc(line)
        log.info("emulated %s plugged in at %s", self.profile.name, self._path)
        self._wake()

    def _unplug_locked(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._path = None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    # -- scripting (any thread) -----------------------------------------------------------------

    def deliver(
        self,
        sender: str,
        text: str,
        *,
        order: list[int] | None = None,
        drop: tuple[int, ...] = (),
        duplicate: tuple[int, ...] = (),
        ref_bits: int = 8,
        timestamp: float | None = None,
    ) -> int:
        """An SMS arrives from the network (split into parts as a phone would).

        ``order`` lists part numbers (1-based) in arrival order; ``drop`` parts never arrive;
        ``duplicate`` parts arrive twice. Returns the number of parts the message has.
        """
        with self._lock:
            self._concat_ref = (self._concat_ref + 1) & 0xFFFF
            parts = pducodec.encode_deliver(
                sender,
                text,
                timestamp=time.time() if timestamp is None else timestamp,
                concat_ref=self._concat_ref,
                ref_bits=ref_bits,
            )
            seqs = order or list(range(1, len(parts) + 1))
            for seq in seqs:
                if seq in drop:
                    continue
                for _ in range(2 if seq in duplicate else 1):
                    self._receive(parts[seq - 1].hex)
            return len(parts)

    def deliver_pdu(self, pdu_hex: str) -> None:
        """A raw PDU arrives (for malformed or foreign-phone messages)."""
        with self._lock:
            self._receive(pdu_hex)

    def store_draft(self, recipient: str, text: str, storage: str = "SM") -> int:
        """Someone saved an outgoing message on the SIM (stat 2, "stored unsent"). Returns its index."""
        with self._lock:
            index = self._next_index(storage)
            self.slots[storage][index] = _Slot(2, pducodec.encode_submit(recipient, text)[0].hex)
            return index

    def status_report(self, reference: int, status: int = 0, recipient: str | None = None) -> None:
        """The network reports on message ``reference`` (``+CDS``)."""
        with self._lock:
            if recipient is None:
                match = [s for s in self.sent if s.reference == reference]
                recipient = match[-1].recipient if match else "+15550000000"
            now = time.time()
            rep = pducodec.encode_status_report(reference, recipient, status, timestamp=now - 1, discharge=now)
            if self.cnmi[3] >= 1:
                self._emit(f"\r\n+CDS: {rep.tpdu_length}\r\n{rep.hex}\r\n".encode())

    def fail_next_send(self, code: int, count: int = 1) -> None:
        """The next ``count`` sends end in ``+CMS ERROR: code``."""
        with self._lock:
            self._send_failures.extend([code] * count)

    def fail_next_command(self, prefix: str, code: int, count: int = 1) -> None:
        """The next ``count`` commands starting with ``prefix`` (e.g. ``AT+CMGD``) end in
        ``+CMS ERROR: code``."""
        with self._lock:
            self._command_failures.extend([(prefix.upper(), code)] * count)

    def silence_next_command(self, prefix: str, seconds: float) -> None:
        """The next command starting with ``prefix`` gets no answer, and the modem then hangs for ``seconds``
        (a modem that stalls in the middle of unlocking the SIM, say)."""
        with self._lock:
            self._command_silences.append((prefix.upper(), seconds))

    def hang(self, seconds: float | None = None) -> None:
        """Stop answering (input is swallowed) for ``seconds``, or until :meth:`resume`."""
        with self._lock:
            self._hung_until = float("inf") if seconds is None else time.monotonic() + seconds

    def resume(self) -> None:
        """End a hang."""
        with self._lock:
            self._hung_until = 0.0
        self._wake()

    def garbage(self, nbytes: int = 256) -> None:
        """A burst of line noise, including non-UTF-8 bytes and stray CR/LF."""
        with self._lock:
            self._emit(bytes(self._rand.randrange(256) for _ in range(nbytes)) + b"\r\n")

    def noise(self, count: int = 3) -> None:
        """Vendor unsolicited reports (``^RSSI``, ``^MODE``, ``+QIND``...), as the profile makes
        them."""
        with self._lock:
            lines = list(self.profile.vendor_noise) or ["^RSSI:{rssi}"]
            for i in range(count):
                self._urc(lines[i % len(lines)].replace("{rssi}", str(self.rssi)))

    def fill_sim(self, storage: str = "SM") -> None:
        """Fill every free slot with an old, already-read message (a SIM nobody emptied)."""
        with self._lock:
            for i in range(self._free(storage)):
                pdu = pducodec.encode_deliver("+15550009999", "old message", timestamp=time.time() - 86400 + 60 * i)[
                    0
                ].hex
                self.slots[storage][self._next_index(storage)] = _Slot(1, pdu)

    def set_capacity(self, storage: str, capacity: int) -> None:
        """Resize a message storage (a bigger SIM, or a modem without ``ME`` storage: 0)."""
        with self._lock:
            if storage not in self.capacity or capacity < len(self.slots[storage]):
                raise ValueError(f"cannot make {storage} hold {capacity} messages")
            self.capacity[storage] = capacity

    def unplug(self) -> None:
        """The USB device vanishes: both pty ends close, the link disappears."""
        with self._lock:
            self._unplug_locked()
        log.info("emulated %s unplugged", self.profile.name)
        self._wake()

    def replug(self, link: str | Path | None = None) -> None:
        """The device comes back (a new pty; ``link`` renames it, as a new ttyUSB number would)."""
        with self._lock:
            if self._master is not None:
                self._unplug_locked()
            if link is not None:
                self.link = Path(link)
        self._plug()

    def ring(self, number: str) -> None:
        """An incoming voice call (the driver must ignore it gracefully)."""
        with self._lock:
            self._urc("RING")
            self._urc(f'+CLIP: "{number}",145,,,,0')

    def stored(self, storage: str = "SM") -> dict[int, tuple[int, str]]:
        """A copy of the storage: index -> (stat, pdu)."""
        with self._lock:
            return {i: (s.stat, s.pdu) for i, s in self.slots[storage].items()}

    @property
    def network_pending(self) -> int:
        """Messages the network still holds because the storage was full."""
        with self._lock:
            return len(self._network_pending)

    # -- internals -------------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _emit(self, data: bytes) -> None:
        if self._master is None:
            return
        self._out += data
        self._wake()

    def _urc(self, line: str) -> None:
        self._emit(f"\r\n{line}\r\n".encode())

    def _free(self, storage: str) -> int:
        return self.capacity.get(storage, 0) - len(self.slots[storage])

    def _next_index(self, storage: str) -> int:
        used = self.slots[storage]
        for i in range(self.index_base, self.index_base + self.capacity[storage]):
            if i not in used:
                return i
        raise RuntimeError("storage full")

    def _receive(self, pdu_hex: str) -> None:
        storage = self.mem[2]
        if self._free(storage) <= 0:
            self._network_pending.append(pdu_hex)
            if self.profile.emulator.manufacturer.lower() == "huawei":
                self._urc(f'^SMMEMFULL: "{storage}"')
            return
        index = self._next_index(storage)
        self.slots[storage][index] = _Slot(0, pdu_hex)
        if self.cnmi[1] >= 1:
            self._urc(f'+CMTI: "{storage}",{index}')

    def _retry_network(self) -> None:
        while self._network_pending and self._free(self.mem[2]) > 0:
            self._receive(self._network_pending.pop(0))

    def _after(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), fn))
        self._wake()

    def _run(self) -> None:
        while not self._stopping:
            with self._lock:
                master = self._master
                want_write = bool(self._out) and master is not None
                timeout = 0.2
                if self._timers:
                    timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            rlist = [self._wake_r] + ([master] if master is not None else [])
            wlist = [master] if want_write and master is not None else []
            try:
                readable, writable, _ = select.select(rlist, wlist, [], timeout)
            except (OSError, ValueError):
                continue  # the fd was closed by an unplug between the snapshot and select
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            with self._lock:
                if master is not None and master == self._master:
                    if master in readable:
                        self._read(master)
                    if master in writable:
                        self._flush(master)
                self._run_timers()

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()

    def _flush(self, master: int) -> None:
        try:
            n = os.write(master, bytes(self._out[:4096]))
            del self._out[:n]
        except BlockingIOError:
            pass
        except OSError:
            self._out.clear()

    def _read(self, master: int) -> None:
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno != errno.EIO:
                log.debug("emulator read failed: %s", err)
            return
        if time.monotonic() < self._hung_until:
            return  # a hung modem swallows everything
        self._inbuf += data
        self._process_input()

    def _process_input(self) -> None:
        while self._inbuf:
            if self._in_pdu is not None:
                end = next((i for i, b in enumerate(self._inbuf) if b in (_CTRL_Z, _ESC)), None)
                if end is None:
                    if len(self._inbuf) > 4096:
                        self._inbuf.clear()
                    return
                body = bytes(self._inbuf[:end]).decode("ascii", errors="replace").strip()
                cancelled = self._inbuf[end] == _ESC
                del self._inbuf[: end + 1]
                expected, self._in_pdu = self._in_pdu, None
                if cancelled:
                    self._final_ok()
                else:
                    self._send(body, expected)
                continue
            cr = self._inbuf.find(b"\r")
            if cr < 0:
                if len(self._inbuf) > 1024:
                    self._inbuf.clear()
                return
            raw = bytes(self._inbuf[:cr])
            del self._inbuf[: cr + 1]
            line = raw.decode("ascii", errors="replace").strip("\n ")
            if not line:
                continue
            if self.echo:
                self._emit(line.encode() + b"\r")
            if self.command_delay:
                time.sleep(self.command_delay)
            self.commands.append(line)
            self._command(line)

    # -- responses -------------------------------------------------------------------------------

    def _info(self, line: str) -> None:
        self._emit(f"\r\n{line}\r\n".encode())

    def _final_ok(self) -> None:
        self._emit(b"\r\nOK\r\n")

    def _error(self, kind: str = "", code: int = 0) -> None:
        if self.cmee == 0 or not kind:
            self._emit(b"\r\nERROR\r\n")
        else:
            self._emit(f"\r\n+{kind} ERROR: {code}\r\n".encode())

    def _command(self, line: str) -> None:  # noqa: PLR0912, PLR0915 - a modem is a big switch
        if not line.upper().startswith("AT"):
            self._error()
            return
        cmd = line[2:]
        up = cmd.upper()
        for i, (prefix, seconds) in enumerate(self._command_silences):
            if line.upper().startswith(prefix):
                del self._command_silences[i]
                self._hung_until = time.monotonic() + seconds
                return
        for i, (prefix, code) in enumerate(self._command_failures):
            if line.upper().startswith(prefix):
                del self._command_failures[i]
                self._error("CMS", code)
                return
        if up in ("", "Z", "&F", "E0", "E1", "V1", "Q0", "+CNMA", '+CSCS="GSM"'):
            if up == "E0":
                self.echo = False
            elif up == "E1":
                self.echo = True
            elif up in ("Z", "&F"):
                self._reset_settings()
            self._final_ok()
            return
        if up in ("I", "+CGMI", "+GMI"):
            ident = self.profile.emulator
            if up == "I":
                self._info(f"Manufacturer: {ident.manufacturer}")
                self._info(f"Model: {ident.model}")
                self._info(f"Revision: {ident.revision}")
            else:
                self._info(ident.manufacturer)
            self._final_ok()
            return
        simple = {
            "+CGMM": self.profile.emulator.model,
            "+CGMR": self.profile.emulator.revision,
            "+CGSN": self.imei,
            "+GSN": self.imei,
        }
        if up in simple:
            self._info(simple[up])
            self._final_ok()
            return
        if up in ("+CIMI", "+CCID", "^ICCID?", "+QCCID", "+CICCID", "+ICCID"):
            if not self.pin_ready:
                self._error("CME", 11)
                return
            if up == "+CIMI":
                self._info(self.imsi)
            else:
                label = {"+CCID": "+CCID", "^ICCID?": "^ICCID", "+QCCID": "+QCCID"}.get(up, "+ICCID")
                self._info(f"{label}: {self.iccid}")
            self._final_ok()
            return
        if m := re.fullmatch(r"\+CMEE=(\d)", up):
            self.cmee = int(m.group(1))
            self._final_ok()
            return
        if up == "+CPIN?":
            self._info("+CPIN: READY" if self.pin_ready else "+CPIN: SIM PIN")
            self._final_ok()
            return
        if m := re.fullmatch(r'\+CPIN="?([0-9]+)"?', up):
            self.pin_attempts += 1
            if self.pin_ready:
                self._error("CME", 3)
            elif m.group(1) == self.sim_pin:
                self.pin_ready = True
                self._final_ok()
                self._after(0.05, lambda: self._urc("+CPIN: READY"))
            else:
                self._error("CME", 16)
            return
        if not self.pin_ready and up.startswith(("+CMG", "+CPMS", "+CNMI", "+COPS", "+CSCA")):
            self._error("CMS" if up.startswith(("+CMG", "+CPMS")) else "CME", 311)
            return
        if up == "+CSQ":
            self._info(f"+CSQ: {self.rssi},99")
            self._final_ok()
            return
        if m := re.fullmatch(r"\+CREG=(\d)", up):
            self.creg_n = int(m.group(1))
            self._final_ok()
            return
        if up == "+CREG?":
            self._info(f"+CREG: {self.creg_n},{self.registration}")
            self._final_ok()
            return
        if up == "+COPS?":
            self._info(f'+COPS: 0,0,"{self.operator}",7' if self.registration in (1, 5) else "+COPS: 0")
            self._final_ok()
            return
        if up.startswith("+COPS="):
            self._final_ok()
            return
        if up == "+CSCA?":
            self._info('+CSCA: "+15550000000",145')
            self._final_ok()
            return
        if up == "+CFUN?":
            self._info("+CFUN: 1")
            self._final_ok()
            return
        if re.fullmatch(r"\+CFUN=[01](,[01])?", up):
            self._final_ok()
            return
        tests = {
            "+CMGF=?": "+CMGF: (0,1)",
            "+CNMI=?": "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)",
            "+CSCS=?": '+CSCS: ("GSM","IRA","UCS2")',
            "+CSCS?": '+CSCS: "GSM"',
            "+CMGL=?": "+CMGL: (0-4)",
            "+CMGD=?": "+CMGD: (),(0-4)",
        }
        if up in tests:
            self._info(tests[up])
            self._final_ok()
            return
        if up.startswith("+CSCS="):
            self._final_ok()
            return
        if m := re.fullmatch(r"\+CMGF=(\d)", up):
            self.cmgf = int(m.group(1))
            self._final_ok()
            return
        if up == "+CMGF?":
            self._info(f"+CMGF: {self.cmgf}")
            self._final_ok()
            return
        if up.startswith("+CSMS"):
            self._info("+CSMS: 0,1,1,1")
            self._final_ok()
            return
        if up.startswith("+CPMS"):
            self._cpms(up)
            return
        if m := re.fullmatch(r"\+CNMI=([\d,]*)", up):
            vals = [int(x) if x else 0 for x in m.group(1).split(",")]
            self.cnmi = (vals + [0] * 5)[:5]
            self._final_ok()
            return
        if up == "+CNMI?":
            self._info("+CNMI: " + ",".join(map(str, self.cnmi)))
            self._final_ok()
            return
        if m := re.fullmatch(r"\+CMGL(?:=(\d))?", up):
            self._cmgl(int(m.group(1) or 4))
            return
        if m := re.fullmatch(r"\+CMGR=(\d+)", up):
            self._cmgr(int(m.group(1)))
            return
        if m := re.fullmatch(r"\+CMGD=(\d+)(?:,(\d))?", up):
            self._cmgd(int(m.group(1)), int(m.group(2) or 0))
            return
        if m := re.fullmatch(r"\+CMGS=(\d+)", up):
            if self.cmgf != 0:
                self._error("CMS", 302)
                return
            self._in_pdu = int(m.group(1))
            self._emit(b"\r\n> ")
            return
        if line[2:] in [q[2:] for q in self.profile.init_quirks]:
            self._final_ok()
            return
        self._error()

    def _cpms(self, up: str) -> None:
        if up == "+CPMS?":
            fields = [f'"{m}",{len(self.slots[m])},{self.capacity[m]}' for m in self.mem]
            self._info("+CPMS: " + ",".join(fields))
            self._final_ok()
            return
        if up.startswith("+CPMS=?"):
            self._info('+CPMS: ("SM","ME"),("SM","ME"),("SM","ME")')
            self._final_ok()
            return
        wanted = re.findall(r'"([A-Z]{2})"', up)
        if not wanted or any(self.capacity.get(m, 0) <= 0 for m in wanted):
            self._error("CMS", 302)
            return
        for i, m in enumerate(wanted[:3]):
            self.mem[i] = m
        fields = [f"{len(self.slots[m])},{self.capacity[m]}" for m in self.mem]
        self._info("+CPMS: " + ",".join(fields))
        self._final_ok()

    def _cmgl(self, stat: int) -> None:
        storage = self.slots[self.mem[0]]
        for index in sorted(storage):
            slot = storage[index]
            if stat not in (4, slot.stat):
                continue
            self._emit(f"\r\n+CMGL: {index},{slot.stat},,{_tpdu_len(slot.pdu)}\r\n{slot.pdu}".encode())
            if slot.stat == 0:
                slot.stat = 1
        self._emit(b"\r\n")
        self._final_ok()

    def _cmgr(self, index: int) -> None:
        slot = self.slots[self.mem[0]].get(index)
        if slot is None:
            self._error("CMS", 321)
            return
        self._info(f"+CMGR: {slot.stat},,{_tpdu_len(slot.pdu)}")
        self._emit(f"{slot.pdu}\r\n".encode())
        slot.stat = 1 if slot.stat == 0 else slot.stat
        self._final_ok()

    def _cmgd(self, index: int, flag: int) -> None:
        storage = self.mem[0]
        slots = self.slots[storage]
        if flag == 0:
            if index in slots:
                if self.on_delete is not None:
                    self.on_delete(storage, index, slots[index].pdu)
                del slots[index]
                self.deleted.append((storage, index))
        else:
            self.delete_all_count += 1
            doomed = {1: {1}, 2: {1, 3}, 3: {1, 2, 3}, 4: {0, 1, 2, 3}}.get(flag, set())
            for i in [i for i, s in slots.items() if s.stat in doomed]:
                del slots[i]
                self.deleted.append((storage, i))
        self._final_ok()
        self._retry_network()

    def _send(self, body: str, expected_len: int) -> None:
        if self._send_failures:
            self._error("CMS", self._send_failures.pop(0))
            return
        try:
            msg = pducodec.decode(body)
        except pducodec.PduDecodeError:
            self._error("CMS", 304)
            return
        if not isinstance(msg, pducodec.SmsSubmit) or _tpdu_len(body) != expected_len:
            self._error("CMS", 304)
            return
        if self.registration not in (1, 5):
            self._error("CMS", 331)
            return
        self._mr = (self._mr + 1) & 0xFF
        mr = self._mr
        sent = SentMessage(mr, msg.recipient, msg.text, body, msg.concat, msg.status_report, time.time())

        def done() -> None:
            self.sent.append(sent)
            self._info(f"+CMGS: {mr}")
            self._final_ok()
            if sent.status_report and self.status_report_delay is not None:
                self._after(self.status_report_delay, lambda: self.status_report(mr, 0))

        if self.send_delay:
            self._after(self.send_delay, done)
        else:
            done()

    def snapshot(self) -> dict[str, object]:
        """State for the control socket and for debugging."""
        with self._lock:
            return {
                "profile": self.profile.name,
                "path": self._path,
                "link": str(self.link) if self.link else None,
                "plugged": self.plugged,
                "stored": {m: len(s) for m, s in self.slots.items()},
                "sent": [dataclasses.asdict(s) for s in self.sent],
                "deleted": len(self.deleted),
                "delete_all_count": self.delete_all_count,
                "network_pending": len(self._network_pending),
                "pin_attempts": self.pin_attempts,
            }


def _tpdu_len(pdu_hex: str) -> int:
    smsc_len = int(pdu_hex[:2], 16) if len(pdu_hex) >= 2 else 0
    return len(pdu_hex) // 2 - smsc_len - 1
