"""Real-call test harness: the local Asterisk, sipp callers and staff phones, speech, an AMI probe.

Theory of operation: ``asterisk-config/local-asterisk.sh`` provisions and starts one Asterisk with
the settings in ``tests/realpbx/test.env`` (AMI 15038, SIP 15060 on 127.0.0.1, FastAGI target
127.0.0.1:14573). Callers are sipp processes bound to 127.0.0.2, the address the PJSIP ``trunk``
endpoint is identified by; staff phones are sipp UAS processes on the static contacts
127.0.0.1:15201..15203 of endpoints 201..203. Every sipp process writes its full SIP trace
(``-trace_msg``) and the harness parses it, so tests assert on what really went over the wire (for
example the From display name a phone received). Several test runs may share the PBX: the script
serialises start/stop with a lock, a per-process "user" file keeps a run from stopping the PBX under
another run, and :func:`pbx_call_lock` serialises the tests that place calls (they share the phones
and the FastAGI port).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Literal
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "asterisk-config" / "local-asterisk.sh"
TEST_ENV = Path(__file__).resolve().parent / "test.env"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
STATE_DIR = Path(os.environ.get("GATEWAY_ASTERISK_STATE", "/var/lib/gateway/asterisk"))
BASH = shutil.which("bash") or "/bin/bash"
CALL_LOCK = Path(os.environ.get("GATEWAY_REALPBX_CALL_LOCK", "/run/lock/gateway-realpbx-calls.lock"))

TRUNK_IP = "127.0.0.2"
PHONE_IP = "127.0.0.1"
PHONE_PORTS = {"201": 15201, "202": 15202, "203": 15203}
CLICK_TO_CALL_PORT = 15299


class HarnessError(RuntimeError):
    """The harness could not do what a test asked (tool missing, Asterisk did not start...)."""


# --- the local Asterisk ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AmiCredentials:
    """How the gateway (or a test) logs in to the test Asterisk's AMI."""

    host: str
    port: int
    username: str
    secret: str


