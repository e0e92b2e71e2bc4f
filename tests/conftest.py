"""Shared fixtures: a real SQLite store in a temporary directory, the bus and the conversation service."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.store.db import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A started store on a fresh database file."""
    st = Store(tmp_path / "gateway.db")
    await st.start()
    try:
        yield st
    finally:
        await st.stop()


@pytest.fixture
def bus() -> Bus:
    """A fresh in-process bus."""
    return Bus()


@pytest.fixture
def service(store: Store, bus: Bus) -> ConversationService:
    """The conversation service over the real store, US numbering."""
    return ConversationService(store, bus, ServiceSettings(default_region="US", max_body_chars=10_000))


_EXIT_STATUS: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the run's status for the exit guard below."""
    _EXIT_STATUS["status"] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Never hang after the summary: name non-daemon threads a test left behind and exit with the run's status."""
    lingering = [
        t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if lingering and "status" in _EXIT_STATUS:
        sys.stderr.write(f"note: threads left running by tests: {', '.join(lingering)}; not waiting for them\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(_EXIT_STATUS["status"])
