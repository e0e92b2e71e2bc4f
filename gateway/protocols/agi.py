"""Sans-IO FastAGI framing: request headers in, commands out, result lines in.

Theory of operation
-------------------
A FastAGI session is a TCP connection *from* Asterisk *to* us. Asterisk first sends a block of
``agi_<name>: <value>`` header lines ended by one blank line; :class:`AgiParser` collects those
(capped in size and count, so a peer cannot make us buffer megabytes) and emits one
:class:`AgiRequest`. After that the roles flip to request/response: we write one command line
(built by :func:`set_variable`, :func:`exec_app`, ...) and Asterisk answers with one result line
``200 result=<n> [(<data>)] [endpos=<n>]``, which the parser emits as :class:`AgiResult`. Errors
come back as ``510`` (unknown command), ``511`` (channel is dead) or a multi-line ``520-`` usage
block ended by ``520 End of proper usage.``; :func:`raise_for_result` maps those codes onto error
classes through the single :data:`AGI_ERRORS` table. When the caller hangs up, Asterisk may send a
bare ``HANGUP`` line at any point after the headers; it becomes :class:`AgiHangup`.

The parser never does I/O: ``feed(bytes) -> list[event]``. Feeding the same bytes whole or split at
any byte gives the same events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.errors import PermanentError, ProtocolError, ValidationError

#: Largest header block we accept. Asterisk sends about 1 KiB; 16 KiB leaves room for long args.
MAX_HEADER_BYTES: Final = 16 * 1024
#: Largest single line (header or result). A result line carries at most a variable's value.
MAX_LINE_BYTES: Final = 8 * 1024
#: Most header lines we accept in one request (Asterisk sends about 25 plus one per argument).
MAX_HEADER_LINES: Final = 200
#: Longest value we put into one command; Asterisk's own AGI buffer is 2 KiB per line.
MAX_COMMAND_BYTES: Final = 2000

_HEADER_RE: Final = re.compile(r"^(agi_[A-Za-z0-9_]+): ?(.*)$")
_RESULT_RE: Final = re.compile(r"^200 result=(?P<result>-?\d*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>-?\d+))?\s*$")
_VARNAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\([A-Za-z0-9_,/-]*\))?$")
_APPNAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class AgiError(ProtocolError):
    """Base of errors reported by Asterisk in an AGI result line."""

    code: int = 0

    def __init__(self, message: str, *, line: str = "") -> None:
        super().__init__(message)
        self.line = line


class AgiInvalidCommandError(AgiError):
    """510: Asterisk does not know the command we sent (a bug on our side)."""

    code = 510


class AgiUsageError(AgiError):
    """520: the command exists but its arguments were wrong; ``usage`` holds Asterisk's help."""

    code = 520


class AgiDeadChannelError(AgiError, PermanentError):
    """511: the channel hung up; nothing more can be done on this call."""

    code = 511


#: The one table mapping AGI wire codes to error classes.
AGI_ERRORS: Final[MappingProxyType[int, type[AgiError]]] = MappingProxyType(
    {
        510: AgiInvalidCommandError,
        511: AgiDeadChannelError,
        520: AgiUsageError,
    }
)


@dataclass(frozen=True)
class AgiRequest:
    """The header block Asterisk sends when a FastAGI session starts.

    ``headers`` maps names without the ``agi_`` prefix (``callerid``, ``uniqueid``...) to values;
    ``path`` is the script path from ``agi_request`` without the leading slash (``inbound``),
    ``query`` its query-string parameters and ``args`` the ``agi_arg_N`` values in order.
    """

    headers: MappingProxyType[str, str]
    path: str
    query: MappingProxyType[str, str]
    args: tuple[str, ...]

    def get(self, name: str, default: str = "") -> str:
        """Header value by name without the ``agi_`` prefix, ``default`` if absent."""
        return self.headers.get(name, default)

    @property
    def uniqueid(self) -> str:
        """The channel's Uniqueid (``agi_uniqueid``)."""
        return self.get("uniqueid")

    @property
    def channel(self) -> str:
        """The channel name (``agi_channel``)."""
        return self.get("channel")