@dataclass(frozen=True)
class PbxSettings:
    """The test PBX as resolved by ``local-asterisk.sh env`` (host paths, ports, secrets)."""

    values: Mapping[str, str]

    @property
    def ami(self) -> AmiCredentials:
        """AMI login of the gateway user."""
        return AmiCredentials(
            "127.0.0.1",
            int(self.values["AMI_PORT"]),
            self.values["AMI_USER"],
            self.values["AMI_SECRET"],
        )

    @property
    def sip_addr(self) -> tuple[str, int]:
        """Where Asterisk's PJSIP UDP transport listens."""
        return self.values["SIP_BIND"], int(self.values["SIP_PORT"])

    @property
    def agi_addr(self) -> tuple[str, int]:
        """Where the dialplan looks for the gateway's FastAGI server."""
        host, port = self.values["AGI_ADDR"].rsplit(":", 1)
        return host, int(port)

    @property
    def recordings_dir(self) -> Path:
        """Voicemail recordings as seen from the host (bind-mounted into the chroot at the same
        path)."""
        return Path(self.values["HOST_RECORDINGS_DIR"])

    @property
    def cdr_file(self) -> Path:
        """Asterisk's call records for the gateway (cdr_custom.conf) as seen from the host."""
        return Path(self.values["HOST_CDR_FILE"])

    @property
    def log_dir(self) -> Path:
        """Asterisk's log directory as seen from the host (messages.log, console.log)."""
        return Path(self.values["HOST_LOG_DIR"])

    def ring_seconds(self) -> tuple[int, int]:
        """(seconds GW_FIRST rings alone, seconds the group rings)."""
        return int(self.values["FIRST_RING_S"]), int(self.values["GROUP_RING_S"])


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GATEWAY_ASTERISK_ENV=str(TEST_ENV))
    return subprocess.run(
        [BASH, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def load_settings() -> PbxSettings:
    """Resolve the test PBX settings without starting anything."""
    proc = _script("env", timeout=30)
    if proc.returncode != 0:
        raise HarnessError(f"local-asterisk.sh env failed: {proc.stderr.strip()}")
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return PbxSettings(values)


def pbx_running() -> bool:
    """True when the test Asterisk runs and answers on AMI."""
    return _script("status", timeout=30).returncode == 0


def start_pbx() -> tuple[PbxSettings, float]:
    """Provision if needed and start the test Asterisk; returns settings and the seconds it took."""
    t0 = time.monotonic()
    proc = _script("start")
    if proc.returncode != 0:
        raise HarnessError(
            f"could not start the local Asterisk (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return load_settings(), time.monotonic() - t0


def restart_pbx() -> PbxSettings:
    """Restart the test Asterisk (calls in progress are cut, as in a real restart)."""
    proc = _script("restart")
    if proc.returncode != 0:
        raise HarnessError(f"local-asterisk.sh restart failed: {proc.stderr.strip()[-2000:]}")
    return load_settings()


def stop_pbx() -> None:
    """Stop the test Asterisk and remove its bind mounts."""
    proc = _script("stop", timeout=120)
    if proc.returncode != 0:
        raise HarnessError(f"local-asterisk.sh stop failed: {proc.stderr.strip()}")


def asterisk_cli(settings: PbxSettings, command: str, timeout: float = 15) -> str:
    """Run one Asterisk CLI command (``asterisk -rx``) against the test instance."""
    prefix = settings.values["PREFIX"]
    conf = f"{settings.values['CONF_DIR']}/asterisk.conf"
    argv = ["asterisk", "-C", conf, "-rx", command]
    if settings.values["MODE"] == "chroot":
        argv = ["chroot", prefix, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"asterisk -rx {command!r} failed: {proc.stderr.strip()}")
    return proc.stdout


def hangup_channels(settings: PbxSettings, prefix: str) -> list[str]:
    """Hang up every channel whose name starts with ``prefix`` (through the CLI); returns their
    names."""
    names = [
        line.split("!", 1)[0]
        for line in asterisk_cli(settings, "core show channels concise").splitlines()
        if line.startswith(prefix)
    ]
    for name in names:
        asterisk_cli(settings, f"channel request hangup {name}")
    return names


@contextlib.contextmanager
def pbx_user() -> Iterator[Callable[[], bool]]:
    """Register this process as a user of the shared PBX; yields ``last()``: no other live user
    remains."""
    users = STATE_DIR / "users"
    users.mkdir(parents=True, exist_ok=True)
    mine = users / str(os.getpid())
    mine.touch()

    def last() -> bool:
        for entry in users.iterdir():
            if entry == mine or not entry.name.isdigit():
                continue
            try:
                os.kill(int(entry.name), 0)
            except ProcessLookupError:
                entry.unlink(missing_ok=True)
                continue
            except PermissionError:
                pass
            return False
        return True

    try:
        yield last
    finally:
        mine.unlink(missing_ok=True)


@contextlib.contextmanager
def pbx_call_lock(timeout: float = 100) -> Iterator[None]:
    """Hold the cross-process lock of tests that place calls (shared phones, FastAGI port 14573)."""
    CALL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with CALL_LOCK.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"another test run holds {CALL_LOCK} for over {timeout} s") from None
                time.sleep(0.2)
        try:
            # Several checkouts may share this PBX with different configurations: under the lock, make sure it
            # runs this checkout's (a no-op when it already does), so nobody restarts it under a running call.
            proc = _script("start")
            if proc.returncode != 0:
                raise HarnessError(f"could not start the local Asterisk: {proc.stderr.strip()[-2000:]}")
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _udp_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def _tcp_listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def pbx_quiet(settings: PbxSettings) -> bool:
    """No call is up, the phones' and the trunk's far-end ports are free, nothing listens on the
    FastAGI port."""
    if any(not _udp_free(PHONE_IP, port) for port in (*PHONE_PORTS.values(), CLICK_TO_CALL_PORT)):
        return False
    if _tcp_listening(*settings.agi_addr):
        return False
    counts = asterisk_cli(settings, "core show channels count")
    match = re.search(r"(\d+) active call", counts)
    return match is None or match.group(1) == "0"


async def wait_pbx_quiet(settings: PbxSettings, wait_s: float = 90) -> None:
    """Wait until another test run sharing the PBX has finished its call (see :func:`pbx_quiet`)."""
    deadline = time.monotonic() + wait_s
    while not await asyncio.to_thread(pbx_quiet, settings):
        if time.monotonic() > deadline:
            raise HarnessError(
                f"the test PBX stayed busy for {wait_s} s (a call up, phone ports "
                "15201-15203/15299 or the "
                "FastAGI port taken by another test run)"
            )
        await asyncio.sleep(0.5)


# --- SIP traces -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SipMessage:
    """One SIP message from a sipp ``-trace_msg`` file."""

    direction: Literal["sent", "received"]
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str
    at: float | None = None
    """Unix time sipp logged the message at (for latency measurements)."""

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive; compact forms are not used by
        Asterisk)."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def method(self) -> str | None:
        """Request method, or None for a response."""
        return None if self.start_line.startswith("SIP/2.0") else self.start_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        """Response status code, or None for a request."""
        if not self.start_line.startswith("SIP/2.0"):
            return None
        return int(self.start_line.split(" ", 2)[1])

    @property
    def cseq_method(self) -> str:
        """Method named in the CSeq header (tells which request a response answers)."""
        return (self.header("CSeq") or " ").split()[-1]

    @property
    def from_display_name(self) -> str | None:
        """Display name of the From header, unquoted (what a phone shows), or None when absent."""
        return display_name(self.header("From") or "")


_TRACE_SEPARATOR = re.compile(r"^-{20,} *(\S+ \S+)?\s*$", re.MULTILINE)
_DIRECTION = re.compile(r"message (sent|received)", re.IGNORECASE)


def _trace_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").astimezone().timestamp()
    except ValueError:
        return None


def parse_trace(text: str) -> list[SipMessage]:
    """Parse sipp's ``-message_file`` into messages (in trace order, with sipp's timestamps)."""
    out: list[SipMessage] = []
    separators = list(_TRACE_SEPARATOR.finditer(text))
    for index, sep in enumerate(separators):
        end = separators[index + 1].start() if index + 1 < len(separators) else len(text)
        lines = text[sep.end() : end].strip("\n").split("\n")
        if not lines or not (m := _DIRECTION.search(lines[0])):
            continue
        body_lines = [ln.rstrip("\r") for ln in lines[1:]]
        while body_lines and not body_lines[0].strip():
            body_lines.pop(0)
        if not body_lines:
            continue
        start = body_lines[0].strip()
        headers: list[tuple[str, str]] = []
        i = 1
        while i < len(body_lines) and body_lines[i].strip():
            key, _, value = body_lines[i].partition(":")
            headers.append((key.strip(), value.strip()))
            i += 1
        direction: Literal["sent", "received"] = "sent" if m.group(1).lower() == "sent" else "received"
        body = "\n".join(body_lines[i + 1 :])
        out.append(SipMessage(direction, start, tuple(headers), body, _trace_time(sep.group(1))))
    return out


def display_name(name_addr: str) -> str | None:
    """Display name of a SIP name-addr (``"Maria R" <sip:..>`` or ``Maria <sip:..>``), unescaped."""
    value = name_addr.strip()
    if value.startswith('"'):
        out: list[str] = []
        i = 1
        while i < len(value):
            ch = value[i]
            if ch == "\\" and i + 1 < len(value):
                out.append(value[i + 1])
                i += 2
                continue
            if ch == '"':
                return "".join(out)
            out.append(ch)
            i += 1
        return "".join(out)
    if "<" in value:
        token = value.split("<", 1)[0].strip()
        return token or None
    return None


def quote_display_name(name: str) -> str:
    """SIP quoted-string for a display name (backslash-escapes quotes and backslashes)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- sipp processes -------------------------------------------------------------------------------


def free_udp_port(ip: str, *, span: int = 1) -> int:
    """A UDP port on ``ip`` whose next ``span`` ports were free a moment ago (sipp binds media ports
    in pairs)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
            base: int = probe.getsockname()[1]
        if base % 2 or base + span >= 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + span):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind((ip, port))
        except OSError:
            continue
        return base
    raise HarnessError(f"no free UDP port range of {span} on {ip}")


