"""The rules in Chromium, through the whole daemon: journey (g) (a chat during the lunch break is told the honest
reopening time), the chat -> SMS continuation reaching the modem, automated decisions drawn on the staff timeline,
and the read-only rules settings page. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from gateway.continuity.clock import ManualClock
from gateway.emulator import ModemEmulator
from gateway.web.pages import create_staff_user
from tests.continuity.conftest import local
from tests.continuity.daemon import Daemon, build_config, wait_for
from tests.web.conftest import PASSWORD
from tests.web.test_browser import CHROMIUM_ARGS, SHOTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PARENT = "+12025550171"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ModemEmulator]:
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev" / "ttyUSB0", seed=17)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
async def live(tmp_path: Path, emulator: ModemEmulator) -> AsyncIterator[tuple[Daemon, Any]]:
    d = Daemon(build_config(tmp_path, emulator), ManualClock(local(7, 12, 15)))  # Monday, lunch break
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


async def test_g_lunch_break_chat_continuation_and_the_console(
    live: tuple[Daemon, Any], emulator: ModemEmulator
) -> None:
    d, browser = live
    url = d.url
    ctx = await browser.new_context(viewport={"width": 1100, "height": 760})
    visitor = await ctx.new_page()
    await visitor.goto(url + "/demo")
    await visitor.click("#gateway-chat >> .launcher")
    await visitor.wait_for_selector("#gateway-chat >> .log li.system")
    await visitor.fill("#gateway-chat >> textarea", "My son chipped a tooth - do you handle emergencies?")
    await visitor.press("#gateway-chat >> textarea", "Enter")
    # (g) 12:15 with a 12:00-13:30 lunch break: the after-hours rule answers in the chat with the honest time.
    reply = visitor.locator("#gateway-chat >> li.staff", has_text="reopen at 13:30")
    await reply.wait_for(timeout=30000)
    await visitor.screenshot(path=str(SHOTS / "rules-widget-lunch-break.png"))

    # Continue by text: the chat channel first texts the typed number to confirm it; the parent answers that text,
    # which confirms the number, and the continuation follows: it quotes the open question, offers the next time
    # and asks only for what is still missing (journey (a)'s chat and SMS half).
    await visitor.click("#gateway-chat >> button.ghost:has-text('Continue by text')")
    await visitor.fill("#gateway-chat >> input[type=tel]", PARENT)
    await visitor.click("#gateway-chat >> .handoff button[type=submit]")

    def text() -> str:  # a long text leaves in parts: the customer's phone joins them
        return "".join(s.text for s in emulator.sent if s.recipient == PARENT)

    await wait_for(lambda: "reply to this text" in text(), 40)
    assert "chipped" not in text(), "nothing of the chat goes to a number before it is confirmed"
    emulator.deliver(PARENT, "Hi, this is Maria Rossi. Saturday morning works for us")
    await wait_for(lambda: "at 14:30" in text(), 40)  # the last part of the continuation
    await wait_for(lambda: d.decisions("chat_sms") and d.decisions("chat_sms")[-1][1] == "sent", 40)
    assert 'You asked: "My son chipped a tooth - do you handle emergencies?"' in text()
    assert "We can see you at 13:30, at 14:00 or at 14:30" in text()
    convs = d.rows("SELECT DISTINCT conversation_id FROM events WHERE kind IN ('message_in', 'handoff')")
    assert len(convs) == 1, "chat, hand-off and the SMS answer are one conversation"
    facts = dict(d.rows("SELECT name, value FROM conversation_facts"))
    assert "availability" in facts
    assert "your name" not in text().split("You asked")[-1], "the name is known: never asked again"

    # Staff: the decisions are on the timeline, drawn by decision, with their reasons.
    page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    await page.goto(url + "/login")
    await page.fill("#username", "alice")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await page.locator("#inbox li button").first.click()
    sent = page.locator("#timeline li.automated.decision-sent", has_text="Chat continued by text sent")
    await sent.wait_for(timeout=30000)
    assert "Automated · chat sms · sent" in (await sent.text_content() or "")
    after = page.locator("#timeline li.automated.decision-sent", has_text="After-hours reply sent")
    await after.wait_for()
    await page.screenshot(path=str(SHOTS / "rules-console-timeline.png"))

    # The read-only settings view.
    await page.click("a[href='/rules']")
    await page.wait_for_selector("#rules tbody tr[data-rule=missed_call]")
    assert await page.locator("#rules tr[data-rule=missed_call] td.on").count() == 1
    assert "Sorry we missed your call" in (await page.locator("#templates").text_content() or "")
    assert "08:00-12:00, 13:30-18:00" in (await page.locator("#hours").text_content() or "")
    await page.screenshot(path=str(SHOTS / "rules-settings.png"), full_page=True)
    await ctx.close()
