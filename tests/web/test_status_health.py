"""The one health view: a real gateway (App) with one part down, read through /status.json, /metrics and Chromium.

The SMS channel is switched on with no modem plugged in (down), the voice channel and transcription are switched off
(off): the status page must lead with the verdict cards in those words and the fix, fold the raw counters away, draw
the 24-hour sparklines, and /metrics must export the same verdicts. A screenshot goes to test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from gateway import config as config_mod
from gateway.app import App
from gateway.domain.events import ModemHealth
from gateway.values import HealthState
from gateway.web.pages import create_staff_user

from .conftest import PASSWORD
from .test_browser import CHROMIUM_ARGS, SHOTS


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    cfg = config_mod.parse(
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[sms]\nenabled = true\ndevice = "{tmp_path}/ttyUSB*"\n'
        "[voice]\nenabled = false\n[transcribe]\nenabled = false\n"
        '[web]\nport = 0\nbusiness_name = "Hana Plumbing"\n'
    )
    gateway = App(cfg)
    await gateway.start()
    await create_staff_user(gateway.store, "alice", PASSWORD, display_name="Alice Kim", role="admin")
    try:
        yield gateway
    finally:
        await gateway.stop()


def by_name(app: App) -> dict[str, HealthState]:
    return {h.name: h.state for h in app.health()}


async def test_health_model_of_a_running_gateway(app: App) -> None:
    states = by_name(app)
    assert states["modem"] is HealthState.DOWN
    assert states["asterisk"] is HealthState.OFF
    assert states["transcription"] is HealthState.OFF
    assert states["database"] is HealthState.OK
    assert states["config"] is HealthState.OK
    assert states["backup"] is HealthState.OK  # the daemon made the first scheduled backup at start
    assert states["bus"] is HealthState.OK
    assert states["web"] is HealthState.OK
    slow = app.bus.subscribe("slow-listener", maxsize=1, types=(ModemHealth,))
    for _ in range(3):
        app.bus.publish(ModemHealth(device=None, connected=False, connected_since=None, profile="generic"))
    bus = next(h for h in app.health() if h.name == "bus")
    assert bus.state is HealthState.DEGRADED
    assert "slow-listener (2)" in bus.cause
    slow.close()
    modem = next(h for h in app.health() if h.name == "modem")
    assert modem.cause.startswith("no modem at ")
    assert modem.fix.startswith("plug the USB modem in")
    assert modem.since is not None


async def test_status_json_and_metrics_read_the_same_health(app: App) -> None:
    assert app.web is not None
    await app.sample_history()
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[app.web.url])
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.get(app.web.url + "/login") as r:
            html = await r.text()
        token = html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        form = {"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "/status"}
        async with s.post(app.web.url + "/login", data=form, headers={"Origin": app.web.url}) as r:
            assert r.status == 200
        async with s.get(app.web.url + "/status.json") as r:
            data = await r.json()
        async with s.get(app.web.url + "/metrics") as r:
            metrics = await r.text()
    assert data["verdict"] == "down"
    checks = {h["name"]: h for h in data["health"]}
    assert checks["modem"]["state"] == "down"
    assert "plug the USB modem in" in checks["modem"]["fix"]
    assert checks["asterisk"]["state"] == "off"
    assert checks["automated_sms"]["state"] == "ok"
    assert "automated texts may still go out now" in checks["automated_sms"]["cause"]
    assert [p[1] for p in data["history"]["outbox_depth"]] == [0, 0]  # the sample at start, then ours
    assert data["history"]["modem_signal_dbm"][0][1] is None
    assert 'gateway_health{check="modem"} 2.0' in metrics
    assert 'gateway_health{check="asterisk"} -1.0' in metrics
    assert 'gateway_health{check="database"} 0.0' in metrics


@pytest.mark.browser
async def test_status_page_leads_with_verdict_cards(app: App) -> None:
    assert app.web is not None
    for at in range(12):  # two hours of points so the sparklines have a line to draw
        await app.sample_history(at=app.started_at - 7200 + at * 600 if app.started_at else None)
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            await page.goto(app.web.url + "/login?next=/status")
            await page.fill("#username", "alice")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.goto(app.web.url + "/status")
            modem = page.locator('.health-card.down[data-check="modem"]')
            await modem.wait_for(timeout=10000)
            text = await modem.text_content() or ""
            assert "not working" in text
            assert "What to do: plug the USB modem in" in text
            assert await page.locator('.health-card.off[data-check="asterisk"]').is_visible()
            assert await page.locator('.health-card.ok[data-check="database"]').is_visible()
            verdict = await page.locator("#verdict").text_content() or ""
            assert verdict.startswith("Something is not working")
            # The cards come before the raw counters, which are folded away.
            assert not await page.locator('[data-section="store"]').is_visible()
            assert await page.locator("#raw").get_attribute("open") is None
            line = page.locator('[data-series="outbox_depth"] svg polyline')
            assert await line.count() == 1
            await page.screenshot(path=str(SHOTS / "status-modem-down.png"), full_page=True)
        finally:
            await browser.close()


async def test_sparkline_history_survives_a_restart(tmp_path: Path) -> None:
    cfg = config_mod.parse(
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n'
        "[voice]\nenabled = false\n[transcribe]\nenabled = false\n[web]\nport = 0\n"
    )
    first = App(cfg)
    await first.start()
    try:
        await first.sample_history(at=first.started_at - 3600 if first.started_at else None)
        await first.sample_history()
        points = first.history.as_dict()["outbox_depth"]
    finally:
        await first.stop()
    assert len(points) >= 3  # the sample at start and ours
    second = App(cfg)
    await second.start()
    try:
        deadline = time.monotonic() + 10
        while len(again := second.history.as_dict()["outbox_depth"]) <= len(points):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await second.stop()
    # Everything from before the restart is back, followed by the new start's own sample.
    assert again[: len(points)] == points
    assert len(again) == len(points) + 1
    stale = second.history.load({"outbox_depth": [[0.0, 5.0], ["x", 1], [1e12, "bad"]]})
    assert stale == 0  # older than 24 hours or malformed: dropped
