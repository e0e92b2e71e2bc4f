"""Voice channel against the real store and conversation service: timeline, bus events, call log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_tracker import chan, dial, dial_end, group_answered_by_202, hangup, trunk_call

from gateway.channels.voice.agi_server import CallerContext
from gateway.channels.voice.channel import VoiceChannel
from gateway.channels.voice.settings import VoiceSettings
from gateway.domain.bus import Bus
from gateway.domain.calls import CallOutcome
from gateway.domain.events import ALL_EVENTS, CallAnswered, CallEnded, CallRinging, Event, VoicemailRecorded
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.errors import ValidationError
from gateway.protocols.ami import AmiEvent, AmiParser
from gateway.store import voice as voice_sql
from gateway.store.db import Store

STAFF = {"201": "alice", "202": "bob", "203": "carol"}


class Env:
    def __init__(self, store: Store, service: ConversationService, bus: Bus, vc: VoiceChannel):
        self.store = store
        self.service = service
        self.bus = bus
        self.vc = vc
        self.sub = bus.subscribe("test", 10_000, types=ALL_EVENTS)

    def feed(self, events: list[dict[str, str]]) -> None:
        for ev in events:
            self.vc.on_ami_event(ev)

    def published(self) -> list[Event]:
        out = []
        while (ev := self.sub.get_nowait()) is not None:
            out.append(ev)
        return out

    async def kinds(self, conversation_id: int) -> list[str]:
        return [e.kind for e in await self.service.timeline(conversation_id)]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = Store(tmp_path / "gw.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    settings = VoiceSettings(staff=STAFF, whisper=False)
    vc = VoiceChannel(settings, service, bus, store=store)
    # Only the timeline worker: AMI and FastAGI are exercised elsewhere.
    vc._worker = asyncio.create_task(vc._work())
    await store.write(lambda c: voice_sql.bind_extensions(c, STAFF, 0.0))
    yield Env(store, service, bus, vc)
    vc._worker.cancel()
    await store.stop()


def ts_free(events: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in e.items() if k != "Timestamp"} for e in events]


async def test_unknown_caller_ring_group_answered(env: Env) -> None:
    env.feed(group_answered_by_202())
    await env.vc.idle()
    contact = await env.service.find_contact(IdentityKind.PHONE, "+15551234567")
    assert contact is not None
    conv = contact.conversation_id
    kinds = await env.kinds(conv)
    assert sorted(kinds) == sorted(["call_ringing", "call_answered", "call_ended"])
    pub = env.published()
    ringing = [e for e in pub if isinstance(e, CallRinging)]
    assert sorted(r.extension for r in ringing) == ["201", "202", "203"]
    assert all(r.conversation_id == conv for r in ringing)
    assert ringing[0].staff == "alice"
    answered = [e for e in pub if isinstance(e, CallAnswered)]
    assert [(a.extension, a.staff) for a in answered] == [("202", "bob")]
    (ended,) = [e for e in pub if isinstance(e, CallEnded)]
    assert ended.outcome is CallOutcome.ANSWERED
    # Nobody else sees a missed call: no call_missed anywhere.
    assert "call_missed" not in kinds
    # The call log has the row; the summary knows who handled the customer last.
    rec = await env.store.read(lambda c: voice_sql.get_call(c, "100.1"))
    assert rec is not None
    assert rec.outcome is CallOutcome.ANSWERED
    assert rec.answered_by == "202"
    assert rec.conversation_id == conv
    summary = await env.service.summary(conv)
    assert summary is not None
    assert summary.last_staff_extension == "202"


async def test_known_caller_rings_with_summary_without_waiting_for_the_store(env: Env) -> None:
    res = await env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+15551234567", "sms-1", "roof?")
    )
    await env.service.update_conversation(res.conversation_id, intent="roof estimate")
    summary = await env.service.summary(res.conversation_id)
    env.vc._on_context(
        CallerContext(
            "100.1",
            "+15551234567",
            False,
            res.contact_id,
            res.conversation_id,
            summary,
            "x",
            "",
            False,
        )
    )
    env.published()
    env.feed([*trunk_call(1.0), *dial(1.5, "201", "100.2")])
    pub = env.published()  # published synchronously, before any store write happened
    (ring,) = [e for e in pub if isinstance(e, CallRinging)]
    assert ring.conversation_id == res.conversation_id
    assert ring.summary is not None
    assert ring.summary.intent == "roof estimate"
    env.feed([dial_end(20, "201", "100.2", "NOANSWER"), hangup(20, "PJSIP/201-00000002", "100.2")])
    env.feed([hangup(21, "PJSIP/trunk-00000001", "100.1")])
    await env.vc.idle()
    kinds = await env.kinds(res.conversation_id)
    assert kinds.count("call_missed") == 1
    assert "message_in" in kinds


async def test_voicemail_lands_in_conversation_and_on_bus(env: Env) -> None:
    vm = {
        "Event": "UserEvent",
        **chan("PJSIP/trunk-00000001", "100.1", "100.1"),
        "UserEvent": "VoicemailRecorded",
        "File": "/var/spool/gateway/recordings/vm-100.1.wav",
        "Duration": "7",
    }
    env.feed(ts_free([*trunk_call(0.0), vm, hangup(0, "PJSIP/trunk-00000001", "100.1")]))
    await env.vc.idle()
    pub = env.published()
    (rec,) = [e for e in pub if isinstance(e, VoicemailRecorded)]
    assert rec.path.endswith("vm-100.1.wav")
    assert rec.duration == 7.0
    events = await env.service.timeline(rec.conversation_id)
    (vm_ev,) = [e for e in events if e.kind == "voicemail"]
    assert vm_ev.id == rec.event_id
    assert vm_ev.meta["path"] == rec.path
    assert vm_ev.meta["duration"] == 7.0
    (end,) = [e for e in pub if isinstance(e, CallEnded)]
    assert end.outcome is CallOutcome.VOICEMAIL


async def test_withheld_callers_do_not_share_a_conversation(env: Env) -> None:
    for n in range(2):
        uid = f"{500 + n}.1"
        env.feed(
            [
                {
                    "Event": "Newchannel",
                    **chan("PJSIP/trunk-1", uid, uid),
                    "CallerIDNum": "anonymous",
                },
                {"Event": "Hangup", **chan("PJSIP/trunk-1", uid, uid)},
            ]
        )
    await env.vc.idle()
    ends = [e for e in env.published() if isinstance(e, CallEnded)]
    assert [e.outcome for e in ends] == [CallOutcome.ABANDONED, CallOutcome.ABANDONED]
    assert env.vc.write_errors == 0
    convs = {
        (await env.store.read(lambda c, u=u: voice_sql.get_call(c, u))).conversation_id  # type: ignore[union-attr,misc]
        for u in ("500.1", "501.1")
    }
    assert len(convs) == 2


async def test_replay_is_idempotent(env: Env) -> None:
    env.feed(group_answered_by_202())
    await env.vc.idle()
    # A resync or replay of the same call must not store it twice.
    env.vc.tracker = type(env.vc.tracker)(staff=STAFF)
    env.feed(group_answered_by_202())
    await env.vc.idle()
    contact = await env.service.find_contact(IdentityKind.PHONE, "+15551234567")
    assert contact is not None
    kinds = await env.kinds(contact.conversation_id)
    assert len(kinds) == 3


async def test_click_to_call_validation(env: Env) -> None:
    with pytest.raises(ValidationError, match=r"not in voice\.staff"):
        await env.vc.click_to_call("299", "+15551234567", 1)
    with pytest.raises(ValidationError, match="not dialable"):
        await env.vc.click_to_call("201", "555; Dial(evil)", 1)
    with pytest.raises(ValidationError, match="not a valid extension"):
        await env.vc.click_to_call("20 1&PJSIP/x", "+15551234567", 1)


async def test_staff_extensions_bound_in_store(env: Env) -> None:
    staff: Any = await env.service.staff_by_extension("202")
    assert staff is not None
    assert staff.username == "bob"
    await env.store.write(lambda c: voice_sql.bind_extensions(c, {"202": "alice"}, 1.0))
    alice: Any = await env.service.staff_by_username("alice")
    bob: Any = await env.service.staff_by_username("bob")
    assert alice.extension == "202"
    assert bob.extension is None


async def test_unanswered_outbound_call_is_not_a_missed_call(env: Env) -> None:
    res = await env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+15557654321", "s-9", "hi")
    )
    env.vc.tracker.expect_outbound(
        "gw-c2c-3", customer="+15557654321", extension="201", conversation_id=res.conversation_id
    )
    staff = chan("PJSIP/201-00000030", "gw-c2c-3", "gw-c2c-3")
    env.feed(
        [
            {"Event": "Newchannel", **staff},
            {"Event": "Newstate", **staff, "ChannelStateDesc": "Ringing"},
        ]
    )
    env.vc.tracker._calls["gw-c2c-3"].rec = replace(
        env.vc.tracker._calls["gw-c2c-3"].rec,
        started_at=0.0,
    )
    env.feed([{"Event": "Hangup", **staff}])
    await env.vc.idle()
    kinds = await env.kinds(res.conversation_id)
    assert "call_missed" not in kinds
    assert kinds.count("call_ended") == 1
    assert kinds.count("call_ringing") == 1


async def test_health_snapshot(env: Env) -> None:
    env.feed(group_answered_by_202()[:-2])
    h = env.vc.snapshot()
    assert h.active_calls == 1
    assert not h.ami_up
    assert h.malformed_events == 0
    env.feed(group_answered_by_202()[-2:])
    await env.vc.idle()
    h = env.vc.snapshot()
    assert h.active_calls == 0
    assert h.timeline_backlog == 0
    assert h.write_errors == 0


async def test_first_time_caller_conversation_created_before_the_phones_ring(env: Env) -> None:
    env.vc._on_context(  # what the FastAGI router reports for an unknown caller
        CallerContext("100.1", "+15551234567", False, None, None, None, "Maria", "", False, caller_name="Maria")
    )
    await asyncio.sleep(0.2)  # the dialplan moves on to Dial meanwhile
    env.published()
    env.feed([*trunk_call(1.0), *dial(1.5, "201", "100.2")])
    (ring,) = [e for e in env.published() if isinstance(e, CallRinging)]  # synchronously, no store wait
    assert ring.conversation_id is not None
    assert ring.summary is not None
    assert ring.summary.display_name == "Maria"
    env.feed([dial_end(3, "201", "100.2", "CANCEL"), hangup(3, "PJSIP/201-00000002", "100.2")])
    env.feed([hangup(3, "PJSIP/trunk-00000001", "100.1")])
    await env.vc.idle()
    kinds = await env.kinds(ring.conversation_id)
    assert kinds.count("call_ringing") == 1  # the early event and the tracker's are one (same external id)
    assert kinds.count("call_abandoned") == 1


async def test_transfer_makes_the_target_the_last_handler(env: Env) -> None:
    data = (Path(__file__).parent / "transcripts" / "blind_transfer_201_to_203.ami").read_bytes()
    for pkt in AmiParser().feed(data):
        if isinstance(pkt, AmiEvent):
            env.vc.on_ami_event(dict(pkt.fields))
    await env.vc.idle()
    contact = await env.service.find_contact(IdentityKind.PHONE, "+15551230099")
    assert contact is not None
    kinds = await env.kinds(contact.conversation_id)
    assert kinds.count("call_answered") == 2
    summary = await env.service.summary(contact.conversation_id)
    assert summary is not None
    assert summary.last_staff_extension == "203"  # the next call rings 203 first
    answered = [e for e in env.published() if isinstance(e, CallAnswered)]
    assert [(a.extension, a.staff) for a in answered] == [("201", "alice"), ("203", "carol")]


async def test_caller_name_is_stored_as_written(env: Env) -> None:
    """The phone display's ASCII rule applies to the label only: the contact keeps 김민수 (issue 12)."""
    env.feed(
        [*trunk_call(1000.0, caller="+15557654321", name="김민수"), hangup(1020.0, "PJSIP/trunk-00000001", "100.1")]
    )
    await env.vc.idle()
    contact = await env.service.find_contact(IdentityKind.PHONE, "+15557654321")
    assert contact is not None
    assert contact.display_name == "김민수"
