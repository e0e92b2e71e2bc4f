"""Journey (a), the article's dental emergency, end to end with every real piece: Chromium (the parent's chat widget
and the staff console), the pty modem emulator (the texts), the shared test Asterisk 22 with sipp (the parent's call
and the staff phone), the spine learner and the continuity rules on a hand-moved clock.

A parent chats "My son chipped a tooth - do you handle emergencies?" and picks "continue by text"; the first SMS
carries the chat's context and offers time slots; the parent's SMS reply lands in the same conversation with the
availability captured as a fact; then the parent calls: the answering phone's display shows the context label and
the staff member's screen-pop shows the chat and the SMS thread while it still rings, before hello.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from gateway.continuity.clock import ManualClock
from gateway.emulator import ModemEmulator
from gateway.web.pages import create_staff_user
from tests.channels.voice.voice_sipp import Phone, place_call
from tests.continuity.conftest import local
from tests.continuity.daemon import Daemon, build_config, wait_for
from tests.continuity.test_journeys_pbx import emulator, pbx_turn, voice_section  # noqa: F401 - fixtures
from tests.realpbx import harness
from tests.realpbx.fixtures import realpbx  # noqa: F401 - the shared PBX session fixture
from tests.web.conftest import PASSWORD
from tests.web.test_browser import CHROMIUM_ARGS, SHOTS

pytestmark = [pytest.mark.asterisk, pytest.mark.browser, pytest.mark.slow]

PARENT = "+12025550181"
QUESTION = "My son chipped a tooth - do you handle emergencies?"


@pytest.fixture
async def stack(
    tmp_path: Path,
    emulator: ModemEmulator,  # noqa: F811 - fixture parameter
    pbx_turn: harness.PbxSettings,  # noqa: F811 - fixture parameter
) -> AsyncIterator[tuple[Daemon, Any]]:
    config = build_config(tmp_path, emulator, voice=voice_section(pbx_turn))
    d = Daemon(config, ManualClock(local(7, 10)))  # Monday 10:00, open
    app = await d.start()
    await create_staff_user(app.store, "alice", PASSWORD, display_name="Alice Kim", extension="201", role="admin")
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield d, browser
        finally:
            await browser.close()
            await d.stop()


@pytest.mark.timeout(240)
async def test_a_dental_emergency_chat_text_then_call(
    stack: tuple[Daemon, Any],
    emulator: ModemEmulator,  # noqa: F811 - fixture parameter
    tmp_path: Path,
) -> None:
    d, browser = stack
    url = d.url

    # The parent chats, then picks "continue by text".
    visitor = await (await browser.new_context(viewport={"width": 1100, "height": 760})).new_page()
    await visitor.goto(url + "/demo")
    await visitor.click("#gateway-chat >> .launcher")
    await visitor.wait_for_selector("#gateway-chat >> .log li.system")
    await visitor.fill("#gateway-chat >> textarea", QUESTION)
    await visitor.press("#gateway-chat >> textarea", "Enter")
    await visitor.wait_for_selector("#gateway-chat >> li.visitor:not(.sending)")
    await visitor.click("#gateway-chat >> button.ghost:has-text('Continue by text')")
    await visitor.fill("#gateway-chat >> input[type=tel]", PARENT)
    await visitor.click("#gateway-chat >> .handoff button[type=submit]")

    def texts() -> str:
        return "".join(s.text for s in emulator.sent if s.recipient == PARENT)

    await wait_for(lambda: "reply to this text" in texts(), 40)
    # The parent answers the text: the number is confirmed, the reply joins the conversation with its facts.
    emulator.deliver(PARENT, "This is Maria Rossi. Saturday morning works best")
    await wait_for(lambda: "at 11:00" in texts(), 40)
    assert f'You asked: "{QUESTION}"' in texts()
    assert "We can see you at 10:30, at 11:00" in texts(), "the first SMS offers time slots"
    conversations = d.rows("SELECT DISTINCT conversation_id FROM events WHERE kind IN ('message_in', 'handoff')")
    assert len(conversations) == 1, "chat, hand-off and the SMS reply are one conversation"
    facts = dict(d.rows("SELECT name, json_extract(value, '$.text') FROM conversation_facts"))
    assert facts.get("availability") == "Saturday morning"

    # Staff are in the console; then the parent calls. Alice's phone answers after 4 s of ringing.
    staff = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    await staff.goto(url + "/login")
    await staff.fill("#username", "alice")
    await staff.fill("#password", PASSWORD)
    await staff.click("button[type=submit]")
    await staff.wait_for_url("**/console")
    await staff.wait_for_selector("#live.ok")
    phones = [
        Phone("201", "answer", tmp_path, answer_after_ms=4000, hold_ms=1500),
        Phone("202", "ring", tmp_path),
        Phone("203", "ring", tmp_path),
    ]
    for phone in phones:
        await phone.start()
    try:
        call = asyncio.create_task(place_call(tmp_path, number=PARENT, hold_ms=1500, local_port=15073))
        card = staff.locator(".card")
        await card.wait_for(timeout=30000)
        ringing = await card.text_content() or ""
        state = await staff.locator(".card .state").first.text_content()
        await staff.screenshot(path=str(SHOTS / "journey-a-screen-pop.png"))
        result = await call
        assert result.returncode == 0, result.stderr
    finally:
        for phone in phones:
            await phone.stop()
    assert state == "Ringing", "the card was there before hello"
    assert "Chat" in ringing
    assert QUESTION in ringing, "the screen-pop shows the chat"
    assert "SMS" in ringing, "and the SMS thread"
    labels = phones[0].display_names()
    assert labels, "phone 201 was rung"
    assert labels[0].startswith("Maria R"), labels
    assert "urgent" in labels[0] or "!" in labels[0], labels
