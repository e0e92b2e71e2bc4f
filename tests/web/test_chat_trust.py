"""The chat trust model, attacked the way a stranger would: through the real websocket of the running web app.

A typed number is a claim: it never merges, never rebinds, never reveals. Hand-offs are capped and idempotent, the
socket count is capped, and a claim is verified by a one-time code or by staff over HTTP.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.web.chat import CHAT_HUB

from .conftest import WebEnv, make_env
from .test_chat import connect, say

ALICE = "+12025550111"  # a long-known customer
BOB = "+12025550122"  # another one


async def no_frame(ws: aiohttp.ClientWebSocketResponse, wait: float = 0.4) -> None:
    try:
        extra = await ws.receive_json(timeout=wait)
    except TimeoutError:
        return
    pytest.fail(f"unexpected frame: {extra}")


async def seed_customer(env: WebEnv, number: str, body: str, key: str) -> int:
    r = await env.service.ingest(Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, key, body))
    await env.service.append_event(r.conversation_id, EventKind.NOTE, Channel.NOTE, f"private note about {number}")
    return r.conversation_id


async def handoff(
    ws: aiohttp.ClientWebSocketResponse, client_id: str, phone: str, kind: str = "continue_by_text"
) -> dict[str, Any]:
    await ws.send_json({"type": kind, "client_id": client_id, "phone": phone})
    frame: dict[str, Any] = await ws.receive_json(timeout=5)
    return frame


async def outbox_rows(env: WebEnv) -> list[tuple[Any, ...]]:
    return await env.store.read(lambda c: c.execute("SELECT to_addr, conversation_id, body FROM outbox").fetchall())


@pytest.fixture
async def lenient(tmp_path: Path) -> AsyncIterator[WebEnv]:
    """Several hand-offs a day allowed, to show that even then nothing is glued together."""
    env, store = await make_env(tmp_path, chat_handoffs_per_day=5)
    try:
        yield env
    finally:
        await env.client.close()
        await store.stop()


async def test_stranger_typing_two_customers_numbers_sees_nothing_and_glues_nothing(lenient: WebEnv) -> None:
    env = lenient
    alice_conv = await seed_customer(env, ALICE, "Your appointment: Tue 10:00 at 12 Elm St?", "sms-a1")
    bob_conv = await seed_customer(env, BOB, "What is my balance?", "sms-b1")
    await env.login()
    r = await env.client.post(
        f"/api/v1/conversations/{alice_conv}/messages",
        json={"channel": "sms", "body": "Yes: Tue 10:00 at 12 Elm St"},
        headers=env.headers(),
    )
    assert r.status == 201
    ws, welcome = await connect(env)
    await say(ws, "stranger-0001", "hello")
    assert (await handoff(ws, "stranger-h001", "(202) 555-0111"))["ok"] is True
    assert (await handoff(ws, "stranger-h002", "202-555-0122"))["ok"] is True
    await ws.close()
    # Reconnecting with its token, the stranger sees only its own line.
    ws2, again = await connect(env, welcome["token"])
    assert [h["body"] for h in again["history"]] == ["hello"]
    # Later staff replies to the customers never reach the stranger's socket.
    r = await env.client.post(
        f"/api/v1/conversations/{alice_conv}/messages",
        json={"channel": "sms", "body": "Your balance is $300"},
        headers=env.headers(),
    )
    assert r.status == 201
    await no_frame(ws2)
    # Nothing of the customers changed: no merge, timelines untouched, replies still go to their own numbers.
    merges = await env.store.read(lambda c: c.execute("SELECT COUNT(*) FROM merges").fetchone()[0])
    assert merges == 0
    alice_bodies = [e.body for e in await env.service.timeline(alice_conv)]
    assert "hello" not in alice_bodies
    assert [e.body for e in await env.service.timeline(bob_conv) if e.kind.startswith("message")] == [
        "What is my balance?"
    ]
    for conv, number in ((alice_conv, ALICE), (bob_conv, BOB)):
        summary = await env.service.summary(conv)
        assert summary is not None
        assert summary.phone == number
    # The texts went out from the stranger's own conversation, to each number once.
    stranger_conv = await env.store.read(
        lambda c: c.execute("SELECT conversation_id FROM web_visitors WHERE conversation_id IS NOT NULL").fetchone()[0]
    )
    sent = [(to, conv) for to, conv, _ in await outbox_rows(env) if conv == stranger_conv]
    assert sorted(sent) == [(ALICE, stranger_conv), (BOB, stranger_conv)]
    # Staff see both claims as unverified, with the known contact each matches.
    detail = await (await env.client.get(f"/api/v1/conversations/{stranger_conv}")).json()
    labels = sorted(c["label"] for c in detail["claims"])
    assert labels == [f"says they are {ALICE}, not verified", f"says they are {BOB}, not verified"]
    assert {c["suggested_contact"]["conversation_id"] for c in detail["claims"]} == {alice_conv, bob_conv}
    await ws2.close()


async def test_a_flood_of_handoffs_sends_one_text_per_day(web_env: WebEnv) -> None:
    ws, _ = await connect(web_env)
    first = await handoff(ws, "flood-00000", "+1 202 555 0170")
    assert first == {"type": "handoff", "mode": "sms", "client_id": "flood-00000", "ok": True}
    # The same client id again (a reload, a retry): the same answer, nothing new.
    again = await handoff(ws, "flood-00000", "+1 202 555 0170")
    assert again == first
    refused = []
    for i in range(1, 8):
        frame = await handoff(ws, f"flood-{i:05d}", f"+1 202 555 01{70 + i}")
        refused.append(frame.get("code"))
    assert set(refused) <= {"handoff_limited", "rate_limited"}
    assert "handoff_limited" in refused
    assert [to for to, _, _ in await outbox_rows(web_env)] == ["+12025550170"]
    # A second token from the same browser does not double the texts for the same conversation, and "call me"
    # has the same limit.
    assert (await handoff(ws, "callme-00001", "+1 202 555 0190", "call_me"))["mode"] == "call"
    limited = await handoff(ws, "callme-00002", "+1 202 555 0191", "call_me")
    assert limited["code"] in {"handoff_limited", "rate_limited"}
    decisions = await web_env.store.read(
        lambda c: c.execute(
            "SELECT json_extract(meta, '$.decision'), json_extract(meta, '$.rule') FROM events WHERE kind = 'automated'"
        ).fetchall()
    )
    assert ("suppressed", "chat_handoff") in decisions
    await ws.close()


async def test_opted_out_and_unknown_numbers_get_the_same_answer(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, chat_handoffs_per_day=5)
    try:
        await store.write(lambda c: c.execute("INSERT INTO suppressions VALUES ('+12025550144', 'STOP', 0)"))
        ws, _ = await connect(env)
        opted_out = await handoff(ws, "optout-0001", "+1 202 555 0144")
        unknown = await handoff(ws, "optout-0002", "+1 202 555 0145")
        assert {k: v for k, v in opted_out.items() if k != "client_id"} == {
            k: v for k, v in unknown.items() if k != "client_id"
        }
        assert [to for to, _, _ in await outbox_rows(env)] == ["+12025550145"]
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()


async def test_without_sms_the_widget_says_so_and_offers_a_call(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, sms_available=False)
    try:
        ws, welcome = await connect(env)
        assert welcome["sms"] is False
        frame = await handoff(ws, "nosms-00001", "+1 202 555 0150")
        assert frame["code"] == "sms_unavailable"
        assert "call you" in frame["message"]
        assert await outbox_rows(env) == []
        assert (await handoff(ws, "nosms-00002", "+1 202 555 0150", "call_me"))["mode"] == "call"
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()


async def test_socket_cap_refuses_with_503_through_the_real_websocket(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, chat_max_sockets=3)
    try:
        open_ = [(await connect(env))[0] for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await env.client.ws_connect("/chat/ws", origin=env.origin)
        assert refused.value.status == 503
        raw = await env.client.get("/chat/ws", headers={"Origin": env.origin})
        assert raw.status == 503
        assert "busy" in (await raw.json())["error"]
        await open_.pop().close()
        hub = env.client.app[CHAT_HUB]
        for _ in range(100):
            if hub.socket_count < 3:
                break
            await asyncio.sleep(0.02)
        assert hub.socket_count == 2
        ws, _ = await connect(env)  # room again once one closed
        await ws.close()
        for w in open_:
            await w.close()
    finally:
        await env.client.close()
        await store.stop()


def code_in(body: str) -> str:
    m = re.search(r"type (\d{6}) in the chat", body)
    assert m, body
    return m.group(1)


async def test_one_time_code_verifies_and_shows_the_customers_texts_but_never_notes(web_env: WebEnv) -> None:
    alice_conv = await seed_customer(web_env, ALICE, "Is my boiler fixed?", "sms-c1")
    ws, welcome = await connect(web_env)
    await say(ws, "owner-00001", "It's Alice, on the website")
    assert (await handoff(ws, "owner-h0001", ALICE))["ok"] is True
    [(_, _, body)] = await outbox_rows(web_env)
    code = code_in(body)
    wrong = "000000" if code != "000000" else "111111"
    await ws.send_json({"type": "verify_code", "client_id": "verify-0001", "code": wrong})
    assert (await ws.receive_json(timeout=5))["code"] == "bad_code"
    await ws.send_json({"type": "verify_code", "client_id": "verify-0002", "code": code})
    ok = await ws.receive_json(timeout=5)
    assert ok["type"] == "verified"
    bodies = [h["body"] for h in ok["history"]]
    assert "Is my boiler fixed?" in bodies  # proven: the customer's own texts
    assert "It's Alice, on the website" in bodies
    assert not any("private note" in b for b in bodies)  # never notes
    # The proven visitor and the customer are one contact now: recorded and undoable.
    merges = await web_env.store.read(lambda c: c.execute("SELECT kept_contact_id, reason FROM merges").fetchall())
    assert len(merges) == 1
    assert "code" in merges[0][1]
    assert "It's Alice, on the website" in [e.body for e in await web_env.service.timeline(alice_conv)]
    await ws.close()
    ws2, again = await connect(web_env, welcome["token"])
    assert "Is my boiler fixed?" in [h["body"] for h in again["history"]]
    await ws2.close()


async def test_code_attempts_are_few_and_codes_expire(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, chat_code_attempts=3, chat_burst=50, chat_messages_per_minute=600)
    try:
        ws, _ = await connect(env)
        assert (await handoff(ws, "guess-h0001", ALICE))["ok"] is True
        [(_, _, body)] = await outbox_rows(env)
        code = code_in(body)
        wrongs = [f"{(int(code) + k) % 1_000_000:06d}" for k in range(1, 4)]
        for i, guess in enumerate(wrongs):
            await ws.send_json({"type": "verify_code", "client_id": f"guess-{i:05d}", "code": guess})
            assert (await ws.receive_json(timeout=5))["code"] == "bad_code"
        await ws.send_json({"type": "verify_code", "client_id": "guess-right", "code": code})
        spent = await ws.receive_json(timeout=5)
        assert spent["code"] == "bad_code"
        assert "Too many" in spent["message"]
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()
    env, store = await make_env(tmp_path / "expiry", chat_code_ttl_seconds=0)
    try:
        ws, _ = await connect(env)
        assert (await handoff(ws, "late-h00001", ALICE))["ok"] is True
        [(_, _, body)] = await outbox_rows(env)
        await ws.send_json({"type": "verify_code", "client_id": "late-00001", "code": code_in(body)})
        late = await ws.receive_json(timeout=5)
        assert late["code"] == "bad_code"
        assert "expired" in late["message"]
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()


async def test_staff_confirm_a_claim_over_http_and_undo_the_merge(web_env: WebEnv) -> None:
    alice_conv = await seed_customer(web_env, ALICE, "Earlier text", "sms-d1")
    ws, _ = await connect(web_env)
    ack = await say(ws, "staffok-0001", "This is Alice from the website")
    assert (await handoff(ws, "staffok-h001", ALICE, "call_me"))["mode"] == "call"
    visitor_conv = await web_env.store.read(
        lambda c: c.execute("SELECT conversation_id FROM events WHERE id = ?", (ack["event_id"],)).fetchone()[0]
    )
    await web_env.login()
    detail = await (await web_env.client.get(f"/api/v1/conversations/{visitor_conv}")).json()
    [claim] = detail["claims"]
    assert claim["label"] == f"says they are {ALICE}, not verified"
    assert claim["suggested_contact"]["conversation_id"] == alice_conv
    no_csrf = await web_env.client.post(f"/api/v1/claims/{claim['id']}/confirm")
    assert no_csrf.status in (401, 403)
    resp = await web_env.client.post(f"/api/v1/claims/{claim['id']}/confirm", headers=web_env.headers())
    assert resp.status == 200
    done = await resp.json()
    assert done["merge_id"] is not None
    assert done["conversation_id"] == alice_conv
    assert "This is Alice from the website" in [e.body for e in await web_env.service.timeline(alice_conv)]
    again = await web_env.client.post(f"/api/v1/claims/{claim['id']}/confirm", headers=web_env.headers())
    assert again.status == 409
    undo = await web_env.client.post(f"/api/v1/merges/{done['merge_id']}/undo", headers=web_env.headers())
    assert undo.status == 200
    assert "This is Alice from the website" not in [e.body for e in await web_env.service.timeline(alice_conv)]
    assert "This is Alice from the website" in [e.body for e in await web_env.service.timeline(visitor_conv)]
    await ws.close()


async def test_premium_numbers_get_the_same_answer_and_nothing_happens(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, chat_handoffs_per_day=5)
    try:
        ws, _ = await connect(env)
        premium_text = await handoff(ws, "premium-0001", "+1 900 555 0101")
        normal_text = await handoff(ws, "premium-0002", "+1 202 555 0102")
        assert {k: v for k, v in premium_text.items() if k != "client_id"} == {
            k: v for k, v in normal_text.items() if k != "client_id"
        }
        assert [to for to, _, _ in await outbox_rows(env)] == ["+12025550102"]  # the premium number got no text
        premium_call = await handoff(ws, "premium-0003", "+1 900 555 0101", "call_me")
        assert premium_call == {"type": "handoff", "mode": "call", "client_id": "premium-0003", "ok": True}
        conv = await store.read(
            lambda c: c.execute(
                "SELECT conversation_id FROM web_visitors WHERE conversation_id IS NOT NULL"
            ).fetchone()[0]
        )
        summary = await env.service.summary(conv)
        assert summary is not None
        assert summary.next_step != "Call back"  # staff are not asked to dial a premium number
        decisions = await store.read(
            lambda c: c.execute(
                "SELECT json_extract(meta, '$.rule'), json_extract(meta, '$.decision') FROM events"
                " WHERE kind = 'automated' ORDER BY id"
            ).fetchall()
        )
        assert ("chat_handoff", "suppressed") in decisions
        assert ("chat_call_me", "suppressed") in decisions
        await ws.close()
    finally:
        await env.client.close()
        await store.stop()
