"""Webhooks through real HTTP: redirects are never followed, and logs show only scheme and host."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import gateway.web.webhooks as wh
from gateway.config import Secret
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound

from .conftest import make_env


async def test_a_redirecting_webhook_is_not_followed_and_not_logged_in_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stolen: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        stolen.append(await request.read())
        return web.Response(text="thanks")

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    receiver.router.add_post("/elsewhere", elsewhere)
    receiver.router.add_get("/elsewhere", elsewhere)
    server = TestServer(receiver, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/hook")) + "?key=SECRET-IN-QUERY"
    caplog.set_level(logging.DEBUG)
    env, store = await make_env(
        tmp_path, webhook_urls=[url], webhook_secret=Secret("s3cret-key"), webhook_max_attempts=2
    )
    original = wh.retry_delay
    wh.retry_delay = lambda attempts, **_: 0.05
    try:
        await env.service.ingest(
            Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550190", "wh-1", "hi")
        )

        async def state() -> list[tuple[str, str]]:
            return await store.read(lambda c: c.execute("SELECT state, last_error FROM webhook_deliveries").fetchall())

        for _ in range(200):
            rows = await state()
            if rows and rows[0][0] == "failed":
                break
            await asyncio.sleep(0.05)
        rows = await state()
        assert rows
        assert rows[0][0] == "failed"
        assert "redirect refused" in rows[0][1]
        assert stolen == []
        messages = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
        given_up = [m for m in messages if "given up" in m]
        assert given_up
        assert f"to http://127.0.0.1:{server.port} " in given_up[0]
        assert not [m for m in messages if "SECRET-IN-QUERY" in m or "/hook" in m]
    finally:
        wh.retry_delay = original
        await env.client.close()
        await store.stop()
        await server.close()


def test_origin_keeps_scheme_host_and_port_only() -> None:
    assert wh.origin("https://user:pw@crm.example:8443/in/hook?token=x#y") == "https://crm.example:8443"
    assert wh.origin("http://[2001:db8::1]/h") == "http://[2001:db8::1]"
