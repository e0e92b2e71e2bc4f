"""Reassembly properties of the inbound pipeline against the real store and service."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.channels.sms.inbound import InboundPipeline
from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.protocols.at import StoredPdu
from gateway.protocols.pdu import encode_deliver
from gateway.store.db import Store

T0 = 1_780_000_000.0


async def _run_pipeline(tmp: Path, batches: list[list[str]], *, flush_incomplete: bool) -> list[tuple[str, str]]:
    store = Store(tmp / "gw.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus, ServiceSettings(default_region="US"))
    pipeline = InboundPipeline(store, service, bus, multipart_timeout=3600.0)
    try:
        index = 0
        for batch in batches:  # each batch is one SIM listing; the pipeline runs between them
            items = []
            for pdu in batch:
                items.append(StoredPdu(index, 0, pdu))
                index += 1
            await pipeline.store_listing("sim-1", "SM", items)
            await pipeline.run_once()
        if flush_incomplete:
            pipeline.multipart_timeout = -1.0
            await pipeline.run_once()

        def rows(c: sqlite3.Connection) -> list[tuple[str, str]]:
            return c.execute("SELECT body, meta FROM events WHERE kind = 'message_in' ORDER BY id").fetchall()

        return await store.read(rows)
    finally:
        await store.stop()


@given(
    text=st.text(min_size=1, max_size=600),
    ref_bits=st.sampled_from([8, 16]),
    rnd=st.randoms(use_true_random=False),
    lose=st.booleans(),
    dup=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_reassembly_under_shuffle_duplicates_and_loss(
    text: str, ref_bits: int, rnd: random.Random, lose: bool, dup: bool
) -> None:
    parts = [p.hex for p in encode_deliver("+15551234567", text, timestamp=T0, ref_bits=ref_bits)]
    arriving = list(parts)
    lost: set[int] = set()
    if lose and len(parts) > 1:
        lost = {rnd.randrange(len(parts))}
        arriving = [p for i, p in enumerate(parts) if i not in lost]
    if dup:
        arriving.append(rnd.choice(arriving))
    rnd.shuffle(arriving)
    cut = rnd.randrange(len(arriving) + 1)
    batches = [arriving[:cut], arriving[cut:]]
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(_run_pipeline(Path(tmp), batches, flush_incomplete=bool(lost)))
    assert len(rows) == 1, rows  # one message, never dropped, never twice
    body, meta_json = rows[0]
    meta = json.loads(meta_json)
    assert meta["parts"] == len(parts)
    if not lost:
        assert body == text
        assert "incomplete" not in meta
    else:
        assert meta["incomplete"] is True
        assert meta["parts_missing"] == 1
        missing = next(iter(lost)) + 1
        assert f"[part {missing} of {len(parts)} missing]" in body


def test_incomplete_set_waits_until_the_timeout(tmp_path: Path) -> None:
    parts = [p.hex for p in encode_deliver("+15551234567", "z" * 400, timestamp=T0)]
    rows = asyncio.run(_run_pipeline(tmp_path, [parts[:2]], flush_incomplete=False))
    assert rows == []  # still waiting for part 3: not delivered early, not dropped
