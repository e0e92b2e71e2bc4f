"""'Continue by text' with the continuity rules running, through the real websocket: the chat channel's one
confirmation text (with the code, nothing of the chat) goes first; the hand-off limits hold, so no rule reacts to a
refused hand-off; the continuation that quotes the chat follows only once the number is verified.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.continuity.clock import ManualClock
from gateway.continuity.config import ContinuityConfig
from gateway.continuity.engine import ContinuityEngine, HoursSettings
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from tests.continuity.conftest import HOURS, TZ, local
from tests.web.conftest import WebEnv, make_env
from tests.web.test_chat import connect, say

NUMBER = "+12025550166"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[WebEnv, ContinuityEngine]]:
    web_env, store = await make_env(tmp_path)
    engine = ContinuityEngine(
        ContinuityConfig(),
        web_env.service,
        store,
        web_env.bus,
        HoursSettings(TZ, HOURS, "Bright Smile Dental"),
        clock=ManualClock(local(7, 10)),
    )
    await engine.prepare()
    web_env.deps.continuity = engine
    try:
        yield web_env, engine
    finally:
        await engine.stop()
        await web_env.client.close()
        await store.stop()


async def texts(env: WebEnv) -> list[tuple[str, str]]:
    return await env.store.read(
        lambda c: c.execute("SELECT to_addr, body FROM outbox WHERE automated = 1 ORDER BY id").fetchall()
    )


async def test_the_continuation_follows_only_the_verified_number_and_limits_hold(
    env: tuple[WebEnv, ContinuityEngine],
) -> None:
    web, engine = env
    ws, _ = await connect(web)
    await say(ws, "rules-msg-001", "My son chipped a tooth - do you handle emergencies?")
    await ws.send_json({"type": "continue_by_text", "client_id": "rules-h-0001", "phone": NUMBER})
    assert await ws.receive_json(timeout=5) == {
        "type": "handoff",
        "mode": "sms",
        "client_id": "rules-h-0001",
        "ok": True,
    }
    await engine.tick()
    [(to, body)] = await texts(web)
    assert to == NUMBER
    assert "chipped" not in body  # nothing of the chat goes to a number that is only claimed
    code = re.search(r"type (\d{6}) in the chat", body)
    assert code, body
    # A second hand-off the same day: refused, and no rule reacts to it either.
    await ws.send_json({"type": "continue_by_text", "client_id": "rules-h-0002", "phone": "+12025550167"})
    assert (await ws.receive_json(timeout=5))["code"] == "handoff_limited"
    await engine.tick()
    assert len(await texts(web)) == 1
    # The code proves the number; then the continuation quoting the chat follows, to that number only.
    await ws.send_json({"type": "verify_code", "client_id": "rules-v-0001", "code": code.group(1)})
    assert (await ws.receive_json(timeout=5))["type"] == "verified"
    await engine.tick()
    sent = await texts(web)
    assert len(sent) == 2
    assert sent[1][0] == NUMBER
    assert "chipped a tooth" in sent[1][1]
    await ws.close()


async def test_an_sms_answer_to_the_confirmation_text_verifies_the_claim(
    env: tuple[WebEnv, ContinuityEngine],
) -> None:
    web, engine = env
    ws, _ = await connect(web)
    ack = await say(ws, "rules-msg-002", "Do you have time on Friday?")
    await ws.send_json({"type": "continue_by_text", "client_id": "rules-h-0003", "phone": NUMBER})
    assert (await ws.receive_json(timeout=5))["ok"] is True
    await engine.tick()
    assert len(await texts(web)) == 1
    answer = await web.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, NUMBER, "rules-sms-1", "Friday 3pm please")
    )
    visitor_conv = await web.store.read(
        lambda c: c.execute("SELECT conversation_id FROM events WHERE id = ?", (ack["event_id"],)).fetchone()[0]
    )
    assert answer.conversation_id == visitor_conv
    await ws.close()
