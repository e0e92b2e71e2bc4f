"""Least privilege through real HTTP: scoped and expiring API tokens, admin-only opt-out overrides and status
details."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.store import queries as q

from .conftest import WebEnv, make_env


def sms(number: str, ext: str, body: str = "hi") -> Inbound:
    return Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, ext, body)


async def _token(env: WebEnv, **req: Any) -> str:
    resp = await env.client.post("/api/v1/tokens", json={"name": "t", **req}, headers=env.headers())
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["token"])


async def test_a_read_token_can_scrape_but_not_send(web_env: WebEnv) -> None:
    r = await web_env.service.ingest(sms("+12025550131", "pr1"))
    await web_env.login()
    read = await _token(web_env)  # default: read only
    send = await _token(web_env, scopes=["read", "send"])
    url = str(web_env.client.make_url(f"/api/v1/conversations/{r.conversation_id}/notes"))
    async with aiohttp.ClientSession() as s:
        for path in ("/metrics", "/status.json", "/api/v1/inbox"):
            async with s.get(str(web_env.client.make_url(path)), headers={"Authorization": f"Bearer {read}"}) as x:
                assert x.status == 200, path
        async with s.post(url, json={"body": "x"}, headers={"Authorization": f"Bearer {read}"}) as x:
            assert x.status == 403
            assert "'send' scope" in (await x.json())["error"]
        async with s.post(url, json={"body": "from the CRM"}, headers={"Authorization": f"Bearer {send}"}) as x:
            assert x.status == 201
    notes = [e.body for e in await web_env.service.timeline(r.conversation_id) if e.kind == "note"]
    assert notes == ["from the CRM"]


async def test_token_scopes_are_validated_and_listed(web_env: WebEnv) -> None:
    await web_env.login()
    bad = await web_env.client.post("/api/v1/tokens", json={"name": "x", "scopes": ["root"]}, headers=web_env.headers())
    assert bad.status == 400
    assert "read, send, admin" in (await bad.json())["error"]
    await _token(web_env, scopes=["read"], expires_in_days=30)
    listed = (await (await web_env.client.get("/api/v1/tokens")).json())["tokens"]
    assert listed[0]["scopes"] == ["read"]
    assert listed[0]["expires_at"] > time.time() + 29 * 86400


async def test_an_expired_token_is_refused(web_env: WebEnv) -> None:
    await web_env.login()
    token = await _token(web_env, expires_in_days=1)
    url = str(web_env.client.make_url("/api/v1/inbox"))
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers={"Authorization": f"Bearer {token}"}) as x:
            assert x.status == 200
        await web_env.store.write(lambda c: c.execute("UPDATE api_tokens SET expires_at = ?", (time.time() - 1,)))
        async with s.get(url, headers={"Authorization": f"Bearer {token}"}) as x:
            assert x.status == 401


async def test_only_an_admin_overrides_an_opt_out_and_it_is_audited(web_env: WebEnv) -> None:
    r = await web_env.service.ingest(sms("+12025550132", "pr2", "STOP"))
    await web_env.store.write(lambda c: q.suppress(c, "+12025550132", "STOP", 0))
    url = f"/api/v1/conversations/{r.conversation_id}/messages"
    body = {"channel": "sms", "body": "Your order is ready", "override_optout": True}
    await web_env.login("bob")  # staff, not admin
    resp = await web_env.client.post(url, json=body, headers=web_env.headers())
    assert resp.status == 403
    assert "only an admin" in (await resp.json())["error"]
    web_env.client.session.cookie_jar.clear()
    await web_env.login("alice")  # admin
    resp = await web_env.client.post(url, json=body, headers=web_env.headers())
    assert resp.status == 201
    audit = await web_env.store.read(
        lambda c: c.execute("SELECT actor, action FROM audit_log WHERE action = 'optout_override'").fetchall()
    )
    assert audit == [("alice", "optout_override")]


async def test_status_details_are_admin_only(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path)

    async def modem() -> dict[str, Any]:
        return {
            "connected": True,
            "imsi": "310150123456789",
            "iccid": "8901260123456789012",
            "device": "/dev/x",
            "signal_dbm": -71,
        }

    async def backup() -> dict[str, Any]:
        return {"path": "/var/lib/gateway/gateway.db", "backup_dir": "/var/lib/gateway/backups", "last_backup": None}

    env.deps.status_sources = {"modem": modem, "backup": backup}
    try:
        await env.login("bob")
        data = await (await env.client.get("/status.json")).json()
        flat = str(data)
        for secret in ("310150123456789", "8901260123456789012", "/dev/x", "/var/lib/gateway"):
            assert secret not in flat
        assert "recent_errors" not in data
        assert data["modem"]["signal_dbm"] == -71
        env.client.session.cookie_jar.clear()
        await env.login("alice")
        data = await (await env.client.get("/status.json")).json()
        assert data["modem"]["imsi"] == "310150123456789"
        assert data["backup"]["path"] == "/var/lib/gateway/gateway.db"
        assert "recent_errors" in data
    finally:
        await env.client.close()
        await store.stop()


def chat(visitor: str, ext: str, body: str = "hello") -> Inbound:
    return Inbound(Channel.CHAT, EventKind.MESSAGE_IN, IdentityKind.CHAT, visitor, ext, body)


async def test_a_claimed_number_needs_a_staff_confirmation_to_be_texted_or_called(web_env: WebEnv) -> None:
    r = await web_env.service.ingest(chat("visitor-claims", "c-1", "text me at my number"))
    await web_env.service.claim_identity(r.conversation_id, IdentityKind.PHONE, "+1 202 555 0144")
    await web_env.login("bob")
    url = f"/api/v1/conversations/{r.conversation_id}/messages"
    body = {"channel": "sms", "body": "Hello from the office", "to": "+12025550144"}
    resp = await web_env.client.post(url, json=body, headers=web_env.headers())
    assert resp.status == 409
    data = await resp.json()
    assert data["needs_confirmation"] is True
    assert "only typed in" in data["error"]
    outbox = await web_env.store.read(lambda c: c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    assert outbox == 0
    resp = await web_env.client.post(url, json={**body, "confirm_number": True}, headers=web_env.headers())
    assert resp.status == 201
    audit = await web_env.store.read(
        lambda c: c.execute("SELECT actor FROM audit_log WHERE action = 'number_policy_override'").fetchall()
    )
    assert audit == [("bob",)]
    # Click-to-call never dials a number that is only claimed: it is no reply route until verified.
    detail = await (await web_env.client.get(f"/api/v1/conversations/{r.conversation_id}")).json()
    assert detail["can_call"] is False
    resp = await web_env.client.post(
        f"/api/v1/conversations/{r.conversation_id}/call", json={}, headers=web_env.headers()
    )
    assert resp.status == 400
    assert web_env.calls == []
