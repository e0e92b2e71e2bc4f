"""The leakage API, CSV exports, gauges, OpenAPI entries, page access and the weekly digest, over real HTTP."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import Secret
from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService
from gateway.leakage.config import LeakageConfig
from gateway.leakage.metrics import METRICS
from gateway.leakage.service import LeakageService
from gateway.store.db import Store
from gateway.web.app import DIGEST, build_app
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps
from gateway.web.leakage import next_digest_at
from gateway.web.pages import create_staff_user
from tests.web.conftest import PASSWORD, WebEnv

from .history import NOW, seed_week
from .seed import Seeder, at

WEEKDAYS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00")


async def start_env(tmp_path: Path, **web_cfg: Any) -> WebEnv:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    cfg = WebConfig(secure_cookies=False, business_hours=WEEKDAYS, quiet_hours="", **web_cfg)
    lcfg = LeakageConfig(close_rate=0.5, average_job_value=200.0, currency="$", digest_enabled=True)
    leak = LeakageService(store, lcfg, WEEKDAYS, "UTC", clock=lambda: NOW)
    deps = WebDeps(service=service, store=store, bus=bus, config=cfg, leakage_config=lcfg, leakage=leak)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(deps), host="127.0.0.1"))
    await client.start_server()
    await create_staff_user(store, "alice", PASSWORD, display_name="Alice Kim", extension="201", role="admin")
    return WebEnv(client, store, bus, service, deps, tmp_path)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[WebEnv]:
    e = await start_env(tmp_path)
    try:
        yield e
    finally:
        await e.client.close()
        await e.store.stop()


async def test_page_and_api_need_a_login(env: WebEnv) -> None:
    page = await env.client.get("/leakage", allow_redirects=False)
    assert page.status in (302, 401, 403)
    api = await env.client.get("/api/v1/leakage")
    assert api.status == 401
    assert (await env.client.get("/api/v1/leakage/items?metric=calls_abandoned")).status == 401
    await env.login()
    page = await env.client.get("/leakage")
    assert page.status == 200
    text = await page.text()
    assert "/static/vendor/uPlot.iife.min.js" in text
    assert (await env.client.get("/static/vendor/uPlot.iife.min.js")).status == 200
    assert (await env.client.get("/static/leakage.js")).status == 200


async def test_api_csv_and_lists_agree(env: WebEnv) -> None:
    h = await seed_week(env.store)
    await env.login()
    resp = await env.client.get("/api/v1/leakage?from=2026-11-23&to=2026-11-29")
    assert resp.status == 200
    rep = await resp.json()
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 3  # B, C and S (not merged in this test)
    assert rep["metrics"]["sms_threads_waiting"]["count"] == 2
    assert rep["roi"]["estimate"] == rep["metrics"]["recovered"]["conversations"] * 0.5 * 200

    daily = await env.client.get("/api/v1/leakage?from=2026-11-23&to=2026-11-29&format=csv")
    assert daily.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await daily.text())))
    assert [r["day"] for r in rows] == [f"2026-11-{d}" for d in range(23, 30)]
    for metric in METRICS:
        assert sum(int(r[metric]) for r in rows) == rep["metrics"][metric]["count"], metric

    for metric in METRICS:
        got = await (
            await env.client.get(f"/api/v1/leakage/items?metric={metric}&from=2026-11-23&to=2026-11-29")
        ).json()
        assert got["count"] == rep["metrics"][metric]["count"], metric
        listed = await env.client.get(f"/api/v1/leakage/items?metric={metric}&from=2026-11-23&to=2026-11-29&format=csv")
        lines = list(csv.DictReader(io.StringIO(await listed.text())))
        assert len(lines) == got["count"]
        assert [int(x["conversation_id"]) for x in lines] == [x["conversation_id"] for x in got["items"]]
        assert all(x["console_url"] == f"/console#conversation={x['conversation_id']}" for x in lines)

    abandoned = await (
        await env.client.get("/api/v1/leakage/items?metric=calls_abandoned&from=2026-11-23&to=2026-11-29")
    ).json()
    assert abandoned["items"][0]["conversation_id"] == h.ids["C"]
    assert abandoned["items"][0]["name"] == "<b>Cho</b>"


async def test_csv_cells_never_start_a_formula(env: WebEnv) -> None:
    s = Seeder(env.store)
    cid = await s.conversation('=HYPERLINK("http://x")')
    await s.event(cid, "call_abandoned", "voice", at("2026-11-24 10:00"))
    await env.login()
    resp = await env.client.get("/api/v1/leakage/items?metric=calls_abandoned&from=2026-11-23&to=2026-11-29&format=csv")
    row = next(csv.DictReader(io.StringIO(await resp.text())))
    assert row["name"] == '\'=HYPERLINK("http://x")'


async def test_overview_matches_report_for_the_same_days(env: WebEnv) -> None:
    await seed_week(env.store)
    await env.login()
    ov = await (await env.client.get("/api/v1/leakage/overview")).json()
    week = ov["periods"]["7d"]
    rep = await (await env.client.get(f"/api/v1/leakage?from={week['from']}&to={week['to']}")).json()
    for metric in METRICS:
        assert week["metrics"][metric]["count"] == rep["metrics"][metric]["count"], metric
    assert week["first_response"] == rep["first_response"]


async def test_bad_input_is_one_clear_line(env: WebEnv) -> None:
    await env.login()
    resp = await env.client.get("/api/v1/leakage?from=last-week")
    assert resp.status == 400
    assert "YYYY-MM-DD" in (await resp.json())["error"]
    resp = await env.client.get("/api/v1/leakage/items?metric=bogus")
    assert resp.status == 400
    assert "unknown" in (await resp.json())["error"]


async def test_prometheus_gauges_and_openapi(env: WebEnv) -> None:
    await seed_week(env.store)
    await env.login()
    text = await (await env.client.get("/metrics")).text()
    ov = await (await env.client.get("/api/v1/leakage/overview")).json()
    want = ov["periods"]["7d"]["metrics"]["sms_threads_waiting"]["count"]
    assert f"gateway_leakage_sms_threads_waiting_7d {float(want)}" in text
    assert "gateway_leakage_missed_calls_unreturned_today" in text
    voice = ov["periods"]["7d"]["first_response"]["voice"]
    assert f"gateway_leakage_first_response_voice_median_seconds_7d {float(voice['median_seconds'])}" in text
    assert f"gateway_leakage_first_response_voice_p90_seconds_7d {float(voice['p90_seconds'])}" in text
    doc = await (await env.client.get("/api/openapi.json")).json()
    for path in ("/api/v1/leakage", "/api/v1/leakage/overview", "/api/v1/leakage/items"):
        assert "get" in doc["paths"][path]
    assert "leakage.weekly" in doc["x-webhooks"]["events"]


def test_next_digest_moment() -> None:
    # Tuesday 12:00 UTC -> next Monday 08:00 in Seoul (Sunday 23:00 UTC).
    assert next_digest_at(NOW, "mon", 8, "Asia/Seoul") == at("2026-12-07 08:00", "Asia/Seoul")
    assert next_digest_at(at("2026-11-30 07:59"), "mon", 8, "UTC") == at("2026-11-30 08:00")
    assert next_digest_at(at("2026-11-30 08:00"), "mon", 8, "UTC") == at("2026-12-07 08:00")


async def test_weekly_digest_is_a_signed_webhook(tmp_path: Path) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = TestServer(receiver, host="127.0.0.1")
    await server.start_server()
    e = await start_env(tmp_path, webhook_urls=[str(server.make_url("/hook"))], webhook_secret=Secret("k3y"))
    try:
        await seed_week(e.store)
        digest = e.client.app[DIGEST]
        payload = await digest.post()
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
        assert received, "digest never delivered"
        headers, body = received[0]
        assert headers["X-Gateway-Event"] == "leakage.weekly"
        ts = headers["X-Gateway-Timestamp"]
        assert (
            headers["X-Gateway-Signature"]
            == "sha256=" + hmac.new(b"k3y", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        sent = json.loads(body)
        assert sent["type"] == "leakage.weekly"
        assert sent["data"] == payload
        # Now is Tuesday 2026-12-01: the last 7 full days are Tue 11-24 .. Mon 11-30.
        assert (payload["from"], payload["to"]) == ("2026-11-24", "2026-11-30")
        assert payload["metrics"]["sms_threads_waiting"]["count"] == 2
        assert payload["metrics"]["missed_calls_unreturned"]["count"] == 2  # C and S; B was Monday 11-23
    finally:
        await e.client.close()
        await e.store.stop()
        await server.close()


async def test_digest_is_off_by_default(tmp_path: Path) -> None:
    assert LeakageConfig().digest_enabled is False
    e = await start_env(tmp_path)  # digest_enabled but no webhook URLs: nothing to post to
    try:
        assert e.client.app.get(DIGEST) is None
    finally:
        await e.client.close()
        await e.store.stop()


async def test_the_daemon_builds_the_read_model_at_start(tmp_path: Path) -> None:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    await seed_week(store)
    bus = Bus()
    leak = LeakageService(store, LeakageConfig(), WEEKDAYS, "UTC", clock=lambda: NOW)
    deps = WebDeps(
        service=ConversationService(store, bus), store=store, bus=bus, leakage=leak, leakage_warm=True,
        config=WebConfig(secure_cookies=False, business_hours=WEEKDAYS),
    )  # fmt: skip
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(deps), host="127.0.0.1"))
    await client.start_server()
    try:
        for _ in range(100):
            if leak._model is not None:
                break
            await asyncio.sleep(0.05)
        assert leak._model is not None, "read model not built at start"
    finally:
        await client.close()
        await store.stop()
