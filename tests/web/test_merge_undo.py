"""Staff can undo a merge of two contacts from the console API."""

from __future__ import annotations

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound

from .conftest import WebEnv


async def test_staff_undo_a_merge_and_each_contact_gets_its_timeline_back(web_env: WebEnv) -> None:
    svc = web_env.service
    phone = await svc.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550190", "m-s1", "leaky roof")
    )
    chat = await svc.ingest(
        Inbound(Channel.CHAT, EventKind.MESSAGE_IN, IdentityKind.CHAT, "visitor-merge", "m-c1", "hi there")
    )
    conv, merge_id = await svc.link_identity(chat.conversation_id, IdentityKind.PHONE, "(202) 555-0190")
    assert conv == phone.conversation_id
    assert merge_id is not None
    await web_env.login()
    h = web_env.headers()

    detail = await (await web_env.client.get(f"/api/v1/conversations/{conv}")).json()
    merges = [e for e in detail["timeline"] if e["kind"] == "merge"]
    assert merges
    assert merges[0]["meta"]["merge_id"] == merge_id

    no_csrf = await web_env.client.post(f"/api/v1/merges/{merge_id}/undo")
    assert no_csrf.status == 403
    resp = await web_env.client.post(f"/api/v1/merges/{merge_id}/undo", headers=h)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["restored_conversation_id"] == chat.conversation_id

    phone_bodies = [e.body for e in await svc.timeline(phone.conversation_id)]
    chat_bodies = [e.body for e in await svc.timeline(chat.conversation_id)]
    assert "leaky roof" in phone_bodies
    assert "hi there" not in phone_bodies
    assert "hi there" in chat_bodies

    again = await web_env.client.post(f"/api/v1/merges/{merge_id}/undo", headers=h)
    assert again.status == 409
    missing = await web_env.client.post("/api/v1/merges/999999/undo", headers=h)
    assert missing.status == 404
    bad = await web_env.client.post("/api/v1/merges/abc/undo", headers=h)
    assert bad.status == 400
