"""Screen-pop end to end: a sipp call into the real Asterisk pops the card on the right staff member's page only.

Real parts: Asterisk 22 (the shared test PBX), sipp as caller and as staff phones 201/202, the voice channel (AMI +
FastAGI), the store and service, the web app, and Chromium with two staff members logged in.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from gateway.channels.voice.channel import VoiceChannel
from gateway.channels.voice.settings import VoiceSettings
from gateway.config import Secret
from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.store.db import Store
from gateway.web.app import WebServer
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps
from gateway.web.pages import create_staff_user
from tests.realpbx import harness
from tests.realpbx.fixtures import realpbx, sip  # noqa: F401 - fixtures are found by name

from .conftest import ALWAYS_OPEN, PASSWORD
from .test_browser import CHROMIUM_ARGS, SHOTS

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.browser,
    pytest.mark.slow,
]

DIALLED = "5550100"


async def login(browser: Any, url: str, username: str) -> Any:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await ctx.new_page()
    await page.goto(url + "/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await page.wait_for_selector("#live.ok")
    return page


@pytest.fixture
async def stack(realpbx: harness.PbxSettings, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:  # noqa: F811
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    ami = realpbx.ami
    host, port = realpbx.agi_addr
    voice = VoiceSettings(
        ami_port=ami.port,
        ami_username=ami.username,
        ami_secret=Secret(ami.secret),
        agi_host=host,
        agi_port=port,
        staff={"201": "alice", "202": "bob"},
        abandon_seconds=4.0,
        ami_ping_interval=2.0,
        ami_ping_timeout=2.0,
        whisper=False,  # the screen-pop timing is measured without a whisper before the bridge
    )
    vc = VoiceChannel(voice, service, bus, store=store)
    cfg = WebConfig(port=0, secure_cookies=False, business_hours=ALWAYS_OPEN, quiet_hours="")
    server = WebServer(WebDeps(service, store, bus, cfg))
    await server.start()
    await create_staff_user(store, "alice", PASSWORD, display_name="Alice Kim", extension="201")
    await create_staff_user(store, "bob", PASSWORD, display_name="Bob Lee", extension="202")
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                yield {"service": service, "voice": vc, "url": server.url, "browser": browser}
            finally:
                await browser.close()
    finally:
        await vc.stop()
        await server.stop()
        await store.stop()


async def test_sipp_call_pops_the_card_on_the_right_page_only(
    stack: dict[str, Any],
    sip: harness.SipHarness,  # noqa: F811
) -> None:
    service: ConversationService = stack["service"]
    vc: VoiceChannel = stack["voice"]
    caller = f"+1555{secrets.randbelow(10**7):07d}"
    known = await service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            caller,
            f"sms-{caller}",
            body="Can you look at the leaking roof this week?",
            display_name="Maria Rossi",
        )
    )
    conv = known.conversation_id
    await service.update_conversation(conv, intent="roof repair", next_step="Book a visit")
    # Alice (201) handled Maria last, so the PBX rings her phone alone first (sticky routing).
    await service.append_event(conv, EventKind.CALL_ANSWERED, Channel.VOICE, meta={"extension": "201"})
    await vc.start()
    await vc.ami.wait_connected(10)

    alice = await login(stack["browser"], stack["url"], "alice")
    bob = await login(stack["browser"], stack["url"], "bob")
    await sip.phone("201", "answer", ring_s=3.0)
    await sip.phone("202", "ring")

    started = time.time()
    call = asyncio.create_task(sip.place_call(DIALLED, caller, "MARIA ROSSI", hold_s=2))
    card = alice.locator(".card")
    await card.wait_for(timeout=15000)
    popped = time.time() - started
    text = await card.text_content() or ""
    assert "Maria Rossi" in text
    assert "roof repair" in text
    assert "Book a visit" in text
    assert "leaking roof" in text
    await alice.screenshot(path=str(SHOTS / "console-screen-pop-sipp.png"))
    assert await bob.locator(".card").count() == 0
    # Alice answers: her card stays with the call, marked in call, then ended.
    await alice.locator(".card .state", has_text="In call").wait_for(timeout=15000)
    result = await call
    assert result.answered, result.stderr
    await alice.locator(".card .state", has_text="Call ended").wait_for(timeout=20000)
    assert await bob.locator(".card").count() == 0
    # The call is on the timeline.
    kinds = [e.kind for e in await service.timeline(conv)]
    assert "call_answered" in kinds
    assert popped < 15
    await alice.context.close()
    await bob.context.close()
