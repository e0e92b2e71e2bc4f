"""SMS PDU codec (3GPP TS 23.040 / 23.038): SMS-DELIVER, SMS-SUBMIT and SMS-STATUS-REPORT.

We reuse the parts of ``gsmmodem.pdu`` that are right (the GSM 7-bit default alphabet table,
semi-octet number coding) and replace what is wrong there:

* characters outside the BMP (emoji) raise ``ValueError`` in its UCS-2 encoder; here they become
  UTF-16 surrogate pairs, and a pair is never split across two parts of a concatenated message;
* its extension table maps form feed to U+00FF; here it is U+000C, and ESC never leaks into text;
* its septet unpacker drops a trailing ``@``; its splitter counts UCS-2 limits in code points;
* its decoder raises ``StopIteration``, ``ValueError``, ``IndexError``... on truncated or odd
  input. Here the only exception :func:`decode` lets out is :class:`PduDecodeError`.

Everything here is pure: bytes and strings in, frozen dataclasses and hex strings out.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Literal

from gsmmodem import pdu as _gsm  # pure functions only; the GsmModem class is never used

from gateway.errors import ProtocolError, ValidationError

Encoding = Literal["gsm7", "ucs2", "8bit"]

GSM7_BASIC: str = _gsm.GSM7_BASIC
_ESC = 0x1B
# 3GPP TS 23.038 6.2.1.1 extension table (the page-break entry is U+000C form feed).
GSM7_EXTENSION: dict[str, int] = {
    "\x0c": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_GSM7_EXTENSION_REVERSE: dict[int, str] = {v: k for k, v in GSM7_EXTENSION.items()}
_GSM7_BASIC_INDEX: dict[str, int] = {ch: i for i, ch in enumerate(GSM7_BASIC) if i != _ESC}
#: The septets of every character the alphabet has: one for the basic table, ESC and the code for the extension table.
_GSM7_SEPTETS: dict[str, tuple[int, ...]] = {
    **{ch: (_ESC, code) for ch, code in GSM7_EXTENSION.items()},
    **{ch: (i,) for ch, i in _GSM7_BASIC_INDEX.items()},
}
_GSM7_CHARS = frozenset(_GSM7_SEPTETS)
_GSM7_EXTENSION_ONLY = frozenset(ch for ch in GSM7_EXTENSION if ch not in _GSM7_BASIC_INDEX)

GSM7_SINGLE = 160
GSM7_MULTI = 153
UCS2_SINGLE = 70
UCS2_MULTI = 67
_MAX_PARTS = 255


class PduDecodeError(ProtocolError):
    """A PDU could not be decoded: truncated, malformed, or using a feature we do not support."""


class PduEncodeError(ValidationError):
    """A message cannot be encoded (bad destination number, text too long for 255 parts)."""


@dataclass(frozen=True)
class Concat:
    """Concatenation information element: part ``seq`` of ``total`` in the set ``ref``."""

    ref: int
    total: int
    seq: int
    ref_bits: int = 8


@dataclass(frozen=True)
class SmsDeliver:
    """A mobile-terminated message (network -> us)."""

    sender: str
    text: str
    encoding: Encoding
    timestamp: float | None
    concat: Concat | None = None
    smsc: str | None = None
    payload: bytes = b""
    pid: int = 0
    dcs: int = 0


@dataclass(frozen=True)
class SmsSubmit:
    """A mobile-originated message (us -> network), as stored or as we send it."""

    recipient: str
    text: str
    encoding: Encoding
    reference: int
    status_report: bool
    concat: Concat | None = None
    smsc: str | None = None
    payload: bytes = b""


@dataclass(frozen=True)
class SmsStatusReport:
    """A delivery report for a message we sent, matched by ``reference`` (TP-MR)."""

    reference: int
    recipient: str
    status: int
    timestamp: float | None
    discharge: float | None
    smsc: str | None = None

    @property
    def delivered(self) -> bool:
        """The short message was received by the recipient (TP-ST 0x00-0x1F)."""
        return self.status < 0x20

    @property
    def final(self) -> bool:
        """No further report will follow: delivered, or failed permanently (0x40-0x7F and above)."""
        return self.status < 0x20 or self.status >= 0x40

    @property
    def status_text(self) -> str:
        """TP-Status in words."""
        return status_text(self.status)


Decoded = SmsDeliver | SmsSubmit | SmsStatusReport


@dataclass(frozen=True)
class EncodedPdu:
    """One PDU ready for ``AT+CMGS=<tpdu_length>``: hex with a leading (empty) SMSC field."""

    hex: str
    tpdu_length: int
    text: str


_STATUS_WORDS: dict[int, str] = {
    0x00: "delivered to the recipient",
    0x01: "forwarded, delivery not confirmed",
    0x02: "replaced by the service centre",
    0x20: "network congestion, still trying",
    0x21: "recipient busy, still trying",
    0x22: "no response from recipient, still trying",
    0x23: "service rejected, still trying",
    0x24: "quality of service not available, still trying",
    0x25: "error in recipient's phone, still trying",
    0x40: "remote procedure error",
    0x41: "incompatible destination",
    0x42: "connection rejected by recipient",
    0x43: "not obtainable",
    0x44: "quality of service not available",
    0x45: "no interworking available",
    0x46: "message validity period expired",
    0x47: "deleted by the sender",
    0x48: "deleted by the service centre administration",
    0x49: "message does not exist",
    0x60: "network congestion, gave up",
    0x61: "recipient busy, gave up",
    0x62: "no response from recipient, gave up",
    0x63: "service rejected, gave up",
    0x64: "quality of service not available, gave up",
    0x65: "error in recipient's phone, gave up",
}


def status_text(status: int) -> str:
    """TP-Status (TS 23.040 9.2.3.15) in words."""
    if status in _STATUS_WORDS:
        return _STATUS_WORDS[status]
    if status < 0x20:
        return "delivered"
    if status < 0x40:
        return "temporary failure, still trying"
    return f"permanent failure (status 0x{status:02X})"


# -------------------------------------------------------------------------------------------------
# Text: alphabet choice, segment counting, splitting


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM 7-bit default alphabet or its extension table."""
    return _GSM7_CHARS.issuperset(text)


