"""Request bodies through a real socket: read whole across TCP segments, deep nesting refused cleanly."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.errors import ValidationError
from gateway.web.security import json_depth_exceeds, parse_json_object

from .conftest import WebEnv


async def _send_token(env: WebEnv) -> str:
    await env.login()
    resp = await env.client.post(
        "/api/v1/tokens", json={"name": "raw", "scopes": ["read", "send"]}, headers=env.headers()
    )
    return str((await resp.json())["token"])


async def test_a_body_arriving_in_two_tcp_segments_is_read_whole(web_env: WebEnv) -> None:
    r = await web_env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550121", "seg-1", body="hi")
    )
    token = await _send_token(web_env)
    note = "a note long enough to be split: " + "x" * 3000
    body = json.dumps({"body": note}).encode()
    head = (
        f"POST /api/v1/conversations/{r.conversation_id}/notes HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    server = web_env.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(head + body[:1000])
    await writer.drain()
    await asyncio.sleep(0.3)  # the handler is already reading: the rest arrives in a later segment
    writer.write(body[1000:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
    notes = [e.body for e in await web_env.service.timeline(r.conversation_id) if e.kind == "note"]
    assert notes == [note]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
)
async def test_deeply_nested_json_is_a_clean_400(web_env: WebEnv, body: bytes) -> None:
    r = await web_env.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550122", "deep-1", body="hi")
    )
    await web_env.login()
    resp = await web_env.client.post(
        f"/api/v1/conversations/{r.conversation_id}/notes",
        data=body[: 64 * 1024 - 1] if len(body) > 64 * 1024 else body,
        headers={**web_env.headers(), "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert "nested deeper than 64 levels" in (await resp.json())["error"]


def test_depth_check_ignores_brackets_in_strings() -> None:
    assert not json_depth_exceeds(json.dumps({"body": "[" * 500 + "{" * 500}))
    tricky = {"body": 'a quote \\" then ' + "[" * 200}  # an escaped quote does not end the string
    assert parse_json_object(json.dumps(tricky)) == tricky
    assert json_depth_exceeds("[" * 65 + "]" * 65)
    assert not json_depth_exceeds("[" * 64 + "]" * 64)
    with pytest.raises(ValidationError, match="nested deeper"):
        parse_json_object("[" * 5000)
