"""The handoff card and staff promises through the real HTTP API and staff websocket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.continuity.promise_keeper import PromiseKeeper
from gateway.continuity.promises import Hours
from gateway.domain.events import CallRinging, LiveTranscript
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound

from .conftest import ALWAYS_OPEN, WebEnv
from .test_console import next_of, staff_socket


async def _customer(env: WebEnv) -> int:
    r = await env.service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            "+12025550177",
            "sms-h1",
            body="Hi, my son chipped a tooth. Do you handle emergencies?",
            display_name="Maria Rodriguez",
        )
    )
    return r.conversation_id


async def _keeper(env: WebEnv) -> PromiseKeeper:
    keeper = PromiseKeeper(env.store, env.service, env.deps.spine or spines_of(env), env.bus, Hours(ALWAYS_OPEN, "UTC"))
    await keeper.start()
    env.deps.promises = keeper
    return keeper


def spines_of(env: WebEnv) -> Any:
    from gateway.domain.spine import SpineService  # noqa: PLC0415

    env.deps.spine = SpineService(env.store, env.bus)
    return env.deps.spine


async def test_handoff_card_opens_with_what_they_want_and_what_we_know(web_env: WebEnv) -> None:
    conv = await _customer(web_env)
    sp = spines_of(web_env)
    await sp.set_intent(conv, "book", urgent=True, source="staff", set_by="alice")
    await sp.set_fact(conv, "insurance", "Delta Dental", source="staff", set_by="alice")
    await web_env.login()
    resp = await web_env.client.get(f"/api/v1/conversations/{conv}/handoff")
    assert resp.status == 200
    card = await resp.json()
    assert card["wants"] == "book (urgent)"
    assert card["customer_words"] == "Hi, my son chipped a tooth. Do you handle emergencies?"
    assert card["open_question"] == "Hi, my son chipped a tooth. Do you handle emergencies?"
    assert any(k.startswith("insurance: Delta Dental") for k in card["knows"])
    assert card["quiet_hours"] is False
    assert card["headline"].startswith("Maria R")
    assert (await web_env.client.get("/api/v1/conversations/999999/handoff")).status == 404


async def test_handoff_card_needs_a_login(web_env: WebEnv) -> None:
    conv = await _customer(web_env)
    assert (await web_env.client.get(f"/api/v1/conversations/{conv}/handoff")).status == 401
    assert (await web_env.client.get("/api/v1/promises/not-kept")).status == 401


async def test_a_promise_in_a_staff_reply_is_confirmed_through_the_api(web_env: WebEnv) -> None:
    keeper = await _keeper(web_env)
    try:
        conv = await _customer(web_env)
        await web_env.login()
        resp = await web_env.client.post(
            f"/api/v1/conversations/{conv}/messages",
            json={"channel": "sms", "body": "We can see him today. I'll call you back in ten minutes with a time."},
            headers=web_env.headers(),
        )
        assert resp.status in (200, 201), await resp.text()
        promises: list[dict[str, Any]] = []
        for _ in range(100):
            promises = (await (await web_env.client.get(f"/api/v1/conversations/{conv}/promises")).json())["promises"]
            if promises:
                break
            await asyncio.sleep(0.02)
        (p,) = promises
        assert (p["step"], p["status"], p["said_by"]) == ("Call back", "proposed", "alice")
        card = await (await web_env.client.get(f"/api/v1/conversations/{conv}/handoff")).json()
        assert card["promises"] == [{"step": "Call back", "due": p["due"], "status": "proposed"}]
        # Without the CSRF header a logged-in browser cannot confirm (the console sends it).
        assert (await web_env.client.post(f"/api/v1/promises/{p['id']}/confirm")).status == 403
        done = await web_env.client.post(f"/api/v1/promises/{p['id']}/confirm", headers=web_env.headers())
        assert done.status == 200
        spine = await (await web_env.client.get(f"/api/v1/conversations/{conv}/spine")).json()
        assert spine["spine"]["next_step"] == "Call back"
        again = await web_env.client.post(f"/api/v1/promises/{p['id']}/dismiss", headers=web_env.headers())
        assert again.status == 400
        assert "already confirmed" in (await again.json())["error"]
    finally:
        await keeper.stop()


async def test_screen_pop_carries_the_handoff_card_and_live_words(web_env: WebEnv) -> None:
    conv = await _customer(web_env)
    await web_env.login()
    ws = await staff_socket(web_env)
    try:
        t0 = time.perf_counter()
        web_env.bus.publish(CallRinging("201", "1800000000.7", "+12025550177", conv, None, occurred_at=time.time()))
        card = await next_of(ws, "call_ringing")
        assert time.perf_counter() - t0 < 5
        assert card["handoff"]["customer_words"].startswith("Hi, my son chipped a tooth")
        web_env.bus.publish(LiveTranscript("1800000000.7", conv, "201", "caller", "do you take"))
        words = await next_of(ws, "live_transcript")
        assert (words["side"], words["text"], words["call_id"]) == ("caller", "do you take", "1800000000.7")
    finally:
        await ws.close()


async def test_live_words_go_only_to_the_phone_on_the_call(web_env: WebEnv) -> None:
    conv = await _customer(web_env)
    await web_env.login("bob")
    bob = await staff_socket(web_env)
    try:
        web_env.bus.publish(LiveTranscript("1800000000.8", conv, "201", "caller", "private words"))
        web_env.bus.publish(LiveTranscript("1800000000.8", conv, "202", "caller", "for bob"))
        msg = await next_of(bob, "live_transcript")
        assert msg["text"] == "for bob"
    finally:
        await bob.close()
