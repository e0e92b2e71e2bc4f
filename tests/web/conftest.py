"""Fixtures for the web layer: a real store, bus and conversation service behind the aiohttp test client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService
from gateway.store.db import Store
from gateway.web.app import build_app
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps
from gateway.web.pages import create_staff_user

ALWAYS_OPEN = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00-23:59")
PASSWORD = "correct horse battery"


@dataclass
class WebEnv:
    """One running web app with its real dependencies."""

    client: TestClient[Any, Any]
    store: Store
    bus: Bus
    service: ConversationService
    deps: WebDeps
    tmp: Path
    csrf: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    async def login(self, username: str = "alice", password: str = PASSWORD) -> ClientResponse:
        """Log in through the real form (CSRF double-submit) and remember the console CSRF token."""
        page = await self.client.get("/login")
        token = csrf_from(await page.text(), 'name="csrf_token" value="')
        resp = await self.client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": token, "next": "/console"},
            allow_redirects=False,
        )
        if resp.status == 302:
            console = await self.client.get("/console")
            self.csrf = csrf_from(await console.text(), '<meta name="csrf-token" content="')
        return resp

    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf}


def csrf_from(html: str, marker: str) -> str:
    m = re.search(re.escape(marker) + r'([^"]+)"', html)
    assert m, f"no CSRF token in page: {html[:300]}"
    return m.group(1)


async def make_env(tmp_path: Path, **config: Any) -> tuple[WebEnv, Store]:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    settings: dict[str, Any] = {
        "secure_cookies": False,
        "business_hours": ALWAYS_OPEN,
        "quiet_hours": "",
        "voicemail_dir": str(tmp_path / "voicemail"),
    }
    sms_available = bool(config.pop("sms_available", True))
    settings.update(config)
    calls: list[tuple[str, str]] = []

    async def click_to_call(extension: str, number: str) -> None:
        calls.append((extension, number))

    deps = WebDeps(
        service=service,
        store=store,
        bus=bus,
        config=WebConfig(**settings),
        click_to_call=click_to_call,
        sms_available=sms_available,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(deps), host="127.0.0.1"))
    await client.start_server()
    env = WebEnv(client, store, bus, service, deps, tmp_path, calls=calls)
    await create_staff_user(store, "alice", PASSWORD, display_name="Alice Kim", extension="201", role="admin")
    await create_staff_user(store, "bob", PASSWORD, display_name="Bob Lee", extension="202")
    return env, store


@pytest.fixture
async def web_env(tmp_path: Path) -> AsyncIterator[WebEnv]:
    env, store = await make_env(tmp_path)
    try:
        yield env
    finally:
        await env.client.close()
        await store.stop()
