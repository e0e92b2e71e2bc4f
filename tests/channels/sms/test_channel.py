"""The SMS channel against the modem emulator on a real pty, one fault per test."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from gateway.domain.events import ModemHealth, SmsStorageWarning
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.emulator import ModemEmulator
from gateway.errors import ConfigError, PermanentError
from gateway.protocols.pdu import segment_count
from gateway.values import HealthState

from .conftest import Rig, wait_for

CUSTOMER = "+12025550123"


async def test_emoji_sms_round_trips_into_a_conversation_and_back(rig: Rig, emulator: ModemEmulator) -> None:
    ch = await rig.channel(str(emulator.link))
    emulator.deliver(CUSTOMER, "Hi 😀 can I move my booking to tomorrow? €5 deposit [ok]")
    await wait_for(rig.inbound_bodies)
    assert rig.inbound_bodies() == ["Hi 😀 can I move my booking to tomorrow? €5 deposit [ok]"]
    contact = await rig.service.find_contact("phone", CUSTOMER)
    assert contact is not None
    assert emulator.stored("SM") == {}  # read, stored, then deleted from the SIM
    assert emulator.delete_all_count == 0
    conv = rig.rows("SELECT id FROM conversations")[0][0]
    outbox_id = await rig.service.enqueue_outbound(
        conv, Channel.SMS, CUSTOMER, "Sure 👍 see you tomorrow", automated=False, author="ana"
    )
    await wait_for(lambda: emulator.sent)
    assert emulator.sent[0].text == "Sure 👍 see you tomorrow"
    assert emulator.sent[0].recipient == CUSTOMER
    await wait_for(lambda: rig.outbox(outbox_id)["state"] == "delivered")
    row = rig.outbox(outbox_id)
    assert row["provider_ref"] == str(emulator.sent[0].reference)
    assert ch.modem_state.connected
    assert ch.modem_state.imsi == emulator.imsi
    assert ch.modem_state.iccid == emulator.iccid
    assert ch.modem_state.signal_dbm == -113 + 2 * emulator.rssi
    assert ch.modem_state.operator == emulator.operator


async def test_multipart_out_of_order_with_duplicates_is_one_message(rig: Rig, emulator: ModemEmulator) -> None:
    await rig.channel(str(emulator.link))
    text = "Long message with emoji 🎉 " * 12  # UCS-2, several parts
    encoding, parts = segment_count(text)
    assert (encoding, parts) == ("ucs2", 5)
    assert emulator.deliver(CUSTOMER, text, order=[5, 3, 1, 4, 2]) == 5
    await wait_for(rig.inbound_bodies)
    assert rig.inbound_bodies() == [text]
    text2 = "x" * 500  # GSM 7-bit, 4 parts
    n = emulator.deliver(CUSTOMER, text2, order=[4, 2, 1, 3], duplicate=(2,), ref_bits=16)
    assert n == 4
    await wait_for(lambda: len(rig.inbound_bodies()) == 2)
    assert rig.inbound_bodies()[1] == text2
    meta = json.loads(rig.rows("SELECT meta FROM events WHERE kind = 'message_in' ORDER BY id")[1][0])
    assert meta["parts"] == 4
    assert "incomplete" not in meta


async def test_lost_part_is_delivered_marked_incomplete_after_timeout(rig: Rig, emulator: ModemEmulator) -> None:
    await rig.channel(str(emulator.link), multipart_timeout=1.5)
    text = "".join(f"({i:03d})" for i in range(80))  # 400 septets: 3 parts of 153
    emulator.deliver(CUSTOMER, text, drop=(2,))
    body = (await wait_for(rig.inbound_bodies, timeout=20))[0]
    assert "[part 2 of 3 missing]" in body
    assert body.startswith(text[:100])
    meta = json.loads(rig.rows("SELECT meta FROM events WHERE kind = 'message_in'")[0][0])
    assert meta["incomplete"] is True
    assert meta["parts_missing"] == 1


async def test_garbage_and_vendor_noise_do_not_lose_messages(rig: Rig, emulator: ModemEmulator) -> None:
    ch = await rig.channel(str(emulator.link))
    await wait_for(lambda: ch.modem_state.connected)
    for i in range(5):
        emulator.garbage(300)
        emulator.noise(4)
        emulator.ring("+15559990000")
        emulator.deliver(CUSTOMER, f"message {i}")
    await wait_for(lambda: len(rig.inbound_bodies()) == 5)
    assert sorted(rig.inbound_bodies()) == [f"message {i}" for i in range(5)]
    assert ch.link is not None
    assert ch.link.garbage_lines >= 5


async def test_hung_modem_is_detected_and_reopened(rig: Rig, emulator: ModemEmulator) -> None:
    ch = await rig.channel(str(emulator.link), command_timeout=1.0, probe_interval=0.5)
    await wait_for(lambda: ch.modem_state.connected)
    sessions = ch.sessions
    emulator.hang(3.0)
    await wait_for(lambda: not ch.modem_state.connected, timeout=10)
    assert "no answer" in (ch.modem_state.last_error or "")
    await wait_for(lambda: ch.modem_state.connected and ch.sessions > sessions, timeout=20)
    emulator.deliver(CUSTOMER, "after the hang")
    await wait_for(lambda: rig.inbound_bodies() == ["after the hang"])


async def test_unplug_and_replug_under_a_new_name(rig: Rig, emulator: ModemEmulator) -> None:
    assert emulator.link is not None
    pattern = str(emulator.link.parent / "ttyUSB*")
    ch = await rig.channel(pattern)
    await wait_for(lambda: ch.modem_state.connected)
    emulator.unplug()
    await wait_for(lambda: not ch.modem_state.connected)
    emulator.deliver(CUSTOMER, "sent while the stick was out")  # waits on the SIM
    emulator.replug(emulator.link.parent / "ttyUSB3")
    await wait_for(lambda: ch.modem_state.connected, timeout=40)
    assert ch.modem_state.device is not None
    assert ch.modem_state.device.endswith("ttyUSB3")
    await wait_for(lambda: rig.inbound_bodies() == ["sent while the stick was out"], timeout=20)
    assert ch.modem_state.reopen_count >= 1


async def test_full_sim_is_drained_and_warned(
    rig: Rig, emulator: ModemEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.fill_sim("SM")
    emulator.deliver(CUSTOMER, "arrives once there is room")
    assert emulator.network_pending == 1
    warnings = rig.bus.subscribe("test", types=(SmsStorageWarning,))
    caplog.set_level(logging.WARNING)
    ch = await rig.channel(str(emulator.link))
    await wait_for(lambda: "arrives once there is room" in rig.inbound_bodies(), timeout=20)
    capacity = emulator.capacity["SM"]
    assert rig.inbound_bodies().count("old message") == capacity
    assert emulator.network_pending == 0
    warning = warnings.get_nowait()
    assert isinstance(warning, SmsStorageWarning)
    assert warning.used == capacity
    full_warnings = [r for r in caplog.records if "full" in r.getMessage()]
    assert len(full_warnings) == 1  # once per crossing, not once per poll
    await wait_for(lambda: ch.storage_usage.get("SM") == (0, capacity))
    assert ch.modem_state.sim_used == 0
    assert ch.modem_state.storage_percent == 0


async def test_transient_send_errors_are_retried(rig: Rig, emulator: ModemEmulator) -> None:
    await rig.channel(str(emulator.link))
    emulator.deliver(CUSTOMER, "hello")
    await wait_for(rig.inbound_bodies)
    conv = rig.rows("SELECT id FROM conversations")[0][0]
    emulator.fail_next_send(42, count=2)  # congestion, twice
    outbox_id = await rig.service.enqueue_outbound(conv, "sms", CUSTOMER, "reply", automated=False)
    await wait_for(lambda: rig.outbox(outbox_id)["state"] in ("sent", "delivered"), timeout=20)
    row = rig.outbox(outbox_id)
    assert row["attempts"] == 3
    assert len(emulator.sent) == 1


async def test_permanent_send_error_fails_with_reason(rig: Rig, emulator: ModemEmulator) -> None:
    await rig.channel(str(emulator.link))
    emulator.deliver(CUSTOMER, "hello")
    await wait_for(rig.inbound_bodies)
    conv = rig.rows("SELECT id FROM conversations")[0][0]
    emulator.fail_next_send(1)
    outbox_id = await rig.service.enqueue_outbound(conv, "sms", CUSTOMER, "hi", automated=False)
    await wait_for(lambda: rig.outbox(outbox_id)["state"] == "failed")
    row = rig.outbox(outbox_id)
    assert "unassigned (unallocated) number" in row["last_error"]
    assert row["attempts"] == 1
    assert emulator.sent == []


async def test_status_report_failure_marks_failed(rig: Rig, emulator: ModemEmulator) -> None:
    emulator.status_report_delay = None  # reports only when the test says so
    await rig.channel(str(emulator.link))
    emulator.deliver(CUSTOMER, "hello")
    await wait_for(rig.inbound_bodies)
    conv = rig.rows("SELECT id FROM conversations")[0][0]
    long_text = "y" * 200  # two parts: delivered only when both are
    ok_id = await rig.service.enqueue_outbound(conv, "sms", CUSTOMER, long_text, automated=False)
    await wait_for(lambda: rig.outbox(ok_id)["state"] == "sent")
    refs = [s.reference for s in emulator.sent]
    assert len(refs) == 2
    emulator.status_report(refs[0], 0x00)
    await wait_for(lambda: rig.rows("SELECT COUNT(*) FROM sms_sent_parts WHERE status = 0")[0][0])
    assert rig.outbox(ok_id)["state"] == "sent"
    emulator.status_report(refs[1], 0x00)
    await wait_for(lambda: rig.outbox(ok_id)["state"] == "delivered")
    bad_id = await rig.service.enqueue_outbound(conv, "sms", CUSTOMER, "short", automated=False)
    await wait_for(lambda: rig.outbox(bad_id)["state"] == "sent")
    emulator.status_report(emulator.sent[-1].reference, 0x41)
    await wait_for(lambda: rig.outbox(bad_id)["state"] == "failed")
    assert "incompatible destination" in rig.outbox(bad_id)["last_error"]


async def test_stop_suppresses_confirms_once_and_start_lifts(rig: Rig, emulator: ModemEmulator) -> None:
    ch = await rig.channel(str(emulator.link))
    emulator.deliver(CUSTOMER, "  sToP ")
    await wait_for(lambda: rig.rows("SELECT address FROM suppressions"))
    assert rig.rows("SELECT address FROM suppressions") == [(CUSTOMER,)]
    await wait_for(lambda: emulator.sent)
    assert [s.text for s in emulator.sent] == [ch.config.stop_reply]
    conv = rig.rows("SELECT id FROM conversations")[0][0]
    assert rig.rows("SELECT COUNT(*) FROM events WHERE kind = 'opt_out'")[0][0] == 1
    with pytest.raises(PermanentError, match="opted out"):
        await rig.service.enqueue_outbound(conv, "sms", CUSTOMER, "promo", automated=True)
    staff_id = await rig.service.enqueue_outbound(
        conv, "sms", CUSTOMER, "your order is ready", automated=False, override_optout=True
    )
    await wait_for(lambda: rig.outbox(staff_id)["state"] in ("sent", "delivered"))
    emulator.deliver(CUSTOMER, "stop")  # a second STOP: stored, confirmed once more
    emulator.deliver(CUSTOMER, "please stop calling me")  # a sentence, not a keyword
    await wait_for(lambda: len(rig.inbound_bodies()) == 3)
    emulator.deliver(CUSTOMER, "Start")
    await wait_for(lambda: not rig.rows("SELECT address FROM suppressions"))
    await wait_for(lambda: emulator.sent[-1].text == ch.config.start_reply)
    assert rig.rows("SELECT COUNT(*) FROM events WHERE kind = 'opt_in'")[0][0] == 1
    replies = [s.text for s in emulator.sent]
    assert replies.count(ch.config.stop_reply) == 2
    assert replies.count(ch.config.start_reply) == 1


async def test_help_gets_the_help_text(rig: Rig, emulator: ModemEmulator) -> None:
    ch = await rig.channel(str(emulator.link), help_reply="Call us at 555-0100. Reply STOP to opt out.")
    emulator.deliver(CUSTOMER, "help")
    await wait_for(lambda: emulator.sent)
    assert [s.text for s in emulator.sent] == ["Call us at 555-0100. Reply STOP to opt out."]
    assert not rig.rows("SELECT address FROM suppressions")
    assert ch.modem_state.connected


async def test_wrong_pin_is_tried_exactly_once(rig: Rig, tmp_path: object) -> None:
    emu = ModemEmulator("huawei-e3372", sim_pin="1234")
    emu.start()
    try:
        ch = await rig.channel(emu.path, pin="0000")
        await wait_for(lambda: "sms.pin" in (ch.modem_state.last_error or ""), timeout=10)
        # A configuration problem stops the reconnect loop: no second session, no second PIN attempt.
        await wait_for(lambda: ch.link_state.stopped, timeout=20)
        assert "sms.pin" in (ch.link_state.last_error or "")
        assert ch.sessions == 1
        assert emu.pin_attempts == 1
        assert not ch.modem_state.connected
        verdict = ch.health()
        assert verdict.state is HealthState.DOWN
        assert "sms.pin" in verdict.fix + verdict.cause
    finally:
        emu.stop()


async def test_right_pin_unlocks(rig: Rig) -> None:
    emu = ModemEmulator("simcom-sim800", sim_pin="1234")
    emu.start()
    try:
        ch = await rig.channel(emu.path, pin="1234", profile="simcom-sim800")
        await wait_for(lambda: ch.modem_state.connected)
        emu.deliver(CUSTOMER, "unlocked")
        await wait_for(lambda: rig.inbound_bodies() == ["unlocked"])
        assert emu.pin_attempts == 1
    finally:
        emu.stop()


async def test_undecodable_pdu_is_kept_not_lost(rig: Rig, emulator: ModemEmulator) -> None:
    await rig.channel(str(emulator.link))
    emulator.deliver_pdu("0791FFFF")  # truncated: not a message we can read
    emulator.deliver(CUSTOMER, "the next one is fine")
    await wait_for(lambda: "the next one is fine" in rig.inbound_bodies())
    kept = rig.rows("SELECT pdu, state, error FROM sms_inbound_parts WHERE state = 'undecodable'")
    assert kept[0][0] == "0791FFFF"
    assert "ends" in kept[0][2]
    assert emulator.stored("SM") == {}


async def test_health_is_published(rig: Rig, emulator: ModemEmulator) -> None:
    sub = rig.bus.subscribe("status", types=(ModemHealth,))
    ch = await rig.channel(str(emulator.link))
    await wait_for(lambda: ch.modem_state.connected and ch.modem_state.operator)
    seen = []
    while (ev := sub.get_nowait()) is not None:
        seen.append(ev)
    assert any(isinstance(h, ModemHealth) and h.connected for h in seen)
    last = seen[-1]
    assert isinstance(last, ModemHealth)
    assert last.registration_text == "registered, home network"


async def test_message_expires_while_the_modem_is_away(rig: Rig, tmp_path: Path) -> None:
    ch = await rig.channel(str(tmp_path / "no-such-modem"))
    await wait_for(lambda: "does not exist" in (ch.link_state.last_error or ""))
    hasty = ConversationService(rig.store, rig.bus, ServiceSettings(outbox_expiry_s=0.5))
    seed = await hasty.ingest(Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "seed-1", "hi"))
    outbox_id = await hasty.enqueue_outbound(seed.conversation_id, "sms", CUSTOMER, "too late", automated=False)
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "no-such-modem")
    await asyncio.sleep(0.6)
    emu.start()  # the modem comes back after the message expired
    try:
        await wait_for(lambda: rig.outbox(outbox_id)["state"] == "expired", timeout=20)
        assert "expired" in rig.outbox(outbox_id)["last_error"]
        await wait_for(lambda: ch.modem_state.connected, timeout=40)
        await asyncio.sleep(0.5)
        assert emu.sent == []
    finally:
        emu.stop()


async def test_endless_transient_errors_give_up_in_words(rig: Rig, emulator: ModemEmulator) -> None:
    await rig.channel(str(emulator.link), max_attempts=3)
    seed = await rig.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "seed-2", "hi")
    )
    emulator.fail_next_send(331, count=10)  # no network service
    outbox_id = await rig.service.enqueue_outbound(seed.conversation_id, "sms", CUSTOMER, "hello?", automated=False)
    await wait_for(lambda: rig.outbox(outbox_id)["state"] == "failed", timeout=20)
    row = rig.outbox(outbox_id)
    assert row["attempts"] == 3
    assert row["last_error"] == "gave up after 3 attempts: no network service"


async def test_failed_delete_keeps_the_message_once(rig: Rig, emulator: ModemEmulator) -> None:
    emulator.fail_next_command("AT+CMGD", 321)
    emulator.fail_next_command("AT+CMGL", 314)  # SIM busy on the first listing
    ch = await rig.channel(str(emulator.link))
    emulator.deliver(CUSTOMER, "delete me later")
    await wait_for(lambda: rig.inbound_bodies() == ["delete me later"])
    await wait_for(lambda: emulator.stored("SM") == {}, timeout=20)  # a later round deletes it
    await wait_for(lambda: ch.polls >= 3)
    assert rig.inbound_bodies() == ["delete me later"]  # listed twice, stored once
    assert rig.rows("SELECT COUNT(*) FROM sms_inbound_parts")[0][0] == 1
    assert sum(c.startswith("AT+CMGD") for c in emulator.commands) >= 2  # the first one failed
    assert ch.modem_state.connected


async def test_mixed_traffic_on_a_slow_modem_one_message_at_a_time(rig: Rig, emulator: ModemEmulator) -> None:
    emulator.command_delay = 0.01
    emulator.send_delay = 0.1
    await rig.channel(str(emulator.link))
    seed = await rig.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "seed-3", "hi")
    )
    ids = []
    for i in range(8):
        ids.append(
            await rig.service.enqueue_outbound(seed.conversation_id, "sms", CUSTOMER, f"out {i} ✓", automated=False)
        )
        emulator.deliver(f"+1555000000{i}", f"in {i}")
        emulator.noise(1)
    await wait_for(lambda: len(rig.inbound_bodies()) == 9, timeout=40)
    await wait_for(lambda: all(rig.outbox(i)["state"] in ("sent", "delivered") for i in ids), timeout=40)
    assert sorted(s.text for s in emulator.sent) == sorted(f"out {i} ✓" for i in range(8))
    assert all(rig.outbox(i)["attempts"] == 1 for i in ids)  # no send was ever refused
    assert sorted(rig.inbound_bodies()[1:]) == [f"in {i}" for i in range(8)]


async def test_unknown_profile_is_a_config_error(rig: Rig) -> None:
    with pytest.raises(ConfigError, match="Known profiles: generic, huawei-e173"):
        await rig.channel("/dev/null", profile="nokia-3310")


async def test_profile_quirks_are_sent_and_drafts_are_left_alone(rig: Rig, emulator: ModemEmulator) -> None:
    draft = emulator.store_draft("+15550001234", "a draft someone keeps on the SIM")
    ch = await rig.channel(str(emulator.link))
    emulator.deliver(CUSTOMER, "hello")
    await wait_for(lambda: rig.inbound_bodies() == ["hello"])
    await wait_for(lambda: ch.polls >= 2)
    assert "AT^CURC=0" in emulator.commands
    assert "AT+CNMI=2,1,0,1,0" in emulator.commands
    assert list(emulator.stored("SM")) == [draft]
    assert ("SM", draft) not in emulator.deleted


async def test_without_status_reports_sent_is_final(rig: Rig, emulator: ModemEmulator) -> None:
    ch = await rig.channel(str(emulator.link), status_reports=False)
    seed = await rig.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "seed-4", "hi")
    )
    outbox_id = await rig.service.enqueue_outbound(
        seed.conversation_id, "sms", CUSTOMER, "no report please", automated=False
    )
    await wait_for(lambda: rig.outbox(outbox_id)["state"] == "sent")
    assert emulator.sent[0].status_report is False
    assert "AT+CNMI=2,1,0,0,0" in emulator.commands
    await asyncio.sleep(0.5)
    assert rig.outbox(outbox_id)["state"] == "sent"
    assert ch.modem_state.connected


async def test_unplug_during_a_send_marks_unknown_and_never_resends(rig: Rig, emulator: ModemEmulator) -> None:
    emulator.send_delay = 1.0  # the modem holds the message for a second before it answers
    ch = await rig.channel(str(emulator.link))
    seed = await rig.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "seed-5", "hi")
    )
    outbox_id = await rig.service.enqueue_outbound(seed.conversation_id, "sms", CUSTOMER, "in flight", automated=False)
    await wait_for(lambda: any(c.startswith("AT+CMGS=") for c in emulator.commands))
    await asyncio.sleep(0.4)  # the PDU is in the modem now
    emulator.unplug()
    await wait_for(lambda: rig.outbox(outbox_id)["state"] == "unknown")
    assert "may or may not" in rig.outbox(outbox_id)["last_error"]
    emulator.replug()
    await wait_for(lambda: ch.modem_state.connected, timeout=40)
    await asyncio.sleep(1.5)
    assert [s.text for s in emulator.sent].count("in flight") <= 1  # never sent a second time
    assert rig.outbox(outbox_id)["state"] == "unknown"
    assert rig.outbox(outbox_id)["attempts"] == 1


async def test_an_idle_outbox_claims_in_the_commit_that_queues(rig: Rig, emulator: ModemEmulator) -> None:
    await rig.channel(str(emulator.link), status_reports=False, poll_interval=3600.0, probe_interval=3600.0)
    seed = await rig.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "seed-idle", "hi")
    )
    await asyncio.sleep(0.5)  # the worker has looked, found nothing and waits with its next claim parked
    for n in range(3):
        before = rig.store.stats.batches
        outbox_id = await rig.service.enqueue_outbound(
            seed.conversation_id, "sms", CUSTOMER, f"message {n}", automated=False
        )
        await wait_for(lambda: rig.outbox(outbox_id)["state"] == "sent")  # noqa: B023 - awaited in this turn
        # One commit queued and claimed it ('sending' before any byte went out), one marked it sent.
        assert rig.store.stats.batches - before == 2
        assert rig.outbox(outbox_id)["attempts"] == 1
    assert [s.text for s in emulator.sent] == ["message 0", "message 1", "message 2"]


async def test_a_pushed_status_report_is_stored_within_about_a_second(rig: Rig, tmp_path: Path) -> None:
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev-cds" / "ttyUSB0", seed=7, status_report_delay=None)
    emu.start()
    try:
        await rig.channel(str(emu.link), poll_interval=3600.0, probe_interval=3600.0)
        seed = await rig.service.ingest(
            Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "seed-cds", "hi")
        )
        outbox_id = await rig.service.enqueue_outbound(
            seed.conversation_id, "sms", CUSTOMER, "report me", automated=False
        )
        await wait_for(lambda: rig.outbox(outbox_id)["state"] == "sent")
        await asyncio.sleep(0.3)
        batches = rig.store.stats.batches
        started = asyncio.get_running_loop().time()
        emu.status_report(emu.sent[0].reference, 0)
        await wait_for(lambda: rig.outbox(outbox_id)["state"] == "delivered", timeout=5.0)
        took = asyncio.get_running_loop().time() - started
        # Nothing else was written: the report waited for a commit to ride along with, then went by itself.
        assert 0.8 <= took < 4.0
        assert rig.store.stats.batches - batches == 1
    finally:
        emu.stop()


async def test_a_pushed_status_report_waiting_for_a_commit_is_stored_when_the_channel_stops(
    rig: Rig, tmp_path: Path
) -> None:
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev-stop" / "ttyUSB0", seed=7, status_report_delay=None)
    emu.start()
    try:
        ch = await rig.channel(str(emu.link), poll_interval=3600.0, probe_interval=3600.0)
        seed = await rig.service.ingest(
            Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "seed-stop", "hi")
        )
        outbox_id = await rig.service.enqueue_outbound(seed.conversation_id, "sms", CUSTOMER, "bye", automated=False)
        await wait_for(lambda: rig.outbox(outbox_id)["state"] == "sent")
        emu.status_report(emu.sent[0].reference, 0)
        await wait_for(lambda: ch.outbox._parked_reports)  # received, waiting for a commit to ride along with
        parked_at = asyncio.get_running_loop().time()
        await ch.stop()
        rig.channels.remove(ch)
        await wait_for(lambda: rig.outbox(outbox_id)["state"] == "delivered", timeout=2.0)
        assert asyncio.get_running_loop().time() - parked_at < 0.9, "stored at the stop, not after the 1 s wait"
    finally:
        emu.stop()
