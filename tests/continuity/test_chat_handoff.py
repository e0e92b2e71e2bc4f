"""'Continue by text' with the continuity rules running, through the real websocket: the chat channel's one
confirmation text (with the code, nothing of the chat) goes first; the hand-off limits hold, so no rule reacts to a
refused hand-off; the continuation that quotes the chat follows only once the number is verified.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.continuity.clock import ManualClock
from gateway.continuity.config import ContinuityConfig
from gateway.continuity.engine import ContinuityEngine, HoursSettings
from gateway.domain.calls import CallDirection, CallOutcome, CallRecord
from gateway.domain.events import CallEnded
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


async def test_call_me_at_a_picked_time_is_checked_by_the_gateway_and_booked_by_the_rules(
    env: tuple[WebEnv, ContinuityEngine],
) -> None:
    """The widget offers the slots the office can call; whatever time a (tampered or stale) page sends is checked
    again: a past moment, the lunch break, a closed day or quiet hours move to the first time the office can call,
    and the answer says so; a moment weeks away is refused. The booked moment becomes the rules' call-me job."""
    web, engine = env
    dialled: list[tuple[str, str, int]] = []

    async def dialer(extension: str, number: str, conversation_id: int) -> str:
        dialled.append((extension, number, conversation_id))
        return f"c2c-{len(dialled)}"

    ws, _ = await connect(web)
    # Without a voice channel no time can be booked: no slots, and a time is refused with a line to go on with.
    await ws.send_json({"type": "call_slots"})
    assert await ws.receive_json(timeout=5) == {"type": "call_slots", "slots": []}
    await ws.send_json({"type": "call_me", "client_id": "pick-000000", "phone": "+12025550190", "at": local(7, 14)})
    refused = await ws.receive_json(timeout=5)
    assert refused["code"] == "bad_time"
    assert "without a time" in refused["message"]
    await ws.close()

    engine.dialer = dialer
    # A voice channel but no extension to ring (a chat visitor's conversation has no owner): no time is promised.
    ws, _ = await connect(web)
    await ws.send_json({"type": "call_slots"})
    assert await ws.receive_json(timeout=5) == {"type": "call_slots", "slots": []}
    await ws.close()
    engine.config = replace(engine.config, call_me_extension="201", call_me_retries=0)
    engine.ctx = replace(engine.ctx, config=engine.config)
    assert isinstance(engine.clock, ManualClock)
    engine.clock.set(local(7, 12, 15))  # Monday, in the 12:00-13:30 lunch break
    ws, _ = await connect(web)
    await ws.send_json({"type": "call_slots"})
    slots = (await ws.receive_json(timeout=5))["slots"]
    assert slots[:4] == [local(7, 13, 30), local(7, 14), local(7, 14, 30), local(7, 15)]
    assert len(slots) == 8
    for bad in ("soon", True, "1e999"):
        frame = json.dumps({"type": "call_me", "client_id": "pick-bad-01", "phone": "+12025550190", "at": bad})
        await ws.send_str(frame.replace('"1e999"', "1e999"))  # JSON allows a number too large for a float
        assert (await ws.receive_json(timeout=5))["code"] == "bad_time"
    await ws.send_json(
        {"type": "call_me", "client_id": "pick-far-01", "phone": "+12025550190", "at": local(7, 10) + 30 * 86400}
    )
    far = await ws.receive_json(timeout=5)
    assert far["code"] == "bad_time"
    assert far["message"] == "Sorry, please pick a time within the next 14 days."
    await ws.close()

    cases = [
        (local(7, 14), local(7, 14), None),  # a slot as offered
        (local(7, 9), local(7, 13, 30), "past"),  # the page was left open since the morning
        (local(7, 12, 45), local(7, 13, 30), "closed"),  # the lunch break
        (local(7, 22), local(8, 8), "closed"),  # quiet hours and closed: Tuesday's opening
        (local(12, 10), local(14, 8), "closed"),  # Saturday: Monday's opening
    ]
    for i, (asked, booked, moved) in enumerate(cases):
        ws, _ = await connect(web)  # one call-back per visitor per day: a new visitor each
        number = f"+1202555019{i}"
        await ws.send_json({"type": "call_me", "client_id": f"pick-ok-{i:04d}", "phone": number, "at": asked})
        answer = await ws.receive_json(timeout=5)
        assert answer["type"] == "handoff", answer
        assert answer["at"] == booked, (asked, answer)
        assert answer.get("moved") == moved, (asked, answer)
        # The same request again (a reload, a double click): the same booked moment, nothing booked twice.
        await ws.send_json({"type": "call_me", "client_id": f"pick-ok-{i:04d}", "phone": number, "at": asked})
        again = await ws.receive_json(timeout=5)
        assert (again["type"], again["at"]) == ("handoff", booked), again
        await ws.close()
        await engine.tick()
    jobs = await web.store.read(
        lambda c: c.execute(
            "SELECT due_at, json_extract(payload, '$.to') FROM continuity_jobs WHERE rule = 'call_me' ORDER BY id"
        ).fetchall()
    )
    assert jobs == [(booked, f"+1202555019{i}") for i, (_a, booked, _m) in enumerate(cases)]
    decisions = await web.store.read(
        lambda c: c.execute(
            "SELECT json_extract(meta, '$.reason') FROM events WHERE kind = 'automated'"
            " AND json_extract(meta, '$.rule') = 'call_me' ORDER BY id"
        ).fetchall()
    )
    assert decisions[0] == ("the visitor picked a call-back time in the chat: due at 14:00",)
    # At the picked moment the owner's phone is rung first, then the number the visitor typed.
    engine.clock.set(local(7, 14))
    await engine.tick()
    # Nobody answered: the visitor is told in the chat; the number only typed there gets no text.
    first = dialled[0]
    record = CallRecord(first[0], CallDirection.OUTBOUND, "201", "", first[1], local(7, 14), outcome=CallOutcome.MISSED)
    engine._call_results.append(CallEnded("c2c-1", first[1], first[2], CallOutcome.MISSED, record))
    await engine.tick()
    told = await web.store.read(
        lambda c: c.execute(
            "SELECT channel, json_extract(meta, '$.automated') FROM events WHERE kind = 'message_out'"
            " AND conversation_id = ? AND body LIKE 'We tried to call you back%'",
            (first[2],),
        ).fetchall()
    )
    assert told == [("chat", 1)]
    assert await texts(web) == []
    assert sorted(d[:2] for d in dialled) == [("201", "+12025550190"), ("201", "+12025550191"), ("201", "+12025550192")]
