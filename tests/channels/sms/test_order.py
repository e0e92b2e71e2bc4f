"""Outbox order through the modem emulator on a real pty: staff first, and never out of order per recipient."""

from __future__ import annotations

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.emulator import ModemEmulator

from .conftest import Rig, wait_for

CUSTOMER = "+12025550123"


async def _conversation(rig: Rig, number: str) -> int:
    r = await rig.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, f"in-{number}", "hello")
    )
    return r.conversation_id


async def test_a_later_message_never_overtakes_one_waiting_for_a_retry(rig: Rig, emulator: ModemEmulator) -> None:
    # The retry delay is long enough that a busy machine still enqueues the second message while the first
    # is waiting for its retry (the window this test is about), and short enough to keep the test quick.
    ch = await rig.channel(str(emulator.link), retry_base=5.0, retry_cap=5.0)
    await wait_for(lambda: ch.modem_state.connected)
    conv = await _conversation(rig, CUSTOMER)
    emulator.fail_next_send(42, count=1)  # congestion on the first attempt of the first message
    first = await rig.service.enqueue_outbound(conv, "sms", CUSTOMER, "1: your quote is $300", automated=False)
    await wait_for(lambda: rig.outbox(first)["attempts"] == 1 and rig.outbox(first)["state"] == "queued")
    second = await rig.service.enqueue_outbound(conv, "sms", CUSTOMER, "2: and it includes tax", automated=False)
    assert rig.outbox(first)["state"] == "queued", "the second message was queued inside the retry window"
    await wait_for(lambda: rig.outbox(second)["state"] in ("sent", "delivered"), timeout=40)
    assert [m.text for m in emulator.sent] == ["1: your quote is $300", "2: and it includes tax"]
    assert rig.outbox(first)["attempts"] == 2


async def test_other_recipients_are_not_held_up_by_a_retry(rig: Rig, emulator: ModemEmulator) -> None:
    # A retry delay far longer than a busy machine needs to send the other message (see the first test).
    ch = await rig.channel(str(emulator.link), retry_base=8.0, retry_cap=8.0)
    await wait_for(lambda: ch.modem_state.connected)
    conv = await _conversation(rig, CUSTOMER)
    other = await _conversation(rig, "+12025550188")
    emulator.fail_next_send(42, count=1)
    first = await rig.service.enqueue_outbound(conv, "sms", CUSTOMER, "for the customer", automated=False)
    await wait_for(lambda: rig.outbox(first)["attempts"] == 1)
    await rig.service.enqueue_outbound(other, "sms", "+12025550188", "for someone else", automated=False)
    await wait_for(lambda: len(emulator.sent) == 2, timeout=40)
    assert [m.text for m in emulator.sent] == ["for someone else", "for the customer"]


async def test_staff_replies_go_before_automated_messages(rig: Rig, emulator: ModemEmulator) -> None:
    numbers = ["+12025550101", "+12025550102", CUSTOMER, "+12025550104"]
    convs = {n: await _conversation(rig, n) for n in numbers}
    svc = rig.service
    # A flood of automated texts is queued first (the modem is not running yet)...
    await svc.enqueue_outbound(convs[numbers[0]], Channel.SMS, numbers[0], "auto 1", automated=True)
    await svc.enqueue_outbound(convs[numbers[1]], Channel.SMS, numbers[1], "auto 2", automated=True)
    await svc.enqueue_outbound(convs[CUSTOMER], Channel.SMS, CUSTOMER, "auto to customer", automated=True)
    # ...then staff reply to two people, one of whom already has an automated text waiting.
    await svc.enqueue_outbound(convs[numbers[3]], Channel.SMS, numbers[3], "staff 1", automated=False)
    await svc.enqueue_outbound(convs[CUSTOMER], Channel.SMS, CUSTOMER, "staff to customer", automated=False)
    await rig.channel(str(emulator.link))
    await wait_for(lambda: len(emulator.sent) == 5, timeout=30)
    assert [m.text for m in emulator.sent] == [
        "staff 1",  # staff first
        "auto 1",
        "auto 2",
        "auto to customer",  # queued before the staff reply to the same number: it keeps its place
        "staff to customer",
    ]
