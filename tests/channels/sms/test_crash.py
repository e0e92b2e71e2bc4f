"""kill -9 of a daemon process during an inbound burst and during outbound sending, then restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.emulator import ModemEmulator
from gateway.store.sms import pdu_hash

from .conftest import wait_for

DAEMON = Path(__file__).with_name("sms_daemon.py")
ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def _start(db: Path, device: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(DAEMON), "--db", str(db), "--device", device, *extra],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"ready", line
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def _count(db: Path, sql: str) -> int:
    """The single number a ``SELECT COUNT(*)`` answers (0 before the schema exists)."""
    rows = _query(db, sql)
    if not rows:
        return 0
    value = rows[0][0]
    assert isinstance(value, int), value
    return value


def _query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []  # schema not created yet
    finally:
        conn.close()


async def test_kill_during_inbound_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "ttyUSB0", command_delay=0.004, seed=3)
    emu.capacity["SM"] = 400
    violations: list[str] = []

    def check_stored_before_delete(storage: str, index: int, pdu: str) -> None:
        if not _query(db, "SELECT 1 FROM sms_inbound_parts WHERE pdu_hash = ?", pdu_hash(pdu)):
            violations.append(f"{storage}:{index} deleted before it was stored")

    emu.on_delete = check_stored_before_delete
    emu.start()
    expected: list[str] = []
    try:
        proc = _start(db, str(emu.link))
        for i in range(120):
            text = f"burst {i:03d} " + ("long 🎉 " * 12 if i % 10 == 0 else "short")
            expected.append(text)
            emu.deliver(f"+1555000{i % 7:04d}", text)
        for round_ in range(3):  # kill it three times while it drains
            target = 10 + 25 * round_
            await wait_for(
                lambda t=target: _count(db, "SELECT COUNT(*) FROM sms_inbound_parts") >= t,
                timeout=60,
            )
            _kill(proc)
            proc = _start(db, str(emu.link))
        await wait_for(
            lambda: _count(db, "SELECT COUNT(*) FROM events WHERE kind = 'message_in'") >= len(expected),
            timeout=90,
        )
        await wait_for(lambda: emu.stored("SM") == {}, timeout=60)  # every index deleted
        await asyncio.sleep(1.0)  # anything extra would show up now
        _kill(proc)
    finally:
        emu.stop()
    bodies = [str(r[0]) for r in _query(db, "SELECT body FROM events WHERE kind = 'message_in'")]
    assert sorted(bodies) == sorted(expected)  # nothing lost, nothing twice
    assert violations == []
    assert emu.stored("SM") == {}
    assert emu.delete_all_count == 0


async def test_kill_during_outbound_sending_never_resends_silently(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "ttyUSB0", send_delay=0.15, status_report_delay=None)
    emu.start()
    total = 30
    try:
        proc = _start(db, str(emu.link), "--enqueue", str(total))
        await wait_for(lambda: len(emu.sent) >= 8, timeout=60)
        _kill(proc)
        sent_at_kill = len(emu.sent)
        proc = _start(db, str(emu.link))
        await wait_for(
            lambda: (
                not _query(db, "SELECT 1 FROM outbox WHERE state IN ('queued', 'sending') AND body != ''")
                and _query(db, "SELECT COUNT(*) FROM outbox")[0][0] == total
            ),
            timeout=60,
        )
        await asyncio.sleep(0.5)
        _kill(proc)
    finally:
        emu.stop()
    rows = _query(db, "SELECT body, state, last_error FROM outbox ORDER BY id")
    assert len(rows) == total
    texts = [s.text for s in emu.sent]
    assert len(texts) == len(set(texts)), "a message went out twice"
    unknown = [r for r in rows if r[1] == "unknown"]
    assert len(unknown) <= 1
    for body, state, _ in rows:
        if state == "sent":
            assert body in texts
    for _, _, error in unknown:
        assert "may or may not" in str(error)
    # nothing lost: every message either went out or is flagged for a person to decide
    assert {r[0] for r in rows} == set(texts) | {r[0] for r in unknown}
    assert sent_at_kill < total
