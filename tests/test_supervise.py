"""The shared reconnect helper: capped jittered backoff, one WARNING per outage, one INFO per recovery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path

import pytest

from gateway.errors import ConfigError, TransientError
from gateway.supervise import LinkState, TaskSet, backoff_delay, cancel_and_wait, reconnect_loop


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


async def test_a_config_error_stops_the_loop_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.supervise")
    attempts = 0

    async def connect(state: LinkState) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionRefusedError("refused")
        raise ConfigError("voice.ami_secret: Asterisk refused the login; set the secret from manager.conf")

    state = LinkState("ami")
    await asyncio.wait_for(reconnect_loop("ami", connect, base=0.001, cap=0.002, state=state), 5)
    assert attempts == 3, "retried while transient, stopped at the configuration problem"
    assert state.stopped
    assert not state.up
    assert state.last_error is not None
    assert "set the secret" in state.last_error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "stopped until its configuration is fixed" in errors[0].getMessage()


async def test_transient_errors_never_stop_the_loop() -> None:
    attempts = 0
    enough = asyncio.Event()

    async def connect() -> None:
        nonlocal attempts
        attempts += 1
        if attempts >= 20:
            enough.set()
        raise TransientError("modem busy")

    state = LinkState("modem")
    task = asyncio.create_task(reconnect_loop("modem", connect, base=0.0001, cap=0.0002, state=state))
    await asyncio.wait_for(enough.wait(), 5)
    assert not task.done()
    assert not state.stopped
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_cancel_and_wait_collects_the_tasks_cancellation_but_not_the_callers() -> None:
    inner = asyncio.create_task(asyncio.sleep(3600))
    failing = asyncio.create_task(_raise_soon())
    await asyncio.sleep(0.01)
    assert await cancel_and_wait(inner, failing, None) == []
    assert inner.cancelled()
    assert failing.done()
    assert not failing.cancelled()

    gate = asyncio.Event()

    async def stopper() -> None:
        stuck = asyncio.create_task(_ignore_cancel(gate))
        await asyncio.sleep(0)
        await cancel_and_wait(stuck)  # waits: the task ignores its cancellation until the gate opens

    outer = asyncio.create_task(stopper())
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    gate.set()


async def test_cancel_and_wait_abandons_a_stuck_task_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()
    stuck = asyncio.create_task(_ignore_cancel(gate), name="stuck-on-a-dead-modem")
    await asyncio.sleep(0)
    left = await cancel_and_wait(stuck, timeout=0.05, owner="sms")
    assert left == [stuck]
    assert any("stuck-on-a-dead-modem did not stop" in r.getMessage() for r in caplog.records)
    gate.set()
    await asyncio.wait([stuck])


async def test_task_set_owns_its_tasks_and_logs_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("part")
    tasks.spawn(asyncio.sleep(3600), "sleeper")
    crashed = tasks.spawn(_raise_soon(), "crasher")
    await asyncio.wait([crashed])
    await asyncio.sleep(0)
    assert len(tasks) == 1, "a finished task leaves the set"
    assert any("part: task crasher died" in r.getMessage() for r in caplog.records)
    assert await tasks.cancel_all() == []
    await asyncio.sleep(0)
    assert len(tasks) == 0


async def _raise_soon() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("boom")


async def _ignore_cancel(gate: asyncio.Event) -> None:
    while not gate.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await gate.wait()


def test_tasks_are_cancelled_one_way() -> None:
    """Parts stop their tasks with cancel_and_wait / TaskSet; a hand-written cancel-then-await block is flagged."""
    root = Path(__file__).resolve().parents[1] / "gateway"
    copied = re.compile(r"suppress\(asyncio\.CancelledError\)")
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "supervise.py":
            continue
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            awaits_after_cancel = ".cancel()" in line and any("await" in nxt for nxt in lines[n + 1 : n + 4])
            if copied.search(line) or awaits_after_cancel:
                offenders.append(f"{path.relative_to(root.parent)}:{n + 1}: {line.strip()}")
    assert offenders == [], "use gateway.supervise.cancel_and_wait (or a TaskSet) instead:\n" + "\n".join(offenders)
