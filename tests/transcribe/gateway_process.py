"""A minimal gateway (store, bus, conversation service, transcriber) in its own process to kill.

Usage: python gateway_process.py DB MODEL_DIR. Prints ``workers PID...`` once its workers are up,
then runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService
from gateway.store.db import Store
from gateway.transcribe.config import TranscribeConfig
from gateway.transcribe.service import TranscriptionService


async def main(db: str, model: str) -> None:
    store = Store(db)
    await store.start()
    bus = Bus()
    svc = TranscriptionService(store, ConversationService(store, bus), bus, TranscribeConfig(model_path=model))
    await svc.start()
    while not (health := await svc.snapshot()).workers_alive:
        await asyncio.sleep(0.05)
    print("workers", *health.worker_pids, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
