"""Sans-IO Asterisk Manager Interface (AMI) parser and action encoder.

Theory of operation
-------------------
An AMI connection opens with one banner line (``Asterisk Call Manager/<version>``). Every packet
after that is a block of ``Key: Value`` lines ended by one blank line. A packet that carries
``Event:`` is an :class:`AmiEvent`; one that carries ``Response:`` answers the action whose
``ActionID`` it repeats and becomes an :class:`AmiResponse`. Older Asterisk versions put the raw
output of the ``Command`` action as bare lines into the packet; those are kept under ``Output``.
A key repeated in one packet (``ChanVariable``, ``Output``) has its values joined with ``\\n``.

:class:`AmiParser` is incremental (``feed(bytes) -> list[event]``), tolerates ``\\n`` as well as
``\\r\\n`` line ends, and caps the size of a packet so a broken peer cannot make it buffer without
bound. The same bytes fed whole or split anywhere give the same events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.errors import ProtocolError, ValidationError

#: Largest packet we accept. CoreShowChannel events are well under 2 KiB.
MAX_PACKET_BYTES: Final = 256 * 1024


@dataclass(frozen=True)
class AmiBanner:
    """The first line of the session: ``Asterisk Call Manager/<version>``."""

    version: str


@dataclass(frozen=True)
class AmiEvent:
    """An unsolicited (or list-response) event. ``fields`` includes ``Event``."""

    name: str
    fields: MappingProxyType[str, str]

    def get(self, key: str, default: str = "") -> str:
        """Field by exact AMI key (``Uniqueid``, ``CallerIDNum``...), ``default`` if absent."""
        return self.fields.get(key, default)


@dataclass(frozen=True)
class AmiResponse:
    """The answer to an action: ``Response: Success|Error|Follows|Goodbye``."""

    response: str
    action_id: str
    message: str
    fields: MappingProxyType[str, str]

    @property
    def success(self) -> bool:
        """True for Success/Follows/Goodbye."""
        return self.response.lower() in ("success", "follows", "goodbye")


AmiPacket = AmiBanner | AmiEvent | AmiResponse


class AmiParser:
    """Incremental AMI parser (client side). See the module docstring."""

    def __init__(self, *, max_packet_bytes: int = MAX_PACKET_BYTES, expect_banner: bool = True):
        self._buf = bytearray()
        self._scan = 0
        self._max = max_packet_bytes
        self._need_banner = expect_banner

    def feed(self, data: bytes) -> list[AmiPacket]:
        """Consume ``data``; return every packet it completed.

        Raises :class:`ProtocolError` when one packet grows past the cap; the connection must be
        dropped then (the stream cannot be resynchronised safely).
        """
        self._buf += data
        out: list[AmiPacket] = []
        if self._need_banner:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > 1024:
                    raise ProtocolError("no AMI banner line in the first 1024 bytes")
                return out
            line = self._buf[:nl].decode("utf-8", "replace").strip()
            del self._buf[: nl + 1]
            self._need_banner = False
            if not line.startswith("Asterisk Call Manager/"):
                raise ProtocolError(f"not an AMI banner: {line[:80]!r}")
            out.append(AmiBanner(version=line.partition("/")[2]))
        while True:
            end, sep_len = self._find_blank_line()
            if end < 0:
                if len(self._buf) > self._max:
                    raise ProtocolError(f"AMI packet larger than {self._max} bytes")
                return out
            block = bytes(self._buf[:end])
            del self._buf[: end + sep_len]
            self._scan = 0
            pkt = parse_packet(block.decode("utf-8", "replace"))
            if pkt is not None:
                out.append(pkt)

    def _find_blank_line(self) -> tuple[int, int]:
        """Index where the packet ends and the length of the blank-line separator, or (-1, 0)."""
        buf = self._buf
        a = buf.find(b"\n\n", self._scan)
        b = buf.find(b"\n\r\n", self._scan)
        # Nothing before len-2 can start a separator we have not seen yet: skip it next time.
        self._scan = max(0, len(buf) - 2)
        if a < 0 and b < 0:
            return -1, 0
        if b < 0 or (0 <= a < b):
            return a, 2
        return b, 3


def parse_packet(text: str) -> AmiPacket | None:
    """Turn one packet's text (without the blank line) into an event or response.

    Returns ``None`` for a block that is neither (stray blank lines, keep-alive noise).
    """
    fields: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or " " in key:
            key, value = "Output", line
        else:
            value = value[1:] if value.startswith(" ") else value
        if key in fields:
            fields[key] = fields[key] + "\n" + value
        else:
            fields[key] = value
    if "Event" in fields:
        return AmiEvent(name=fields["Event"], fields=MappingProxyType(fields))
    if "Response" in fields:
        return AmiResponse(
            response=fields["Response"],
            action_id=fields.get("ActionID", ""),
            message=fields.get("Message", ""),
            fields=MappingProxyType(fields),
        )
    return None


def encode_action(
    action: str, fields: Mapping[str, str] | Iterable[tuple[str, str]] = (), *, action_id: str = ""
) -> bytes:
    """Encode one action packet. Values with line breaks are refused (they would inject keys)."""
    pairs = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    lines = [f"Action: {action}"]
    if action_id:
        lines.append(f"ActionID: {action_id}")
    for key, value in [("Action", action), *pairs]:
        if any(c in key + value for c in "\r\n"):
            raise ValidationError(f"AMI field {key!r} contains a line break; refusing to send it")
    lines.extend(f"{k}: {v}" for k, v in pairs)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
