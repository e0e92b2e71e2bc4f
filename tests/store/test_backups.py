"""Backups and upgrades with real SQLite files: scheduled online backups with retention, the restore drill under
write load, a backup before every schema migration, and a downgrade refused with the version that wrote the file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import __version__
from gateway import config as config_mod
from gateway.app import App
from gateway.errors import SchemaTooNewError
from gateway.store import db as db_mod
from gateway.store.backup import BackupScheduler, check_copy
from gateway.store.db import Store, schema_version
from gateway.values import HealthState

ROOT = Path(__file__).resolve().parents[2]


def _insert(value: str):  # type: ignore[no-untyped-def]
    def op(conn: sqlite3.Connection) -> int:
        cur = conn.execute("INSERT INTO audit_log(at, actor, action, subject) VALUES (0, 'load', 'w', ?)", (value,))
        return int(cur.lastrowid or 0)

    return op


def rows(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM audit_log WHERE actor = 'load'").fetchone()[0])
    finally:
        conn.close()


def gw(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )  # fmt: skip


async def test_scheduled_backups_keep_the_newest_and_report_health(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.db")
    await store.start()
    now = [1_000_000.0]
    sched = BackupScheduler(store, tmp_path / "backups", interval=3600, keep=3, clock=lambda: now[0])
    try:
        assert sched.due_in() == 0.0
        made = []
        for i in range(5):
            await store.write(_insert(f"row {i}"))
            made.append(await sched.backup_now())
            os.utime(made[-1], (now[0], now[0]))
            now[0] += 3600
        left = sorted(p.name for p in (tmp_path / "backups").glob("*.db"))
        assert left == sorted(p.name for p in made[-3:])  # the two oldest were deleted
        for path in made[-3:]:
            assert path.stat().st_mode & 0o777 == 0o600
            assert check_copy(path) == "ok"
        assert rows(made[-1]) == 5
        now[0] = made[-1].stat().st_mtime + 600
        assert sched.health().state is HealthState.OK
        assert 0 < sched.due_in() <= 3600
        now[0] += 4 * 3600
        late = sched.health()
        assert late.state is HealthState.DEGRADED
        assert "h old" in late.cause
        sched.last_error, sched.last_error_at = "disk full", now[0]
        failed = sched.health()
        assert failed.state is HealthState.DOWN
        assert "free disk space" in failed.fix
    finally:
        await store.stop()


async def test_the_daemon_backs_up_at_start_and_on_schedule(tmp_path: Path) -> None:
    cfg = config_mod.parse(
        f'[gateway]\ndata_dir = "{tmp_path}"\n[store]\nbackup_interval_hours = 0.0003\nbackup_keep = 2\n'
        "[voice]\nenabled = false\n[transcribe]\nenabled = false\n[web]\nport = 0\n"
    )
    app = App(cfg)
    await app.start()
    try:
        deadline = time.monotonic() + 20
        while len(list((tmp_path / "backups").glob("gateway-auto-*.db"))) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        backup = next(h for h in app.health() if h.name == "backup")
        assert backup.state is HealthState.OK
        assert backup.details["keep"] == 2
    finally:
        await app.stop()
    assert len(list((tmp_path / "backups").glob("gateway-auto-*.db"))) <= 2


async def test_restore_drill_under_write_load(tmp_path: Path) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n')
    db = tmp_path / "data" / "gateway.db"
    store = Store(db)
    await store.start()
    stop = asyncio.Event()
    written = 0

    async def load() -> None:
        nonlocal written
        while not stop.is_set():
            await asyncio.gather(*(store.write(_insert(f"{written}-{i}")) for i in range(20)))
            written += 20
            await asyncio.sleep(0)

    writer = asyncio.create_task(load())
    await asyncio.sleep(0.3)
    before = written
    backup = tmp_path / "drill.db"
    done = await asyncio.to_thread(gw, "--config", str(conf), "db", "backup", str(backup), cwd=tmp_path)
    during = written
    await asyncio.sleep(0.3)
    stop.set()
    await writer
    await store.stop()
    assert done.returncode == 0, done.stderr
    assert "integrity ok" in done.stdout
    assert during > before  # the daemon's writes went on while the backup ran
    copied = rows(backup)
    assert before <= copied <= during
    assert rows(db) == written > copied
    restored = await asyncio.to_thread(gw, "--config", str(conf), "db", "restore", str(backup), "--yes", cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert rows(db) == copied
    assert check_copy(db) == "ok"
    again = Store(db)
    await again.start()
    try:
        await again.write(_insert("after the restore"))
    finally:
        await again.stop()
    assert rows(db) == copied + 1


async def test_a_newer_gateway_backs_up_before_migrating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g.db"
    # The previous release: every migration but the newest.
    everything = db_mod._migrations()
    monkeypatch.setattr(db_mod, "_migrations", lambda: everything[:-1])
    store = Store(path)
    await store.start()
    await store.write(_insert("precious"))
    await store.stop()
    monkeypatch.undo()
    upgraded = Store(path, backup_dir=tmp_path / "backups")
    await upgraded.start()
    await upgraded.stop()
    previous = everything[-2][0]
    (copy,) = (tmp_path / "backups").glob(f"gateway-schema{previous}-before-{schema_version()}-*.db")
    assert copy.stat().st_mode & 0o777 == 0o600
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == previous
    conn.close()
    assert rows(copy) == 1
    # Nothing to migrate: no further copy.
    again = Store(path, backup_dir=tmp_path / "backups")
    await again.start()
    await again.stop()
    assert len(list((tmp_path / "backups").glob("*.db"))) == 1


async def test_a_downgrade_is_refused_naming_the_version_that_wrote_the_database(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    store = Store(path)
    await store.start()
    await store.stop()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM gateway_meta WHERE key = 'written_by'").fetchone()[0] == __version__
    conn.execute("UPDATE gateway_meta SET value = '9.4.1' WHERE key = 'written_by'")
    conn.execute(f"PRAGMA user_version = {schema_version() + 3}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNewError) as err:
        await Store(path).start()
    assert f"written by gateway 9.4.1; this gateway ({__version__}) only knows up to {schema_version()}" in str(
        err.value
    )
