"""The shipped systemd unit passes ``systemd-analyze verify`` and keeps its supervision and hardening settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "gateway.service"


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: the test command installs the systemd package"
    # A root with the unit, systemd's own units and the program the unit starts (verify checks it is executable).
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system/gateway.service")
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    program = tmp_path / "opt/gateway/.venv/bin/gateway"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    done = subprocess.run(
        [analyze, "verify", f"--root={tmp_path}", str(tmp_path / "etc/systemd/system/gateway.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_unit_is_supervised_and_hardened() -> None:
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if "=" in line}
    assert lines["Type"] == "notify"
    assert lines["WatchdogSec"] == "30"
    assert lines["LimitNOFILE"] == "65536"
    assert lines["RestartPreventExitStatus"] == "78"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelModules", "RestrictSUIDSGID"):
        assert lines[key] == "yes", key
    assert lines["ProtectSystem"] == "strict"
    assert lines["CapabilityBoundingSet"] == ""