def _render(name: str, workdir: Path, values: Mapping[str, str]) -> Path:
    text = (SCENARIOS / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise HarnessError(f"scenario {name}: unfilled placeholder in {text[text.index('{{') :][:40]!r}")
    path = workdir / f"{name.removesuffix('.xml')}-{os.getpid()}-{time.monotonic_ns()}.xml"
    path.write_text(text, encoding="utf-8")
    return path


def _sipp() -> str:
    found = shutil.which("sipp")
    if not found:
        raise HarnessError(
            "sipp is missing: run `asterisk-config/local-asterisk.sh provision` (it installs sip-tester)"
        )
    return found


@dataclass(frozen=True)
class CallResult:
    """What a sipp caller saw."""

    returncode: int
    messages: tuple[SipMessage, ...]
    started_at: float
    ended_at: float
    stderr: str

    @property
    def statuses(self) -> list[int]:
        """Status codes received for the INVITE, in order."""
        return [
            m.status
            for m in self.messages
            if m.direction == "received" and m.status is not None and m.cseq_method == "INVITE"
        ]

    @property
    def answered(self) -> bool:
        """The INVITE got a 200 OK (a staff phone or the voicemail answered)."""
        return 200 in self.statuses

    @property
    def final_status(self) -> int | None:
        """The INVITE's final response code (None if none came)."""
        finals = [s for s in self.statuses if s >= 200]
        return finals[0] if finals else None

    @property
    def far_end_hung_up(self) -> bool:
        """The other side (staff phone, voicemail, Asterisk) sent BYE before the caller did."""
        return any(m.direction == "received" and m.method == "BYE" for m in self.messages)

    @property
    def ok(self) -> bool:
        """sipp ran its scenario to the end."""
        return self.returncode == 0


def _media_block(rtp_wav: Path | None, delay_s: float) -> str:
    if rtp_wav is None:
        return ""
    # Like a person, wait for the voicemail's beep before speaking.
    return (
        f'  <pause milliseconds="{max(1, int(delay_s * 1000))}"/>\n'
        "  <nop>\n    <action>\n"
        f'      <exec rtp_stream="{escape(str(rtp_wav))},1,0"/>\n'
        "    </action>\n  </nop>"
    )


async def place_call(
    number: str,
    caller_id: str,
    display_name: str | None,
    hold_s: float,
    rtp_wav: Path | None = None,
    *,
    settings: PbxSettings,
    workdir: Path,
    hangup_after_ring_s: float | None = None,
    from_header: str | None = None,
    timeout_s: float = 90,
    media_delay_s: float = 1.0,
) -> CallResult:
    """Call ``number`` through the trunk as ``caller_id``/``display_name``; return what sipp saw.

    Answered calls are held ``hold_s`` seconds and hung up with BYE. ``rtp_wav`` (8 kHz mu-law
    WAV) starts streaming ``media_delay_s`` after the answer (after the voicemail's beep); the
    hold counts from then. ``hangup_after_ring_s`` makes the caller give up (CANCEL) that long
    after the last provisional response instead. ``from_header`` replaces the whole From value
    (for malformed caller IDs).
    """
    if from_header is None:
        addr = f"<sip:{caller_id}@{TRUNK_IP}>"
        from_header = f"{quote_display_name(display_name)} {addr}" if display_name is not None else addr
    user = re.sub(r"[^0-9A-Za-z+]", "", caller_id) or "anonymous"
    if "]]>" in from_header or "\n" in from_header or "\r" in from_header:
        raise HarnessError("a From header cannot carry ']]>' or line breaks (they would end the SIP header)")
    values = {"FROM": from_header, "USER": user}  # inside CDATA: no XML escaping
    if hangup_after_ring_s is None:
        values |= {
            "HOLD_MS": str(max(1, int(hold_s * 1000))),
            "MEDIA": _media_block(rtp_wav, media_delay_s),
        }
        scenario = _render("caller.xml", workdir, values)
    else:
        values["RING_MS"] = str(max(1, int(hangup_after_ring_s * 1000)))
        scenario = _render("caller_cancel.xml", workdir, values)
    trace = scenario.with_suffix(".trace")
    sip_port = free_udp_port(TRUNK_IP)
    media_port = free_udp_port(TRUNK_IP, span=4)
    host, port = settings.sip_addr
    argv = [
        _sipp(),
        *("-sf", str(scenario), "-s", number, f"{host}:{port}"),
        *("-i", TRUNK_IP, "-p", str(sip_port), "-mi", TRUNK_IP, "-mp", str(media_port)),
        *("-m", "1", "-l", "1", "-nostdin", "-timeout", f"{int(timeout_s)}s", "-timeout_error"),
        *("-recv_timeout", str(int(timeout_s * 1000))),
        *(
            "-trace_msg",
            "-message_file",
            str(trace),
            "-trace_err",
            "-error_file",
            str(trace) + ".err",
        ),
    ]
    started = time.time()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=workdir,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s + 15)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    text = trace.read_text(encoding="utf-8", errors="replace") if trace.exists() else ""
    return CallResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        messages=tuple(parse_trace(text)),
        started_at=started,
        ended_at=time.time(),
        stderr=err.decode(errors="replace"),
    )


