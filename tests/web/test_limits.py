"""Limits through the real HTTP interface: the automated-SMS budget on /status.json and /metrics, number policy."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ServiceSettings

from .conftest import WebEnv, make_env


def sms(number: str, ext: str, body: str = "hi") -> Inbound:
    return Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, ext, body)


async def test_budget_is_shown_on_status_and_metrics_with_a_notice_when_spent(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path)
    env.service.settings = ServiceSettings(automated_sms_per_hour=2, automated_sms_per_day=50)
    try:
        await env.login()
        data = await (await env.client.get("/status.json")).json()
        assert data["automated_sms"]["left"] == 2
        assert data["automated_sms"]["ok"] is True
        for i in range(2):
            r = await env.service.ingest(sms(f"+1202555017{i}", f"b{i}"))
            await env.service.enqueue_outbound(r.conversation_id, "sms", f"+1202555017{i}", "Hi", automated=True)
        data = await (await env.client.get("/status.json")).json()
        section = data["automated_sms"]
        assert (section["ok"], section["left"], section["used_hour"], section["per_hour"]) == (False, 0, 2, 2)
        assert "sms.automated_per_hour" in section["notice"]
        text = await (await env.client.get("/metrics")).text()
        assert "gateway_automated_sms_left 0.0" in text
        assert "gateway_automated_sms_used_hour 2.0" in text
        assert "gateway_automated_sms_per_day 50.0" in text
    finally:
        await env.client.close()
        await store.stop()


async def test_click_to_call_refuses_a_premium_rate_number(web_env: WebEnv) -> None:
    r = await web_env.service.ingest(sms("+19005550142", "p1", "call me back"))
    await web_env.login()
    resp = await web_env.client.post(
        f"/api/v1/conversations/{r.conversation_id}/call", json={}, headers=web_env.headers()
    )
    assert resp.status == 409
    assert "premium-rate" in (await resp.json())["error"]
    assert web_env.calls == []


async def test_staff_text_to_a_premium_number_needs_a_confirmation_when_configured(web_env: WebEnv) -> None:
    web_env.service.settings = ServiceSettings(staff_number_check="confirm")
    r = await web_env.service.ingest(sms("+19005550143", "p2", "text me"))
    await web_env.login()
    url = f"/api/v1/conversations/{r.conversation_id}/messages"
    resp = await web_env.client.post(url, json={"body": "hello", "channel": "sms"}, headers=web_env.headers())
    assert resp.status == 409
    data = await resp.json()
    assert data["needs_confirmation"] is True
    assert "premium-rate" in data["error"]
    resp = await web_env.client.post(
        url, json={"body": "hello", "channel": "sms", "confirm_number": True}, headers=web_env.headers()
    )
    assert resp.status == 201
    rows = await web_env.store.read(
        lambda c: c.execute("SELECT actor, action FROM audit_log WHERE action = 'number_policy_override'").fetchall()
    )
    assert rows == [("alice", "number_policy_override")]


async def test_tables_that_only_grow_are_pruned(web_env: WebEnv) -> None:
    from gateway.web.app import prune_once  # noqa: PLC0415

    now = time.time()
    old = now - 40 * 86400
    r = await web_env.service.ingest(sms("+12025550175", "pr-1"))

    def seed(c: sqlite3.Connection) -> None:
        c.executemany(
            "INSERT INTO web_visitors(visitor_hash, conversation_id, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
            [("old-idle", None, old, old), ("old-writer", r.conversation_id, old, old), ("new-idle", None, now, now)],
        )
        c.executemany(
            "INSERT INTO webhook_deliveries(url, event_type, payload, state, next_attempt_at, created_at)"
            " VALUES ('http://x', 'e', '{}', ?, ?, ?)",
            [("delivered", old, old), ("failed", old, old), ("queued", old, old), ("delivered", now, now)],
        )
        c.executemany(
            "INSERT INTO web_login_failures(key, failures, last_failure, locked_until) VALUES (?, ?, ?, ?)",
            [("addr:old", 3, now - 3600, 0), ("addr:fresh", 3, now - 10, 0)],
        )

    await web_env.store.write(seed)
    deleted = await prune_once(web_env.deps)
    assert deleted == {"web_login_failures": 1, "web_visitors": 1, "webhook_deliveries": 2}

    def left(c: sqlite3.Connection) -> tuple[list[str], list[str], list[str]]:
        return (
            [x[0] for x in c.execute("SELECT visitor_hash FROM web_visitors ORDER BY visitor_hash")],
            [x[0] for x in c.execute("SELECT state FROM webhook_deliveries ORDER BY id")],
            [x[0] for x in c.execute("SELECT key FROM web_login_failures")],
        )

    visitors, hooks, logins = await web_env.store.read(left)
    assert visitors == ["new-idle", "old-writer"]  # a visitor bound to a conversation keeps its link
    assert hooks == ["queued", "delivered"]  # undelivered ones are never dropped
    assert logins == ["addr:fresh"]
