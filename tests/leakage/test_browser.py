"""The Leakage page in a real browser (Debian's Chromium via Playwright): the numbers match the API, the charts draw,
a count opens its conversations, a conversation opens in the console, and customer names stay text.

Screenshots go to test-artifacts/screenshots/leakage-*.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright

from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService
from gateway.leakage.config import LeakageConfig
from gateway.leakage.service import LeakageService
from gateway.store.db import Store
from gateway.web.app import WebServer
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps
from gateway.web.pages import create_staff_user
from tests.web.conftest import PASSWORD

from .history import NOW, History, seed_week

pytestmark = [pytest.mark.browser]

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WEEKDAYS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00")


@dataclass
class Live:
    url: str
    browser: Any
    history: History


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    cfg = WebConfig(port=0, secure_cookies=True, business_hours=WEEKDAYS, quiet_hours="", business_name="Hana Dental")
    lcfg = LeakageConfig(close_rate=0.5, average_job_value=300.0, currency="$")
    leak = LeakageService(store, lcfg, WEEKDAYS, "UTC", clock=lambda: NOW)
    server = WebServer(WebDeps(service=service, store=store, bus=bus, config=cfg, leakage_config=lcfg, leakage=leak))
    await server.start()
    await create_staff_user(store, "alice", PASSWORD, display_name="Alice Kim", extension="201", role="admin")
    history = await seed_week(store)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                yield Live(server.url, browser, history)
            finally:
                await browser.close()
    finally:
        await server.stop()
        await store.stop()


async def api_overview(live: Live, cookies: list[dict[str, Any]]) -> dict[str, Any]:
    jar = {c["name"]: c["value"] for c in cookies}
    async with aiohttp.ClientSession(cookies=jar) as http, http.get(live.url + "/api/v1/leakage/overview") as resp:
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data


async def test_leakage_page_numbers_charts_and_click_through(live: Live) -> None:
    ctx = await live.browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(live.url + "/leakage")
    await page.wait_for_url("**/login**")
    await page.fill("#username", "alice")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/leakage")
    await page.wait_for_selector("body[data-loaded='1']")
    ov = await api_overview(live, await ctx.cookies())

    # Every card shows the API's numbers for today, 7 and 30 days.
    for metric in ov["titles"]:
        for period in ("today", "7d", "30d"):
            shown = await page.text_content(f".leak-card[data-metric='{metric}'] button[data-period='{period}'] .num")
            assert shown == str(ov["periods"][period]["metrics"][metric]["count"]), (metric, period)
    assert ov["periods"]["30d"]["metrics"]["sms_threads_waiting"]["count"] == 2
    # Charts render: one uPlot canvas per metric card and one for response times, with pixels drawn.
    canvases = page.locator(".leak-card .chart canvas")
    assert await canvases.count() == len(ov["titles"]) + 1
    painted = await page.evaluate(
        """() => [...document.querySelectorAll('.leak-card .chart canvas')].map((c) => {
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })"""
    )
    assert all(n > 100 for n in painted), painted
    # The ROI sentence: recovered x close rate x job value, recomputed when the value is typed.
    sentence = await page.text_content("#roi-sentence") or ""
    recovered = ov["periods"]["7d"]["metrics"]["recovered"]["conversations"]
    assert f"{recovered} recovered conversation" in sentence
    assert await page.get_attribute("#roi-sentence", "data-estimate") == str(recovered * 0.5 * 300).removesuffix(".0")
    await page.fill("#roi-value", "1000")
    assert await page.get_attribute("#roi-sentence", "data-estimate") == str(int(recovered * 0.5 * 1000))
    await page.screenshot(path=str(SHOTS / "leakage-page.png"), full_page=True)

    # A count opens the conversations behind it; names stay text (C's name is "<b>Cho</b>").
    await page.click(".leak-card[data-metric='missed_calls_unreturned'] button[data-period='30d']")
    await page.wait_for_selector("#list-panel:not([hidden])")
    rows = page.locator("#list-body tr")
    assert await rows.count() == ov["periods"]["30d"]["metrics"]["missed_calls_unreturned"]["count"]
    ids = {int(x) for x in await rows.evaluate_all("rs => rs.map((r) => r.dataset.conversation)")}
    assert ids == {live.history.ids[k] for k in ("B", "C", "S")}
    assert await page.locator("#list-body b").count() == 0
    assert await page.locator("#list-body a", has_text="<b>Cho</b>").count() == 1
    csv_href = await page.get_attribute("#list-csv", "href") or ""
    assert "format=csv" in csv_href
    assert "metric=missed_calls_unreturned" in csv_href
    await page.screenshot(path=str(SHOTS / "leakage-list.png"), full_page=True)

    # Per owner: Bob's voicemails of the week.
    await page.click(".leak-card[data-metric='voicemails_unreturned'] button.owner[data-owner='bob']")
    await page.locator("#list-title", has_text="· bob ·").wait_for()
    owned = await page.locator("#list-body tr").evaluate_all("rs => rs.map((r) => Number(r.dataset.conversation))")
    assert owned == [live.history.ids["E"]]
    await page.click(".leak-card[data-metric='missed_calls_unreturned'] button[data-period='30d']")
    await page.locator("#list-title", has_text="Missed calls").wait_for()

    # ... and each opens in the console.
    await page.click("#list-body a:text-is('Ben Cho')")
    await page.wait_for_url(f"**/console#conversation={live.history.ids['B']}")
    await page.wait_for_selector("#conv:not([hidden])")
    assert await page.text_content("#conv-name") == "Ben Cho"
    await page.screenshot(path=str(SHOTS / "leakage-to-console.png"))
    assert errors == []
    await ctx.close()
