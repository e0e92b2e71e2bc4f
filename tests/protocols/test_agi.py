"""FastAGI framing: headers, results, error table, builders and caps."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from gateway.errors import PermanentError, ProtocolError, ValidationError
from gateway.protocols.agi import (
    AGI_ERRORS,
    AgiDeadChannelError,
    AgiEvent,
    AgiHangup,
    AgiInvalidCommandError,
    AgiParser,
    AgiRequest,
    AgiResult,
    AgiUsageError,
    exec_app,
    get_variable,
    quote_arg,
    raise_for_result,
    set_variable,
)

# Header block as Asterisk 22 sends it for AGI(agi://127.0.0.1:14573/inbound?src=trunk,x y).
HEADER = (
    b"agi_network: yes\n"
    b"agi_network_script: inbound?src=trunk\n"
    b"agi_request: agi://127.0.0.1:14573/inbound?src=trunk\n"
    b"agi_channel: PJSIP/trunk-00000000\n"
    b"agi_language: en\n"
    b"agi_type: PJSIP\n"
    b"agi_uniqueid: 1764039000.0\n"
    b"agi_version: 22.10.0\n"
    b"agi_callerid: 5551234\n"
    b"agi_calleridname: Maria\n"
    b"agi_callingpres: 0\n"
    b"agi_callingani2: 0\n"
    b"agi_callington: 0\n"
    b"agi_callingtns: 0\n"
    b"agi_dnid: 100\n"
    b"agi_rdnis: unknown\n"
    b"agi_context: from-trunk\n"
    b"agi_extension: 100\n"
    b"agi_priority: 2\n"
    b"agi_enhanced: 0.0\n"
    b"agi_accountcode: \n"
    b"agi_threadid: 140106402666176\n"
    b"agi_arg_1: x y\n"
    b"agi_arg_2: \n"
    b"\n"
)
SESSION = HEADER + b"200 result=1\n200 result=1 (hello world)\nHANGUP\n200 result=0 endpos=1234\n"


def _feed_split(data: bytes, cut: int) -> list[AgiEvent]:
    p = AgiParser()
    return p.feed(data[:cut]) + p.feed(data[cut:])


def _feed_all(p: AgiParser, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        p.feed(chunk)


def test_request_parsed() -> None:
    events = AgiParser().feed(HEADER)
    assert len(events) == 1
    req = events[0]
    assert isinstance(req, AgiRequest)
    assert req.path == "inbound"
    assert dict(req.query) == {"src": "trunk"}
    assert req.args == ("x y", "")
    assert req.get("callerid") == "5551234"
    assert req.uniqueid == "1764039000.0"
    assert req.channel == "PJSIP/trunk-00000000"
    assert req.get("accountcode") == ""
    assert req.get("missing", "d") == "d"


def test_session_whole_and_split_at_every_byte() -> None:
    whole = AgiParser().feed(SESSION)
    assert [type(e) for e in whole] == [AgiRequest, AgiResult, AgiResult, AgiHangup, AgiResult]
    assert whole[2] == AgiResult(code=200, result="1", data="hello world", line="200 result=1 (hello world)")
    last = whole[4]
    assert isinstance(last, AgiResult)
    assert last.endpos == 1234
    assert last.value == 0
    for cut in range(len(SESSION) + 1):
        assert _feed_split(SESSION, cut) == whole, cut


def test_byte_by_byte() -> None:
    p = AgiParser()
    out: list[AgiEvent] = []
    for i in range(len(SESSION)):
        out += p.feed(SESSION[i : i + 1])
    assert out == AgiParser().feed(SESSION)


def test_crlf_line_ends() -> None:
    events = AgiParser().feed(HEADER.replace(b"\n", b"\r\n") + b"200 result=1\r\n")
    assert isinstance(events[0], AgiRequest)
    assert events[0].get("callerid") == "5551234"
    assert events[1] == AgiResult(code=200, result="1", line="200 result=1")


def test_error_codes_map_through_the_table() -> None:
    p = AgiParser()
    p.feed(HEADER)
    events = p.feed(
        b"510 Invalid or unknown command\n"
        b"511 Command Not Permitted on a dead channel or intercept routine\n"
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b" Usage: SET VARIABLE <variablename> <value>\n"
        b"520 End of proper usage.\n"
    )
    assert [e.code for e in events if isinstance(e, AgiResult)] == [510, 511, 520]
    expected = [AgiInvalidCommandError, AgiDeadChannelError, AgiUsageError]
    for ev, cls in zip(events, expected, strict=True):
        assert isinstance(ev, AgiResult)
        assert AGI_ERRORS[ev.code] is cls
        with pytest.raises(cls):
            raise_for_result(ev)
    usage = events[2]
    assert isinstance(usage, AgiResult)
    assert usage.usage == (
        "Invalid command syntax.  Proper usage follows:",
        " Usage: SET VARIABLE <variablename> <value>",
    )
    assert issubclass(AgiDeadChannelError, PermanentError)
    assert issubclass(AgiInvalidCommandError, ProtocolError)


def test_unknown_code_is_a_protocol_error() -> None:
    p = AgiParser()
    p.feed(HEADER)
    (ev,) = p.feed(b"999 what\n")
    assert isinstance(ev, AgiResult)
    with pytest.raises(ProtocolError, match="999"):
        raise_for_result(ev)
    ok = AgiResult(code=200, result="1")
    assert raise_for_result(ok) is ok


def test_garbage_response_line_rejected() -> None:
    p = AgiParser()
    p.feed(HEADER)
    with pytest.raises(ProtocolError, match="unparseable"):
        p.feed(b"hello there\n")


def test_malformed_header_rejected() -> None:
    with pytest.raises(ProtocolError, match="malformed AGI header"):
        AgiParser().feed(b"agi_network: yes\nGET / HTTP/1.1\n")


def test_megabytes_without_newline_rejected_early() -> None:
    p = AgiParser()
    with pytest.raises(ProtocolError, match="without a newline"):
        _feed_all(p, [b"a" * 1024] * 1024)
    # The parser refused long before buffering a megabyte.
    assert len(p._buf) <= 17 * 1024


def test_megabytes_of_header_lines_rejected() -> None:
    p = AgiParser()
    with pytest.raises(ProtocolError, match=r"exceeds|more than"):
        _feed_all(p, (b"agi_x%d: %s\n" % (i, b"y" * 50) for i in range(100_000)))


def test_too_many_header_lines() -> None:
    p = AgiParser(max_header_bytes=1 << 20)
    with pytest.raises(ProtocolError, match="more than 200 lines"):
        p.feed(b"".join(b"agi_k%d: v\n" % i for i in range(300)))


def test_half_header_yields_nothing() -> None:
    p = AgiParser()
    assert p.feed(HEADER[:200]) == []
    assert not p.headers_done


def test_quote_arg_escapes_quotes_and_backslashes() -> None:
    assert quote_arg('Maria "the roofer" R') == '"Maria \\"the roofer\\" R"'
    assert quote_arg("a\\b") == '"a\\\\b"'
    assert quote_arg("") == '""'


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "x\x1b[2J"])
def test_control_characters_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="control character"):
        set_variable("GW_X", bad)


def test_builders() -> None:
    assert set_variable("GW_KNOWN", "1") == b'SET VARIABLE GW_KNOWN "1"\n'
    assert set_variable("CALLERID(name)", "Maria R - roof") == b'SET VARIABLE CALLERID(name) "Maria R - roof"\n'
    assert get_variable("DEVICE_STATE(PJSIP/201)") == b"GET VARIABLE DEVICE_STATE(PJSIP/201)\n"
    assert exec_app("Verbose", "hi, there") == b'EXEC Verbose "hi, there"\n'
    assert exec_app("Answer") == b"EXEC Answer\n"


@pytest.mark.parametrize("name", ["", "1abc", "a b", "X;Y", 'A"', "CALLERID(name) x"])
def test_bad_variable_names(name: str) -> None:
    with pytest.raises(ValidationError):
        set_variable(name, "v")


def test_overlong_command_refused() -> None:
    with pytest.raises(ValidationError, match="exceeds"):
        set_variable("GW_X", "x" * 5000)
    with pytest.raises(ValidationError):
        exec_app("Bad App")
