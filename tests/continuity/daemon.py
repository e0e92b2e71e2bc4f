"""The whole daemon (``gateway.app.App``) for journey tests: real store, SMS channel on the pty modem emulator,
optionally the voice channel on the shared test Asterisk, the spine learner and the continuity engine on a
hand-moved clock (or wall time for black-box runs)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import config as cfgmod
from gateway.app import App
from gateway.continuity.clock import Clock
from gateway.emulator import ModemEmulator
from tests.continuity.conftest import HOURS, TZ

FAST_SMS = {
    "poll_interval": 1.0,
    "probe_interval": 1.0,
    "command_timeout": 2.0,
    "multipart_timeout": 2.0,
    "retry_base": 0.2,
    "retry_cap": 0.5,
}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def config_text(sections: dict[str, dict[str, Any]]) -> str:
    """TOML for a config given as {section: {key: value}}."""
    out = []
    for name, table in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {_toml(v)}" for k, v in table.items())
    return "\n".join(out) + "\n"


def build_config(
    tmp: Path, emulator: ModemEmulator, *, voice: dict[str, Any] | None = None, **sections: dict[str, Any]
) -> cfgmod.Config:
    """A daemon config: SMS on the emulator, web on a free port, business hours with a lunch break."""
    base: dict[str, dict[str, Any]] = {
        "gateway": {"data_dir": str(tmp), "shutdown_timeout": 5.0},
        "sms": {"enabled": True, "device": str(emulator.link), "profile": "huawei-e3372", **FAST_SMS},
        "voice": {"enabled": False, **(voice or {})},
        "transcribe": {"enabled": False},
        "web": {
            "port": 0,
            "secure_cookies": False,
            "timezone": TZ,
            "business_hours": HOURS,
            "business_name": "Bright Smile Dental",
            "voicemail_dir": str(tmp / "vm"),
        },
        # Off unless a test turns it on: journeys move the rules' clock across days and would collect staff-only
        # stalled-thread alerts they do not look at.
        "continuity": {"stalled_enabled": False},
    }
    if voice:
        base["voice"]["enabled"] = True
    for name, table in sections.items():
        base.setdefault(name, {}).update(table)
    return cfgmod.parse(config_text(base), "journey.toml")


class Daemon:
    """Start, stop and restart one gateway daemon on a fixed data directory."""

    def __init__(self, config: cfgmod.Config, clock: Clock | None) -> None:
        self.config = config
        self.clock = clock
        self.app: App | None = None

    async def start(self) -> App:
        self.app = App(self.config, continuity_clock=self.clock)
        await self.app.start()
        if self.app.sms is not None:
            await wait_for(lambda: self.app is not None and self.app.sms.modem_state.connected, 20)
        return self.app

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.stop()
            self.app = None

    @property
    def url(self) -> str:
        """The running daemon's web address (``http://127.0.0.1:<port>``)."""
        assert self.app is not None, "the daemon is not running"
        assert self.app.web is not None, "the daemon runs without its web server"
        return self.app.web.url

    async def restart(self) -> App:
        await self.stop()
        return await self.start()

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.config.db_path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def decisions(self, rule: str | None = None) -> list[tuple[str, str, str]]:
        rows = self.rows(
            "SELECT json_extract(meta, '$.rule'), json_extract(meta, '$.decision'), json_extract(meta, '$.reason')"
            " FROM events WHERE kind = 'automated' ORDER BY id"
        )
        return [r for r in rows if rule is None or r[0] == rule]

    async def settle(self, seconds: float = 0.5) -> None:
        """Let the engine and the SMS channel work through what is pending (no clock movement)."""
        await asyncio.sleep(seconds)


async def wait_for(predicate: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Poll until ``predicate`` is truthy; fail the test on timeout."""
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
