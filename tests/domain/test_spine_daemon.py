"""The spine in the whole daemon (``gateway.app.App``): a customer's text arrives through the SMS channel from the pty
modem emulator (real AT/PDU), the spine learner reads it, and a failed delivery report teaches "cannot receive
texts"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.continuity.clock import ManualClock
from gateway.domain.models import Channel, IdentityKind
from gateway.domain.spine import EXTRACTOR, Spine
from gateway.emulator import ModemEmulator
from tests.continuity.conftest import local
from tests.continuity.daemon import Daemon, build_config, wait_for

pytestmark = [pytest.mark.slow]

CUSTOMER = "+14155552681"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ModemEmulator]:
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev" / "ttyUSB0", seed=13)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
async def daemon(tmp_path: Path, emulator: ModemEmulator) -> AsyncIterator[Daemon]:
    cfg = build_config(
        tmp_path,
        emulator,
        spine={"topic_keywords": ["chipped tooth"]},
        continuity={"enabled": False},
    )
    d = Daemon(cfg, ManualClock(local(10, 0)))
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


async def test_a_text_through_the_modem_fills_the_spine_and_a_failed_delivery_prefers_calls(
    daemon: Daemon, emulator: ModemEmulator
) -> None:
    app = daemon.app
    assert app is not None
    emulator.deliver(CUSTOMER, "Hi, this is Maria Rodriguez. My son chipped a tooth. Saturday morning works, text me")

    async def spine() -> Spine | None:
        contact = await app.service.find_contact(IdentityKind.PHONE, CUSTOMER)
        return await app.spine.spine(contact.conversation_id) if contact is not None else None

    async def read() -> bool:
        s = await spine()
        return s is not None and {"name", "topic", "availability"} <= set(s.facts) and s.channel_preference == "sms"

    await wait_for(read, 20)
    got = await spine()
    assert got is not None
    assert got.facts["name"].value == "Maria Rodriguez"
    assert got.facts["topic"].value == "chipped tooth"
    assert got.facts["availability"].value["text"] == "Saturday morning"
    assert got.facts["availability"].source == "sms"
    assert got.facts["availability"].set_by == EXTRACTOR
    assert (got.intent, got.urgent) == ("problem", False)
    assert got.preference_why == "said 'text me'"
    assert got.summary.startswith("Maria R - chipped tooth - texted "), "the captured name names the customer"

    # Staff text back; the network reports the message undeliverable (status 0x41, permanent).
    await app.service.enqueue_outbound(got.conversation_id, Channel.SMS, CUSTOMER, "See you Saturday!", automated=False)
    await wait_for(lambda: [s for s in emulator.sent if s.text == "See you Saturday!"], 20)
    sent = next(s for s in emulator.sent if s.text == "See you Saturday!")
    emulator.status_report(sent.reference, 0x41)

    async def unreachable() -> bool:
        s = await spine()
        return s is not None and s.channel_preference == "voice"

    await wait_for(unreachable, 20)
    after = await spine()
    assert after is not None
    assert (after.preference_why or "").startswith("cannot receive texts (delivery failed")
    entries = [e for e in await app.service.timeline(after.conversation_id) if e.kind == "spine"]
    assert any("Preferred channel: voice" in e.body and "the extractor (from sms)" in e.body for e in entries)


async def test_with_reading_switched_off_nothing_is_read(tmp_path: Path, emulator: ModemEmulator) -> None:
    cfg = build_config(tmp_path, emulator, spine={"extract": False}, continuity={"enabled": False})
    d = Daemon(cfg, ManualClock(local(10, 0)))
    app = await d.start()
    try:
        assert "spine" not in [name for name, _ in app._started]
        emulator.deliver(CUSTOMER, "Saturday morning works, text me")

        async def landed() -> int | None:
            contact = await app.service.find_contact(IdentityKind.PHONE, CUSTOMER)
            return contact.conversation_id if contact is not None else None

        conv = await wait_for(landed, 20)
        await d.settle(0.5)
        spine = await app.spine.spine(conv)
        assert dict(spine.facts) == {}
        assert spine.channel_preference is None
        # Staff can still set everything by hand.
        assert await app.spine.set_fact(conv, "availability", "Saturday morning", source="staff", set_by="anna")
    finally:
        await d.stop()
