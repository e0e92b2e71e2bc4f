"""AT parser: recorded modem sessions fed whole and split at every byte, plus hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import PermanentError, TransientError
from gateway.protocols.at import (
    ATEvent,
    ATParser,
    Echo,
    FinalResult,
    Garbage,
    ModemPermanentError,
    ModemTransientError,
    Prompt,
    ResponseLine,
    Unsolicited,
    error_for,
    parse_cmgl,
    parse_cmti,
    parse_cpms,
    parse_creg,
    parse_csq,
)

PDU = b"07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"

# A Huawei E3372 session as seen on the wire: boot noise, init with echo on, a listing with two
# messages, a send with the prompt, a status report and an incoming call in between.
HUAWEI_SESSION = (
    b"\r\n^BOOT:12345678,0,0,0,75\r\n"
    b"ATE0\r\r\nOK\r\n"
    b"\r\n^RSSI:17\r\n"
    b"\r\nOK\r\n"
    b"\r\n+CREG: 0,1\r\n\r\nOK\r\n"
    b'\r\n+CMTI: "SM",3\r\n'
    b"\r\n+CMGL: 0,0,,23\r\n" + PDU + b"\r\n"
    b"+CMGL: 3,1,,24\r\n" + PDU + b"\r\n"
    b"\r\nOK\r\n"
    b"\r\n> "
    b"\r\n+CMGS: 42\r\n\r\nOK\r\n"
    b"\r\n^MODE:5,4\r\n"
    b'\r\nRING\r\n\r\n+CLIP: "+15551234567",145,,,,0\r\n'
    b"\r\n+CDS: 25\r\n0006E40B915155214365F7621001310000006210013100000000\r\n"
    b"\r\n+CREG: 5\r\n"
    b"\r\n+CMS ERROR: 42\r\n"
    b"\r\n+CME ERROR: SIM busy\r\n"
    b"\r\nERROR\r\n"
)


def _events(chunks: list[bytes], expect: str | None = None) -> list[ATEvent]:
    p = ATParser()
    p.expect(expect)
    out: list[ATEvent] = []
    for c in chunks:
        out.extend(p.feed(c))
    return out


def test_recorded_huawei_session() -> None:
    ev = _events([HUAWEI_SESSION], expect="+CREG")
    assert ev[0] == Unsolicited("^BOOT", "12345678,0,0,0,75", vendor=True)
    assert ev[1] == Echo("ATE0")
    assert ev[2] == FinalResult("OK")
    assert ev[3] == Unsolicited("^RSSI", "17", vendor=True)
    assert ResponseLine("+CREG: 0,1") in ev
    assert Unsolicited("+CMTI", '"SM",3') in ev
    assert Prompt() in ev
    assert ResponseLine("+CMGS: 42") in ev
    assert Unsolicited("RING") in ev
    cds = [e for e in ev if isinstance(e, Unsolicited) and e.name == "+CDS"]
    assert cds == [Unsolicited("+CDS", "25", pdu="0006E40B915155214365F7621001310000006210013100000000")]
    finals = [e for e in ev if isinstance(e, FinalResult)]
    assert [f.kind for f in finals] == ["OK", "OK", "OK", "OK", "OK", "CMS", "CME", "ERROR"]
    assert finals[5].code == 42
    assert finals[6].code is None
    assert finals[6].text == "SIM busy"
    lines = [e.text for e in ev if isinstance(e, ResponseLine)]
    stored, problems = parse_cmgl(lines)
    assert [(s.index, s.stat) for s in stored] == [(0, 0), (3, 1)]
    assert problems == []


def test_creg_is_unsolicited_unless_asked_for() -> None:
    ev = _events([b"\r\n+CREG: 5\r\n"], expect=None)
    assert ev == [Unsolicited("+CREG", "5")]
    ev = _events([b"\r\n+CREG: 0,5\r\n"], expect="+CREG")
    assert ev == [ResponseLine("+CREG: 0,5")]


def test_every_split_gives_the_same_events() -> None:
    whole = _events([HUAWEI_SESSION], expect="+CREG")
    for i in range(len(HUAWEI_SESSION) + 1):
        split = _events([HUAWEI_SESSION[:i], HUAWEI_SESSION[i:]], expect="+CREG")
        assert split == whole, i
    bytewise = _events([bytes([b]) for b in HUAWEI_SESSION], expect="+CREG")
    assert bytewise == whole


SIMCOM_SESSION = (
    b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n"
    b'AT+CPMS?\r\r\n+CPMS: "SM",29,30,"SM",29,30,"SM",29,30\r\n\r\nOK\r\n'
    b"\r\n+CSQ: 18,0\r\n\r\nOK\r\n"
)


def test_recorded_simcom_boot() -> None:
    ev = _events([SIMCOM_SESSION], expect="+CSQ")
    assert Unsolicited("RDY", vendor=True) in ev
    assert Unsolicited("+CPIN", "READY") in ev
    assert Unsolicited("SMS READY", vendor=True) in ev
    lines = [e.text for e in ev if isinstance(e, ResponseLine)]
    assert parse_cpms(lines[0]) == [(29, 30), (29, 30), (29, 30)]
    assert parse_csq(lines[1]) == (-77, 0)
    bytewise = _events([bytes([b]) for b in SIMCOM_SESSION], expect="+CSQ")
    assert bytewise == ev


def test_garbage_and_non_utf8_do_not_kill_the_parser() -> None:
    p = ATParser()
    ev = p.feed(b"\xff\xfe\x00garbage\x80\r\n\x1b[0m\r\nOK\r\n")
    assert [type(e) for e in ev] == [Garbage, Garbage, FinalResult]
    assert ev[-1] == FinalResult("OK")


def test_overlong_line_is_capped_and_reported() -> None:
    p = ATParser(max_line=100)
    ev = p.feed(b"A" * 5000)
    assert len(ev) == 1
    assert isinstance(ev[0], Garbage)
    assert len(p._buf) == 0
    ev = p.feed(b"B" * 5000 + b"\r\nOK\r\n")
    assert ev == [FinalResult("OK")]


def test_cds_without_pdu_line_is_still_reported() -> None:
    ev = _events([b"\r\n+CDS: 25\r\nOK\r\n"])
    assert ev == [Unsolicited("+CDS", "25"), FinalResult("OK")]


@given(st.lists(st.binary(max_size=40), max_size=30))
@settings(max_examples=500, deadline=None)
def test_random_bytes_never_raise_and_buffer_stays_capped(chunks: list[bytes]) -> None:
    p = ATParser(max_line=64)
    for c in chunks:
        p.feed(c)
        assert len(p._buf) <= 64


def test_error_table() -> None:
    e = error_for("AT+CMGS=20", FinalResult("CMS", 42, "42"))
    assert isinstance(e, ModemTransientError)
    assert isinstance(e, TransientError)
    assert "congestion" in str(e)
    e = error_for("AT+CMGS=20", FinalResult("CMS", 1, "1"))
    assert isinstance(e, ModemPermanentError)
    assert isinstance(e, PermanentError)
    assert e.words == "unassigned (unallocated) number"
    assert isinstance(error_for("AT", FinalResult("CME", 12, "12")), PermanentError)
    assert isinstance(error_for("AT", FinalResult("ERROR")), TransientError)


@pytest.mark.parametrize(("args", "expected"), [('"SM",3', ("SM", 3)), ('"ME",12', ("ME", 12)), ('"SM"', None)])
def test_parse_cmti(args: str, expected: tuple[str, int] | None) -> None:
    assert parse_cmti(args) == expected


def test_parse_creg_forms() -> None:
    assert parse_creg("0,1", solicited=True) == 1
    assert parse_creg("5", solicited=False) == 5
    assert parse_creg('1,"00C3","0000A1B2"', solicited=False) == 1


def test_cmgl_with_missing_pdu_is_reported_not_hidden() -> None:
    stored, problems = parse_cmgl(["+CMGL: 1,0,,5", "+CMGL: 2,0,,5", "0011", "junk"])
    assert [s.index for s in stored] == [2]
    assert problems == ["+CMGL entry 1 had no PDU line"]


def test_vendor_prefixed_answer_is_a_response_when_asked_for() -> None:
    assert _events([b"\r\n^ICCID: 89860000000000000000\r\n"], expect="^ICCID") == [
        ResponseLine("^ICCID: 89860000000000000000")
    ]
    assert _events([b"\r\n^RSSI:12\r\n"], expect="^ICCID") == [Unsolicited("^RSSI", "12", vendor=True)]
