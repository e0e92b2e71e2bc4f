"""PDU codec: known vectors, properties over arbitrary Unicode, and hostile input."""

from __future__ import annotations

import contextlib
import random
from datetime import timedelta

import pytest
from gsmmodem import pdu as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocols import pdu
from gateway.protocols.pdu import (
    PduDecodeError,
    PduEncodeError,
    SmsDeliver,
    SmsStatusReport,
    SmsSubmit,
    decode,
    encode_deliver,
    encode_status_report,
    encode_submit,
    join_parts,
    segment_count,
)

T0 = 1_780_000_000.0


def _roundtrip_submit(text: str, *, ref_bits: int = 8) -> tuple[str, list[SmsSubmit]]:
    pdus = encode_submit("+4915112345678", text, concat_ref=0x1234, ref_bits=ref_bits)
    decoded = [decode(p.hex) for p in pdus]
    assert all(isinstance(d, SmsSubmit) for d in decoded)
    subs = [d for d in decoded if isinstance(d, SmsSubmit)]
    for p in pdus:
        assert p.tpdu_length == len(bytes.fromhex(p.hex)) - 1
        assert p.tpdu_length <= 164  # 140 octets of user data plus the fixed header
    return "".join(s.text for s in subs), subs


def test_known_deliver_vector() -> None:
    msg = decode("07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07")
    assert isinstance(msg, SmsDeliver)
    assert msg.sender == "+31641600986"
    assert msg.text == "How are you?"
    assert msg.smsc == "+31624000000"
    assert msg.encoding == "gsm7"
    assert msg.timestamp is not None


def test_emoji_is_a_surrogate_pair_in_ucs2() -> None:
    [p] = encode_submit("+15551234567", "hi 😀")
    msg = decode(p.hex)
    assert isinstance(msg, SmsSubmit)
    assert msg.encoding == "ucs2"
    assert msg.payload == "hi 😀".encode("utf-16-be")
    assert msg.payload.endswith(bytes.fromhex("D83DDE00"))
    assert msg.text == "hi 😀"


def test_extension_table_round_trips_in_gsm7() -> None:
    text = "€[]{}~^|\\ and a form feed \x0c"
    enc, parts = segment_count(text)
    assert (enc, parts) == ("gsm7", 1)
    joined, subs = _roundtrip_submit(text)
    assert joined == text
    assert subs[0].encoding == "gsm7"


def test_trailing_at_sign_survives() -> None:
    for text in ("@", "abcdefg@", "@" * 8, "x" * 7 + "@"):
        assert _roundtrip_submit(text)[0] == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("gsm7", 1)),
        ("a" * 160, ("gsm7", 1)),
        ("a" * 161, ("gsm7", 2)),
        ("a" * 306, ("gsm7", 2)),
        ("a" * 307, ("gsm7", 3)),
        ("€" * 80, ("gsm7", 1)),
        ("€" * 81, ("gsm7", 2)),
        ("é" * 160, ("gsm7", 1)),
        ("ж" * 70, ("ucs2", 1)),
        ("ж" * 71, ("ucs2", 2)),
        ("ж" * 134, ("ucs2", 2)),
        ("ж" * 135, ("ucs2", 3)),
        ("😀" * 35, ("ucs2", 1)),
        ("😀" * 36, ("ucs2", 2)),  # 72 units: a 67-unit part holds 33 pairs, never half of one
        ("😀" * 67, ("ucs2", 3)),
    ],
)
def test_segment_count(text: str, expected: tuple[str, int]) -> None:
    assert segment_count(text) == expected


def test_escape_pair_never_split() -> None:
    text = "a" * 152 + "€" + "b" * 10
    _, parts = pdu.split_text(text)
    assert parts[0] == "a" * 152
    assert parts[1].startswith("€")


def test_sixteen_bit_reference() -> None:
    text = "x" * 400
    joined, subs = _roundtrip_submit(text, ref_bits=16)
    assert joined == text
    assert all(s.concat is not None and s.concat.ref == 0x1234 and s.concat.ref_bits == 16 for s in subs)
    assert [s.concat.seq for s in subs if s.concat] == [1, 2, 3]


def test_status_report_round_trip() -> None:
    p = encode_status_report(42, "+15551234567", 0x00, timestamp=T0, discharge=T0 + 5)
    rep = decode(p.hex)
    assert isinstance(rep, SmsStatusReport)
    assert rep.reference == 42
    assert rep.recipient == "+15551234567"
    assert rep.delivered
    assert rep.final
    assert rep.discharge == T0 + 5
    failed = decode(encode_status_report(7, "+1555", 0x41, timestamp=T0, discharge=T0).hex)
    assert isinstance(failed, SmsStatusReport)
    assert not failed.delivered
    assert failed.final
    assert failed.status_text == "incompatible destination"


def test_alphanumeric_sender() -> None:
    # TOA 0xD0, "Bank" packed in 7-bit: 4 chars = 28 bits -> 7 semi-octets
    septets = pdu.encode_gsm7("Bank")
    packed = pdu.pack_septets(septets)
    tpdu = bytes([0x04, 7, 0xD0]) + packed + bytes([0, 0]) + bytes.fromhex("62100131000000") + bytes([2])
    tpdu += pdu.pack_septets(pdu.encode_gsm7("hi"))
    msg = decode("00" + tpdu.hex())
    assert isinstance(msg, SmsDeliver)
    assert msg.sender == "Bank"
    assert msg.text == "hi"


