"""Bad input on the SMS path through the modem emulator on a real pty: unreadable texts, STOP however typed, and
the SIM PIN kept out of logs, errors and status."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from gateway.app import _plain
from gateway.emulator import ModemEmulator

from .conftest import Rig, wait_for

CUSTOMER = "+12025550123"
# No SMSC, SMS-DELIVER from +12025550123, PID 0, DCS GSM 7-bit, a timestamp, then a user-data length of 160
# septets with only three octets behind it: the sender is readable, the text is not.
BROKEN_FROM_CUSTOMER = "00040B912120550521F3000062011211000000A0C8329B"


async def test_an_unreadable_text_lands_on_the_senders_timeline_and_is_counted(
    rig: Rig, emulator: ModemEmulator
) -> None:
    await rig.channel(str(emulator.link))
    emulator.deliver_pdu(BROKEN_FROM_CUSTOMER)
    emulator.deliver_pdu("0791FFFF")  # not even a sender
    await wait_for(lambda: len(rig.inbound_bodies()) == 2)
    part_ids = [r[0] for r in rig.rows("SELECT id FROM sms_inbound_parts WHERE state = 'undecodable' ORDER BY id")]
    assert len(part_ids) == 2
    bodies = set(rig.inbound_bodies())
    assert bodies == {
        f"Unreadable text from {CUSTOMER}, kept as part {part_ids[0]}",
        f"Unreadable text from an unknown sender, kept as part {part_ids[1]}",
    }
    contact = await rig.service.find_contact("phone", CUSTOMER)
    assert contact is not None  # the customer's own conversation, so staff can ask them to resend
    from gateway.store import sms as db  # noqa: PLC0415

    assert await rig.store.read(db.unreadable_count) == 2
    # The raw PDUs are kept for a later look.
    assert rig.rows("SELECT pdu FROM sms_inbound_parts WHERE id = ?", part_ids[0]) == [(BROKEN_FROM_CUSTOMER,)]


@pytest.mark.parametrize("text", ["Stop!", "\uff33\uff34\uff2f\uff30", "STOP 🙏"])
async def test_stop_typed_any_way_opts_out(rig: Rig, emulator: ModemEmulator, text: str) -> None:
    await rig.channel(str(emulator.link))
    emulator.deliver(CUSTOMER, text)
    await wait_for(lambda: rig.rows("SELECT address FROM suppressions"))
    assert rig.rows("SELECT address FROM suppressions") == [(CUSTOMER,)]


async def test_the_sim_pin_never_appears_in_logs_errors_or_status(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    emu = ModemEmulator("huawei-e3372", sim_pin="4711")
    emu.silence_next_command('AT+CPIN="', 3.0)  # the modem stalls while unlocking
    emu.start()
    caplog.set_level(logging.DEBUG)
    try:
        ch = await rig.channel(emu.path, pin="4711", command_timeout=1.0)
        await wait_for(lambda: "no answer" in (ch.link_state.last_error or ""), timeout=20)
        assert any(c == 'AT+CPIN="4711"' for c in emu.commands)  # the PIN did go to the modem
        assert 'AT+CPIN="****"' in (ch.link_state.last_error or "")
        status = str(_plain(ch.modem_state)) + str(_plain(dataclasses.asdict(ch.link_state)))
        assert "4711" not in status
        messages = [r.getMessage() for r in caplog.records]
        assert messages
        leaks = [m for m in messages if "4711" in m]
        assert not leaks, leaks
    finally:
        emu.stop()
