"""Subprocess for the crash test: ingests events through the real service and prints each acknowledged one.

Usage: python crash_ingester.py DB START COUNT CONCURRENCY
Prints "ACK <external_id>" (flushed) only after ``ingest`` returned, i.e. after the durable commit.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.store.db import Store


async def main(db: str, start: int, count: int, concurrency: int) -> None:
    store = Store(db)
    await store.start()
    service = ConversationService(store, Bus())
    out = sys.stdout
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            ext = f"crash-{i}"
            item = Inbound(
                Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, f"+1555{i % 50:07d}", ext, f"body {i}"
            )
            await service.ingest(item)
            out.write(f"ACK {ext}\n")
            out.flush()

    await asyncio.gather(*(one(i) for i in range(start, start + count)))
    await store.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
