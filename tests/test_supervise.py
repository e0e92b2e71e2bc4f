"""The shared reconnect helper: capped jittered backoff, one WARNING per outage, one INFO per recovery."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from gateway.supervise import LinkState, backoff_delay, reconnect_loop


def test_backoff_is_capped_and_jittered() -> None:
    delays = [backoff_delay(n, base=0.5, cap=4.0) for n in range(1, 40) for _ in range(20)]
    assert max(delays) <= 4.0
    assert min(delays) >= 0.0
    assert len({round(d, 6) for d in delays}) > 100, "jitter spreads reconnects"
    first = [backoff_delay(1, base=0.5, cap=30.0) for _ in range(200)]
    assert max(first) <= 0.5


async def test_logs_once_per_outage_and_once_per_recovery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.supervise")
    attempts = 0
    up = asyncio.Event()

    async def connect(state: LinkState) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 6:
            raise ConnectionRefusedError("refused")
        state.mark_up()
        up.set()
        await asyncio.Event().wait()  # healthy until cancelled

    state = LinkState("test-link")
    task = asyncio.create_task(reconnect_loop("test-link", connect, base=0.001, cap=0.005, state=state))
    await asyncio.wait_for(up.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert attempts == 6
    assert len(warnings) == 1
    assert "test-link is down" in warnings[0].getMessage()
    assert len(infos) == 1
    assert "is back after 5 failed" in infos[0].getMessage()
    assert state.up


async def test_cancellation_is_not_swallowed() -> None:
    started = asyncio.Event()

    async def connect() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(reconnect_loop("c", connect))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
