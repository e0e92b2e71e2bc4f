"""Cross-channel browser tests: the real SMS channel on the modem emulator (a pty), the web app and Chromium.

"Continue by text" moves a chat to SMS through the emulated modem and the customer's SMS answer lands in the same
timeline; the status page shows the modem unplugged within 10 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from gateway.channels.sms.channel import SmsChannel
from gateway.channels.sms.config import SmsConfig
from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.emulator import ModemEmulator
from gateway.store.db import Store
from gateway.web.app import WebServer
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps
from gateway.web.pages import create_staff_user

from .conftest import ALWAYS_OPEN, PASSWORD
from .test_browser import CHROMIUM_ARGS, SHOTS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
]

FAST = {
    "poll_interval": 1.0,
    "probe_interval": 1.0,
    "command_timeout": 2.0,
    "multipart_timeout": 2.0,
    "retry_base": 0.2,
    "retry_cap": 0.5,
}
CUSTOMER = "+12025550147"


@dataclass
class Rig:
    url: str
    service: ConversationService
    store: Store
    emulator: ModemEmulator
    sms: SmsChannel
    browser: Any


async def wait_for(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus, ServiceSettings(default_region="US"))
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev" / "ttyUSB0", seed=7)
    emu.start()
    cfg_sms = SmsConfig(enabled=True, device=str(emu.link), **FAST)  # type: ignore[arg-type]
    sms = SmsChannel(cfg_sms, store, service, bus, region="US")
    await sms.start()

    async def modem() -> dict[str, Any]:
        st = sms.link_state
        return {"up": st.up, "since": st.since, "last_error": st.last_error, **dataclasses.asdict(sms.modem_state)}

    cfg = WebConfig(port=0, secure_cookies=False, business_hours=ALWAYS_OPEN, quiet_hours="", business_name="Hana")
    deps = WebDeps(service, store, bus, cfg, status_sources={"modem": modem}, health=lambda: [sms.health()])
    server = WebServer(deps)
    await server.start()
    await create_staff_user(store, "alice", PASSWORD, display_name="Alice Kim", extension="201", role="admin")
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                yield Rig(server.url, service, store, emu, sms, browser)
            finally:
                await browser.close()
    finally:
        await server.stop()
        await sms.stop()
        emu.stop()
        await store.stop()


async def staff_page(rig: Rig) -> Any:
    ctx = await rig.browser.new_context(viewport={"width": 1280, "height": 800})
    page = await ctx.new_page()
    await page.goto(rig.url + "/login")
    await page.fill("#username", "alice")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await page.wait_for_selector("#live.ok")
    return page


async def test_continue_by_text_moves_the_chat_to_sms(rig: Rig) -> None:
    await wait_for(lambda: rig.sms.link_state.up)
    ctx = await rig.browser.new_context(viewport={"width": 1100, "height": 760})
    visitor = await ctx.new_page()
    await visitor.goto(rig.url + "/demo")
    await visitor.click("#gateway-chat >> .launcher")
    await visitor.fill("#gateway-chat >> textarea", "I need a quote for a new boiler.")
    await visitor.press("#gateway-chat >> textarea", "Enter")
    await visitor.wait_for_selector("#gateway-chat >> li.visitor:not(.sending)")
    await visitor.click("#gateway-chat >> text=Continue by text")
    await visitor.fill("#gateway-chat >> input[type=tel]", "(202) 555-0147")
    await visitor.click("#gateway-chat >> .handoff button[type=submit]")
    await visitor.locator(".log li.system", has_text="continue by text").wait_for(timeout=5000)
    await visitor.screenshot(path=str(SHOTS / "widget-continue-by-text.png"))

    # The confirmation SMS leaves through the (emulated) modem.
    await wait_for(lambda: [m for m in rig.emulator.sent if m.recipient.endswith("2025550147")], timeout=20)
    # The customer answers by SMS: it lands in the same conversation, live in the console.
    staff = await staff_page(rig)
    rig.emulator.deliver(CUSTOMER, "Texting is easier, thanks. Tuesday works.")
    row = staff.locator("#inbox li button", has_text="Tuesday works")
    await row.wait_for(timeout=20000)
    await row.click()
    await staff.locator("#timeline li.in", has_text="Tuesday works").wait_for()
    texts = await staff.locator("#timeline li").all_text_contents()
    assert any("new boiler" in t for t in texts)  # the chat is in the same timeline
    assert await staff.locator("#reply-channel").input_value() == "sms"
    await staff.fill("#reply-body", "Great, see you Tuesday at 9.")
    await staff.locator("#segments", has_text="1 SMS").wait_for()
    await staff.click("#reply button[type=submit]")
    await wait_for(lambda: [m for m in rig.emulator.sent if "Tuesday at 9" in m.text], timeout=20)
    await staff.screenshot(path=str(SHOTS / "console-chat-then-sms.png"))
    await ctx.close()
    await staff.context.close()


async def test_status_page_shows_modem_unplugged_within_10_s(rig: Rig) -> None:
    await wait_for(lambda: rig.sms.link_state.up)
    staff = await staff_page(rig)
    await staff.goto(rig.url + "/status")
    # The verdict card of the modem comes first on the page; the raw counters are folded away below.
    card = staff.locator('.health-card[data-check="modem"]')
    await staff.locator('.health-card.ok[data-check="modem"]').wait_for(timeout=10000)
    assert "Gateway Test Network" in (await staff.locator('[data-section="modem"]').text_content() or "")
    started = time.monotonic()
    rig.emulator.unplug()
    await staff.locator('.health-card.down[data-check="modem"]').wait_for(timeout=10000)
    seen_after = time.monotonic() - started
    assert seen_after < 10.0
    assert "What to do" in (await card.text_content() or "")
    await staff.screenshot(path=str(SHOTS / "status-modem-unplugged.png"), full_page=True)
    rig.emulator.replug()
    await staff.locator('.health-card.ok[data-check="modem"]').wait_for(timeout=20000)
    await staff.context.close()


async def test_widget_code_confirms_the_number_and_shows_the_customers_texts(rig: Rig) -> None:
    await wait_for(lambda: rig.sms.link_state.up)
    await rig.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "known-1", "Is my boiler fixed?")
    )
    ctx = await rig.browser.new_context(viewport={"width": 1100, "height": 760})
    visitor = await ctx.new_page()
    await visitor.goto(rig.url + "/demo")
    await visitor.click("#gateway-chat >> .launcher")
    await visitor.fill("#gateway-chat >> textarea", "It's me, about the boiler.")
    await visitor.press("#gateway-chat >> textarea", "Enter")
    await visitor.wait_for_selector("#gateway-chat >> li.visitor:not(.sending)")
    log = visitor.locator("#gateway-chat >> .log")
    assert "Is my boiler fixed?" not in (await log.text_content() or "")  # nothing of the customer's before proof
    await visitor.click("#gateway-chat >> text=Continue by text")
    await visitor.fill("#gateway-chat >> input[type=tel]", CUSTOMER)
    await visitor.click("#gateway-chat >> .handoff button[type=submit]")
    texts = await wait_for(lambda: [m for m in rig.emulator.sent if m.recipient.endswith("2025550147")], timeout=20)
    code = re.search(r"type (\d{6}) in the chat", texts[0].text)
    assert code, texts[0].text
    await visitor.fill("#gateway-chat >> .code input", code.group(1))
    await visitor.click("#gateway-chat >> .code button[type=submit]")
    await visitor.locator(".log li.system", has_text="number is confirmed").wait_for(timeout=5000)
    await visitor.locator(".log li", has_text="Is my boiler fixed?").wait_for(timeout=5000)
    await visitor.screenshot(path=str(SHOTS / "widget-code-confirmed.png"))
    await ctx.close()


async def test_widget_without_sms_offers_a_call_and_says_when_busy(tmp_path: Path) -> None:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus, ServiceSettings(sms_enabled=False))
    cfg = WebConfig(port=0, secure_cookies=False, business_hours=ALWAYS_OPEN, quiet_hours="", chat_max_sockets=1)
    server = WebServer(WebDeps(service, store, bus, cfg, sms_available=False))
    await server.start()
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                first = await (await browser.new_context()).new_page()
                await first.goto(server.url + "/demo")
                await first.click("#gateway-chat >> .launcher")
                await first.wait_for_selector("#gateway-chat >> .log li.system")
                await first.click("#gateway-chat >> text=Continue by text")
                await first.locator(".log li.system", has_text="We cannot send text messages right now").wait_for()
                assert await first.locator("#gateway-chat >> .handoff-label").first.text_content() == "Number to call:"
                # The one socket the cap allows is taken: a second visitor is told the chat is busy.
                second = await (await browser.new_context()).new_page()
                await second.goto(server.url + "/demo")
                await second.click("#gateway-chat >> .launcher")
                await second.locator("#gateway-chat >> .status", has_text="busy").wait_for(timeout=10000)
                await second.screenshot(path=str(SHOTS / "widget-busy.png"))
            finally:
                await browser.close()
    finally:
        await server.stop()
        await store.stop()
