"""Shared fixtures: a real SQLite store in a temporary directory, the bus and the conversation service."""

from __future__ import annotations

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
