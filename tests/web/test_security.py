"""Security items of the web layer, each against the real app, store and service."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.web.chat import CHAT_HUB
from gateway.web.pages import create_staff_user

from .conftest import PASSWORD, WebEnv, csrf_from, make_env

XSS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(2)">',
    '"><svg onload=alert(3)>',
    "javascript:alert(4)",
    "</textarea><script>alert(5)</script>",
]


async def hello(env: WebEnv, token: str | None = None) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await env.client.ws_connect("/chat/ws", origin=env.origin)
    await ws.send_json({"type": "hello", "token": token})
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def test_xss_payloads_are_stored_verbatim_and_served_only_as_json(web_env: WebEnv) -> None:
    ws, _ = await hello(web_env)
    for i, payload in enumerate(XSS):
        await ws.send_json({"type": "message", "client_id": f"xss-client-{i:04d}", "body": payload})
        ack = await ws.receive_json(timeout=5)
        assert ack["type"] == "ack", ack
    # The same payloads as an SMS body and as a caller name.
    await web_env.service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            "+12025550143",
            "sms-xss-1",
            body=XSS[1],
            display_name=XSS[0],
        )
    )
    await web_env.login()
    resp = await web_env.client.get("/api/v1/inbox")
    assert resp.headers["Content-Type"].startswith("application/json")
    inbox = (await resp.json())["inbox"]
    names = {row["display_name"] for row in inbox}
    assert XSS[0] in names  # kept exactly, never "sanitized" into something else
    chat_conv = next(r["conversation_id"] for r in inbox if r["display_name"] is None)
    detail = await (await web_env.client.get(f"/api/v1/conversations/{chat_conv}")).json()
    bodies = [e["body"] for e in detail["timeline"]]
    assert bodies == XSS
    # The HTML pages are shells: no user text is ever templated into them.
    page = await (await web_env.client.get("/console")).text()
    for payload in XSS:
        assert payload not in page
    await ws.close()


async def test_staff_name_is_escaped_in_html(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path)
    try:
        await create_staff_user(store, "mallory", PASSWORD, display_name="<script>alert(9)</script>")
        await env.login("mallory")
        page = await (await env.client.get("/console")).text()
        assert "<script>alert(9)" not in page
        assert "&lt;script&gt;alert(9)&lt;/script&gt;" in page
    finally:
        await env.client.close()
        await store.stop()


async def test_csp_forbids_inline_script(web_env: WebEnv) -> None:
    for path in ("/login", "/demo", "/widget.js"):
        resp = await web_env.client.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    page = await (await web_env.client.get("/login")).text()
    assert "<script>" not in page  # scripts only by src, which the CSP allows


async def test_ten_megabyte_frame_is_rejected(web_env: WebEnv) -> None:
    hub = web_env.client.app[CHAT_HUB]
    ws, _ = await hello(web_env)
    assert hub.socket_count == 1
    # The server may hang up while the frame is still being written: that is the refusal too.
    with contextlib.suppress(ConnectionError):
        await ws.send_str("x" * (10 * 1024 * 1024))
    msg = await ws.receive(timeout=10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    if msg.type is aiohttp.WSMsgType.CLOSE:
        assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    for _ in range(50):
        if hub.socket_count == 0:
            break
        await asyncio.sleep(0.05)
    assert hub.socket_count == 0
    # The server is fine afterwards.
    ws2, welcome = await hello(web_env)
    assert welcome["token"]
    await ws2.close()


async def test_overlong_message_gets_clear_error(web_env: WebEnv) -> None:
    ws, welcome = await hello(web_env)
    body = "a" * (welcome["max_chars"] + 1)
    await ws.send_json({"type": "message", "client_id": "long-message-01", "body": body})
    err = await ws.receive_json(timeout=5)
    assert err["type"] == "error"
    assert err["code"] == "too_long"
    assert str(welcome["max_chars"]) in err["message"]
    await ws.close()


async def test_anonymous_chat_flood_from_one_address_is_limited(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, chat_new_per_address_per_hour=5, chat_burst=5, chat_messages_per_minute=5)
    try:
        opened = 0
        refused = 0
        for _ in range(12):
            ws = await env.client.ws_connect("/chat/ws", origin=env.origin)
            await ws.send_json({"type": "hello"})
            msg = await ws.receive_json(timeout=5)
            if msg["type"] == "welcome":
                opened += 1
            else:
                assert msg["code"] == "rate_limited"
                refused += 1
                closing = await ws.receive(timeout=5)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == 4429
            await ws.close()
        assert opened == 5
        assert refused == 7
        # The budget is per address and does not refill at once: a further new chat is still refused.
        ws = await env.client.ws_connect("/chat/ws", origin=env.origin)
        await ws.send_json({"type": "hello", "token": None})
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "error"  # still no new chats for this address
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()


async def test_message_flood_is_limited(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, chat_burst=5, chat_messages_per_minute=5)
    try:
        ws, _ = await hello(env)
        results = []
        for i in range(15):
            await ws.send_json({"type": "message", "client_id": f"flood-msg-{i:04d}", "body": f"hi {i}"})
            results.append(await ws.receive_json(timeout=5))
        acks = [r for r in results if r["type"] == "ack"]
        limited = [r for r in results if r.get("code") == "rate_limited"]
        assert len(acks) == 5
        assert len(limited) == 10
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()


async def test_open_sockets_per_address_are_capped(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path)
    try:
        hub = env.client.app[CHAT_HUB]
        hub.max_sockets_per_address = 3
        socks = [await env.client.ws_connect("/chat/ws", origin=env.origin) for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await env.client.ws_connect("/chat/ws", origin=env.origin)
        assert info.value.status == 429
        await socks[0].close()
        for _ in range(50):
            if hub.socket_count == 2:
                break
            await asyncio.sleep(0.02)
        again = await env.client.ws_connect("/chat/ws", origin=env.origin)  # a slot is free again
        for ws in (again, *socks[1:]):
            await ws.close()
    finally:
        await env.client.close()
        await store.stop()


@pytest.mark.parametrize("origin", ["https://evil.example", None])
async def test_cross_origin_chat_websocket_is_refused(web_env: WebEnv, origin: str | None) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await web_env.client.ws_connect("/chat/ws", origin=origin)
    assert info.value.status == 403


async def test_configured_origin_is_allowed(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, allowed_origins=["https://shop.example"])
    try:
        ws = await env.client.ws_connect("/chat/ws", origin="https://shop.example")
        await ws.send_json({"type": "hello"})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()


async def test_cross_origin_staff_websocket_is_refused(web_env: WebEnv) -> None:
    await web_env.login()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await web_env.client.ws_connect("/staff/ws", origin="https://evil.example")
    assert info.value.status == 403
    ws = await web_env.client.ws_connect("/staff/ws", origin=web_env.origin)
    assert (await ws.receive_json(timeout=5))["extension"] == "201"
    await ws.close()
    # Behind a TLS proxy the browser's Origin says https while the proxied request is http: same host is enough.
    host = web_env.origin.split("://", 1)[1]
    ws = await web_env.client.ws_connect("/staff/ws", origin=f"https://{host}")
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await web_env.client.ws_connect("/staff/ws", origin=f"https://{host}.evil.example")


async def test_staff_websocket_needs_login(web_env: WebEnv) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await web_env.client.ws_connect("/staff/ws", origin=web_env.origin)
    assert info.value.status == 401


async def test_post_without_csrf_is_refused(web_env: WebEnv) -> None:
    result = await web_env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550100", "sms-1", body="hi")
    )
    await web_env.login()
    url = f"/api/v1/conversations/{result.conversation_id}/notes"
    resp = await web_env.client.post(url, json={"body": "no token"})
    assert resp.status == 403
    assert "CSRF" in (await resp.json())["error"]
    resp = await web_env.client.post(url, json={"body": "wrong"}, headers={"X-CSRF-Token": "nope"})
    assert resp.status == 403
    resp = await web_env.client.post("/logout", allow_redirects=False)
    assert resp.status == 403
    # Nothing was written by the refused requests.
    timeline = await web_env.service.timeline(result.conversation_id)
    assert [e.kind for e in timeline] == ["message_in"]
    resp = await web_env.client.post(url, json={"body": "with token"}, headers=web_env.headers())
    assert resp.status == 201


async def test_login_form_without_its_token_is_refused(web_env: WebEnv) -> None:
    resp = await web_env.client.post("/login", data={"username": "alice", "password": PASSWORD}, allow_redirects=False)
    assert resp.status == 403
    assert "gw_session" not in {c.key for c in web_env.client.session.cookie_jar}


async def test_wrong_passwords_slow_the_login_down_but_never_lock_others_out(tmp_path: Path) -> None:
    web_env, store = await make_env(tmp_path, login_delay_seconds=60.0)
    try:
        for i in range(5):
            resp = await web_env.login(password=f"wrong-{i}")
            assert resp.status == 401, i
            assert "Wrong username or password" in await resp.text()
        resp = await web_env.login(password="wrong-6")
        assert resp.status == 429
        wait = int(resp.headers["Retry-After"])
        assert 0 < wait <= 60
        assert f"Wait {wait} second(s)" in (await resp.text())
        # The right password must wait its turn too: the guesser's next try is spaced out, not free.
        resp = await web_env.login(password=PASSWORD)
        assert resp.status == 429
        # Another user at the same address is not affected: the user's count is per (user, address).
        resp = await web_env.login("bob", PASSWORD)
        assert resp.status == 302
    finally:
        await web_env.client.close()
        await store.stop()


async def test_right_password_logs_in_and_cookie_is_hardened(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, secure_cookies=True)
    try:
        page = await env.client.get("/login")
        token = csrf_from(await page.text(), 'name="csrf_token" value="')
        resp = await env.client.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token},
            headers={"Cookie": f"gw_login_csrf={token}"},  # a Secure cookie is not sent over plain http
            allow_redirects=False,
        )
        assert "Secure" in page.headers["Set-Cookie"]
        assert resp.status == 302
        raw = resp.headers["Set-Cookie"]
        assert "gw_session=" in raw
        for flag in ("HttpOnly", "Secure", "SameSite=Strict"):
            assert flag in raw
        stored = await store.read(lambda c: c.execute("SELECT token_hash FROM web_sessions").fetchall())
        cookie_value = raw.split("gw_session=")[1].split(";")[0]
        assert cookie_value not in {r[0] for r in stored}  # only the hash is kept
        pw = await store.read(lambda c: c.execute("SELECT password_hash FROM staff").fetchone()[0])
        assert pw.startswith("$argon2id$")
    finally:
        await env.client.close()
        await store.stop()


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"body": "x",}', "malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
async def test_malformed_json_is_a_clear_400(web_env: WebEnv, body: bytes, expect: str) -> None:
    result = await web_env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550101", "sms-2", body="hi")
    )
    await web_env.login()
    resp = await web_env.client.post(
        f"/api/v1/conversations/{result.conversation_id}/notes",
        data=body,
        headers={**web_env.headers(), "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert expect in (await resp.json())["error"]


async def test_api_needs_auth_and_tokens_work(web_env: WebEnv) -> None:
    resp = await web_env.client.get("/api/v1/inbox")
    assert resp.status == 401
    assert "Bearer" in (await resp.json())["error"]
    resp = await web_env.client.post("/api/v1/sms/segments", json={"body": "x"})
    assert resp.status == 401
    await web_env.login()
    created = await web_env.client.post("/api/v1/tokens", json={"name": "crm"}, headers=web_env.headers())
    assert created.status == 201
    token = (await created.json())["token"]
    stored = await web_env.store.read(lambda c: c.execute("SELECT token_hash FROM api_tokens").fetchall())
    assert token not in {r[0] for r in stored}
    # A fresh client (no cookies) with the bearer token can read and write without CSRF.
    async with aiohttp.ClientSession() as s:
        url = str(web_env.client.make_url("/api/v1/inbox"))
        async with s.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        async with s.get(url, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        tid = (await created.json())["id"]
        revoke = await web_env.client.delete(f"/api/v1/tokens/{tid}", headers=web_env.headers())
        assert revoke.status == 200
        async with s.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401


async def test_non_admin_cannot_create_tokens(web_env: WebEnv) -> None:
    await web_env.login("bob")
    resp = await web_env.client.post("/api/v1/tokens", json={"name": "x"}, headers=web_env.headers())
    assert resp.status == 403


async def test_voicemail_audio_needs_login_and_stays_in_its_directory(web_env: WebEnv) -> None:
    vm_dir = web_env.tmp / "voicemail"
    vm_dir.mkdir()
    wav = vm_dir / "msg0001.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 40)
    outside = web_env.tmp / "secret.txt"
    outside.write_text("secret")
    r = await web_env.service.ingest(
        Inbound(
            Channel.VOICE,
            EventKind.VOICEMAIL,
            IdentityKind.PHONE,
            "+12025550102",
            "vm-1",
            meta={"path": str(wav)},
        )
    )
    bad = await web_env.service.append_event(
        r.conversation_id, EventKind.VOICEMAIL, Channel.VOICE, meta={"path": str(vm_dir / ".." / "secret.txt")}
    )
    resp = await web_env.client.get(f"/media/voicemail/{r.event_id}", allow_redirects=False)
    assert resp.status == 302  # to the login page
    await web_env.login()
    resp = await web_env.client.get(f"/media/voicemail/{r.event_id}")
    assert resp.status == 200
    assert (await resp.read()).startswith(b"RIFF")
    resp = await web_env.client.get(f"/media/voicemail/{bad}")
    assert resp.status == 404
    assert "secret" not in await resp.text()


async def test_openapi_document(web_env: WebEnv) -> None:
    resp = await web_env.client.get("/api/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/conversations/{conversation_id}/messages" in doc["paths"]
    assert json.dumps(doc)  # serializable
