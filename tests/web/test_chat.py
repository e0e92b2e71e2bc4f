"""Chat widget websocket: resume by token, client-id dedupe, staff replies, hand-offs, after-hours."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound

from .conftest import WebEnv, make_env


async def connect(env: WebEnv, token: str | None = None) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await env.client.ws_connect("/chat/ws", origin=env.origin)
    await ws.send_json({"type": "hello", "token": token})
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def say(ws: aiohttp.ClientWebSocketResponse, client_id: str, body: str) -> dict[str, Any]:
    await ws.send_json({"type": "message", "client_id": client_id, "body": body})
    msg: dict[str, Any] = await ws.receive_json(timeout=5)
    assert msg["type"] == "ack", msg
    return msg


async def test_returning_visitor_resumes_with_history(web_env: WebEnv) -> None:
    ws, welcome = await connect(web_env)
    token = welcome["token"]
    assert welcome["history"] == []
    await say(ws, "client-msg-0001", "Hello, is the shop open on Sunday?")
    await ws.close()
    ws2, again = await connect(web_env, token)
    assert again["token"] == token
    assert [h["body"] for h in again["history"]] == ["Hello, is the shop open on Sunday?"]
    assert again["history"][0]["from"] == "visitor"
    assert again["history"][0]["client_id"] == "client-msg-0001"
    await ws2.close()
    # A made-up token does not reach anyone's conversation: it gets a fresh one.
    ws3, other = await connect(web_env, "x" * 43)
    assert other["token"] != "x" * 43
    assert other["history"] == []
    await ws3.close()


async def test_resent_message_is_stored_once(web_env: WebEnv) -> None:
    ws, welcome = await connect(web_env)
    first = await say(ws, "client-msg-dup1", "Need a plumber")
    await ws.close()
    ws2, _ = await connect(web_env, welcome["token"])  # reconnect, re-send the unacknowledged message
    second = await say(ws2, "client-msg-dup1", "Need a plumber")
    assert second["duplicate"] is True
    assert second["event_id"] == first["event_id"]
    rows = await web_env.store.read(
        lambda c: c.execute("SELECT COUNT(*) FROM events WHERE body = 'Need a plumber'").fetchone()[0]
    )
    assert rows == 1
    await ws2.close()


async def test_staff_reply_reaches_visitor_and_other_tabs(web_env: WebEnv) -> None:
    tab1, welcome = await connect(web_env)
    ack = await say(tab1, "client-msg-0100", "Can I book for tomorrow?")
    tab2, _ = await connect(web_env, welcome["token"])
    await say(tab1, "client-msg-0101", "Around 10?")
    echoed = await tab2.receive_json(timeout=5)  # the other tab sees the visitor's own message
    assert echoed["message"]["body"] == "Around 10?"
    conv = await web_env.store.read(
        lambda c: c.execute("SELECT conversation_id FROM events WHERE id = ?", (ack["event_id"],)).fetchone()[0]
    )
    await web_env.login()
    resp = await web_env.client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"channel": "chat", "body": "Yes, 10:00 works."},
        headers=web_env.headers(),
    )
    assert resp.status == 201
    for tab in (tab1, tab2):
        msg = await tab.receive_json(timeout=5)
        assert msg["type"] == "message"
        assert msg["message"]["from"] == "staff"
        assert msg["message"]["body"] == "Yes, 10:00 works."
    # Sent once, even though the bus delivers it too.
    for tab in (tab1, tab2):
        try:
            extra = await tab.receive_json(timeout=0.5)
        except TimeoutError:
            extra = None
        assert extra is None, extra
    await tab1.close()
    await tab2.close()


async def test_notes_never_reach_the_visitor(web_env: WebEnv) -> None:
    ws, _ = await connect(web_env)
    ack = await say(ws, "client-msg-0200", "Hi")
    conv = await web_env.store.read(
        lambda c: c.execute("SELECT conversation_id FROM events WHERE id = ?", (ack["event_id"],)).fetchone()[0]
    )
    await web_env.login()
    resp = await web_env.client.post(
        f"/api/v1/conversations/{conv}/notes", json={"body": "VIP, be nice"}, headers=web_env.headers()
    )
    assert resp.status == 201
    try:
        msg = await ws.receive_json(timeout=0.5)
    except TimeoutError:
        msg = None
    assert msg is None
    ws2, _ = await connect(web_env, None)
    await ws2.close()
    await ws.close()


async def test_continue_by_text_records_a_claim_and_texts_it(web_env: WebEnv) -> None:
    ws, _ = await connect(web_env)
    ack = await say(ws, "client-msg-0300", "Please text me instead")
    await ws.send_json({"type": "continue_by_text", "client_id": "handoff-0001", "phone": "not a number"})
    err = await ws.receive_json(timeout=5)
    assert err["type"] == "error"
    assert err["code"] == "bad_phone"
    await ws.send_json({"type": "continue_by_text", "client_id": "handoff-0002", "phone": "+1 202 555 0177"})
    done = await ws.receive_json(timeout=5)
    assert done == {"type": "handoff", "mode": "sms", "client_id": "handoff-0002", "ok": True}
    # A typed number is a claim: it does not become anyone's identity until it is verified.
    assert await web_env.service.find_contact("phone", "+12025550177") is None
    conv = await web_env.store.read(
        lambda c: c.execute("SELECT conversation_id FROM events WHERE id = ?", (ack["event_id"],)).fetchone()[0]
    )
    # The text leaves from the visitor's own conversation.
    outbox = await web_env.store.read(
        lambda c: c.execute("SELECT channel, to_addr, state, automated, conversation_id FROM outbox").fetchall()
    )
    assert outbox == [("sms", "+12025550177", "queued", 1, conv)]
    summary = await web_env.service.summary(conv)
    assert summary is not None
    assert summary.preferred_channel == "sms"
    assert summary.phone is None
    await web_env.login()
    detail = await (await web_env.client.get(f"/api/v1/conversations/{conv}")).json()
    assert detail["reply"]["phone"] is None
    assert detail["reply"]["channels"] == ["chat"]  # staff cannot text a number that is only claimed
    assert detail["reply"]["default_channel"] == "chat"
    assert [c["label"] for c in detail["claims"]] == ["says they are +12025550177, not verified"]
    assert detail["claims"][0]["texted"] is True
    await ws.close()


async def test_typing_a_known_customers_number_joins_nothing(web_env: WebEnv) -> None:
    earlier = await web_env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550188", "sms-k1", body="Earlier text")
    )
    ws, welcome = await connect(web_env)
    await say(ws, "client-msg-0400", "It's me again, on the website")
    await ws.send_json({"type": "continue_by_text", "client_id": "handoff-0400", "phone": "(202) 555-0188"})
    assert (await ws.receive_json(timeout=5))["type"] == "handoff"
    timeline = await web_env.service.timeline(earlier.conversation_id)
    bodies = [e.body for e in timeline]
    assert bodies == ["Earlier text"]  # the customer's timeline is untouched
    await ws.close()
    # The visitor comes back later: it sees only what it wrote, and staff replies to the customer do not reach it.
    ws2, again = await connect(web_env, welcome["token"])
    assert [h["body"] for h in again["history"]] == ["It's me again, on the website"]
    await web_env.login()
    resp = await web_env.client.post(
        f"/api/v1/conversations/{earlier.conversation_id}/messages",
        json={"channel": "chat", "body": "Welcome back!"},
        headers=web_env.headers(),
    )
    assert resp.status == 409  # the customer never chatted: there is no chat route to them
    assert (await resp.json())["no_route"] is True
    try:
        extra = await ws2.receive_json(timeout=0.5)
    except TimeoutError:
        extra = None
    assert extra is None, extra
    merges = await web_env.store.read(lambda c: c.execute("SELECT COUNT(*) FROM merges").fetchone()[0])
    assert merges == 0
    await ws2.close()


async def test_call_me_is_shown_to_staff(web_env: WebEnv) -> None:
    await web_env.login()
    staff = await web_env.client.ws_connect("/staff/ws", origin=web_env.origin)
    assert (await staff.receive_json(timeout=5))["type"] == "hello"
    ws, _ = await connect(web_env)
    await ws.send_json({"type": "call_me", "client_id": "callme-00001", "phone": "+12025550199"})
    assert (await ws.receive_json(timeout=5))["mode"] == "call"
    seen: dict[str, Any] = {}
    while True:
        msg = await staff.receive_json(timeout=5)
        if msg["type"] == "event" and msg["event"]["kind"] == "handoff":
            seen = msg["event"]
            break
    assert seen["meta"]["handoff"] == "call_me"
    assert seen["meta"]["phone"] == "+12025550199"
    conv = seen["conversation_id"]
    detail = await (await web_env.client.get(f"/api/v1/conversations/{conv}")).json()
    assert detail["summary"]["next_step"] == "Call back"
    await staff.close()
    await ws.close()


async def test_after_hours_mode(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, business_hours={}, after_hours_message="Closed until Monday.")
    try:
        ws, welcome = await connect(env)
        assert welcome["after_hours"] is True
        assert welcome["after_hours_message"] == "Closed until Monday."
        # Messages are still taken after hours.
        await say(ws, "client-msg-0500", "Leaving a note for tomorrow")
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()


async def test_bad_frames_get_clear_errors(web_env: WebEnv) -> None:
    ws = await web_env.client.ws_connect("/chat/ws", origin=web_env.origin)
    await ws.send_json({"type": "message", "client_id": "client-msg-0600", "body": "hi"})
    assert (await ws.receive_json(timeout=5))["code"] == "hello_first"
    await ws.send_str("{nope")
    assert (await ws.receive_json(timeout=5))["code"] == "bad_json"
    await ws.send_json({"type": "hello"})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    await ws.send_json({"type": "message", "client_id": "bad id!", "body": "hi"})
    assert (await ws.receive_json(timeout=5))["code"] == "refused"
    await ws.send_json({"type": "message", "client_id": "client-msg-0601", "body": "   "})
    assert (await ws.receive_json(timeout=5))["code"] == "empty"
    await ws.send_bytes(b"\x00\x01")
    assert (await ws.receive_json(timeout=5))["code"] == "binary"
    await ws.close()
    await asyncio.sleep(0)
