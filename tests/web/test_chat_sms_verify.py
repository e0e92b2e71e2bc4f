"""A claimed number is verified when it answers by SMS: the real chat websocket, the real SMS channel on the modem
emulator (a pty), one SQLite store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.channels.sms.channel import SmsChannel
from gateway.channels.sms.config import SmsConfig
from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.emulator import ModemEmulator
from gateway.store.db import Store
from gateway.web.app import build_app
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps
from gateway.web.pages import create_staff_user

from .conftest import ALWAYS_OPEN, PASSWORD, WebEnv
from .test_chat import connect, say

CUSTOMER = "+12025550160"
FAST = {"poll_interval": 1.0, "probe_interval": 1.0, "command_timeout": 2.0, "retry_base": 0.2, "retry_cap": 0.5}


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


@dataclass
class SmsWeb:
    env: WebEnv
    emulator: ModemEmulator
    sms: SmsChannel


@pytest.fixture
async def smsweb(tmp_path: Path) -> AsyncIterator[SmsWeb]:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus, ServiceSettings(default_region="US"))
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev" / "ttyUSB0", seed=11)
    emu.start()
    sms = SmsChannel(SmsConfig(enabled=True, device=str(emu.link), **FAST), store, service, bus, region="US")  # type: ignore[arg-type]
    await sms.start()
    cfg = WebConfig(secure_cookies=False, business_hours=ALWAYS_OPEN, quiet_hours="", business_name="Hana")
    deps = WebDeps(service=service, store=store, bus=bus, config=cfg)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(deps), host="127.0.0.1"))
    await client.start_server()
    await create_staff_user(store, "alice", PASSWORD, display_name="Alice Kim", extension="201", role="admin")
    try:
        await wait_for(lambda: sms.link_state.up)
        yield SmsWeb(WebEnv(client, store, bus, service, deps, tmp_path), emu, sms)
    finally:
        await client.close()
        await sms.stop()
        emu.stop()
        await store.stop()


async def test_an_sms_answer_verifies_the_claim_and_joins_the_visitors_conversation(smsweb: SmsWeb) -> None:
    env, emu = smsweb.env, smsweb.emulator
    ws, welcome = await connect(env)
    ack = await say(ws, "verify-msg-01", "I need a quote for a new boiler")
    visitor_conv = await env.store.read(
        lambda c: c.execute("SELECT conversation_id FROM events WHERE id = ?", (ack["event_id"],)).fetchone()[0]
    )
    await ws.send_json({"type": "continue_by_text", "client_id": "verify-h0001", "phone": "(202) 555-0160"})
    assert (await ws.receive_json(timeout=5))["ok"] is True
    await wait_for(lambda: [m for m in emu.sent if m.recipient.endswith("2025550160")], timeout=20)
    assert await env.service.find_contact("phone", CUSTOMER) is None  # still only a claim
    emu.deliver(CUSTOMER, "Yes, texting is easier. Tuesday works.")

    async def answered() -> bool:
        bodies = [e.body for e in await env.service.timeline(visitor_conv)]
        return "Yes, texting is easier. Tuesday works." in bodies

    await wait_for(answered, timeout=20)
    contact = await env.service.find_contact("phone", CUSTOMER)
    assert contact is not None
    assert contact.conversation_id == visitor_conv  # the number now belongs to the visitor's contact
    await env.login()
    detail = await (await env.client.get(f"/api/v1/conversations/{visitor_conv}")).json()
    assert detail["claims"][0]["verified"] is True
    assert detail["claims"][0]["method"] == "sms_reply"
    assert detail["reply"]["phone"] == CUSTOMER
    assert sorted(detail["reply"]["channels"]) == ["chat", "sms"]
    # Staff reply by SMS: out through the modem to the verified number.
    r = await env.client.post(
        f"/api/v1/conversations/{visitor_conv}/messages",
        json={"channel": "sms", "body": "Great, see you Tuesday at 9."},
        headers=env.headers(),
    )
    assert r.status == 201
    await wait_for(lambda: [m for m in emu.sent if "Tuesday at 9" in m.text], timeout=20)
    # The visitor was not shown the SMS (it did not prove the number with the code), only its own line.
    await ws.close()
    ws2, again = await connect(env, welcome["token"])
    assert [h["body"] for h in again["history"]] == ["I need a quote for a new boiler"]
    await ws2.close()


async def test_an_sms_answer_from_a_known_customer_merges_undoably(smsweb: SmsWeb) -> None:
    env, emu = smsweb.env, smsweb.emulator
    known = await env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, CUSTOMER, "sms-known-1", "Earlier text")
    )
    ws, _ = await connect(env)
    ack = await say(ws, "verify-msg-02", "Hi, it's me on the website")
    visitor_conv = await env.store.read(
        lambda c: c.execute("SELECT conversation_id FROM events WHERE id = ?", (ack["event_id"],)).fetchone()[0]
    )
    await ws.send_json({"type": "continue_by_text", "client_id": "verify-h0002", "phone": CUSTOMER})
    assert (await ws.receive_json(timeout=5))["ok"] is True
    await wait_for(lambda: [m for m in emu.sent if m.recipient.endswith("2025550160")], timeout=20)
    merges_before = await env.store.read(lambda c: c.execute("SELECT COUNT(*) FROM merges").fetchone()[0])
    assert merges_before == 0  # the claim alone merged nothing
    emu.deliver(CUSTOMER, "Yes that was me")

    async def merged() -> list[tuple[int, int, str]]:
        return await env.store.read(
            lambda c: c.execute("SELECT id, kept_contact_id, reason FROM merges").fetchall()  # type: ignore[no-any-return]
        )

    [(merge_id, kept, reason)] = await wait_for(merged, timeout=20)
    assert kept == known.contact_id
    assert "sms_reply" in reason
    bodies = [e.body for e in await env.service.timeline(known.conversation_id)]
    assert {"Earlier text", "Hi, it's me on the website", "Yes that was me"} <= set(bodies)
    summary = await env.service.summary(known.conversation_id)
    assert summary is not None
    assert summary.phone == CUSTOMER
    await env.login()
    undo = await env.client.post(f"/api/v1/merges/{merge_id}/undo", headers=env.headers())
    assert undo.status == 200
    customer_bodies = {e.body for e in await env.service.timeline(known.conversation_id) if e.kind == "message_in"}
    visitor_bodies = {e.body for e in await env.service.timeline(visitor_conv) if e.kind == "message_in"}
    assert customer_bodies == {"Earlier text", "Yes that was me"}
    assert visitor_bodies == {"Hi, it's me on the website"}
    await ws.close()