def test_bad_destination_is_a_clear_error() -> None:
    with pytest.raises(PduEncodeError, match="digits"):
        encode_submit("call me", "hello")


@given(st.text(max_size=700))
@settings(max_examples=300, deadline=None)
def test_submit_round_trip_any_unicode(text: str) -> None:
    joined, subs = _roundtrip_submit(text)
    assert joined == text
    enc, n = segment_count(text)
    assert len(subs) == n
    assert all(s.encoding == enc for s in subs)


@given(st.text(alphabet=st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), max_size=120))
@settings(max_examples=100, deadline=None)
def test_emoji_round_trip(text: str) -> None:
    assert _roundtrip_submit(text)[0] == text


@given(st.text(max_size=500), st.integers(0, 0xFFFF), st.sampled_from([8, 16]), st.randoms())
@settings(max_examples=200, deadline=None)
def test_deliver_reassembly_under_shuffle(text: str, ref: int, ref_bits: int, rnd: random.Random) -> None:
    pdus = encode_deliver("+15551234567", text, timestamp=T0, concat_ref=ref, ref_bits=ref_bits)
    decoded = [decode(p.hex) for p in pdus]
    rnd.shuffle(decoded)
    delivers = [d for d in decoded if isinstance(d, SmsDeliver)]
    assert len(delivers) == len(pdus)
    delivers.sort(key=lambda d: d.concat.seq if d.concat else 0)
    assert join_parts(delivers) == text
    assert all(d.timestamp == T0 for d in delivers)


def test_surrogate_pair_split_by_foreign_sender_is_rejoined() -> None:
    whole = "ab😀cd".encode("utf-16-be")
    first, second = whole[:6], whole[6:]  # splits the pair in the middle
    parts = []
    for seq, chunk in ((1, first), (2, second)):
        udh = bytes([5, 0, 3, 9, 2, seq])
        tpdu = bytes([0x44, 2, 0x81, 0x21, 0, 8]) + bytes.fromhex("62100131000000")
        tpdu += bytes([len(udh) + len(chunk)]) + udh + chunk
        msg = decode("00" + tpdu.hex())
        assert isinstance(msg, SmsDeliver)
        parts.append(msg)
    assert join_parts(parts) == "ab😀cd"


@given(st.binary(max_size=200))
@settings(max_examples=1000, deadline=None)
def test_decode_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(PduDecodeError):
        decode(data.hex())


@given(st.text(max_size=50))
@settings(max_examples=300, deadline=None)
def test_decode_of_text_raises_only_its_own_error(data: str) -> None:
    with contextlib.suppress(PduDecodeError):
        decode(data)


@given(st.text(max_size=300), st.integers(0, 400))
@settings(max_examples=300, deadline=None)
def test_truncated_real_pdus_raise_only_decode_error(text: str, cut: int) -> None:
    for p in encode_deliver("+15551234567", text, timestamp=T0):
        with contextlib.suppress(PduDecodeError):
            decode(p.hex[: cut * 2])


@pytest.mark.parametrize("minutes", [5, 60, 719, 720, 750, 1440, 2880, 43200, 50400, 63 * 7 * 1440])
def test_relative_validity_matches_the_table(minutes: int) -> None:
    expected = reference._encodeRelativeValidityPeriod(timedelta(minutes=minutes))
    assert pdu.relative_validity(minutes) == expected


def _split_one_by_one(text: str, ref_bits: int) -> tuple[str, list[str]]:
    """The splitting rule spelled out character by character (the reference the fast paths must match)."""
    basic = set(pdu.GSM7_BASIC) - {pdu.GSM7_BASIC[0x1B]}  # position 0x1B is the escape, not a character
    gsm7 = all(ch in basic or ch in pdu.GSM7_EXTENSION for ch in text)

    def cost(ch: str) -> int:
        if gsm7:
            return 1 if ch in basic else 2
        return 2 if ord(ch) > 0xFFFF else 1

    single, multi = (160, 153) if gsm7 else (70, 67)
    multi -= ref_bits == 16
    if sum(cost(ch) for ch in text) <= single:
        return ("gsm7" if gsm7 else "ucs2"), [text]
    parts, current, used = [], "", 0
    for ch in text:
        if used + cost(ch) > multi:
            parts.append(current)
            current, used = "", 0
        current += ch
        used += cost(ch)
    return ("gsm7" if gsm7 else "ucs2"), [*parts, current] if current else parts


@given(
    st.text(alphabet=st.sampled_from(list("ab €[~^{}|\\é\x1bжё😀🎉\ud800")), max_size=500),
    st.sampled_from([8, 16]),
)
@settings(max_examples=400, deadline=None)
def test_split_matches_the_rule_character_by_character(text: str, ref_bits: int) -> None:
    assert pdu.split_text(text, ref_bits=ref_bits) == _split_one_by_one(text, ref_bits)
