"""Crash safety: SIGKILL an ingesting process at random moments, many times; nothing acknowledged is lost."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_acknowledged_events_survive_sigkill_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(20261125)
    acked: list[str] = []
    next_id = 0
    rounds = 25
    for _ in range(rounds):
        # Each round re-sends some ids of the previous one as well: ingest must stay idempotent across crashes.
        start = max(0, next_id - 50)
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "crash_ingester.py"), str(db), str(start), "2000", "64"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
        )
        time.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        acked.extend(line.split()[1] for line in out.splitlines() if line.startswith("ACK "))
        next_id = start + 2000
    assert len(acked) > 1000, f"too few acknowledgements to mean anything ({len(acked)})"

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(
            conn.execute("SELECT external_id, COUNT(*) FROM events WHERE channel = 'sms' GROUP BY external_id")
        )
        fts = conn.execute("SELECT COUNT(*) FROM events_fts WHERE events_fts MATCH 'body'").fetchone()[0]
        total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    missing = [ext for ext in set(acked) if ext not in counts]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:5]}"
    assert all(n == 1 for n in counts.values()), "an event was stored twice"
    assert fts == total, "the full-text index matches the events table"
