"""Journeys (c), (d) and (e) through the whole daemon: texts leave through the SMS channel to the pty modem
emulator (real AT/PDU), the customer's own texts arrive through it, and the rules run on a hand-moved clock.

The missed calls here are recorded exactly as the voice channel records them (an inbound ``call_missed`` for the
caller's number); tests/continuity/test_journeys_pbx.py places real calls through Asterisk with sipp, and
tests/continuity/test_call_me_pbx.py runs journey (d) again with every real piece (STOP at the modem, a real missed
call and voicemail, a chat over the websocket, a call-me request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.continuity.clock import ManualClock
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.emulator import ModemEmulator
from tests.continuity.conftest import local
from tests.continuity.daemon import Daemon, build_config, wait_for

pytestmark = [pytest.mark.slow]

CALLER = "+12025550143"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ModemEmulator]:
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev" / "ttyUSB0", seed=11)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
async def daemon(tmp_path: Path, emulator: ModemEmulator) -> AsyncIterator[Daemon]:
    d = Daemon(build_config(tmp_path, emulator), ManualClock(local(7, 10)))
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


_calls = 0


async def missed_call(d: Daemon, number: str = CALLER) -> int:
    """A call nobody answered, recorded as the voice channel records it."""
    global _calls  # noqa: PLW0603 - a unique call id per test run
    _calls += 1
    assert d.app is not None
    res = await d.app.service.ingest(
        Inbound(
            Channel.VOICE,
            EventKind.CALL_MISSED,
            IdentityKind.PHONE,
            number,
            f"call-{_calls}:end",
            meta={"direction": "inbound", "outcome": "missed"},
        )
    )
    return res.conversation_id


def texts_to(emulator: ModemEmulator, number: str = CALLER) -> list[str]:
    return [s.text for s in emulator.sent if s.recipient == number]


async def test_c_missed_call_at_23_is_texted_at_08_once_across_a_restart_at_03(
    daemon: Daemon, emulator: ModemEmulator
) -> None:
    clock = daemon.clock
    assert isinstance(clock, ManualClock)
    clock.set(local(7, 23))
    await missed_call(daemon)
    await wait_for(lambda: daemon.decisions("missed_call"))
    clock.set(local(7, 23, 3))
    await wait_for(lambda: len(daemon.decisions("missed_call")) == 2)
    assert daemon.decisions("missed_call")[-1][2] == "quiet hours: deferred until tomorrow at 08:00"
    clock.set(local(8, 3))
    await daemon.settle()
    assert texts_to(emulator) == []
    await daemon.restart()  # the daemon restarts at 03:00
    clock.set(local(8, 7, 59))
    await daemon.settle(1.0)
    assert texts_to(emulator) == [], "nothing before 08:00"
    clock.set(local(8, 8))
    await wait_for(lambda: texts_to(emulator), 20)
    await daemon.restart()
    clock.set(local(8, 9))
    await daemon.settle(2.0)
    (text,) = texts_to(emulator)
    assert text.startswith("Sorry we missed your call")
    sent = [d for d in daemon.decisions("missed_call") if d[1] == "sent"]
    assert len(sent) == 1


async def test_d_an_opted_out_number_never_gets_an_automated_message(daemon: Daemon, emulator: ModemEmulator) -> None:
    clock = daemon.clock
    assert isinstance(clock, ManualClock)
    emulator.deliver(CALLER, "STOP")
    await wait_for(lambda: daemon.rows("SELECT 1 FROM suppressions"), 20)
    await wait_for(lambda: texts_to(emulator), 20)  # the one STOP confirmation the opt-out itself sends
    confirmation = texts_to(emulator)
    clock.set(local(7, 22))
    emulator.deliver(CALLER, "Are you open tomorrow?")  # after hours: the after-hours rule
    await wait_for(lambda: daemon.decisions("after_hours"), 20)
    await missed_call(daemon)  # the missed-call rule
    assert daemon.app is not None
    conv = await missed_call(daemon)
    await daemon.app.service.append_event(conv, EventKind.VOICEMAIL, Channel.VOICE, "", {"direction": "inbound"})
    clock.set(local(8, 12))
    await wait_for(lambda: daemon.decisions("voicemail_ack") and daemon.decisions("missed_call"), 20)
    await daemon.settle(1.0)
    assert texts_to(emulator) == confirmation
    automated = daemon.rows("SELECT COUNT(*) FROM outbox WHERE automated = 1 AND body NOT LIKE 'You will not%'")
    assert automated == [(0,)]
    suppressed = {d[0] for d in daemon.decisions() if d[1] in {"suppressed", "cancelled"} and "opted out" in d[2]}
    assert {"after_hours", "missed_call", "voicemail_ack"} <= suppressed


async def test_e_ten_missed_calls_in_five_minutes_produce_exactly_one_text(
    daemon: Daemon, emulator: ModemEmulator
) -> None:
    clock = daemon.clock
    assert isinstance(clock, ManualClock)
    for i in range(10):
        clock.set(local(7, 10) + i * 30)
        await missed_call(daemon)
        await wait_for(lambda n=i: len(daemon.decisions("missed_call")) >= n + 1)
    clock.set(local(7, 10, 30))
    await wait_for(lambda: texts_to(emulator), 20)
    clock.set(local(7, 11, 30))
    await daemon.settle(1.0)
    assert len(texts_to(emulator)) == 1
    decisions = daemon.decisions("missed_call")
    assert [d[1] for d in decisions].count("sent") == 1
    assert sum(1 for d in decisions if d[1] == "suppressed") == 9
    await asyncio.sleep(0)


async def test_call_me_with_no_phone_named_to_ring_is_a_next_step_for_staff_and_promises_the_customer_nothing(
    daemon: Daemon, emulator: ModemEmulator
) -> None:
    """The default empty continuity.call_me_extension and a conversation nobody owns: "call me at 3pm" by SMS."""
    clock = daemon.clock
    assert isinstance(clock, ManualClock)
    assert daemon.app is not None
    assert daemon.app.config.continuity.call_me_extension == ""
    clock.set(local(7, 9))
    emulator.deliver(CALLER, "Busy now. Can you call me at 3pm?")
    (booked,) = await wait_for(lambda: daemon.decisions("call_me"), 20)
    assert booked[1] == "deferred"
    assert booked[2].startswith("the customer booked a call-back at 15:00; no phone is named to ring")
    assert booked[2].endswith("staff call back (the next step)")
    ((conv, step, due, owner),) = daemon.rows(
        "SELECT id, next_step, next_step_due, next_step_owner FROM conversations WHERE next_step IS NOT NULL"
    )
    assert (step, due, owner) == ("Call back", local(7, 15), None)
    entries = daemon.rows(
        "SELECT body FROM events WHERE kind = 'spine' AND conversation_id = ? AND body LIKE 'Next step%'", conv
    )
    assert entries == [("Next step: Call back, due Mon 2026-12-07 15:00 EST - set by the gateway (sms)",)]
    # The status page shows it, with the fix.
    part = await wait_for(
        lambda: [h for h in daemon.app.health() if h.name == "continuity" and h.state.value == "degraded"], 20
    )
    assert part[0].cause == "1 booked call-back(s) have no phone to ring"
    assert "continuity.call_me_extension" in (part[0].fix or "")
    # 15:00: nothing is rung, the timeline says so, and the customer is not texted a "could not reach you".
    clock.set(local(7, 15))
    await wait_for(lambda: daemon.decisions("call_me")[-1][1] == "suppressed", 20)
    assert "nobody was rung and the customer was not texted" in daemon.decisions("call_me")[-1][2]
    clock.set(local(7, 15, 30))
    await daemon.settle(1.0)
    assert texts_to(emulator) == []
    assert daemon.rows("SELECT next_step, next_step_due FROM conversations WHERE id = ?", conv) == [
        ("Call back", local(7, 15))
    ]
    ok = [h for h in daemon.app.health() if h.name == "continuity"]
    assert ok[0].state.value == "ok", "nothing waits any more: the past-due step is the leakage page's to count"
