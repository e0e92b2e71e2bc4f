""" "Call me at a time" ending in a real call: the customer asks by SMS through the pty modem emulator, the rules'
clock reaches the slot, and the voice channel's click-to-call runs on the shared test Asterisk 22 with sipp phones:
the staff phone (extension 201) rings first and answers, then the trunk's far end (the customer, 127.0.0.1:15299)
rings. When the staff phone never answers, the call is retried and the customer finally gets a text at the modem.

Journey (d) runs here too, because it needs every real piece at once: STOP through the modem, a missed call and a
voicemail through Asterisk, a chat over the real websocket, a call-me request and a text after hours.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.continuity.clock import ManualClock
from gateway.emulator import ModemEmulator
from gateway.transcribe.audio import probe_audio
from tests.channels.voice.voice_sipp import place_call
from tests.continuity.conftest import local
from tests.continuity.daemon import Daemon, build_config, wait_for
from tests.continuity.test_journeys_pbx import (  # noqa: F401 - fixtures
    Phones,
    conversation_of,
    emulator,
    pbx_turn,
    phones,
    texts_to,
    voice_section,
)
from tests.realpbx import harness
from tests.realpbx.fixtures import realpbx  # noqa: F401 - the shared PBX session fixture
from tests.transcribe.transcribe_media import sox, speech

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]

#: The test PBX's staff phones plus one with no endpoint on the PBX.
STAFF_WITH_OFFLINE = {"201": "alice", "202": "bob", "203": "carol", "204": "dave"}


def call_me_config(tmp_path: Path, emulator: ModemEmulator, settings: harness.PbxSettings) -> Daemon:  # noqa: F811
    voice = {**voice_section(settings), "click_to_call_ring_s": 4}
    continuity = {"call_me_extension": "201", "call_me_retries": 1, "call_me_retry_minutes": 5}
    return Daemon(build_config(tmp_path, emulator, voice=voice, continuity=continuity), ManualClock(local(7, 10)))


def first_invite_at(phone_trace: Path) -> float:
    messages = harness.parse_trace(phone_trace.read_text(errors="replace"))
    stamps = [m.at for m in messages if m.method == "INVITE" and m.direction == "received"]
    assert stamps, f"no INVITE in {phone_trace}"
    assert stamps[0] is not None, f"the INVITE in {phone_trace} has no time stamp"
    return stamps[0]


@pytest.mark.timeout(240)
async def test_call_me_at_a_time_rings_staff_first_then_the_customer_over_the_real_pbx(
    tmp_path: Path,
    emulator: ModemEmulator,  # noqa: F811
    pbx_turn: harness.PbxSettings,  # noqa: F811
    phones: Phones,  # noqa: F811
) -> None:
    d = call_me_config(tmp_path, emulator, pbx_turn)
    clock = d.clock
    assert isinstance(clock, ManualClock)
    await d.start()
    try:
        caller = "+12025550181"
        emulator.deliver(caller, "Busy on a site right now, can you call me at 11am?")
        booked = await wait_for(lambda: d.decisions("call_me"), 20)
        assert booked[0][1:] == ("deferred", "the customer booked a call-back at 11:00")
        conv = conversation_of(d, caller)
        assert conv is not None
        # The booking is the next step, owned by whoever has the extension that rings first.
        spine_sql = "SELECT next_step, next_step_due, next_step_owner FROM conversations WHERE id = ?"
        assert d.rows(spine_sql, conv) == [("Call back", local(7, 11), "alice")]
        ring = await phones.start(x201="answer", x299="answer_bye")
        clock.set(local(7, 10, 59))
        await d.settle(1.0)
        assert ring["201"].invites() == 0, "nothing rings before the slot"
        clock.set(local(7, 11))
        await wait_for(lambda: ("sent", "call-back connected") in [x[1:] for x in d.decisions("call_me")], 60)
        steps = [x[1:] for x in d.decisions("call_me")]
        assert steps[1] == ("sent", "ringing extension 201 first, then the customer (attempt 1)")
        # The owner's phone rang first; the customer's phone was only dialled after it answered.
        staff_at = first_invite_at(ring["201"].trace)
        customer_at = first_invite_at(ring["299"].trace)
        assert staff_at < customer_at, (staff_at, customer_at)
        assert ring["201"].invites() == 1
        assert ring["299"].invites() == 1
        # The call is in the customer's conversation, and nobody was texted that the call-back failed.
        call_rows = d.rows(
            "SELECT kind FROM events WHERE conversation_id = ? AND kind IN ('call_answered', 'call_ended')", conv
        )
        assert {r[0] for r in call_rows} == {"call_answered", "call_ended"}
        assert texts_to(emulator, caller) == []
        jobs = d.rows("SELECT state, reason FROM continuity_jobs WHERE rule = 'call_me'")
        assert jobs == [("done", "connected")]
        await wait_for(lambda: d.rows(spine_sql, conv) == [(None, None, None)], 20)  # the call-back is done
    finally:
        await d.stop()


@pytest.mark.timeout(240)
async def test_call_me_nobody_answers_retries_then_texts_the_customer_at_the_modem(
    tmp_path: Path,
    emulator: ModemEmulator,  # noqa: F811
    pbx_turn: harness.PbxSettings,  # noqa: F811
    phones: Phones,  # noqa: F811
) -> None:
    d = call_me_config(tmp_path, emulator, pbx_turn)
    clock = d.clock
    assert isinstance(clock, ManualClock)
    await d.start()
    try:
        caller = "+12025550182"
        emulator.deliver(caller, "Please call me at 11")
        await wait_for(lambda: d.decisions("call_me"), 20)
        ring = await phones.start(x201="ring", x299="answer_bye")
        clock.set(local(7, 11))
        retry = await wait_for(
            lambda: [x for x in d.decisions("call_me") if x[1] == "deferred" and "again" in x[2]], 60
        )
        assert retry[0][2].startswith("nobody answered"), retry
        assert retry[0][2].endswith("trying again at 11:05"), retry
        assert ring["201"].invites() == 1
        assert texts_to(emulator, caller) == []
        clock.set(local(7, 11, 5))
        (text,) = await wait_for(lambda: texts_to(emulator, caller), 60)
        assert (
            text
            == "We tried to call you back but could not reach you. Reply here with a better time. - Bright Smile Dental"
        )
        assert ring["201"].invites() == 2, "one call and one retry (continuity.call_me_retries = 1)"
        assert ring["299"].invites() == 0, "the customer is never dialled while the staff phone does not answer"
        last = d.decisions("call_me")[-1]
        assert last[1] == "sent"
        assert "every call-back attempt failed" in last[2]
        # Nobody was reached: the step stays, now past due, for the leakage page to count.
        conv = conversation_of(d, caller)
        spine_sql = "SELECT next_step, next_step_due FROM conversations WHERE id = ?"
        assert d.rows(spine_sql, conv) == [("Call back", local(7, 11))]
    finally:
        await d.stop()


@pytest.mark.timeout(240)
async def test_call_me_with_no_phone_named_rings_nobody_and_texts_nothing_over_the_real_pbx(
    tmp_path: Path,
    emulator: ModemEmulator,  # noqa: F811
    pbx_turn: harness.PbxSettings,  # noqa: F811
    phones: Phones,  # noqa: F811
) -> None:
    """Voice on, the default empty continuity.call_me_extension, nobody owns the conversation: the request is the
    next step for staff; at the slot no phone on the PBX rings and the modem sends nothing."""
    voice = {**voice_section(pbx_turn), "click_to_call_ring_s": 4}
    d = Daemon(build_config(tmp_path, emulator, voice=voice), ManualClock(local(7, 10)))
    clock = d.clock
    assert isinstance(clock, ManualClock)
    await d.start()
    try:
        caller = "+12025550183"
        emulator.deliver(caller, "Can you call me at 11am?")
        (booked,) = await wait_for(lambda: d.decisions("call_me"), 20)
        assert "no phone is named to ring" in booked[2]
        conv = conversation_of(d, caller)
        spine_sql = "SELECT next_step, next_step_due, next_step_owner FROM conversations WHERE id = ?"
        assert d.rows(spine_sql, conv) == [("Call back", local(7, 11), None)]
        ring = await phones.start(x201="answer", x202="answer", x299="answer_bye")
        clock.set(local(7, 11))
        await wait_for(lambda: d.decisions("call_me")[-1][1] == "suppressed", 20)
        assert d.decisions("call_me")[-1][2].startswith("no phone is named to ring")
        await d.settle(2.0)
        assert ring["201"].invites() == 0
        assert ring["202"].invites() == 0
        assert ring["299"].invites() == 0
        assert texts_to(emulator, caller) == []
        assert d.rows(spine_sql, conv) == [("Call back", local(7, 11), None)]
    finally:
        await d.stop()


@pytest.mark.timeout(300)
async def test_d_an_opted_out_number_never_gets_an_automated_message_through_the_real_pieces(
    tmp_path: Path,
    emulator: ModemEmulator,  # noqa: F811
    pbx_turn: harness.PbxSettings,  # noqa: F811
    phones: Phones,  # noqa: F811
) -> None:
    """Journey (d): STOP texted through the modem emulator; then a real missed call and a real voicemail through
    Asterisk, a chat continued by text to that number over the real websocket, a call-me request that nobody answers,
    and a text after hours. Only the STOP confirmation reaches the modem; every rule's "no" is on the timeline."""
    voice = {**voice_section(pbx_turn), "click_to_call_ring_s": 4}
    continuity = {"call_me_extension": "201", "call_me_retries": 0}
    clock = ManualClock(local(7, 10))
    d = Daemon(build_config(tmp_path, emulator, voice=voice, continuity=continuity), clock)
    await d.start()
    try:
        caller = "+12025550183"
        emulator.deliver(caller, "STOP")
        await wait_for(lambda: d.rows("SELECT 1 FROM suppressions WHERE address = ?", caller), 20)
        confirmation = await wait_for(lambda: texts_to(emulator, caller), 20)  # the opt-out's own confirmation
        assert len(confirmation) == 1

        # A real missed call: the phones ring, nobody answers, the caller hangs up.
        await phones.start(x201="ring", x202="ring", x203="ring")
        call = await place_call(d.config.data_dir, number=caller, hold_ms=300)
        assert call.returncode == 0, call.stderr
        await wait_for(lambda: d.decisions("missed_call"), 40)
        clock.set(local(7, 10, 5))

        # A real voicemail: speech over RTP after the phones rang out.
        said = speech("안녕하세요 예약하고 싶습니다", tmp_path / "said.wav")
        rtp = tmp_path / "said_ulaw.wav"
        sox(said, "-e", "u-law", rtp, "pad", "1.2", "0")
        _codec, _rate, seconds = probe_audio(rtp)
        call = await place_call(
            tmp_path, number=caller, hold_ms=int(seconds * 1000) + 1500, answer_timeout_ms=60000, rtp_wav=rtp
        )
        assert call.returncode == 0, call.stderr
        await wait_for(lambda: d.decisions("voicemail_ack"), 60)
        await phones.stop()
        conv = conversation_of(d, caller)
        assert conv is not None
        assert d.rows("SELECT 1 FROM events WHERE conversation_id = ? AND kind = 'voicemail'", conv)

        # A chat visitor types that number and asks to continue by text.
        url = d.url
        async with aiohttp.ClientSession() as http, http.ws_connect(url + "/chat/ws", origin=url) as ws:
            await ws.send_json({"type": "hello", "token": None})
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"
            await ws.send_json({"type": "message", "client_id": "optout-msg-01", "body": "Can I get a cleaning?"})
            assert (await ws.receive_json(timeout=5))["type"] == "ack"
            await ws.send_json({"type": "continue_by_text", "client_id": "optout-hand-01", "phone": caller})
            answer = await ws.receive_json(timeout=5)
            assert answer["type"] == "handoff", answer
        await wait_for(lambda: d.decisions("chat_handoff"), 20)

        # The customer asks for a call at 11; the owner's phone rings out; the "could not reach you" text is held.
        await phones.start(x201="ring")
        emulator.deliver(caller, "Please call me at 11")
        await wait_for(lambda: d.decisions("call_me"), 20)
        clock.set(local(7, 11))
        await wait_for(lambda: [x for x in d.decisions("call_me") if x[1] == "suppressed"], 60)
        await phones.stop()

        # After hours the customer texts again: no after-hours reply either.
        clock.set(local(7, 22))
        emulator.deliver(caller, "Are you open tomorrow?")
        await wait_for(lambda: d.decisions("after_hours"), 20)
        clock.set(local(8, 9))
        await d.settle(2.0)

        assert texts_to(emulator, caller) == confirmation, "nothing but the STOP confirmation reached the modem"
        assert confirmation[0].startswith("You will not get more messages from us")
        assert d.rows("SELECT body FROM outbox WHERE to_addr = ?", caller) == [(confirmation[0],)], "nothing queued"
        handoff = d.decisions("chat_handoff")[-1]
        assert handoff[1] == "suppressed"
        assert handoff[2].startswith("the recipient opted out (STOP)")
        reasons = {(rule, decision, reason) for rule, decision, reason in d.decisions() if decision != "deferred"}
        opted = {
            rule for rule, decision, reason in reasons if decision == "suppressed" and "opted out (STOP)" in reason
        }
        assert {"missed_call", "voicemail_ack", "chat_handoff", "chat_sms", "call_me", "after_hours"} <= opted, reasons
        assert not [r for r in reasons if r[1] == "sent" and r[0] != "call_me"], reasons
    finally:
        await d.stop()


