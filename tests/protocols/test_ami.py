"""AMI parser: banner, events vs responses, line ends, caps, and the encoder."""

from __future__ import annotations

import pytest

from gateway.errors import ProtocolError, ValidationError
from gateway.protocols.ami import (
    AmiBanner,
    AmiEvent,
    AmiPacket,
    AmiParser,
    AmiResponse,
    encode_action,
    parse_packet,
)

SESSION = (
    b"Asterisk Call Manager/11.0.0\r\n"
    b"Response: Success\r\nActionID: login-1\r\nMessage: Authentication accepted\r\n\r\n"
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
    b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-00000000\r\n"
    b"ChannelState: 0\r\nChannelStateDesc: Down\r\nCallerIDNum: 5551234\r\n"
    b"CallerIDName: Maria: R\r\nExten: 100\r\nUniqueid: 1764039000.0\r\n"
    b"Linkedid: 1764039000.0\r\n\r\n"
    b"Response: Follows\r\nActionID: cmd-1\r\nOutput: line one\r\nOutput: line two\r\n\r\n"
    b"Response: Error\r\nActionID: x\r\nMessage: Authentication failed\r\n\r\n"
)


def test_whole_session() -> None:
    pkts = AmiParser().feed(SESSION)
    assert pkts[0] == AmiBanner("11.0.0")
    assert [type(p) for p in pkts] == [
        AmiBanner,
        AmiResponse,
        AmiEvent,
        AmiEvent,
        AmiResponse,
        AmiResponse,
    ]
    login = pkts[1]
    assert isinstance(login, AmiResponse)
    assert login.success
    assert login.action_id == "login-1"
    nc = pkts[3]
    assert isinstance(nc, AmiEvent)
    assert nc.name == "Newchannel"
    assert nc.get("CallerIDName") == "Maria: R"  # only the first colon separates
    assert nc.get("Nope", "-") == "-"
    follows = pkts[4]
    assert isinstance(follows, AmiResponse)
    assert follows.fields["Output"] == "line one\nline two"
    err = pkts[5]
    assert isinstance(err, AmiResponse)
    assert not err.success
    assert err.message == "Authentication failed"


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_split_at_every_byte(eol: bytes) -> None:
    data = SESSION.replace(b"\r\n", eol)
    whole = AmiParser().feed(data)
    assert len(whole) == 6
    for cut in range(len(data) + 1):
        p = AmiParser()
        got: list[AmiPacket] = p.feed(data[:cut]) + p.feed(data[cut:])
        assert got == whole, cut


def test_byte_by_byte() -> None:
    p = AmiParser()
    out: list[AmiPacket] = []
    for i in range(len(SESSION)):
        out += p.feed(SESSION[i : i + 1])
    assert out == AmiParser().feed(SESSION)


def test_not_a_banner() -> None:
    with pytest.raises(ProtocolError, match="not an AMI banner"):
        AmiParser().feed(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(ProtocolError, match="no AMI banner"):
        AmiParser().feed(b"x" * 2000)


def test_packet_cap() -> None:
    p = AmiParser(max_packet_bytes=4096)
    p.feed(b"Asterisk Call Manager/11.0.0\r\n")
    chunk = b"Event: X\r\nKey: " + b"v" * 100 + b"\r\n"
    with pytest.raises(ProtocolError, match="larger than 4096"):
        p.feed(chunk * 100)


def test_blocks_without_event_or_response_are_skipped() -> None:
    assert parse_packet("Foo: bar") is None
    assert parse_packet("") is None
    (ev,) = AmiParser(expect_banner=False).feed(b"\r\n\r\nFoo: bar\r\n\r\nEvent: A\r\n\r\n")
    assert isinstance(ev, AmiEvent)
    assert ev.name == "A"
    assert dict(ev.fields) == {"Event": "A"}


def test_event_with_missing_fields_still_parses() -> None:
    (ev,) = AmiParser(expect_banner=False).feed(b"Event: Hangup\r\n\r\n")
    assert isinstance(ev, AmiEvent)
    assert ev.get("Uniqueid") == ""


def test_encode_action() -> None:
    assert encode_action("Ping", action_id="p1") == b"Action: Ping\r\nActionID: p1\r\n\r\n"
    raw = encode_action("Originate", [("Variable", "A=1"), ("Variable", "B=2")])
    assert raw.count(b"Variable:") == 2
    (resp,) = AmiParser(expect_banner=False).feed(raw.replace(b"Action: Originate", b"Response: Success"))
    assert isinstance(resp, AmiResponse)
    assert resp.fields["Variable"] == "A=1\nB=2"


def test_encode_refuses_injection() -> None:
    with pytest.raises(ValidationError, match="line break"):
        encode_action("Originate", {"CallerID": "x\r\nAction: Command"})
