"""Progress of long-running commands: a bar on a terminal, plain lines in a log; backup and restore use it."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from gateway.progress import ProgressBar

ROOT = Path(__file__).resolve().parents[1]


def test_plain_lines_in_a_log_every_ten_percent() -> None:
    out = io.StringIO()
    bar = ProgressBar("backup x.db", out, tty=False)
    for done in range(0, 1001, 7):
        bar.update(done, 1000)
    bar.update(1000, 1000)
    bar.finish("ok")
    lines = out.getvalue().splitlines()
    assert lines[0] == "backup x.db: 0% (0 of 1000)"
    assert [ln.split(": ")[1].split("%")[0] for ln in lines[:-1]] == [str(p) for p in range(0, 101, 10)]
    assert lines[-1].startswith("backup x.db: done in ")
    assert "\r" not in out.getvalue()


def test_a_bar_on_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar("restore", out, tty=True)
    bar.update(5, 10)
    bar.update(10, 10)
    bar.finish()
    text = out.getvalue()
    assert "\rrestore [" in text
    assert "100.0%" in text
    assert "#" * 30 in text


def test_backup_and_restore_report_progress_in_a_log(tmp_path: Path) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def gw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--config", str(conf), *args],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    assert gw("db", "migrate").returncode == 0
    conn = sqlite3.connect(tmp_path / "data" / "gateway.db")
    conn.executemany(
        "INSERT INTO audit_log(at, actor, action, subject) VALUES (0, 'p', 'fill', ?)", [("x" * 500,)] * 4000
    )
    conn.commit()
    conn.close()
    backup = gw("db", "backup", str(tmp_path / "b.db"))
    assert backup.returncode == 0, backup.stderr
    steps = [ln for ln in backup.stderr.splitlines() if ln.startswith("backup b.db: ") and "% (" in ln]
    assert len(steps) >= 3, backup.stderr  # the copy goes in steps of 256 pages, each reported
    assert steps[-1].startswith("backup b.db: 100% (")
    assert "backup b.db: done in " in backup.stderr
    restore = gw("db", "restore", str(tmp_path / "b.db"), "--yes")
    assert restore.returncode == 0, restore.stderr
    assert "restore gateway.db: 100% (" in restore.stderr
