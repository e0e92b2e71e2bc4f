"""The harness reads sipp's SIP traces correctly (no PBX needed)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.realpbx.harness import StaffPhone, display_name, parse_trace, quote_display_name

INVITE = (
    "INVITE sip:201@127.0.0.1:15201 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:15060;rport;branch=z9hG4bKPj1\r\n"
    'From: "Maria R - roof estimate" <sip:5551234567@127.0.0.1>;tag=abc\r\n'
    "To: <sip:201@127.0.0.1>\r\n"
    "Call-ID: call-1\r\n"
    "CSeq: 4711 INVITE\r\n"
    "Content-Length: 0\r\n"
)
RINGING = (
    "SIP/2.0 180 Ringing\r\n"
    'From: "Maria R - roof estimate" <sip:5551234567@127.0.0.1>;tag=abc\r\n'
    "Call-ID: call-1\r\n"
    "CSeq: 4711 INVITE\r\n"
)
OK = RINGING.replace("180 Ringing", "200 OK")


def _entry(stamp: str, direction: str, message: str) -> str:
    verb = "UDP message received [900] bytes :" if direction == "in" else "UDP message sent (300 bytes):"
    return f"----------------------------------------------- {stamp}\n{verb}\n\n{message}\n"


def test_trace_is_split_into_messages_with_times() -> None:
    text = _entry("2026-11-25 03:02:33.533775", "in", INVITE) + _entry("2026-11-25 03:02:33.634000", "out", RINGING)
    invite, ringing = parse_trace(text)
    assert invite.direction == "received"
    assert invite.method == "INVITE"
    assert invite.status is None
    assert invite.header("call-id") == "call-1"
    assert invite.from_display_name == "Maria R - roof estimate"
    assert ringing.direction == "sent"
    assert ringing.status == 180
    assert ringing.cseq_method == "INVITE"
    expected = datetime(2026, 11, 25, 3, 2, 33, 533775).astimezone().timestamp()
    assert invite.at == pytest.approx(expected)
    assert ringing.at is not None
    assert invite.at is not None
    assert ringing.at - invite.at == pytest.approx(0.100225)


def test_retransmitted_invites_count_once(tmp_path: Path) -> None:
    trace = tmp_path / "phone.trace"
    second = INVITE.replace("call-1", "call-2").replace("5551234567", "5559990000")
    trace.write_text(
        _entry("2026-11-25 03:00:00.000000", "in", INVITE)
        + _entry("2026-11-25 03:00:00.500000", "in", INVITE)  # retransmission
        + _entry("2026-11-25 03:00:00.600000", "out", OK)
        + _entry("2026-11-25 03:00:01.000000", "in", second)
    )
    phone = StaffPhone("201", "answer", trace)
    assert len(phone.invites()) == 2
    assert len(phone.invites("5551234567")) == 1
    assert phone.displays("5559990000") == ["Maria R - roof estimate"]
    assert phone.answered_calls() == 1
    assert phone.answered_calls("5559990000") == 0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"Maria R" <sip:1@h>;tag=x', "Maria R"),
        ('"Bob \\"the boss\\"" <sip:1@h>', 'Bob "the boss"'),
        ("Maria <sip:1@h>", "Maria"),
        ("<sip:1@h>;tag=x", None),
        ("sip:1@h", None),
        ('"김민준 - 예약" <sip:1@h>', "김민준 - 예약"),
    ],
)
def test_display_name(header: str, expected: str | None) -> None:
    assert display_name(header) == expected


def test_quoted_display_name_round_trips() -> None:
    for name in ['Bob "the boss"', "back\\slash", "plain"]:
        assert display_name(f"{quote_display_name(name)} <sip:1@h>") == name
