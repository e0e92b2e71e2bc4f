"""The rules in the console over real HTTP: the read-only settings view, a conversation's sends, the recap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.continuity.clock import ManualClock
from gateway.continuity.config import ContinuityConfig
from gateway.continuity.engine import ContinuityEngine, HoursSettings
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from tests.continuity.conftest import HOURS, TZ, local
from tests.web.conftest import WebEnv, make_env


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[WebEnv]:
    web_env, store = await make_env(tmp_path)
    engine = ContinuityEngine(
        ContinuityConfig(voicemail_enabled=False),
        web_env.service,
        store,
        web_env.bus,
        HoursSettings(TZ, HOURS, "Roof Pros"),
        clock=ManualClock(local(7, 10)),
    )
    await engine.prepare()
    web_env.deps.continuity = engine
    try:
        yield web_env
    finally:
        await engine.stop()
        await web_env.client.close()
        await store.stop()


async def test_settings_view_shows_active_rules_and_templates(env: WebEnv) -> None:
    assert (await env.client.get("/api/v1/continuity/settings")).status == 401
    await env.login()
    data = await (await env.client.get("/api/v1/continuity/settings")).json()
    on = {r["rule"]: r["enabled"] for r in data["rules"]}
    assert on["missed_call"] is True
    assert on["voicemail_ack"] is False
    assert data["templates"]["missed_call_template"].startswith("Sorry we missed your call")
    assert data["restraint"]["max_per_contact_per_day"] == 3
    page = await env.client.get("/rules")
    assert page.status == 200
    assert "/static/rules.js" in await page.text()


async def test_recap_and_the_conversation_sends(env: WebEnv) -> None:
    await env.login()
    res = await env.service.ingest(
        Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.PHONE, "+12025550143", "call-1")
    )
    engine = env.deps.continuity
    assert engine is not None
    await engine.tick()
    conv = res.conversation_id
    await env.service.update_conversation(conv, intent="estimate", next_step="Measure the roof on Friday")
    resp = await env.client.post(f"/api/v1/conversations/{conv}/recap", headers=env.headers())
    assert resp.status == 201, await resp.text()
    jobs = await (await env.client.get(f"/api/v1/conversations/{conv}/continuity")).json()
    assert [(j["rule"], j["state"]) for j in jobs["jobs"]] == [("missed_call", "scheduled")]
    detail = await (await env.client.get(f"/api/v1/conversations/{conv}")).json()
    kinds = [(e["kind"], e["meta"].get("rule"), e["meta"].get("decision")) for e in detail["timeline"]]
    assert ("automated", "missed_call", "deferred") in kinds
    assert ("automated", "call_recap", "sent") in kinds
    assert ("message_out", "call_recap", None) in kinds


async def test_callback_books_a_call_at_the_chosen_time(env: WebEnv) -> None:
    await env.login()
    res = await env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550143", "sms-1", "call me at 3pm")
    )
    conv = res.conversation_id
    url = f"/api/v1/conversations/{conv}/callback"
    bad = await env.client.post(url, json={"at": "tomorrow"}, headers=env.headers())
    assert bad.status == 400
    assert "ISO 8601" in (await bad.json())["error"]
    naive = await env.client.post(url, json={"at": "2026-12-07T15:00:00"}, headers=env.headers())
    assert naive.status == 400
    ok = await env.client.post(url, json={"at": "2026-12-07T15:00:00-05:00"}, headers=env.headers())
    assert ok.status == 201, await ok.text()
    jobs = await (await env.client.get(f"/api/v1/conversations/{conv}/continuity")).json()
    assert [(j["rule"], j["state"], j["due_at"]) for j in jobs["jobs"]] == [("call_me", "scheduled", local(7, 15))]
