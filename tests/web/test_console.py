"""Staff console API, live updates, screen-pop, status page, metrics and webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import gateway.web.webhooks as wh
from gateway.config import Secret
from gateway.domain.calls import CallDirection, CallOutcome, CallRecord
from gateway.domain.events import CallAnswered, CallEnded, CallRinging
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.errors import ConfigError
from gateway.web.staff import STAFF_HUB

from .conftest import PASSWORD, WebEnv, csrf_from, make_env


def sms(number: str, ext_id: str, body: str, at: float | None = None) -> Inbound:
    return Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, ext_id, body=body, occurred_at=at)


async def staff_socket(env: WebEnv) -> aiohttp.ClientWebSocketResponse:
    ws = await env.client.ws_connect("/staff/ws", origin=env.origin)
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    return ws


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg: dict[str, Any] = await ws.receive_json(timeout=max(0.01, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg


async def nothing_of(ws: aiohttp.ClientWebSocketResponse, kind: str, wait: float = 0.5) -> bool:
    try:
        await next_of(ws, kind, wait)
    except TimeoutError:
        return True
    return False


async def test_inbox_orders_by_longest_wait(web_env: WebEnv) -> None:
    now = time.time()
    a = await web_env.service.ingest(sms("+12025550111", "s-a", "first in line", now - 3600))
    b = await web_env.service.ingest(sms("+12025550112", "s-b", "second", now - 600))
    c = await web_env.service.ingest(sms("+12025550113", "s-c", "third", now - 60))
    await web_env.login()
    # Answering the oldest moves it behind the waiting ones.
    resp = await web_env.client.post(
        f"/api/v1/conversations/{a.conversation_id}/messages",
        json={"channel": "sms", "body": "On it!"},
        headers=web_env.headers(),
    )
    assert resp.status == 201
    reply = await resp.json()
    assert reply["segments"] == 1
    inbox = (await (await web_env.client.get("/api/v1/inbox")).json())["inbox"]
    order = [r["conversation_id"] for r in inbox]
    assert order == [b.conversation_id, c.conversation_id, a.conversation_id]
    assert inbox[0]["last_event"]["body"] == "second"


async def test_timeline_fields_notes_and_search(web_env: WebEnv) -> None:
    r = await web_env.service.ingest(sms("+12025550120", "s-t1", "My boiler is leaking water"))
    await web_env.service.append_event(
        r.conversation_id,
        EventKind.TRANSCRIPT,
        Channel.VOICE,
        "boiler leaking again please call",
        meta={"words": [{"word": "boiler", "conf": 0.95}, {"word": "leaking", "conf": 0.4}]},
    )
    await web_env.login()
    h = web_env.headers()
    url = f"/api/v1/conversations/{r.conversation_id}"
    resp = await web_env.client.patch(
        url, json={"intent": "problem", "next_step": "Send a plumber", "owner": "bob", "urgent": True}, headers=h
    )
    assert resp.status == 200
    resp = await web_env.client.patch(url, json={"colour": "red"}, headers=h)
    assert resp.status == 400
    assert "editable" in (await resp.json())["error"]
    await web_env.client.post(url + "/notes", json={"body": "Customer prefers mornings"}, headers=h)
    detail = await (await web_env.client.get(url)).json()
    s = detail["summary"]
    assert (s["intent"], s["next_step"], s["owner"], s["urgent"]) == ("problem", "Send a plumber", "bob", True)
    kinds = [e["kind"] for e in detail["timeline"] if e["kind"] != "spine"]
    assert kinds == ["message_in", "transcript", "note"]
    changes = [e for e in detail["timeline"] if e["kind"] == "spine"]
    assert len(changes) == 3, "intent+urgent, next step and owner: one timeline entry each, with who set them"
    assert {e["author"] for e in changes} == {"alice"}
    assert detail["timeline"][1]["meta"]["words"][1]["conf"] == 0.4
    hits = (await (await web_env.client.get("/api/v1/search", params={"q": "boil"})).json())["results"]
    assert {hit["event"]["kind"] for hit in hits} == {"message_in", "transcript"}
    hits = (await (await web_env.client.get("/api/v1/search", params={"q": "mornings"})).json())["results"]
    assert [hit["event"]["kind"] for hit in hits] == ["note"]
    assert (await (await web_env.client.get("/api/v1/conversations/999999")).json())["error"]


async def test_sms_segment_count_and_optout_warning(web_env: WebEnv) -> None:
    await web_env.login()
    h = web_env.headers()
    seg = await (await web_env.client.post("/api/v1/sms/segments", json={"body": "a" * 161}, headers=h)).json()
    assert seg == {"segments": 2, "encoding": "gsm7", "chars": 161}
    seg = await (await web_env.client.post("/api/v1/sms/segments", json={"body": "안녕하세요"}, headers=h)).json()
    assert seg["encoding"] == "ucs2"
    assert seg["segments"] == 1
    r = await web_env.service.ingest(sms("+12025550130", "s-o1", "STOP"))
    await web_env.store.write(
        lambda c: c.execute("INSERT INTO suppressions(address, reason, created_at) VALUES ('+12025550130', 'STOP', 0)")
    )
    url = f"/api/v1/conversations/{r.conversation_id}"
    detail = await (await web_env.client.get(url)).json()
    assert detail["reply"]["opted_out"] is True
    resp = await web_env.client.post(url + "/messages", json={"channel": "sms", "body": "hello?"}, headers=h)
    assert resp.status == 409
    assert (await resp.json())["opted_out"] is True
    resp = await web_env.client.post(
        url + "/messages", json={"channel": "sms", "body": "Your order is ready", "override_optout": True}, headers=h
    )
    assert resp.status == 201


async def test_quiet_hours_flag(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, quiet_hours="00:00-23:59")
    try:
        r = await env.service.ingest(sms("+12025550131", "s-q1", "late text"))
        await env.login()
        detail = await (await env.client.get(f"/api/v1/conversations/{r.conversation_id}")).json()
        assert detail["reply"]["quiet_hours"] is True
    finally:
        await env.client.close()
        await store.stop()


async def test_staff_see_new_messages_live(web_env: WebEnv) -> None:
    await web_env.login()
    ws = await staff_socket(web_env)
    r = await web_env.service.ingest(sms("+12025550140", "s-l1", "Are you open?"))
    msg = await next_of(ws, "event")
    assert msg["event"]["id"] == r.event_id
    assert msg["event"]["body"] == "Are you open?"
    await web_env.service.update_conversation(r.conversation_id, intent="hours")
    upd = await next_of(ws, "conversation")
    assert upd["fields"] == {"intent": "hours"}
    await ws.close()


async def test_screen_pop_goes_to_the_ringing_extension_only(web_env: WebEnv) -> None:
    r = await web_env.service.ingest(sms("+12025550150", "s-p1", "Calling you about the quote"))
    await web_env.service.update_conversation(r.conversation_id, intent="quote", next_step="Send the quote")
    summary = await web_env.service.summary(r.conversation_id)
    await web_env.login("alice")  # ext 201
    alice = await staff_socket(web_env)
    bob_env_client = web_env.client  # same server, second login with its own cookie jar
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as bob_session:
        page = await bob_session.get(bob_env_client.make_url("/login"))
        token = csrf_from(await page.text(), 'name="csrf_token" value="')
        await bob_session.post(
            bob_env_client.make_url("/login"),
            data={"username": "bob", "password": PASSWORD, "csrf_token": token},
        )
        bob = await bob_session.ws_connect(bob_env_client.make_url("/staff/ws"), origin=web_env.origin)
        assert (await bob.receive_json(timeout=5))["extension"] == "202"

        ringing = CallRinging(
            extension="201",
            call_id="1700000000.1",
            caller="+12025550150",
            conversation_id=r.conversation_id,
            summary=summary,
            caller_name="<b>Kim</b>",
            occurred_at=time.time(),
        )
        web_env.bus.publish(ringing)
        card = await next_of(alice, "call_ringing")
        assert card["call_id"] == "1700000000.1"
        assert card["summary"]["intent"] == "quote"
        assert card["summary"]["next_step"] == "Send the quote"
        assert card["summary"]["last_by_channel"]["sms"]["body"] == "Calling you about the quote"
        assert card["caller_name"] == "<b>Kim</b>"
        assert await nothing_of(bob, "call_ringing")

        # The same call rings bob too, then bob answers: alice's card goes, bob's stays.
        web_env.bus.publish(
            CallRinging("202", "1700000000.1", "+12025550150", r.conversation_id, summary, occurred_at=time.time())
        )
        assert (await next_of(bob, "call_ringing"))["extension"] == "202"
        web_env.bus.publish(CallAnswered("202", "1700000000.1", "+12025550150", r.conversation_id))
        gone = await next_of(alice, "call_answered")
        assert gone["extension"] == "202"
        assert (await next_of(bob, "call_answered"))["extension"] == "202"
        record = CallRecord(
            call_id="1700000000.1",
            direction=CallDirection.INBOUND,
            caller="+12025550150",
            caller_name="",
            dialled="100",
            started_at=time.time() - 30,
            answered_by="202",
            outcome=CallOutcome.ANSWERED,
            conversation_id=r.conversation_id,
        )
        web_env.bus.publish(CallEnded("1700000000.1", "+12025550150", r.conversation_id, CallOutcome.ANSWERED, record))
        ended = await next_of(bob, "call_ended")
        assert ended["outcome"] == "answered"
        assert ended["conversation_id"] == r.conversation_id
        await bob.close()
    await alice.close()
    assert web_env.client.app[STAFF_HUB].socket_count <= 1


async def test_click_to_call(web_env: WebEnv) -> None:
    r = await web_env.service.ingest(sms("+12025550160", "s-c1", "call me please"))
    await web_env.login()
    resp = await web_env.client.post(
        f"/api/v1/conversations/{r.conversation_id}/call", json={}, headers=web_env.headers()
    )
    assert resp.status == 200
    assert web_env.calls == [("201", "+12025550160")]


async def test_status_json_and_metrics(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path)

    async def modem() -> dict[str, Any]:
        return {"present": True, "signal_dbm": -71, "operator": "<i>TestNet</i>", "registered": True}

    async def broken() -> dict[str, Any]:
        raise RuntimeError("asterisk link lost")

    env.deps.status_sources = {"modem": modem, "asterisk": broken}
    try:
        await env.service.ingest(sms("+12025550170", "s-m1", "hello"))
        resp = await env.client.get("/status.json")
        assert resp.status == 401
        await env.login()
        data = await (await env.client.get("/status.json")).json()
        assert data["modem"]["signal_dbm"] == -71
        assert "asterisk link lost" in data["asterisk"]["error"]
        assert data["today"]["message_in"] == 1
        assert data["store"]["size_bytes"] > 0
        assert any("asterisk link lost" in e["message"] for e in data["recent_errors"])
        text = await (await env.client.get("/metrics")).text()
        assert 'gateway_events_today{kind="message_in"} 1.0' in text
        assert "gateway_modem_signal_dbm -71.0" in text
        assert "gateway_modem_present 1.0" in text
        page = await (await env.client.get("/status")).text()
        assert "/static/status.js" in page
    finally:
        await env.client.close()
        await store.stop()


async def test_webhooks_are_signed_retried_and_durable(tmp_path: Path) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = {"n": 1}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if fail_first["n"] > 0:
            fail_first["n"] -= 1
            return web.Response(status=500)
        received.append((dict(request.headers), body))
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = TestServer(receiver, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/hook"))
    env, store = await make_env(tmp_path, webhook_urls=[url], webhook_secret=Secret("s3cret-key"))
    try:
        original = wh.retry_delay
        wh.retry_delay = lambda attempts, **_: 0.1
        try:
            r = await env.service.ingest(sms("+12025550180", "s-w1", "webhook me"))
            for _ in range(100):
                if received:
                    break
                await asyncio.sleep(0.05)
        finally:
            wh.retry_delay = original
        assert received, "webhook never delivered"
        headers, body = received[0]
        assert headers["X-Gateway-Event"] == "message.received"
        ts = headers["X-Gateway-Timestamp"]
        expected = hmac.new(b"s3cret-key", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["X-Gateway-Signature"] == f"sha256={expected}"
        payload = json.loads(body)
        assert payload["data"]["event"]["id"] == r.event_id
        rows = await store.read(
            lambda c: c.execute("SELECT state, attempts, last_error FROM webhook_deliveries").fetchall()
        )
        assert rows == [("delivered", 2, None)]
    finally:
        await env.client.close()
        await store.stop()
        await server.close()


async def test_webhook_without_secret_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="webhook_secret"):
        await make_env(tmp_path, webhook_urls=["http://127.0.0.1:9/hook"])


async def test_contacts_are_labelled_by_what_identifies_them(web_env: WebEnv) -> None:
    """An alphanumeric SMS sender is "BANK", a withheld caller "Withheld number", in the inbox, the
    conversation and search results; "Web visitor" is only for a chat visitor (issue 12)."""
    bank = await web_env.service.ingest(sms("BANK", "s-bank", "Your code is 123456"))
    withheld = await web_env.service.ingest(
        Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.SIP, "withheld:1.1", "1.1:end", body="")
    )
    chat = await web_env.service.ingest(
        Inbound(Channel.CHAT, EventKind.MESSAGE_IN, IdentityKind.CHAT, "visitor-1", "c-1", body="hello code")
    )
    named = await web_env.service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            "+12025550199",
            "s-named",
            body="code?",
            display_name="김민수",
        )
    )
    await web_env.login()
    inbox = {
        r["conversation_id"]: r["label"] for r in (await (await web_env.client.get("/api/v1/inbox")).json())["inbox"]
    }
    assert inbox[bank.conversation_id] == "BANK"
    assert inbox[withheld.conversation_id] == "Withheld number"
    assert inbox[chat.conversation_id] == "Web visitor"
    assert inbox[named.conversation_id] == "김민수"
    detail = await (await web_env.client.get(f"/api/v1/conversations/{bank.conversation_id}")).json()
    assert detail["summary"]["label"] == "BANK"
    hits = (await (await web_env.client.get("/api/v1/search", params={"q": "code"})).json())["results"]
    labels = {h["event"]["conversation_id"]: h["label"] for h in hits}
    assert labels == {
        bank.conversation_id: "BANK",
        chat.conversation_id: "Web visitor",
        named.conversation_id: "김민수",
    }


async def test_search_highlight_cannot_collide_with_customer_text(web_env: WebEnv) -> None:
    await web_env.service.ingest(sms("+12025550131", "s-br", "[urgent] please call [me] about the roof"))
    await web_env.service.ingest(sms("+12025550132", "s-pu", "odd roof \ue000x\ue001 text"))
    await web_env.login()
    hits = (await (await web_env.client.get("/api/v1/search", params={"q": "roof"})).json())["results"]
    by_body = {h["event"]["body"]: h for h in hits}
    parts = by_body["[urgent] please call [me] about the roof"]["snippet_parts"]
    assert [p["text"] for p in parts if p["hit"]] == ["roof"]
    assert "".join(p["text"] for p in parts) == "[urgent] please call [me] about the roof"
    # Text that itself holds the marker characters is shown plain, never mis-highlighted.
    odd = by_body["odd roof \ue000x\ue001 text"]["snippet_parts"]
    assert odd == [{"text": "odd roof x text", "hit": False}]


async def test_failed_transcription_can_be_retried_from_the_api(web_env: WebEnv) -> None:
    from gateway.store import transcribe as tq  # noqa: PLC0415

    vm = await web_env.service.ingest(
        Inbound(
            Channel.VOICE,
            EventKind.VOICEMAIL,
            IdentityKind.PHONE,
            "+12025550141",
            "vm-1:voicemail",
            meta={"path": "/nonexistent/vm.wav", "transcription": "failed", "transcription_error": "gone"},
        )
    )

    def failed_job(c: Any) -> int:
        job, _ = tq.enqueue_job(
            c, vm.conversation_id, vm.event_id, "/x.wav", now=1.0, max_backlog=10, waiting_model=False
        )
        tq.fail_job(c, job.id, "worker hung. Fix: retry", now=2.0)
        return job.id

    job_id = await web_env.store.write(failed_job)
    await web_env.login()
    url = f"/api/v1/voicemails/{vm.event_id}/transcription/retry"
    assert (await web_env.client.post(url)).status == 403, "CSRF token required"
    resp = await web_env.client.post(url, headers=web_env.headers())
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {"ok": True, "job_id": job_id, "status": "pending"}
    detail = await (await web_env.client.get(f"/api/v1/conversations/{vm.conversation_id}")).json()
    (entry,) = [e for e in detail["timeline"] if e["kind"] == "voicemail"]
    assert entry["meta"]["transcription"] == "pending"
    again = await web_env.client.post(url, headers=web_env.headers())
    assert again.status == 409
    assert "no failed transcription" in (await again.json())["error"]