def _from_caller(message: SipMessage, caller: str) -> bool:
    return f"sip:{caller}@" in (message.header("From") or "")


def unique_caller() -> str:
    """A caller number no other call in this or another test run uses (555 + 7 digits)."""
    return f"555{secrets.randbelow(10**7):07d}"


PhoneBehaviour = Literal["answer", "ring", "busy"]


@dataclass
class StaffPhone:
    """A sipp UAS playing one staff desk phone (or the click-to-call customer on the trunk)."""

    extension: str
    behaviour: PhoneBehaviour
    trace: Path
    proc: asyncio.subprocess.Process | None = None
    _stderr: IO[bytes] | None = field(default=None, repr=False)

    def messages(self) -> list[SipMessage]:
        """Everything the phone sent and received so far."""
        if not self.trace.exists():
            return []
        return parse_trace(self.trace.read_text(encoding="utf-8", errors="replace"))

    def invites(self, caller: str | None = None) -> list[SipMessage]:
        """INVITEs the phone received (each one is a ring), in order, without retransmissions.

        ``caller`` keeps only calls from that caller number (other test runs may share the PBX).
        """
        seen: set[tuple[str | None, str | None]] = set()
        out: list[SipMessage] = []
        for m in self.messages():
            key = (m.header("Call-ID"), m.header("CSeq"))
            if m.direction == "received" and m.method == "INVITE" and key not in seen:
                if caller is not None and not _from_caller(m, caller):
                    continue
                seen.add(key)
                out.append(m)
        return out

    def displays(self, caller: str | None = None) -> list[str | None]:
        """The From display name of every INVITE: what the phone's screen showed."""
        return [m.from_display_name for m in self.invites(caller)]

    def answered_calls(self, caller: str | None = None) -> int:
        """How many INVITEs this phone answered with 200 OK."""
        return sum(
            1
            for m in self.messages()
            if m.direction == "sent"
            and m.status == 200
            and m.cseq_method == "INVITE"
            and (caller is None or _from_caller(m, caller))
        )

    async def wait_for_invites(self, count: int, wait_s: float) -> list[SipMessage]:
        """Wait until the phone has received ``count`` INVITEs."""
        deadline = time.monotonic() + wait_s
        while len(found := self.invites()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"phone {self.extension} got {len(found)} INVITE(s), expected {count}")
            await asyncio.sleep(0.1)
        return found

    async def stop(self) -> None:
        """Stop sipp (soft exit first, so the trace is flushed)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGUSR1)
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def start_phone(
    extension: str,
    behaviour: PhoneBehaviour,
    *,
    workdir: Path,
    ring_s: float = 0.5,
    port: int | None = None,
    ip: str = PHONE_IP,
    port_wait_s: float = 120,
    hangup_after_s: float | None = None,
) -> StaffPhone:
    """Start a sipp UAS for staff phone ``extension``: 'answer' (after ``ring_s``; hangs up itself
    after ``hangup_after_s`` if given), 'ring' (never answers) or 'busy'."""
    sip_port = port if port is not None else PHONE_PORTS[extension]
    hangup_ms = "0" if hangup_after_s is None else str(max(1, int(hangup_after_s * 1000)))
    values = {"RING_MS": str(max(1, int(ring_s * 1000))), "HANGUP_MS": hangup_ms}
    scenario = _render(f"phone_{behaviour}.xml", workdir, values)
    trace = scenario.with_suffix(".trace")
    media_port = free_udp_port(ip, span=4)
    argv = [
        _sipp(),
        *("-sf", str(scenario), "-i", ip, "-p", str(sip_port), "-mi", ip, "-mp", str(media_port)),
        *("-nostdin", "-trace_msg", "-message_file", str(trace)),
    ]
    # Another test run sharing the PBX may hold the phone's port for a moment: wait for it.
    deadline = time.monotonic() + port_wait_s
    while True:
        while not _udp_free(ip, sip_port):
            if time.monotonic() > deadline:
                raise HarnessError(f"UDP {ip}:{sip_port} (phone {extension}) stayed taken for {port_wait_s} s")
            await asyncio.sleep(0.3)
        errfile = trace.with_suffix(".stderr")
        with errfile.open("wb") as err_fh:  # a file, not a pipe nobody drains
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err_fh,
                cwd=workdir,
            )
        # sipp binds its socket (or rejects the scenario) right away.
        await asyncio.sleep(0.2)
        if proc.returncode is None:
            break
        await proc.wait()
        err = errfile.read_text(errors="replace").strip()
        if _udp_free(ip, sip_port) or time.monotonic() > deadline:
            raise HarnessError(f"sipp for phone {extension} exited at once (exit {proc.returncode}): {err[-500:]}")
    return StaffPhone(extension, behaviour, trace, proc)


class SipHarness:
    """Places calls into the test PBX and runs staff phones; everything it starts is stopped by the
    fixture."""

    def __init__(self, settings: PbxSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.phones: list[StaffPhone] = []

    async def place_call(
        self,
        number: str,
        caller_id: str,
        display_name: str | None,
        hold_s: float,
        rtp_wav: Path | None = None,
        *,
        hangup_after_ring_s: float | None = None,
        from_header: str | None = None,
        timeout_s: float = 90,
        media_delay_s: float = 1.0,
    ) -> CallResult:
        """Call ``number`` from the trunk (see :func:`place_call`)."""
        return await place_call(
            number,
            caller_id,
            display_name,
            hold_s,
            rtp_wav,
            settings=self.settings,
            workdir=self.workdir,
            hangup_after_ring_s=hangup_after_ring_s,
            from_header=from_header,
            timeout_s=timeout_s,
            media_delay_s=media_delay_s,
        )

    async def phone(
        self,
        extension: str,
        behaviour: PhoneBehaviour,
        *,
        ring_s: float = 0.5,
        hangup_after_s: float | None = None,
    ) -> StaffPhone:
        """Start staff phone 201/202/203 (see :func:`start_phone`)."""
        phone = await start_phone(
            extension, behaviour, workdir=self.workdir, ring_s=ring_s, hangup_after_s=hangup_after_s
        )
        self.phones.append(phone)
        return phone

    async def customer(
        self,
        behaviour: PhoneBehaviour = "answer",
        *,
        ring_s: float = 0.5,
        hangup_after_s: float | None = None,
    ) -> StaffPhone:
        """Start the trunk's far end (127.0.0.1:15299): the customer that click-to-call dials."""
        phone = await start_phone(
            "customer",
            behaviour,
            workdir=self.workdir,
            ring_s=ring_s,
            port=CLICK_TO_CALL_PORT,
            hangup_after_s=hangup_after_s,
        )
        self.phones.append(phone)
        return phone

    async def close(self) -> None:
        """Stop every phone this harness started."""
        for phone in self.phones:
            await phone.stop()