def _gsm7_cost(ch: str) -> int:
    return 2 if ch in _GSM7_EXTENSION_ONLY else 1


def _utf16_units(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def split_text(text: str, *, ref_bits: int = 8) -> tuple[Encoding, list[str]]:
    """Split ``text`` into the parts it will be sent as.

    GSM 7-bit: 160 septets in one part, else 153 per part (152 with 16-bit references); an
    extension character costs two septets and is never split. UCS-2: 70 UTF-16 code units in one
    part, else 67 (66); a surrogate pair is never split.
    """
    if is_gsm7(text):
        single, multi = GSM7_SINGLE, GSM7_MULTI
        encoding: Encoding = "gsm7"
        cost = _gsm7_cost
        plain = _GSM7_EXTENSION_ONLY.isdisjoint(text)  # every character one septet
        total = len(text) if plain else sum(_gsm7_cost(ch) for ch in text)
    else:
        single, multi = UCS2_SINGLE, UCS2_MULTI
        encoding = "ucs2"
        cost = _utf16_units
        total = len(text.encode("utf-16-le", errors="surrogatepass")) // 2
        plain = total == len(text)  # no character outside the BMP
    if ref_bits == 16:
        multi -= 1
    if total <= single:
        return encoding, [text]
    if plain:
        return encoding, [text[i : i + multi] for i in range(0, len(text), multi)]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        c = cost(ch)
        if used + c > multi:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += c
    if current:
        parts.append("".join(current))
    return encoding, parts


def segment_count(text: str) -> tuple[Encoding, int]:
    """How ``text`` will be sent: ``("gsm7" | "ucs2", parts)``. Used by the reply box's counter."""
    encoding, parts = split_text(text)
    return encoding, len(parts)


# -------------------------------------------------------------------------------------------------
# Low-level coding


def pack_septets(septets: list[int], pad_bits: int = 0) -> bytes:
    """Pack 7-bit values little-endian into octets, after ``pad_bits`` fill bits."""
    acc = 0
    for i, s in enumerate(septets):
        acc |= (s & 0x7F) << (pad_bits + 7 * i)
    nbytes = (pad_bits + 7 * len(septets) + 7) // 8
    return acc.to_bytes(nbytes, "little")


def unpack_septets(data: bytes, count: int, pad_bits: int = 0) -> list[int]:
    """Inverse of :func:`pack_septets`; raises :class:`PduDecodeError` if ``data`` is too short."""
    needed = (pad_bits + 7 * count + 7) // 8
    if needed > len(data):
        raise PduDecodeError(f"user data holds {len(data)} octets but its length says {needed}")
    acc = int.from_bytes(data[:needed], "little") >> pad_bits
    return [(acc >> (7 * i)) & 0x7F for i in range(count)]


def decode_gsm7(septets: list[int]) -> str:
    """Septets to text; an unknown escape shows the basic character (23.038 6.2.1.1). No raise."""
    out: list[str] = []
    it = iter(septets)
    for s in it:
        if s == _ESC:
            nxt = next(it, None)
            if nxt is None:
                break
            out.append(_GSM7_EXTENSION_REVERSE.get(nxt, GSM7_BASIC[nxt] if nxt != _ESC else " "))
        else:
            out.append(GSM7_BASIC[s])
    return "".join(out)


def encode_gsm7(text: str) -> list[int]:
    """Text to septets (``KeyError`` on a character outside the alphabet: check is_gsm7 first)."""
    if _GSM7_EXTENSION_ONLY.isdisjoint(text):
        return [_GSM7_BASIC_INDEX[ch] for ch in text]
    out: list[int] = []
    for ch in text:
        out.extend(_GSM7_SEPTETS[ch])
    return out


def decode_ucs2(data: bytes) -> str:
    """UTF-16BE to text; a surrogate pair becomes one character, a lone half or odd byte U+FFFD."""
    return data.decode("utf-16-be", errors="replace")


def encode_ucs2(text: str) -> bytes:
    """Text to UTF-16BE: characters outside the BMP become surrogate pairs."""
    return text.encode("utf-16-be")


def _encode_address(number: str) -> bytes:
    digits = number[1:] if number.startswith("+") else number
    if not digits.isdigit() or not digits.isascii() or not 1 <= len(digits) <= 20:
        raise PduEncodeError(
            f"cannot send to a {len(number)}-character destination: it must be 1 to 20 digits with "
            "an optional leading '+'; fix the number"
        )
    toa = 0x91 if number.startswith("+") else 0x81
    return bytes([len(digits), toa]) + bytes(_gsm.encodeSemiOctets(digits))


_BCD_EXTRA = "*#abc"


def _decode_semi_octets(data: bytes, ndigits: int) -> str:
    out: list[str] = []
    for b in data:
        for nib in (b & 0x0F, b >> 4):
            if len(out) == ndigits or nib == 0x0F:
                return "".join(out)
            out.append(str(nib) if nib < 10 else _BCD_EXTRA[nib - 10])
    return "".join(out)


class _Reader:
    """Bounds-checked cursor over a PDU: every overrun becomes a PduDecodeError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise PduDecodeError(f"PDU ends before its {what} (at octet {self.pos})")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise PduDecodeError(
                f"PDU ends inside its {what}: needs {n} octets at {self.pos}, has {len(self.data) - self.pos}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk


def _read_address(r: _Reader, what: str) -> str:
    ndigits = r.byte(f"{what} length")
    toa = r.byte(f"{what} type")
    raw = r.take((ndigits + 1) // 2, what)
    if (toa & 0x70) == 0x50:  # alphanumeric sender (e.g. a bank's name)
        return decode_gsm7(unpack_septets(raw, ndigits * 4 // 7))
    number = _decode_semi_octets(raw, ndigits)
    return "+" + number if (toa & 0x70) == 0x10 and number else number


def _read_smsc(r: _Reader) -> str | None:
    length = r.byte("SMSC length")
    if length == 0:
        return None
    toa = r.byte("SMSC type")
    raw = r.take(length - 1, "SMSC address")
    number = _decode_semi_octets(raw, 2 * len(raw))
    return "+" + number if (toa & 0x70) == 0x10 and number else number


def _read_timestamp(r: _Reader) -> float | None:
    raw = r.take(7, "timestamp")
    fields = []
    for b in raw[:6]:
        lo, hi = b & 0x0F, b >> 4
        if lo > 9 or hi > 9:
            return None
        fields.append(lo * 10 + hi)
    tz_octet = raw[6]
    quarters = (tz_octet & 0x07) * 10 + (tz_octet >> 4)
    if quarters > 79:
        quarters = 0
    if tz_octet & 0x08:
        quarters = -quarters
    yy, mo, dd, hh, mi, ss = fields
    try:
        when = _dt.datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=_dt.timezone(_dt.timedelta(minutes=15 * quarters)))
    except ValueError:
        return None
    return when.timestamp()


def _encode_timestamp(when: float) -> bytes:
    t = _dt.datetime.fromtimestamp(when, tz=_dt.UTC)
    digits = t.strftime("%y%m%d%H%M%S") + "00"
    return bytes(_gsm.encodeSemiOctets(digits))


def relative_validity(minutes: int) -> int:
    """TP-VP, relative format (TS 23.040 9.2.3.12.1), rounded down to what the coding can say."""
    if minutes <= 12 * 60:
        return max(0, minutes // 5 - 1)
    if minutes <= 24 * 60:
        return 143 + (minutes - 12 * 60) // 30
    days = minutes // (24 * 60)
    if days <= 30:
        return 166 + days
    return min(255, 192 + days // 7)


def _alphabet(dcs: int) -> Encoding:
    group = dcs >> 4
    if group <= 0x07:  # general data coding (0xxx), bit 5 = compressed
        if dcs & 0x20:
            raise PduDecodeError(f"compressed user data (DCS 0x{dcs:02X}) is not supported")
        return ("gsm7", "8bit", "ucs2", "gsm7")[(dcs >> 2) & 0x03]
    if group == 0x0F:
        return "8bit" if dcs & 0x04 else "gsm7"
    if group == 0x0E:
        return "ucs2"
    return "gsm7"  # message waiting groups and reserved values use the default alphabet


def _read_user_data(r: _Reader, udhi: bool, encoding: Encoding) -> tuple[str, bytes, Concat | None]:
    udl = r.byte("user data length")
    rest = r.rest()
    concat: Concat | None = None
    header_octets = 0
    if udhi:
        if not rest:
            raise PduDecodeError("user data header flagged but missing")
        udhl = rest[0]
        if udhl + 1 > len(rest):
            raise PduDecodeError(f"user data header length {udhl} exceeds the PDU")
        concat = _parse_udh(rest[1 : 1 + udhl])
        header_octets = udhl + 1
    if encoding == "gsm7":
        header_septets = (header_octets * 8 + 6) // 7
        if udl < header_septets:
            raise PduDecodeError(f"user data length {udl} is shorter than its header")
        pad = header_septets * 7 - header_octets * 8
        septets = unpack_septets(rest[header_octets:], udl - header_septets, pad)
        return decode_gsm7(septets), bytes(septets), concat
    if udl > len(rest):
        raise PduDecodeError(f"user data length {udl} exceeds the {len(rest)} octets present")
    if udl < header_octets:
        raise PduDecodeError(f"user data length {udl} is shorter than its header")
    payload = rest[header_octets:udl]
    if encoding == "ucs2":
        return decode_ucs2(payload), payload, concat
    return payload.decode("latin-1"), payload, concat


def _parse_udh(udh: bytes) -> Concat | None:
    concat: Concat | None = None
    i = 0
    while i < len(udh):
        if i + 2 > len(udh):
            raise PduDecodeError("user data header ends inside an information element")
        iei, length = udh[i], udh[i + 1]
        body = udh[i + 2 : i + 2 + length]
        if len(body) != length:
            raise PduDecodeError(f"information element 0x{iei:02X} is truncated")
        if iei == 0x00 and length == 3:
            concat = Concat(ref=body[0], total=body[1], seq=body[2], ref_bits=8)
        elif iei == 0x08 and length == 4:
            concat = Concat(ref=(body[0] << 8) | body[1], total=body[2], seq=body[3], ref_bits=16)
        i += 2 + length
    if concat is not None and (concat.total == 0 or not 1 <= concat.seq <= concat.total):
        return None  # TS 23.040 9.2.3.24.1: ignore an inconsistent concatenation element
    if concat is not None and concat.total == 1:
        return None
    return concat


# -------------------------------------------------------------------------------------------------
# Public decode / encode


def sender_of(pdu_hex: str, *, has_smsc: bool = True) -> str | None:
    """Best effort: the originator address of an SMS-DELIVER whose body cannot be decoded, else None.

    The address comes early in the PDU, so a message broken further on still says who sent it.
    """
    try:
        r = _Reader(bytes.fromhex(pdu_hex.strip()))
        if has_smsc:
            _read_smsc(r)
        if r.byte("first octet") & 0x03 != 0x00:
            return None
        sender = _read_address(r, "originator address")
    except (ValueError, PduDecodeError):
        return None
    return sender or None


def decode(pdu_hex: str | bytes, *, has_smsc: bool = True) -> Decoded:
    """Decode one PDU as listed by ``AT+CMGL``/``AT+CMGR`` or sent in ``+CDS``.

    Raises only :class:`PduDecodeError` (never ValueError/IndexError): anything else is a defect.
    """
    try:
        if isinstance(pdu_hex, bytes):
            pdu_hex = pdu_hex.decode("ascii")
        data = bytes.fromhex(pdu_hex.strip())
    except (ValueError, UnicodeDecodeError) as err:
        raise PduDecodeError(f"PDU is not hexadecimal: {err}") from err
    r = _Reader(data)
    smsc = _read_smsc(r) if has_smsc else None
    first = r.byte("first octet")
    mti = first & 0x03
    udhi = bool(first & 0x40)
    if mti == 0x00:
        sender = _read_address(r, "originator address")
        pid = r.byte("protocol identifier")
        dcs = r.byte("data coding scheme")
        ts = _read_timestamp(r)
        encoding = _alphabet(dcs)
        text, payload, concat = _read_user_data(r, udhi, encoding)
        return SmsDeliver(
            sender=sender,
            text=text,
            encoding=encoding,
            timestamp=ts,
            concat=concat,
            smsc=smsc,
            payload=payload,
            pid=pid,
            dcs=dcs,
        )
    if mti == 0x01:
        reference = r.byte("message reference")
        recipient = _read_address(r, "destination address")
        r.byte("protocol identifier")
        dcs = r.byte("data coding scheme")
        vpf = (first >> 3) & 0x03
        if vpf == 0x02:
            r.byte("validity period")
        elif vpf in (0x01, 0x03):
            r.take(7, "validity period")
        encoding = _alphabet(dcs)
        text, payload, concat = _read_user_data(r, udhi, encoding)
        return SmsSubmit(
            recipient=recipient,
            text=text,
            encoding=encoding,
            reference=reference,
            status_report=bool(first & 0x20),
            concat=concat,
            smsc=smsc,
            payload=payload,
        )
    if mti == 0x02:
        reference = r.byte("message reference")
        recipient = _read_address(r, "recipient address")
        ts = _read_timestamp(r)
        discharge = _read_timestamp(r)
        status = r.byte("status")
        return SmsStatusReport(
            reference=reference,
            recipient=recipient,
            status=status,
            timestamp=ts,
            discharge=discharge,
            smsc=smsc,
        )
    raise PduDecodeError(f"reserved message type {mti} in first octet 0x{first:02X}")


def _user_data(text: str, encoding: Encoding, concat: Concat | None) -> tuple[int, bytes]:
    """Return (TP-UDL, TP-UD) for one part."""
    header = b""
    if concat is not None:
        if concat.ref_bits == 16:
            ie = bytes([0x08, 4, concat.ref >> 8, concat.ref & 0xFF, concat.total, concat.seq])
        else:
            ie = bytes([0x00, 3, concat.ref & 0xFF, concat.total, concat.seq])
        header = bytes([len(ie)]) + ie
    if encoding == "gsm7":
        septets = encode_gsm7(text)
        header_septets = (len(header) * 8 + 6) // 7
        pad = header_septets * 7 - len(header) * 8
        return header_septets + len(septets), header + pack_septets(septets, pad)
    body = encode_ucs2(text)
    return len(header) + len(body), header + body


def _parts(text: str, concat_ref: int, ref_bits: int) -> tuple[Encoding, list[tuple[str, Concat | None]]]:
    if ref_bits not in (8, 16):
        raise PduEncodeError(f"concatenation reference must be 8 or 16 bits, not {ref_bits}")
    encoding, chunks = split_text(text, ref_bits=ref_bits)
    if len(chunks) > _MAX_PARTS:
        raise PduEncodeError(f"message needs {len(chunks)} parts; at most {_MAX_PARTS} fit in one SMS; shorten it")
    if len(chunks) == 1:
        return encoding, [(chunks[0], None)]
    mask = 0xFFFF if ref_bits == 16 else 0xFF
    return encoding, [
        (chunk, Concat(ref=concat_ref & mask, total=len(chunks), seq=i + 1, ref_bits=ref_bits))
        for i, chunk in enumerate(chunks)
    ]


def encode_submit(
    number: str,
    text: str,
    *,
    reference: int = 0,
    concat_ref: int = 0,
    ref_bits: int = 8,
    status_report: bool = True,
    validity_minutes: int | None = 24 * 60,
) -> list[EncodedPdu]:
    """Encode ``text`` to ``number``: one SMS-SUBMIT PDU per part (GSM 7-bit or UCS-2).

    ``reference`` is TP-MR (most modems replace it with their own and report it in ``+CMGS: <mr>``);
    ``concat_ref`` ties the parts of a long message together.
    """
    address = _encode_address(number)
    encoding, parts = _parts(text, concat_ref, ref_bits)
    dcs = 0x00 if encoding == "gsm7" else 0x08
    out: list[EncodedPdu] = []
    for chunk, concat in parts:
        first = 0x01
        if validity_minutes is not None:
            first |= 0x10
        if status_report:
            first |= 0x20
        if concat is not None:
            first |= 0x40
        tpdu = bytearray([first, reference & 0xFF])
        tpdu += address
        tpdu += bytes([0x00, dcs])
        if validity_minutes is not None:
            minutes = max(5, min(validity_minutes, 63 * 7 * 24 * 60))
            tpdu.append(relative_validity(minutes))
        udl, ud = _user_data(chunk, encoding, concat)
        tpdu.append(udl)
        tpdu += ud
        out.append(EncodedPdu(hex=("00" + tpdu.hex()).upper(), tpdu_length=len(tpdu), text=chunk))
    return out


def encode_deliver(
    sender: str,
    text: str,
    *,
    timestamp: float,
    concat_ref: int = 0,
    ref_bits: int = 8,
    smsc: str = "+15550000000",
) -> list[EncodedPdu]:
    """Encode an SMS-DELIVER (what a modem lists for a received message). Used by the emulator."""
    address = _encode_address(sender)
    smsc_field = _encode_address(smsc)
    smsc_bytes = bytes([len(smsc_field) - 1]) + smsc_field[1:]
    encoding, parts = _parts(text, concat_ref, ref_bits)
    dcs = 0x00 if encoding == "gsm7" else 0x08
    out: list[EncodedPdu] = []
    for chunk, concat in parts:
        first = 0x04 | (0x40 if concat is not None else 0)
        tpdu = bytearray([first]) + address + bytes([0x00, dcs]) + _encode_timestamp(timestamp)
        udl, ud = _user_data(chunk, encoding, concat)
        tpdu.append(udl)
        tpdu += ud
        out.append(EncodedPdu(hex=(smsc_bytes + tpdu).hex().upper(), tpdu_length=len(tpdu), text=chunk))
    return out


def encode_status_report(
    reference: int,
    recipient: str,
    status: int,
    *,
    timestamp: float,
    discharge: float,
    smsc: str = "+15550000000",
) -> EncodedPdu:
    """Encode an SMS-STATUS-REPORT (sent by the emulator in ``+CDS``)."""
    address = _encode_address(recipient)
    smsc_field = _encode_address(smsc)
    smsc_bytes = bytes([len(smsc_field) - 1]) + smsc_field[1:]
    tpdu = bytearray([0x06, reference & 0xFF]) + address
    tpdu += _encode_timestamp(timestamp) + _encode_timestamp(discharge) + bytes([status & 0xFF])
    return EncodedPdu(hex=(smsc_bytes + tpdu).hex().upper(), tpdu_length=len(tpdu), text="")


def join_parts(parts: list[SmsDeliver]) -> str:
    """Join decoded parts (in order) into one text; a surrogate pair split across parts rejoins."""
    if parts and all(p.encoding == "ucs2" for p in parts):
        return decode_ucs2(b"".join(p.payload for p in parts))
    return "".join(p.text for p in parts)
