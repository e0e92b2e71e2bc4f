"""Fixtures: a real store, bus and conversation service, and the modem emulator on a real pty."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.channels.sms.channel import SmsChannel
from gateway.channels.sms.config import SmsConfig
from gateway.config import Secret
from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.emulator import ModemEmulator
from gateway.store.db import Store

FAST = {
    "poll_interval": 1.0,
    "probe_interval": 1.0,
    "command_timeout": 2.0,
    "multipart_timeout": 2.0,
    "retry_base": 0.2,
    "retry_cap": 0.5,
}


async def wait_for(
    predicate: Callable[[], Awaitable[Any]] | Callable[[], Any],
    timeout: float = 15.0,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        await asyncio.sleep(0.05)


class Rig:
    """Everything one SMS test needs, wired as the daemon wires it."""

    def __init__(self, tmp: Path, store: Store, bus: Bus, service: ConversationService) -> None:
        self.tmp = tmp
        self.store = store
        self.bus = bus
        self.service = service
        self.channels: list[SmsChannel] = []

    async def channel(self, device: str, **overrides: Any) -> SmsChannel:
        profile = overrides.pop("profile", "huawei-e3372")
        pin = overrides.pop("pin", "")
        cfg = SmsConfig(enabled=True, device=device, profile=profile, pin=Secret(pin), **{**FAST, **overrides})
        ch = SmsChannel(cfg, self.store, self.service, self.bus, region="US")
        await ch.start()
        self.channels.append(ch)
        return ch

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.tmp / "gw.db")
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def inbound_bodies(self) -> list[str]:
        return [
            r[0] for r in self.rows("SELECT body FROM events WHERE kind = 'message_in' AND channel = 'sms' ORDER BY id")
        ]

    def outbox(self, outbox_id: int) -> dict[str, Any]:
        conn = sqlite3.connect(self.tmp / "gw.db")
        try:
            cur = conn.execute("SELECT * FROM outbox WHERE id = ?", (outbox_id,))
            row = cur.fetchone()
            return dict(zip([d[0] for d in cur.description], row, strict=True))
        finally:
            conn.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = Store(tmp_path / "gw.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus, ServiceSettings(default_region="US"))
    r = Rig(tmp_path, store, bus, service)
    try:
        yield r
    finally:
        for ch in r.channels:
            await ch.stop()
        await store.stop()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ModemEmulator]:
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev" / "ttyUSB0", seed=7)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