# --- speech ---------------------------------------------------------------------------------------


def make_speech(
    text: str, out: Path, *, voice: str = "ko", pad_before_s: float = 0.3, pad_after_s: float = 1.0
) -> Path:
    """Speak ``text`` with espeak-ng and convert it to 8 kHz mono mu-law WAV (what sipp streams as
    PCMU)."""
    for tool in ("espeak-ng", "sox"):
        if not shutil.which(tool):
            raise HarnessError(f"{tool} is missing: run `asterisk-config/local-asterisk.sh provision`")
    raw = out.with_suffix(".raw.wav")
    espeak = ["espeak-ng", "-v", voice, "-w", str(raw), text]
    subprocess.run(espeak, check=True, capture_output=True)
    sox = ["sox", str(raw), "-r", "8000", "-c", "1", "-e", "u-law", str(out)]
    sox += ["pad", str(pad_before_s), str(pad_after_s)]
    subprocess.run(sox, check=True, capture_output=True)
    raw.unlink()
    return out


def wav_duration(path: Path) -> float:
    """Duration of a WAV file in seconds."""
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


# --- AMI probe and a fake FastAGI server ----------------------------------------------------------


class AmiProbe:
    """A minimal raw-socket AMI client for harness tests: login, collect events, wait for one."""

    def __init__(self, creds: AmiCredentials) -> None:
        self.creds = creds
        self.events: list[dict[str, str]] = []
        self.banner = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._action_id = 0

    async def connect(self) -> dict[str, str]:
        """Connect and log in; returns the login response (Response: Success or Error)."""
        self._reader, self._writer = await asyncio.open_connection(self.creds.host, self.creds.port)
        self.banner = (await asyncio.wait_for(self._reader.readline(), 5)).decode().strip()
        self._task = asyncio.create_task(self._read_loop())
        return await self.action("Login", Username=self.creds.username, Secret=self.creds.secret)

    async def action(self, name: str, **fields: str) -> dict[str, str]:
        """Send an action and wait for its response."""
        assert self._writer is not None
        self._action_id += 1
        action_id = f"probe-{self._action_id}"
        lines = [
            f"Action: {name}",
            f"ActionID: {action_id}",
            *(f"{k}: {v}" for k, v in fields.items()),
        ]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        return await self.wait_for(lambda m: m.get("ActionID") == action_id and "Response" in m, 10)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        current: dict[str, str] = {}
        while line := await self._reader.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if not text:
                if current:
                    self.events.append(current)
                    current = {}
                    self._changed.set()
                continue
            key, _, value = text.partition(":")
            current[key.strip()] = value.strip()
        self._changed.set()

    async def wait_for(self, predicate: Callable[[dict[str, str]], bool], wait_s: float) -> dict[str, str]:
        """Wait until a message (event or response) matching ``predicate`` has arrived."""
        deadline = time.monotonic() + wait_s
        seen = 0
        while True:
            for msg in self.events[seen:]:
                if predicate(msg):
                    return msg
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._task is not None and self._task.done()):
                raise TimeoutError(f"no matching AMI message within {wait_s} s ({seen} seen)")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def close(self) -> None:
        """Log off and close."""
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                self._writer.write(b"Action: Logoff\r\n\r\n")
                await self._writer.drain()
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class FakeFastAgi:
    """A tiny FastAGI server for harness tests: records each request and sets the given channel
    variables."""

    variables: Mapping[str, str]
    requests: list[dict[str, str]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the AGI environment, send SET VARIABLE for each variable, then close."""
        try:
            env: dict[str, str] = {}
            while (line := (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\n")) != "":
                key, _, value = line.partition(": ")
                env[key] = value
            self.requests.append(env)
            for name, value in self.variables.items():
                quoted = value.replace("\\", "\\\\").replace('"', '\\"')
                writer.write(f'SET VARIABLE {name} "{quoted}"\n'.encode())
                await writer.drain()
                self.replies.append((await asyncio.wait_for(reader.readline(), 5)).decode().strip())
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serve_fake_fastagi(agi: FakeFastAgi, host: str, port: int) -> AsyncIterator[FakeFastAgi]:
    """Serve ``agi`` on host:port for the duration of the block."""
    server = await asyncio.start_server(agi.handle, host, port, reuse_address=True)
    try:
        yield agi
    finally:
        server.close()
        await server.wait_closed()
