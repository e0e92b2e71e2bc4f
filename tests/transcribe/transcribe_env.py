"""The test environment of the transcription tests: a real store, bus and conversation service."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.store import transcribe as q
from gateway.store.db import Store


@dataclass
class Env:
    """A running store + bus + conversation service."""

    tmp: Path
    store: Store
    bus: Bus
    service: ConversationService

    async def voicemail(self, path: Path, caller: str = "+82 10-1234-5678", ext: str | None = None) -> tuple[int, int]:
        """Put a voicemail event on the caller's timeline, as the voice channel does:
        (conversation_id, event_id)."""
        res = await self.service.ingest(
            Inbound(
                Channel.VOICE,
                EventKind.VOICEMAIL,
                IdentityKind.PHONE,
                caller,
                external_id=ext or f"vm-{path.name}-{time.monotonic_ns()}",
                meta={"path": str(path), "duration": 1.0},
            )
        )
        return res.conversation_id, res.event_id

    async def job(self, voicemail_event_id: int) -> q.TranscriptionJob:
        job = await self.store.read(lambda c: q.job_for_voicemail(c, voicemail_event_id))
        assert job is not None
        return job

    async def wait_status(
        self, voicemail_event_id: int, statuses: tuple[str, ...], within: float = 90.0
    ) -> q.TranscriptionJob:
        """Poll the store until the job reaches one of ``statuses``."""
        deadline = time.monotonic() + within
        while True:
            job = await self.store.read(lambda c: q.job_for_voicemail(c, voicemail_event_id))
            if job is not None and job.status in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job for event {voicemail_event_id} never reached {statuses}: {job}")
            await asyncio.sleep(0.05)