@dataclass(frozen=True)
class AgiResult:
    """One response line: ``code`` 200 is success, others are errors (see :data:`AGI_ERRORS`)."""

    code: int
    result: str = ""
    data: str = ""
    endpos: int | None = None
    line: str = ""
    usage: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True for a ``200`` line."""
        return self.code == 200

    @property
    def value(self) -> int:
        """``result=`` as an int (``-1`` usually means failure or hang-up)."""
        try:
            return int(self.result)
        except ValueError:
            return -1


@dataclass(frozen=True)
class AgiHangup:
    """Asterisk told us the channel hung up (a bare ``HANGUP`` line)."""


AgiEvent = AgiRequest | AgiResult | AgiHangup


def raise_for_result(res: AgiResult) -> AgiResult:
    """Return ``res`` if it is a ``200`` line, else raise the error class the table maps it to."""
    if res.ok:
        return res
    cls = AGI_ERRORS.get(res.code)
    if cls is None:
        raise AgiError(f"unexpected AGI response code {res.code}: {res.line!r}", line=res.line)
    detail = " / ".join(res.usage) if res.usage else res.line
    raise cls(f"AGI error {res.code}: {detail}", line=res.line)


class AgiParser:
    """Incremental FastAGI parser for the server side of a session. See the module docstring."""

    def __init__(
        self,
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_header_lines: int = MAX_HEADER_LINES,
    ) -> None:
        self._buf = bytearray()
        self._max_header = max_header_bytes
        self._max_line = max_line_bytes
        self._max_lines = max_header_lines
        self._header_bytes = 0
        self._headers: dict[str, str] = {}
        self._in_headers = True
        self._usage: list[str] | None = None

    @property
    def headers_done(self) -> bool:
        """True once the request header block was complete."""
        return not self._in_headers

    def feed(self, data: bytes) -> list[AgiEvent]:
        """Consume ``data`` and return the complete events it finished.

        Raises :class:`ProtocolError` when the peer exceeds the caps or sends a malformed header;
        the session must then be closed.
        """
        self._buf += data
        events: list[AgiEvent] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                limit = self._max_line
                if self._in_headers:
                    limit = min(limit, self._max_header - self._header_bytes)
                if len(self._buf) > limit:
                    raise ProtocolError(f"AGI line longer than {limit} bytes without a newline; closing the session")
                return events
            raw = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            if len(raw) > self._max_line:
                raise ProtocolError(f"AGI line of {len(raw)} bytes exceeds {self._max_line}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            ev: AgiEvent | None = self._header_line(line, len(raw)) if self._in_headers else self._response_line(line)
            if ev is not None:
                events.append(ev)

    def _header_line(self, line: str, size: int) -> AgiRequest | None:
        self._header_bytes += size
        if self._header_bytes > self._max_header:
            raise ProtocolError(f"AGI header block exceeds {self._max_header} bytes")
        if line == "":
            if not self._headers:
                # Tolerate stray blank lines before the first header (some clients send one).
                return None
            self._in_headers = False
            return _build_request(self._headers)
        if len(self._headers) >= self._max_lines:
            raise ProtocolError(f"AGI header block has more than {self._max_lines} lines")
        m = _HEADER_RE.match(line)
        if m is None:
            raise ProtocolError(f"malformed AGI header line {line[:80]!r} (expected 'agi_name: value')")
        self._headers[m.group(1)[4:].lower()] = m.group(2)
        return None

    def _response_line(self, line: str) -> AgiResult | AgiHangup | None:
        if self._usage is not None:
            if line.startswith("520 "):
                usage = tuple(self._usage)
                self._usage = None
                return AgiResult(code=520, line=line, usage=usage)
            if len(self._usage) >= 200:
                raise ProtocolError("AGI 520 usage block longer than 200 lines")
            self._usage.append(line)
            return None
        stripped = line.strip()
        if stripped == "":
            return None
        if stripped == "HANGUP":
            return AgiHangup()
        if line.startswith("520-"):
            self._usage = [line[4:]]
            return None
        m = _RESULT_RE.match(line)
        if m is not None:
            endpos = m.group("endpos")
            return AgiResult(
                code=200,
                result=m.group("result"),
                data=m.group("data") or "",
                endpos=int(endpos) if endpos is not None else None,
                line=line,
            )
        code_txt = line[:3]
        if code_txt.isdigit() and (len(line) == 3 or line[3] in " -"):
            return AgiResult(code=int(code_txt), line=line, data=line[4:])
        raise ProtocolError(f"unparseable AGI response line {line[:80]!r}")


def _build_request(headers: dict[str, str]) -> AgiRequest:
    req = headers.get("request", "")
    path = ""
    query: dict[str, str] = {}
    if req:
        parts = urlsplit(req)
        path = unquote(parts.path).lstrip("/")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if not path:
        path = headers.get("network_script", "")
    args: list[str] = []
    n = 1
    while f"arg_{n}" in headers:
        args.append(headers[f"arg_{n}"])
        n += 1
    return AgiRequest(
        headers=MappingProxyType(dict(headers)),
        path=path,
        query=MappingProxyType(query),
        args=tuple(args),
    )


# --- command builders -------------------------------------------------------------------------


def quote_arg(value: str) -> str:
    """Quote one AGI argument the way Asterisk's ``parse_args`` reads it back.

    Inside double quotes, ``\\`` and ``"`` are escaped with a backslash. Line breaks and other
    control characters cannot be carried by the line protocol at all and are refused.
    """
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValidationError(f"AGI argument contains control character {bad!r}; sanitize the value before sending")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _command(text: str) -> bytes:
    data = (text + "\n").encode("utf-8")
    if len(data) > MAX_COMMAND_BYTES:
        raise ValidationError(f"AGI command of {len(data)} bytes exceeds {MAX_COMMAND_BYTES}; shorten the value")
    return data


def set_variable(name: str, value: str) -> bytes:
    """``SET VARIABLE name "value"``: ``name`` may be a function like ``CALLERID(name)``."""
    if not _VARNAME_RE.match(name):
        raise ValidationError(f"invalid channel variable name {name!r}: use letters, digits, _ and FUNC(arg)")
    return _command(f"SET VARIABLE {name} {quote_arg(value)}")


def get_variable(name: str) -> bytes:
    """``GET VARIABLE name``; the value comes back as the result's ``data``."""
    if not _VARNAME_RE.match(name):
        raise ValidationError(f"invalid channel variable name {name!r}")
    return _command(f"GET VARIABLE {name}")


def exec_app(app: str, options: str = "") -> bytes:
    """``EXEC App "options"``: run a dialplan application on the channel."""
    if not _APPNAME_RE.match(app):
        raise ValidationError(f"invalid dialplan application name {app!r}")
    if options == "":
        return _command(f"EXEC {app}")
    return _command(f"EXEC {app} {quote_arg(options)}")


def verbose(message: str, level: int = 1) -> bytes:
    """``VERBOSE "message" level``: write to Asterisk's console/log."""
    return _command(f"VERBOSE {quote_arg(message)} {int(level)}")