@pytest.mark.timeout(240)
async def test_call_me_when_the_owner_phone_cannot_be_rung_at_all_retries_then_texts(
    tmp_path: Path,
    emulator: ModemEmulator,  # noqa: F811
    pbx_turn: harness.PbxSettings,  # noqa: F811
) -> None:
    """Extension 204 is staff but has no phone on the PBX (unplugged, never registered): Asterisk refuses the
    Originate before any channel exists. The attempt still ends as failed, so the retry and the text follow."""
    voice = {**voice_section(pbx_turn), "staff": STAFF_WITH_OFFLINE, "click_to_call_ring_s": 4}
    continuity = {"call_me_extension": "204", "call_me_retries": 1, "call_me_retry_minutes": 5}
    clock = ManualClock(local(7, 10))
    d = Daemon(build_config(tmp_path, emulator, voice=voice, continuity=continuity), clock)
    await d.start()
    try:
        caller = "+12025550184"
        emulator.deliver(caller, "Please call me at 11")
        await wait_for(lambda: d.decisions("call_me"), 20)
        clock.set(local(7, 11))
        retry = await wait_for(
            lambda: [x for x in d.decisions("call_me") if x[1] == "deferred" and "again" in x[2]], 60
        )
        assert retry[0][2].endswith("trying again at 11:05"), retry
        clock.set(local(7, 11, 5))
        (text,) = await wait_for(lambda: texts_to(emulator, caller), 60)
        assert text.startswith("We tried to call you back but could not reach you.")
        jobs = d.rows(
            "SELECT state FROM continuity_jobs WHERE rule = 'call_me' AND json_extract(payload, '$.channel') IS NULL"
        )
        assert jobs == [("done",), ("done",)], "no call-back left hanging in 'sending'"
        causes = d.rows(
            "SELECT json_extract(meta, '$.hangup_cause') FROM events WHERE kind = 'call_ended'"
            " AND json_extract(meta, '$.direction') = 'outbound'"
        )
        assert len(causes) == 2
        assert all(c[0].startswith("extension 204 could not be rung") for c in causes), causes
    finally:
        await d.stop()
