"""The gateway command as an operator uses it: real subprocesses, real files, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def gw(*args: str, cwd: Path, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\nshutdown_timeout = 5.0\n'
        f"[voice]\nenabled = false\n[transcribe]\nenabled = false\n"
        f"[web]\nport = {free_port()}\n"
    )
    return path


def test_version_and_help_everywhere(tmp_path: Path) -> None:
    out = gw("version", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.startswith("gateway ")
    for args in (
        [],
        ["run"],
        ["check-config"],
        ["show-config"],
        ["db"],
        ["db", "migrate"],
        ["db", "backup"],
        ["db", "restore"],
        ["staff", "add"],
        ["doctor"],
    ):
        res = gw(*args, "--help", cwd=tmp_path)
        assert res.returncode == 0, (args, res.stderr)
        assert "usage: gateway" in res.stdout


def test_usage_errors_exit_64(tmp_path: Path) -> None:
    assert gw("frobnicate", cwd=tmp_path).returncode == 64
    assert gw(cwd=tmp_path).returncode == 64


def test_check_config_exit_codes(tmp_path: Path, conf: Path) -> None:
    ok = gw("--config", str(conf), "check-config", cwd=tmp_path)
    assert ok.returncode == 0
    assert "configuration OK" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[web]\nprot = 80\n")
    res = gw("--config", str(bad), "check-config", cwd=tmp_path)
    assert res.returncode == 78
    assert "web.prot" in res.stderr
    assert "did you mean 'port'" in res.stderr
    assert str(bad) in res.stderr


def test_show_config_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[voice]\nami_secret = "s3cr3t-value"\n[web]\nwebhook_secret = "another-s3cr3t"\n')
    res = gw("--config", str(path), "show-config", cwd=tmp_path)
    assert res.returncode == 0
    assert "s3cr3t" not in res.stdout
    assert "********" in res.stdout


def test_db_migrate_backup_restore_round_trip(tmp_path: Path, conf: Path) -> None:
    assert gw("--config", str(conf), "db", "migrate", cwd=tmp_path).returncode == 0
    again = gw("--config", str(conf), "db", "migrate", cwd=tmp_path)
    assert "up to date" in again.stdout
    db = tmp_path / "data" / "gateway.db"
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO audit_log(at, actor, action) VALUES (1, 'test', 'before-backup')")
    conn.commit()
    conn.close()
    backup = tmp_path / "b" / "one.db"
    res = gw("--config", str(conf), "db", "backup", str(backup), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "integrity ok" in res.stdout
    assert gw("--config", str(conf), "db", "backup", str(backup), cwd=tmp_path).returncode == 73, "never overwrite"

    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO audit_log(at, actor, action) VALUES (2, 'test', 'after-backup')")
    conn.commit()
    conn.close()
    refused = gw("--config", str(conf), "db", "restore", str(backup), cwd=tmp_path, stdin="")
    assert refused.returncode == 64
    assert "--yes" in refused.stderr
    res = gw("--config", str(conf), "db", "restore", str(backup), "--yes", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    conn = sqlite3.connect(db)
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log")]
    conn.close()
    assert actions == ["before-backup"]


def test_restore_refuses_garbage_and_newer_schema(tmp_path: Path, conf: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    assert gw("--config", str(conf), "db", "restore", str(junk), "--yes", cwd=tmp_path).returncode == 65
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("CREATE TABLE events(id INTEGER)")
    conn.execute("PRAGMA user_version = 9999")
    conn.commit()
    conn.close()
    res = gw("--config", str(conf), "db", "restore", str(newer), "--yes", cwd=tmp_path)
    assert res.returncode == 65
    assert "newer" in res.stderr


def test_newer_database_refused_at_start(tmp_path: Path, conf: Path) -> None:
    db = tmp_path / "data" / "gateway.db"
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 9999")
    conn.close()
    res = gw("--config", str(conf), "db", "migrate", cwd=tmp_path)
    assert res.returncode == 78
    assert "newer gateway" in res.stderr


def test_staff_add_and_list(tmp_path: Path, conf: Path) -> None:
    short = gw("--config", str(conf), "staff", "add", "alice", "--password-stdin", cwd=tmp_path, stdin="short\n")
    assert short.returncode == 78
    assert "8 characters" in short.stderr
    res = gw(
        "--config",
        str(conf),
        "staff",
        "add",
        "alice",
        "--name",
        "Alice A",
        "--extension",
        "201",
        "--password-stdin",
        cwd=tmp_path,
        stdin="correct horse battery\n",
    )
    assert res.returncode == 0, res.stderr
    listed = gw("--config", str(conf), "staff", "list", cwd=tmp_path)
    assert "alice\tAlice A\t201\tstaff" in listed.stdout
    conn = sqlite3.connect(tmp_path / "data" / "gateway.db")
    (hashed,) = conn.execute("SELECT password_hash FROM staff WHERE username = 'alice'").fetchone()
    conn.close()
    assert hashed.startswith("$argon2")
    assert "horse" not in hashed


def test_run_serves_and_stops_cleanly_on_sigterm(tmp_path: Path, conf: Path) -> None:
    port = int(conf.read_text().split("port = ")[1].split()[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(conf), "run"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the web server never came up")
        # A second daemon on the same database is refused.
        second = gw("--config", str(conf), "run", cwd=tmp_path, timeout=30)
        assert second.returncode == 69
        assert "already running" in second.stderr
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = ""
    if proc.stderr is not None:
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert rc == 0, stderr
    assert stopped_in < 6, f"stop took {stopped_in:.1f} s"
    assert "gateway started" in stderr
    assert "shutting down" in stderr
    assert "left behind" not in stderr, stderr


def test_doctor_reports_problems_with_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n[sms]\nenabled = true\ndevice = "/dev/does-not-exist*"\n'
        '[transcribe]\nmodel_path = "/nonexistent/model"\n'
    )
    res = gw("--config", str(path), "doctor", cwd=tmp_path)
    assert res.returncode == 1
    assert "[DOWN] SMS modem: no modem at /dev/does-not-exist*" in res.stdout
    assert "[DOWN] Speech model: transcribe.model_path = '/nonexistent/model' does not exist" in res.stdout
    assert "[  ok] Database:" in res.stdout
