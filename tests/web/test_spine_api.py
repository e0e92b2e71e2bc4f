"""The spine over real HTTP: read it, change it, correct facts, and staff starting a thread with a new number."""

from __future__ import annotations

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from tests.web.conftest import WebEnv


async def _sms(env: WebEnv, number: str, ext: str, body: str) -> int:
    res = await env.service.ingest(Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, ext, body))
    return res.conversation_id


async def test_the_conversation_opens_with_the_spine_and_staff_change_it(web_env: WebEnv) -> None:
    conv = await _sms(web_env, "+14155552671", "m1", "hello")
    await web_env.service.rename_contact(
        (await web_env.service.summary(conv)).contact_id,  # type: ignore[union-attr]
        "Maria Rodriguez",
        author="test",
    )
    await web_env.login()
    h = web_env.headers()
    url = f"/api/v1/conversations/{conv}"

    resp = await web_env.client.patch(
        url + "/spine",
        json={
            "intent": "problem",
            "urgent": True,
            "next_step": "Send time slots",
            "next_step_due": "2026-12-05T09:00-05:00",
            "next_step_owner": "bob",
            "owner": "alice",
            "channel_preference": "sms",
            "preference_why": "asked for texts on the phone",
        },
        headers=h,
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["changed"] == ["intent", "next_step", "owner", "channel_preference"]
    resp = await web_env.client.put(url + "/facts/topic", json={"value": "chipped tooth"}, headers=h)
    assert resp.status == 200
    resp = await web_env.client.put(url + "/facts/availability", json={"value": "Saturday morning"}, headers=h)
    assert resp.status == 200

    detail = await (await web_env.client.get(url)).json()
    assert detail["headline"].startswith("Maria R - chipped tooth, urgent - texted ")
    spine = detail["spine"]["spine"]
    assert spine["next_step_due"] == 1796479200.0  # 2026-12-05 14:00 UTC
    assert (spine["next_step_owner"], spine["owner"]) == ("bob", "alice")
    assert spine["facts"]["availability"]["value"] == {"text": "Saturday morning"}
    assert spine["facts"]["topic"]["set_by"] == "alice"
    assert spine["facts"]["topic"]["source"] == "staff"
    assert spine["provenance"]["intent"]["set_by"] == "alice"
    assert detail["spine"]["intents"][0] == "book"
    entries = [e for e in detail["timeline"] if e["kind"] == "spine"]
    assert len(entries) == 6
    assert all(e["author"] == "alice" for e in entries)
    assert "Topic: chipped tooth - set by alice" in [e["body"] for e in entries]

    resp = await web_env.client.delete(url + "/facts/topic", headers=h)
    assert resp.status == 200
    assert "topic" not in (await resp.json())["spine"]["facts"]
    assert (await web_env.client.delete(url + "/facts/topic", headers=h)).status == 404


async def test_bad_spine_input_gets_one_clear_line(web_env: WebEnv) -> None:
    conv = await _sms(web_env, "+14155552672", "m1", "hello")
    await web_env.login()
    h = web_env.headers()
    url = f"/api/v1/conversations/{conv}"
    cases = [
        ("patch", "/spine", {"intent": "party"}, "not in the vocabulary"),
        ("patch", "/spine", {"colour": "red"}, "cannot be changed here"),
        ("patch", "/spine", {"next_step": "x", "next_step_due": "Friday"}, "ISO 8601"),
        ("patch", "/spine", {"next_step": "x", "next_step_due": "2026-12-05T09:00"}, "time zone offset"),
        ("patch", "/spine", {"channel_preference": "fax"}, "not one of"),
        ("put", "/facts/Roof%20Type", {"value": "metal"}, "lower-case letters"),
        ("put", "/facts/roof_type", {"value": ["metal"]}, "string or a number"),
    ]
    for method, path, payload, words in cases:
        resp = await getattr(web_env.client, method)(url + path, json=payload, headers=h)
        assert resp.status == 400, (path, payload)
        assert words in (await resp.json())["error"], (path, payload)
    assert (await web_env.client.get("/api/v1/conversations/99999/spine")).status == 404
    assert (await web_env.client.get(url + "/spine", headers={})).status == 200, "the session cookie is enough"


async def test_the_spine_needs_a_login(web_env: WebEnv) -> None:
    conv = await _sms(web_env, "+14155552673", "m1", "hello")
    assert (await web_env.client.get(f"/api/v1/conversations/{conv}/spine")).status == 401
    resp = await web_env.client.post("/api/v1/conversations", json={"phone": "+14155550100", "body": "hi"})
    assert resp.status in (401, 403)


async def test_staff_start_a_thread_that_the_customers_answer_joins(web_env: WebEnv) -> None:
    await web_env.login()
    h = web_env.headers()
    resp = await web_env.client.post(
        "/api/v1/conversations",
        json={"phone": "(415) 555-2674", "body": "Hi, this is the dental office about your son's appointment"},
        headers=h,
    )
    assert resp.status == 201, await resp.text()
    started = await resp.json()
    assert started["created"] is True
    assert started["outbox_id"] > 0
    conv = started["conversation_id"]
    reply = await _sms(web_env, "+14155552674", "r1", "Thanks! Saturday morning works")
    assert reply == conv, "the customer's answer lands in the conversation staff started"
    timeline = (await (await web_env.client.get(f"/api/v1/conversations/{conv}")).json())["timeline"]
    assert [e["kind"] for e in timeline] == ["handoff", "message_out", "message_in"]
    assert timeline[0]["body"] == "Conversation started by alice with a text"
    assert timeline[0]["meta"]["agent_initiated"] is True

    # Calling a number that already has a conversation lands there too (click-to-call from the console).
    resp = await web_env.client.post(
        "/api/v1/conversations", json={"phone": "+1 415 555 2674", "call": True}, headers=h
    )
    assert resp.status == 200
    again = await resp.json()
    assert (again["conversation_id"], again["created"], again["calling"]) == (conv, False, True)
    assert web_env.calls == [("201", "+14155552674")]


async def test_starting_a_thread_refuses_what_cannot_work(web_env: WebEnv) -> None:
    await web_env.login()
    h = web_env.headers()
    for payload, words in [
        ({"body": "hi"}, "'phone' is missing"),
        ({"phone": "555-1234", "body": "hi"}, "not a complete phone number"),
        ({"phone": "+14155552675"}, "say what to do"),
        ({"phone": "+14155552675", "body": "  "}, "must be the text"),
    ]:
        resp = await web_env.client.post("/api/v1/conversations", json=payload, headers=h)
        assert resp.status == 400, payload
        assert words in (await resp.json())["error"], payload
    assert await web_env.service.find_contact(IdentityKind.PHONE, "+14155552675") is None, "nothing was created"


async def test_starting_a_thread_obeys_the_number_policy_before_creating_anything(web_env: WebEnv) -> None:
    from gateway.domain.service import ConversationService, ServiceSettings  # noqa: PLC0415

    web_env.deps.service = ConversationService(
        web_env.store, web_env.bus, ServiceSettings(staff_number_check="confirm")
    )
    await web_env.login()
    h = web_env.headers()
    premium = "+19002530000"
    resp = await web_env.client.post("/api/v1/conversations", json={"phone": premium, "body": "hi"}, headers=h)
    assert resp.status == 409
    answer = await resp.json()
    assert answer["needs_confirmation"] is True
    assert "premium-rate" in answer["error"]
    assert await web_env.service.find_contact(IdentityKind.PHONE, premium) is None, "nothing created before consent"
    resp = await web_env.client.post(
        "/api/v1/conversations", json={"phone": premium, "body": "hi", "confirm_number": True}, headers=h
    )
    assert resp.status == 201, await resp.text()
