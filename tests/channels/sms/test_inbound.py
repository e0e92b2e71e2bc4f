"""Reassembly properties of the inbound pipeline against the real store and service."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.channels.sms.inbound import InboundPipeline
from gateway.domain.bus import Bus
from gateway.domain.models import Inbound, IngestResult
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


class _FlakyService:
    """The real service, except that one sender's messages fail (a fake around a real peer)."""

    def __init__(self, real: ConversationService, bad_sender: str) -> None:
        self.real = real
        self.settings = real.settings
        self.bad_sender = bad_sender
        self.fail = True

    async def ingest(self, item: Inbound) -> IngestResult:
        if self.fail and item.identity_value == self.bad_sender:
            raise RuntimeError("conversation service unavailable")
        return await self.real.ingest(item)

    async def append_event(self, *args: Any, **kwargs: Any) -> int:
        return await self.real.append_event(*args, **kwargs)


async def test_one_failing_message_does_not_hold_up_the_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    bus = Bus()
    real = ConversationService(store, bus, ServiceSettings(default_region="US"))
    flaky = _FlakyService(real, "+15550000001")
    pipeline = InboundPipeline(store, flaky, bus)  # type: ignore[arg-type]  # ingest and append only
    try:
        items = [StoredPdu(i, 0, encode_deliver(f"+1555000000{i}", f"msg {i}", timestamp=T0)[0].hex) for i in range(3)]
        await pipeline.store_listing("sim-1", "SM", items)
        assert await pipeline.run_once() == 2
        assert await pipeline.run_once() == 0  # still failing, still kept
        flaky.fail = False
        assert await pipeline.run_once() == 1
        bodies = await store.read(lambda c: [r[0] for r in c.execute("SELECT body FROM events ORDER BY id").fetchall()])
        assert sorted(bodies) == ["msg 0", "msg 1", "msg 2"]
    finally:
        await store.stop()


async def test_very_long_message_is_shortened_on_the_timeline_but_kept_whole(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus, ServiceSettings(default_region="US", max_body_chars=500))
    pipeline = InboundPipeline(store, service, bus)
    text = "".join(f"{i:04d} " for i in range(200))  # 1000 characters, 7 parts
    try:
        pdus = encode_deliver("+15551234567", text, timestamp=T0)
        await pipeline.store_listing("sim-1", "SM", [StoredPdu(i, 0, p.hex) for i, p in enumerate(pdus)])
        assert await pipeline.run_once() == 1
        body, meta = await store.read(
            lambda c: c.execute("SELECT body, meta FROM events WHERE kind = 'message_in'").fetchone()
        )
        assert len(body) == 500
        assert body.startswith(text[:400])
        assert json.loads(meta)["truncated"] is True
        kept = await store.read(lambda c: c.execute("SELECT body FROM sms_messages").fetchone()[0])
        assert kept == text
    finally:
        await store.stop()
