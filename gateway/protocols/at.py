"""Sans-IO AT command parser for GSM modems (3GPP TS 27.007 / 27.005), plus builders and field parsers.

Theory of operation: bytes from the serial port go into :meth:`ATParser.feed`, which splits them into lines on CR or LF
(modems are sloppy about which), keeps at most ``max_line`` bytes of an unfinished line, and turns each complete line
into one event:

* ``OK`` / ``ERROR`` / ``+CME ERROR: n`` / ``+CMS ERROR: n`` / ``NO CARRIER``... -> :class:`FinalResult`;
* the ``> `` prompt of ``AT+CMGS`` (it ends no line, so it is recognised in the unfinished buffer);
* unsolicited result codes (``+CMTI``, ``+CDS``, ``RING``, ``+CLIP``, vendor ``^RSSI``...) -> :class:`Unsolicited`.
  ``+CDS`` and ``+CMT`` carry their PDU on the next line: the parser waits for it;
* ``+CREG: ...`` is both an unsolicited code and the answer to ``AT+CREG?``: the caller tells the parser which response
  prefix the command in flight expects (:meth:`ATParser.expect`), and only that prefix is treated as a response line;
* a line that is not printable ASCII (line noise, a modem rebooting mid-byte) becomes :class:`Garbage`; anything else is
  a :class:`ResponseLine` for the command in flight.

Nothing here raises on input: garbage, non-UTF-8 bytes and endless lines are reported, never fatal.
Error codes map onto the gateway's error classes in one table each (:data:`CMS_ERRORS`,
:data:`CME_ERRORS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import GatewayError, PermanentError, TransientError

CTRL_Z = b"\x1a"
ESC = b"\x1b"


@dataclass(frozen=True)
class ResponseLine:
    """An intermediate line belonging to the command in flight (e.g. ``+CSQ: 20,99`` or a PDU)."""

    text: str


@dataclass(frozen=True)
class FinalResult:
    """The end of a command: ``ok`` is true only for ``OK``."""

    kind: str  # OK, ERROR, CME, CMS, NO CARRIER, BUSY, NO ANSWER, NO DIALTONE
    code: int | None = None
    text: str = ""

    @property
    def ok(self) -> bool:
        """True for ``OK``."""
        return self.kind == "OK"


@dataclass(frozen=True)
class Prompt:
    """The ``> `` prompt: the modem waits for the PDU and Ctrl-Z."""


@dataclass(frozen=True)
class Unsolicited:
    """An unsolicited result code. ``name`` is e.g. ``+CMTI`` or ``^RSSI``; ``args`` the text after
    the colon."""

    name: str
    args: str = ""
    pdu: str | None = None
    vendor: bool = False


@dataclass(frozen=True)
class Echo:
    """The modem echoed our command (echo is on until ``ATE0``)."""

    text: str


@dataclass(frozen=True)
class Garbage:
    """Bytes that are not a line of an AT conversation (noise, or an over-long line cut off)."""

    raw: bytes
    reason: str


ATEvent = ResponseLine | FinalResult | Prompt | Unsolicited | Echo | Garbage

_FINALS_PLAIN = frozenset({"OK", "ERROR", "NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE"})
# Always unsolicited: never the answer to a command we send.
_URC_ALWAYS = frozenset(
    {"+CMTI", "+CDSI", "+CDS", "+CMT", "+CBM", "+CLIP", "+CUSD", "+CRING"}
    | {"+CIEV", "+CGEV", "+QIND", "+QUSIM"}  # vendor and event reports seen on SIMCom and Quectel
)
# Unsolicited unless the command in flight asked for exactly this prefix.
_URC_UNLESS_EXPECTED = frozenset({"+CREG", "+CGREG", "+CEREG", "+CPIN", "+CFUN", "+CSQ"})
_URC_WITH_PDU = frozenset({"+CDS", "+CMT"})
_BARE_URCS = frozenset({"RING", "RDY", "CALL READY", "SMS READY", "PB DONE", "NORMAL POWER DOWN"})
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_PRINTABLE = re.compile(r"^[\x20-\x7e\t]*$")


class ATParser:
    """Incremental parser: :meth:`feed` bytes, get events. See the module docstring."""

    def __init__(self, *, max_line: int = 4096) -> None:
        self._buf = bytearray()
        self.max_line = max_line
        self._discarding = False
        self._awaiting_pdu: Unsolicited | None = None
        self._expected: str | None = None

    def expect(self, prefix: str | None) -> None:
        """Tell the parser which response prefix (``+CREG``...) the command in flight answers
        with."""
        self._expected = prefix.upper() if prefix else None

    def feed(self, data: bytes) -> list[ATEvent]:
        """Consume bytes; return the events they complete, in order."""
        events: list[ATEvent] = []
        for chunk in re.split(rb"([\r\n])", data):
            if chunk in (b"\r", b"\n"):
                if self._discarding:
                    self._discarding = False
                    self._buf.clear()
                elif self._buf:
                    line = bytes(self._buf)
                    self._buf.clear()
                    self._line(line, events)
                continue
            if not chunk:
                continue
            if self._discarding:
                continue
            self._buf += chunk
            if len(self._buf) > self.max_line:
                events.append(Garbage(bytes(self._buf[:64]), f"line longer than {self.max_line}"))
                self._buf.clear()
                self._discarding = True
        stripped = bytes(self._buf).strip()
        if stripped in (b">", b"> "):
            self._buf.clear()
            self._flush_pending_pdu(events)
            events.append(Prompt())
        return events

    def _flush_pending_pdu(self, events: list[ATEvent]) -> None:
        if self._awaiting_pdu is not None:
            events.append(self._awaiting_pdu)
            self._awaiting_pdu = None

    def _line(  # noqa: PLR0912 - one branch per class of line reads like the spec
        self, raw: bytes, events: list[ATEvent]
    ) -> None:
        text = raw.decode("ascii", errors="replace").strip()
        if not text:
            return
        if not _PRINTABLE.match(text):
            self._flush_pending_pdu(events)
            events.append(Garbage(raw[:256], "not printable ASCII"))
            return
        if text == ">":
            self._flush_pending_pdu(events)
            events.append(Prompt())
            return
        if self._awaiting_pdu is not None:
            pending = self._awaiting_pdu
            self._awaiting_pdu = None
            if _HEX.match(text):
                events.append(Unsolicited(pending.name, pending.args, pdu=text))
                return
            events.append(pending)
        upper = text.upper()
        if upper in _FINALS_PLAIN:
            events.append(FinalResult(upper))
            return
        if upper.startswith(("+CME ERROR:", "+CMS ERROR:")):
            kind = upper[1:4]
            detail = text.split(":", 1)[1].strip()
            code = int(detail) if detail.isdigit() else None
            events.append(FinalResult(kind, code, detail))
            return
        if upper.startswith("AT"):
            events.append(Echo(text))
            return
        if upper in _BARE_URCS:
            events.append(Unsolicited(upper, vendor=upper != "RING"))
            return
        if text.startswith("^"):
            name, _, args = text.partition(":")
            if name.strip().upper() != self._expected:  # e.g. ^ICCID answering AT^ICCID?
                events.append(Unsolicited(name.strip(), args.strip(), vendor=True))
                return
        if text.startswith("+"):
            name, sep, args = text.partition(":")
            name = name.strip().upper()
            if sep and (name in _URC_ALWAYS or (name in _URC_UNLESS_EXPECTED and name != self._expected)):
                urc = Unsolicited(name, args.strip())
                if name in _URC_WITH_PDU:
                    self._awaiting_pdu = urc
                else:
                    events.append(urc)
                return
        events.append(ResponseLine(text))


# -------------------------------------------------------------------------------------------------
# Errors: one table per wire code family. Each entry: (transient?, words for the operator).


class ModemCommandError(GatewayError):
    """A command ended in ERROR / +CME ERROR / +CMS ERROR; ``words`` explain it."""

    def __init__(self, command: str, kind: str, code: int | None, words: str) -> None:
        label = f"+{kind} ERROR: {code}" if code is not None else kind
        super().__init__(f"{command} failed with {label} ({words})")
        self.command = command
        self.kind = kind
        self.code = code
        self.words = words


class ModemTransientError(ModemCommandError, TransientError):
    """The command may succeed later (network busy, SIM busy, no service)."""


class ModemPermanentError(ModemCommandError, PermanentError):
    """Retrying will not help (barred, unknown number, invalid PDU, PUK required)."""


CMS_ERRORS: dict[int, tuple[bool, str]] = {
    1: (False, "unassigned (unallocated) number"),
    8: (False, "operator determined barring"),
    10: (False, "call barred"),
    21: (False, "short message transfer rejected"),
    27: (True, "destination out of service"),
    28: (False, "unidentified subscriber"),
    29: (False, "facility rejected"),
    30: (False, "unknown subscriber"),
    38: (True, "network out of order"),
    41: (True, "temporary failure"),
    42: (True, "congestion"),
    47: (True, "resources unavailable"),
    50: (False, "requested facility not subscribed"),
    69: (False, "requested facility not implemented"),
    81: (False, "invalid short message reference value"),
    95: (False, "invalid message"),
    96: (False, "invalid mandatory information"),
    97: (False, "message type non-existent or not implemented"),
    111: (False, "protocol error"),
    127: (True, "interworking, unspecified"),
    300: (True, "modem failure"),
    301: (True, "SMS service of modem reserved"),
    302: (False, "operation not allowed"),
    303: (False, "operation not supported"),
    304: (False, "invalid PDU mode parameter"),
    305: (False, "invalid text mode parameter"),
    310: (True, "SIM not inserted"),
    311: (True, "SIM PIN required"),
    312: (True, "PH-SIM PIN required"),
    313: (True, "SIM failure"),
    314: (True, "SIM busy"),
    315: (False, "SIM wrong"),
    316: (False, "SIM PUK required"),
    320: (True, "memory failure"),
    321: (False, "invalid memory index"),
    322: (True, "memory full"),
    330: (False, "SMSC address unknown: set it with AT+CSCA or on the SIM"),
    331: (True, "no network service"),
    332: (True, "network timeout"),
    340: (False, "no +CNMA acknowledgement expected"),
    500: (True, "unknown error"),
}

CME_ERRORS: dict[int, tuple[bool, str]] = {
    0: (True, "phone failure"),
    1: (False, "no connection to phone"),
    3: (False, "operation not allowed"),
    4: (False, "operation not supported"),
    10: (True, "SIM not inserted"),
    11: (True, "SIM PIN required"),
    12: (False, "SIM PUK required: unlock the SIM in a phone"),
    13: (True, "SIM failure"),
    14: (True, "SIM busy"),
    15: (False, "SIM wrong"),
    16: (False, "incorrect password: check the configured PIN"),
    17: (False, "SIM PIN2 required"),
    18: (False, "SIM PUK2 required"),
    20: (True, "memory full"),
    21: (False, "invalid index"),
    22: (False, "not found"),
    23: (True, "memory failure"),
    30: (True, "no network service"),
    31: (True, "network timeout"),
    32: (False, "network not allowed, emergency calls only"),
    100: (True, "unknown error"),
}


def error_for(command: str, final: FinalResult) -> ModemCommandError:
    """Map a failed :class:`FinalResult` to the right error class, with the reason in words."""
    table = CMS_ERRORS if final.kind == "CMS" else CME_ERRORS if final.kind == "CME" else None
    if table is None:
        return ModemTransientError(command, final.kind, None, "the modem answered " + final.kind)
    if final.code is None:
        return ModemTransientError(command, final.kind, None, final.text or "no detail")
    transient, words = table.get(final.code, (True, f"code {final.code} (vendor specific)"))
    cls = ModemTransientError if transient else ModemPermanentError
    return cls(command, final.kind, final.code, words)


# -------------------------------------------------------------------------------------------------
# Builders and response field parsers


_SECRET_COMMAND = re.compile(r"^(AT\+(?:CPIN|CLCK|CPWD)=).*$", re.IGNORECASE)


def redact(command_text: str) -> str:
    """A command as it may appear in a log line or an error: the SIM PIN/PUK and facility passwords masked."""
    return _SECRET_COMMAND.sub(r'\1"****"', command_text)


def command(text: str) -> bytes:
    """Frame one command line (``AT...`` plus CR)."""
    if "\r" in text or "\n" in text or "\x1a" in text:
        raise ValueError(f"an AT command line must not contain CR, LF or Ctrl-Z: {text!r}")
    return text.encode("ascii") + b"\r"


def pdu_body(pdu_hex: str) -> bytes:
    """The bytes sent after the ``> `` prompt: the PDU in hex and Ctrl-Z."""
    return pdu_hex.encode("ascii") + CTRL_Z


def response_prefix(cmd: str) -> str | None:
    """The ``+XXX`` prefix a command's information response carries (``AT+CREG?`` -> ``+CREG``)."""
    m = re.match(r"^AT([+^][A-Z]+)", cmd.upper())
    return m.group(1) if m else None


