"""The daemon as a real process: it raises its open-files limit and creates its files for its own user only."""

from __future__ import annotations

import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _low_limits() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    os.umask(0o022)  # a permissive parent: the daemon must tighten it itself


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line in /proc/PID/limits")


def test_daemon_raises_soft_nofile_to_hard_and_writes_private_files(tmp_path: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n[voice]\nenabled = false\n[transcribe]\nenabled = false\n'
        f"[web]\nport = {port}\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from gateway.cli import main; sys.exit(main())",
            "--config",
            str(cfg),
            "run",
        ],
        env=env,
        preexec_fn=_low_limits,  # noqa: PLW1509 - no threads in the test process at this point that matter
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the daemon did not start within 30 s"
                time.sleep(0.2)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert _soft_nofile(proc.pid) == hard
        assert hard > 256
        data = tmp_path / "data"
        written = [p for p in data.rglob("*") if p.is_file()]
        assert any(p.name == "gateway.db" for p in written)
        for path in written:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stderr:
                proc.stderr.close()
