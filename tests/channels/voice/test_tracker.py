"""Call tracker: outcomes from AMI event sequences, fed through the AMI parser whole and split."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from gateway.channels.voice.tracker import (
    Answered,
    CallStarted,
    CallTracker,
    Ended,
    Ringing,
    TrackerEffect,
    Transferred,
    VoicemailLeft,
    endpoint_of,
)
from gateway.domain.calls import CallDirection, CallOutcome
from gateway.protocols.ami import AmiEvent, AmiParser

TRANSCRIPTS = Path(__file__).parent / "transcripts"
STAFF = {"201": "alice", "202": "bob", "203": "carol"}


def wire(events: Iterable[dict[str, str]]) -> bytes:
    out = [b"Asterisk Call Manager/11.0.0\r\n"]
    for ev in events:
        out.append("".join(f"{k}: {v}\r\n" for k, v in ev.items()).encode() + b"\r\n")
    return b"".join(out)


def chan(name: str, uid: str, linked: str, **kw: str) -> dict[str, str]:
    return {"Channel": name, "Uniqueid": uid, "Linkedid": linked, **kw}


def trunk_call(t0: float, caller: str = "+15551234567", name: str = "Maria") -> list[dict[str, str]]:
    return [
        {
            "Event": "Newchannel",
            "Timestamp": str(t0),
            **chan("PJSIP/trunk-00000001", "100.1", "100.1"),
            "ChannelStateDesc": "Ring",
            "CallerIDNum": caller,
            "CallerIDName": name,
            "Exten": "5550100",
            "Context": "gw-inbound",
        }
    ]


def dial(t: float, ext: str, uid: str) -> list[dict[str, str]]:
    return [
        {
            "Event": "Newchannel",
            "Timestamp": str(t),
            **chan(f"PJSIP/{ext}-0000000{uid[-1]}", uid, "100.1"),
            "ChannelStateDesc": "Down",
            "Exten": "s",
        },
        {
            "Event": "DialBegin",
            "Timestamp": str(t),
            **chan("PJSIP/trunk-00000001", "100.1", "100.1"),
            "Exten": "s",
            "DestChannel": f"PJSIP/{ext}-0000000{uid[-1]}",
            "DestUniqueid": uid,
            "DestLinkedid": "100.1",
            "DialString": ext,
        },
        {
            "Event": "Newstate",
            "Timestamp": str(t + 0.05),
            **chan(f"PJSIP/{ext}-0000000{uid[-1]}", uid, "100.1"),
            "ChannelStateDesc": "Ringing",
        },
    ]


def dial_end(t: float, ext: str, uid: str, status: str) -> dict[str, str]:
    return {
        "Event": "DialEnd",
        "Timestamp": str(t),
        **chan("PJSIP/trunk-00000001", "100.1", "100.1"),
        "DestChannel": f"PJSIP/{ext}-0000000{uid[-1]}",
        "DestUniqueid": uid,
        "DestLinkedid": "100.1",
        "DialStatus": status,
    }


def hangup(t: float, name: str, uid: str, cause: str = "Normal Clearing") -> dict[str, str]:
    return {"Event": "Hangup", "Timestamp": str(t), **chan(name, uid, "100.1"), "Cause-txt": cause}


def group_answered_by_202() -> list[dict[str, str]]:
    return [
        *trunk_call(1000.0),
        *dial(1000.5, "201", "100.2"),
        *dial(1000.5, "202", "100.3"),
        *dial(1000.5, "203", "100.4"),
        dial_end(1004.0, "202", "100.3", "ANSWER"),
        dial_end(1004.0, "201", "100.2", "CANCEL"),
        dial_end(1004.0, "203", "100.4", "CANCEL"),
        hangup(1004.0, "PJSIP/201-00000002", "100.2", "Answered elsewhere"),
        hangup(1004.0, "PJSIP/203-00000004", "100.4", "Answered elsewhere"),
        {
            "Event": "BridgeEnter",
            "Timestamp": "1004.1",
            **chan("PJSIP/202-00000003", "100.3", "100.1"),
        },
        hangup(1034.0, "PJSIP/202-00000003", "100.3"),
        hangup(1034.0, "PJSIP/trunk-00000001", "100.1"),
    ]


def feed_all(tr: CallTracker, data: bytes, cut: int | None = None) -> list[TrackerEffect]:
    p = AmiParser()
    pkts = p.feed(data) if cut is None else p.feed(data[:cut]) + p.feed(data[cut:])
    out: list[TrackerEffect] = []
    for pkt in pkts:
        if isinstance(pkt, AmiEvent):
            out += tr.feed(pkt.fields, now=0.0)
    return out


def ended(effects: list[TrackerEffect]) -> list[Ended]:
    return [e for e in effects if isinstance(e, Ended)]


def test_endpoint_of() -> None:
    assert endpoint_of("PJSIP/201-0000000a") == "201"
    assert endpoint_of("PJSIP/trunk-00000001") == "trunk"
    assert endpoint_of("Local/201@ctx-00000001;1") is None
    assert endpoint_of("") is None


def test_ring_group_answered_by_one_is_answered_for_all() -> None:
    tr = CallTracker(staff=STAFF)
    fx = feed_all(tr, wire(group_answered_by_202()))
    assert isinstance(fx[0], CallStarted)
    assert fx[0].call.caller == "+15551234567"
    assert fx[0].call.direction is CallDirection.INBOUND
    rung = [e.extension for e in fx if isinstance(e, Ringing)]
    assert rung == ["201", "202", "203"]
    answered = [e for e in fx if isinstance(e, Answered)]
    assert [a.extension for a in answered] == ["202"]
    (end,) = ended(fx)
    rec = end.call
    assert rec.outcome is CallOutcome.ANSWERED
    assert rec.answered_by == "202"
    assert rec.extensions_rung == ("201", "202", "203")
    assert rec.talk_seconds == pytest.approx(30.0)
    assert rec.ring_seconds == pytest.approx(4.0)
    assert rec.dialled == "5550100"
    assert rec.caller_name == "Maria"
    assert tr.active_calls() == []
    assert tr.busy_extensions() == frozenset()


def test_whole_and_split_at_every_byte_give_the_same_calls() -> None:
    data = wire(group_answered_by_202())
    whole = feed_all(CallTracker(staff=STAFF), data)
    step = max(1, len(data) // 400)
    for cut in range(0, len(data) + 1, step):
        assert feed_all(CallTracker(staff=STAFF), data, cut) == whole, cut


def test_missed_when_nobody_answers_for_long() -> None:
    tr = CallTracker(staff=STAFF, abandon_seconds=5)
    ev = [
        *trunk_call(0.0),
        *dial(0.5, "201", "100.2"),
        dial_end(20.5, "201", "100.2", "NOANSWER"),
        hangup(20.5, "PJSIP/201-00000002", "100.2"),
        hangup(21.0, "PJSIP/trunk-00000001", "100.1"),
    ]
    (end,) = ended(feed_all(tr, wire(ev)))
    assert end.call.outcome is CallOutcome.MISSED
    assert end.call.answered_by is None


def test_early_hangup_is_abandoned_not_missed() -> None:
    tr = CallTracker(staff=STAFF, abandon_seconds=5)
    ev = [
        *trunk_call(0.0),
        *dial(0.5, "201", "100.2"),
        dial_end(3.0, "201", "100.2", "CANCEL"),
        hangup(3.0, "PJSIP/201-00000002", "100.2"),
        hangup(3.0, "PJSIP/trunk-00000001", "100.1"),
    ]
    (end,) = ended(feed_all(tr, wire(ev)))
    assert end.call.outcome is CallOutcome.ABANDONED


def test_all_busy() -> None:
    tr = CallTracker(staff=STAFF)
    ev = [
        *trunk_call(0.0),
        *dial(0.5, "201", "100.2"),
        dial_end(0.6, "201", "100.2", "BUSY"),
        hangup(0.6, "PJSIP/201-00000002", "100.2"),
        hangup(9.0, "PJSIP/trunk-00000001", "100.1"),
    ]
    (end,) = ended(feed_all(tr, wire(ev)))
    assert end.call.outcome is CallOutcome.BUSY


def test_voicemail_before_hangup() -> None:
    tr = CallTracker(staff=STAFF)
    vm = {
        "Event": "UserEvent",
        "Timestamp": "30.0",
        **chan("PJSIP/trunk-00000001", "100.1", "100.1"),
        "UserEvent": "VoicemailRecorded",
        "File": "/var/spool/gateway/recordings/vm-x-100.1.wav",
        "Duration": "6",
        "CallerNumber": "+15551234567",
    }
    ev = [*trunk_call(0.0), vm, hangup(30.1, "PJSIP/trunk-00000001", "100.1")]
    fx = feed_all(tr, wire(ev))
    (left,) = [e for e in fx if isinstance(e, VoicemailLeft)]
    assert left.path.endswith("100.1.wav")
    assert left.duration == 6.0
    assert not left.late
    (end,) = ended(fx)
    assert end.call.outcome is CallOutcome.VOICEMAIL
    assert end.call.voicemail_path == left.path


def test_voicemail_after_end_still_attached() -> None:
    tr = CallTracker(staff=STAFF)
    ev = [*trunk_call(0.0), hangup(30.0, "PJSIP/trunk-00000001", "100.1")]
    feed_all(tr, wire(ev))
    fx = tr.feed(
        {
            "Event": "UserEvent",
            "UserEvent": "VoicemailRecorded",
            "Linkedid": "100.1",
            "File": "/var/spool/gateway/recordings/vm.wav",
            "Duration": "4",
        },
        now=31.0,
    )
    (left,) = fx
    assert isinstance(left, VoicemailLeft)
    assert left.late
    assert left.call.outcome is CallOutcome.VOICEMAIL
    assert left.call.caller == "+15551234567"


@pytest.mark.parametrize("number", ["", "anonymous", "Anonymous", "<unknown>"])
def test_withheld_caller(number: str) -> None:
    tr = CallTracker(staff=STAFF)
    (start,) = feed_all(tr, wire(trunk_call(0.0, caller=number, name="anonymous")))
    assert isinstance(start, CallStarted)
    assert start.call.caller == ""
    assert start.call.caller_name == ""


def test_events_with_missing_fields_are_counted_not_fatal() -> None:
    tr = CallTracker(staff=STAFF)
    bad: list[dict[str, str]] = [
        {"Event": "Newchannel"},
        {"Event": "Hangup"},
        {"Event": "DialBegin", "Uniqueid": "x"},
        {"Event": "DialEnd", "DestUniqueid": "y"},
        {"Event": "UserEvent", "UserEvent": "VoicemailRecorded"},
        {"Event": "BlindTransfer"},
        {"Event": "AttendedTransfer"},
        {"Event": "Newstate", "Uniqueid": ""},
        {"Event": "Hangup", "Uniqueid": "never-seen"},
        {"Event": "SomethingNew", "Foo": "bar"},
        {"Event": "Newchannel", "Uniqueid": "1.1", "Timestamp": "not-a-number"},
    ]
    for ev in bad:
        tr.feed(ev, now=1.0)
    assert tr.malformed == 8
    # The good call still works afterwards.
    fx = feed_all(tr, wire(group_answered_by_202()))
    assert ended(fx)[0].call.outcome is CallOutcome.ANSWERED


def test_busy_extensions_during_call() -> None:
    tr = CallTracker(staff=STAFF)
    ev = group_answered_by_202()
    feed_all(tr, wire(ev[:-2]))
    assert tr.busy_extensions() == frozenset({"202"})


def test_resync_ends_vanished_calls_and_keeps_live_ones() -> None:
    tr = CallTracker(staff=STAFF)
    feed_all(tr, wire(group_answered_by_202()[:-2]))
    # A second call that Asterisk still has after the reconnect.
    tr.feed(
        {"Event": "Newchannel", **chan("PJSIP/trunk-9", "200.1", "200.1"), "CallerIDNum": "+1555"},
        2000,
    )
    tr.begin_resync()
    fx = tr.feed(
        {
            "Event": "CoreShowChannel",
            **chan("PJSIP/trunk-9", "200.1", "200.1"),
            "ChannelStateDesc": "Up",
            "CallerIDNum": "+1555",
        },
        2100,
    )
    assert fx == []
    # A call that started while we were disconnected, already answered by 203.
    fx = tr.feed(
        {
            "Event": "CoreShowChannel",
            **chan("PJSIP/trunk-7", "300.1", "300.1"),
            "CallerIDNum": "+1666",
        },
        2100,
    )
    fx += tr.feed(
        {
            "Event": "CoreShowChannel",
            **chan("PJSIP/203-7", "300.2", "300.1"),
            "ChannelStateDesc": "Up",
            "BridgeId": "b-1",
        },
        2100,
    )
    assert [type(e) for e in fx] == [CallStarted, Answered]
    fx = tr.end_resync(2100)
    (end,) = ended(fx)
    assert end.call.call_id == "100.1"
    assert end.call.outcome is CallOutcome.ANSWERED
    assert end.call.hangup_cause == "gone after AMI reconnect"
    assert {c.call_id for c in tr.active_calls()} == {"200.1", "300.1"}
    assert tr.busy_extensions() == frozenset({"203"})


def test_resync_listing_a_dialled_leg_first_keeps_the_real_caller() -> None:
    """Found by the fault soak: the gateway started during a call, CoreShowChannels listed the phone's leg
    (CallerIDNum = the phone's own number) before the trunk channel, and the voicemail landed in a conversation
    of "203". The channel that started the call decides who called."""
    tr = CallTracker(staff=STAFF)
    tr.begin_resync()
    tr.feed(
        {"Event": "CoreShowChannel", **chan("PJSIP/203-7", "400.2", "400.1"), "CallerIDNum": "203", "Exten": "s"},
        3000,
    )
    tr.feed(
        {
            "Event": "CoreShowChannel",
            **chan("PJSIP/trunk-7", "400.1", "400.1"),
            "CallerIDNum": "+15556698968",
            "CallerIDName": "김민수",
            "ChannelStateDesc": "Up",
        },
        3000,
    )
    tr.end_resync(3000)
    (call,) = tr.active_calls()
    assert call.caller == "+15556698968"
    assert call.caller_name == "김민수"
    assert call.direction is CallDirection.INBOUND
    tr.feed({"Event": "Hangup", "Timestamp": "3009", **chan("PJSIP/203-7", "400.2", "400.1")}, 3009)
    (end,) = ended(tr.feed({"Event": "Hangup", "Timestamp": "3010", **chan("PJSIP/trunk-7", "400.1", "400.1")}, 3010))
    assert end.call.caller == "+15556698968"


def test_click_to_call_outbound() -> None:
    tr = CallTracker(staff=STAFF)
    tr.expect_outbound("gw-c2c-1", customer="+15557654321", extension="201", conversation_id=42)
    ev = [
        {"Event": "Newchannel", **chan("PJSIP/201-00000010", "gw-c2c-1", "gw-c2c-1"), "Exten": "s"},
        {
            "Event": "Newstate",
            **chan("PJSIP/201-00000010", "gw-c2c-1", "gw-c2c-1"),
            "ChannelStateDesc": "Ringing",
        },
        {
            "Event": "Newstate",
            **chan("PJSIP/201-00000010", "gw-c2c-1", "gw-c2c-1"),
            "ChannelStateDesc": "Up",
        },
        {"Event": "Newchannel", **chan("PJSIP/trunk-00000011", "5.2", "gw-c2c-1")},
        {
            "Event": "DialBegin",
            **chan("PJSIP/201-00000010", "gw-c2c-1", "gw-c2c-1"),
            "DestChannel": "PJSIP/trunk-00000011",
            "DestUniqueid": "5.2",
        },
        {
            "Event": "DialEnd",
            **chan("PJSIP/201-00000010", "gw-c2c-1", "gw-c2c-1"),
            "DestChannel": "PJSIP/trunk-00000011",
            "DestUniqueid": "5.2",
            "DialStatus": "ANSWER",
        },
        {"Event": "Hangup", **chan("PJSIP/trunk-00000011", "5.2", "gw-c2c-1")},
        {"Event": "Hangup", **chan("PJSIP/201-00000010", "gw-c2c-1", "gw-c2c-1")},
    ]
    fx: list[TrackerEffect] = []
    for i, e in enumerate(ev):
        fx += tr.feed(e, now=float(i))
    start = fx[0]
    assert isinstance(start, CallStarted)
    assert start.call.direction is CallDirection.OUTBOUND
    assert start.call.conversation_id == 42
    assert [e.extension for e in fx if isinstance(e, Ringing)] == ["201"]
    assert [e.extension for e in fx if isinstance(e, Answered)] == ["201"]
    (end,) = ended(fx)
    assert end.call.outcome is CallOutcome.ANSWERED
    assert end.call.caller == "+15557654321"


def test_blind_transfer_recorded() -> None:
    tr = CallTracker(staff=STAFF)
    ev = group_answered_by_202()
    feed_all(tr, wire(ev[:-2]))
    fx = tr.feed(
        {
            "Event": "BlindTransfer",
            "TransfererChannel": "PJSIP/202-00000003",
            "TransfererLinkedid": "100.1",
            "Extension": "203",
        },
        now=1010.0,
    )
    (t,) = fx
    assert isinstance(t, Transferred)
    assert t.transfer.from_extension == "202"
    assert t.transfer.to_target == "203"


@pytest.mark.parametrize("path", sorted(TRANSCRIPTS.glob("*.ami")), ids=lambda p: p.name)
def test_recorded_transcripts(path: Path) -> None:
    """Real sessions recorded from Asterisk 22; the expected outcomes are in a sidecar file."""
    data = path.read_bytes()
    expected = path.with_suffix(".expected").read_text().split()
    whole = feed_all(CallTracker(staff=STAFF), data)
    outcomes = [e.call.outcome.value for e in ended(whole) if e.call.outcome]
    assert outcomes == expected
    step = max(1, len(data) // 300)
    for cut in range(0, len(data) + 1, step):
        assert feed_all(CallTracker(staff=STAFF), data, cut) == whole


def test_failed_originate_ends_the_call_and_is_forgotten() -> None:
    tr = CallTracker(staff=STAFF)
    tr.expect_outbound("gw-c2c-9", customer="+15557654321", extension="201", conversation_id=1)
    (end,) = tr.feed({"Event": "OriginateResponse", "Response": "Failure", "Uniqueid": "gw-c2c-9", "Reason": "0"}, 1.0)
    # Whoever placed it (staff, a scheduled call-back) learns that nobody was rung.
    assert isinstance(end, Ended)
    assert end.call.call_id == "gw-c2c-9"
    assert end.call.direction is CallDirection.OUTBOUND
    assert end.call.outcome is CallOutcome.MISSED
    assert end.call.conversation_id == 1
    assert end.call.hangup_cause == "extension 201 could not be rung (reason 0)"
    assert tr.feed({"Event": "OriginateResponse", "Response": "Failure", "Uniqueid": "gw-c2c-9"}, 1.5) == []
    # A later channel with that id is no longer taken for our click-to-call.
    (start,) = tr.feed(
        {
            "Event": "Newchannel",
            **chan("PJSIP/trunk-1", "gw-c2c-9", "gw-c2c-9"),
            "CallerIDNum": "+1",
        },
        2.0,
    )
    assert isinstance(start, CallStarted)
    assert start.call.direction is CallDirection.INBOUND


def test_unanswered_click_to_call() -> None:
    tr = CallTracker(staff=STAFF, abandon_seconds=5)
    tr.expect_outbound("gw-c2c-2", customer="+15557654321", extension="201", conversation_id=1)
    staff = chan("PJSIP/201-00000020", "gw-c2c-2", "gw-c2c-2")
    fx = tr.feed({"Event": "Newchannel", **staff}, 0.0)
    fx += tr.feed({"Event": "Newstate", **staff, "ChannelStateDesc": "Ringing"}, 0.1)
    fx += tr.feed({"Event": "Hangup", **staff}, 30.0)
    (end,) = ended(fx)
    assert end.call.direction is CallDirection.OUTBOUND
    assert end.call.answered_at is None
    assert end.call.outcome is CallOutcome.MISSED


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(TRANSCRIPTS.glob("*.ami")), ids=lambda p: p.name)
def test_recorded_transcripts_split_at_every_byte(path: Path) -> None:
    """The parser yields the same packets for every split point, so the tracker sees the same calls."""
    data = path.read_bytes()
    whole = AmiParser().feed(data)
    assert sum(isinstance(p, AmiEvent) for p in whole) > 10
    for cut in range(len(data) + 1):
        p = AmiParser()
        assert p.feed(data[:cut]) + p.feed(data[cut:]) == whole, cut


def test_hangup_overtaking_the_channel_list_does_not_resurrect_the_channel() -> None:
    tr = CallTracker(staff=STAFF)
    feed_all(tr, wire(group_answered_by_202()[:-2]))
    tr.begin_resync()
    # Asterisk listed the call, but the hang-ups were dispatched before we read the list.
    fx = tr.feed({"Event": "Hangup", **chan("PJSIP/202-00000003", "100.3", "100.1")}, 2000)
    fx += tr.feed({"Event": "Hangup", **chan("PJSIP/trunk-00000001", "100.1", "100.1")}, 2000)
    (end,) = ended(fx)
    for uid, name in (("100.1", "PJSIP/trunk-00000001"), ("100.3", "PJSIP/202-00000003")):
        assert tr.feed({"Event": "CoreShowChannel", **chan(name, uid, "100.1"), "ChannelStateDesc": "Up"}, 2000) == []
    assert ended(tr.end_resync(2001)) == []
    assert tr.active_calls() == []
    assert end.call.outcome is CallOutcome.ANSWERED


def test_recorded_blind_transfer() -> None:
    """Asterisk 22's own BlindTransfer event: 201 answered, then sent the caller to 203 (REFER)."""
    data = (TRANSCRIPTS / "blind_transfer_201_to_203.ami").read_bytes()
    fx = feed_all(CallTracker(staff=STAFF), data)
    (t,) = [e for e in fx if isinstance(e, Transferred)]
    assert (t.transfer.kind, t.transfer.from_extension, t.transfer.to_target) == ("blind", "201", "203")
    assert [a.extension for a in fx if isinstance(a, Answered)] == ["201", "203"]
    (end,) = ended(fx)
    assert end.call.outcome is CallOutcome.ANSWERED
    assert end.call.answered_by == "201"
    assert end.call.last_answered_by == "203"
    assert end.call.transfers == (t.transfer,)