def split_args(args: str) -> list[str]:
    """Split ``a,"b,c",d`` on commas outside quotes and strip the quotes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in args:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def field(line: str, prefix: str) -> list[str] | None:
    """The comma-separated fields of ``+PREFIX: ...``, or None if ``line`` is another response."""
    if not line.upper().startswith(prefix.upper() + ":"):
        return None
    return split_args(line.split(":", 1)[1])


@dataclass(frozen=True)
class StoredPdu:
    """One message listed by ``AT+CMGL``: storage index, status (0 unread ... 3 sent) and PDU
    hex."""

    index: int
    stat: int
    pdu: str


def parse_cmgl(lines: list[str]) -> tuple[list[StoredPdu], list[str]]:
    """Pair ``+CMGL: i,stat,,len`` headers with the PDU line after each.

    Returns (messages, problems): a header without a hex line, or an unparsable header, is reported
    as a
    problem in words, and parsing goes on with the next header, so one bad entry never hides the
    others.
    """
    found: list[StoredPdu] = []
    problems: list[str] = []
    header: list[str] | None = None
    for line in lines:
        f = field(line, "+CMGL")
        if f is not None:
            if header is not None:
                problems.append(f"+CMGL entry {header[0]} had no PDU line")
            header = f
            continue
        if header is None:
            continue
        if _HEX.match(line):
            try:
                found.append(StoredPdu(int(header[0]), int(header[1] or 0), line))
            except (ValueError, IndexError):
                problems.append(f"unreadable +CMGL header {header!r}")
        else:
            problems.append(f"+CMGL entry {header[0]} followed by non-PDU line")
        header = None
    if header is not None:
        problems.append(f"+CMGL entry {header[0]} had no PDU line")
    return found, problems


def parse_cmti(args: str) -> tuple[str, int] | None:
    """``"SM",3`` -> ("SM", 3); None if malformed."""
    parts = split_args(args)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def parse_csq(line: str) -> tuple[int | None, int | None]:
    """``+CSQ: rssi,ber`` -> (dBm or None if unknown, ber or None)."""
    f = field(line, "+CSQ")
    if not f or not f[0].isdigit():
        return None, None
    rssi = int(f[0])
    ber = int(f[1]) if len(f) > 1 and f[1].isdigit() else None
    dbm = None if rssi == 99 or rssi > 31 else -113 + 2 * rssi
    return dbm, None if ber == 99 else ber


REGISTRATION_WORDS: dict[int, str] = {
    0: "not registered, not searching",
    1: "registered, home network",
    2: "searching",
    3: "registration denied",
    4: "unknown",
    5: "registered, roaming",
}


def parse_creg(args: str, *, solicited: bool) -> int | None:
    """Registration status from ``+CREG`` (``n,stat[,...]`` when asked, ``stat[,...]``
    unsolicited)."""
    f = split_args(args)
    idx = 1 if solicited else 0
    if len(f) <= idx or not f[idx].isdigit():
        return None
    return int(f[idx])


def parse_cpms(line: str) -> list[tuple[int, int]]:
    """``+CPMS: "SM",3,30,"SM",3,30,...`` (query form) or ``+CPMS: 3,30,...`` (set form) -> [(used,
    total)]."""
    f = field(line, "+CPMS")
    if f is None:
        return []
    nums = [x for x in f if x.isdigit()]
    return [(int(nums[i]), int(nums[i + 1])) for i in range(0, len(nums) - 1, 2)]
