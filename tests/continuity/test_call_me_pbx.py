""" "Call me at a time" ending in a real call: the customer asks by SMS through the pty modem emulator, the rules'
clock reaches the slot, and the voice channel's click-to-call runs on the shared test Asterisk 22 with sipp phones:
the staff phone (extension 201) rings first and answers, then the trunk's far end (the customer, 127.0.0.1:15299)
rings. When the staff phone never answers, the call is retried and the customer finally gets a text at the modem.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.continuity.clock import ManualClock
from gateway.emulator import ModemEmulator
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

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]


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
    finally:
        await d.stop()
