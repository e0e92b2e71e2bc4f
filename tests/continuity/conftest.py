"""Fixtures: a real store, bus and conversation service, the continuity engine on a hand-moved clock."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.continuity.clock import ManualClock
from gateway.continuity.config import ContinuityConfig
from gateway.continuity.engine import ContinuityEngine, HoursSettings
from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.store.db import Store

TZ = "America/New_York"
CUSTOMER = "+12025550143"
HOURS = {
    "mon": "08:00-12:00, 13:30-18:00",
    "tue": "08:00-12:00, 13:30-18:00",
    "wed": "08:00-12:00, 13:30-18:00",
    "thu": "08:00-12:00, 13:30-18:00",
    "fri": "08:00-12:00, 13:30-18:00",
}


def local(day: int, hour: int, minute: int = 0) -> float:
    """Unix time of December ``day`` 2026 at hour:minute in the business time zone (Dec 7 is a Monday)."""
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=ZoneInfo(TZ)).timestamp()


class Rig:
    """Store + service + engine, wired as the daemon wires them."""

    def __init__(self, path: Path, clock: ManualClock, config: ContinuityConfig) -> None:
        self.path = path
        self.clock = clock
        self.config = config
        self.store = Store(path)
        self.bus = Bus()
        self.service = ConversationService(self.store, self.bus, ServiceSettings(default_region="US"))
        self.engine = self._engine()
        self._n = 0

    def _engine(self) -> ContinuityEngine:
        return ContinuityEngine(
            self.config,
            self.service,
            self.store,
            self.bus,
            HoursSettings(TZ, HOURS, "Bright Smile Dental"),
            clock=self.clock,
        )

    async def start(self) -> None:
        await self.store.start()
        await self.engine.prepare()

    async def restart(self, **config_changes: Any) -> None:
        """Stop everything and start a new store and engine on the same database file (a daemon restart)."""
        await self.engine.stop()
        await self.store.stop()
        if config_changes:
            self.config = replace(self.config, **config_changes)
        self.store = Store(self.path)
        self.bus = Bus()
        self.service = ConversationService(self.store, self.bus, ServiceSettings(default_region="US"))
        self.engine = self._engine()
        await self.start()

    async def stop(self) -> None:
        await self.engine.stop()
        await self.store.stop()

    async def inbound(
        self,
        kind: EventKind,
        channel: Channel = Channel.VOICE,
        body: str = "",
        number: str = CUSTOMER,
        visitor: str = "",
        **meta: Any,
    ) -> int:
        """Something the customer did; returns the conversation id."""
        self._n += 1
        ident = (IdentityKind.PHONE, number) if number else (IdentityKind.SIP, f"withheld:{self._n}")
        if visitor:
            ident = (IdentityKind.CHAT, visitor)
        result = await self.service.ingest(
            Inbound(
                channel=channel,
                kind=kind,
                identity_kind=ident[0],
                identity_value=ident[1],
                external_id=f"t{self._n}",
                body=body,
                meta={"direction": "inbound", **meta},
            )
        )
        await self.engine.tick()
        return result.conversation_id

    async def at(self, moment: float) -> None:
        """Move the clock and let the engine act."""
        self.clock.set(moment)
        await self.engine.tick()

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def texts(self) -> list[str]:
        """Bodies of automated messages queued, oldest first."""
        return [r[0] for r in self.rows("SELECT body FROM outbox WHERE automated = 1 ORDER BY id")]

    def decisions(self, rule: str | None = None) -> list[tuple[str, str, str]]:
        """(rule, decision, reason) of every automated timeline entry."""
        rows = self.rows(
            "SELECT json_extract(meta, '$.rule'), json_extract(meta, '$.decision'), json_extract(meta, '$.reason')"
            " FROM events WHERE kind = 'automated' ORDER BY id"
        )
        return [r for r in rows if rule is None or r[0] == rule]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path / "gw.db", ManualClock(local(7, 10)), ContinuityConfig())
    await r.start()
    try:
        yield r
    finally:
        await r.stop()
