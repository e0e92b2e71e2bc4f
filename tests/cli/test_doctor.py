"""``gateway doctor`` against a healthy setup and against each broken one, with the real peers.

Real parts: the local Asterisk (AMI login with the right and a wrong secret), the pty modem emulator (with and
without a SIM PIN), the packaged Vosk model (really loaded), real SQLite files on a read-only and on a full file
system (small tmpfs mounts: the test command runs as root).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.emulator.modem import ModemEmulator
from tests.realpbx.fixtures import realpbx  # noqa: F401 - fixture found by name
from tests.realpbx.harness import PbxSettings

ROOT = Path(__file__).resolve().parents[2]


def doctor(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "doctor"],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def line(out: str, title: str) -> str:
    found = [x for x in out.splitlines() if x.split("] ", 1)[-1].startswith(title + ":")]
    assert len(found) == 1, f"no single line for {title!r} in:\n{out}"
    return found[0]


def write_config(
    tmp: Path,
    *,
    data_dir: Path | None = None,
    voice: str = "enabled = false",
    sms: str = "enabled = false",
    transcribe: str = "enabled = false",
) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(
        f'[gateway]\ndata_dir = "{data_dir or tmp / "data"}"\n'
        f"[voice]\n{voice}\n[sms]\n{sms}\n[transcribe]\n{transcribe}\n[web]\nport = {free_port()}\n",
        encoding="utf-8",
    )
    return path


def migrated(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    from gateway.store.db import configure_connection, migrate  # noqa: PLC0415

    conn = sqlite3.connect(data / "gateway.db", isolation_level=None)
    try:
        configure_connection(conn, writer=True)
        migrate(conn, data / "gateway.db")
    finally:
        conn.close()


def voice_section(pbx: PbxSettings, secret: str | None = None) -> str:
    ami = pbx.ami
    return (
        f'enabled = true\nami_host = "127.0.0.1"\nami_port = {ami.port}\nami_username = "{ami.username}"\n'
        f'ami_secret = "{secret if secret is not None else ami.secret}"\nagi_port = {free_port()}\n'
    )


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[Path]:
    link = tmp_path / "dev" / "ttyUSB0"
    emu = ModemEmulator("huawei-e3372", link=link, seed=3)
    emu.start()
    try:
        yield link
    finally:
        emu.stop()


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_healthy_setup_every_check_ok(tmp_path: Path, realpbx: PbxSettings, modem: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    migrated(data)
    (data / "backups").mkdir()
    src = sqlite3.connect(data / "gateway.db")
    dst = sqlite3.connect(data / "backups" / "gateway-now.db")
    src.backup(dst)
    src.close()
    dst.close()
    config = write_config(
        tmp_path,
        voice=voice_section(realpbx),
        sms=f'enabled = true\ndevice = "{modem}"\nprofile = "huawei-e3372"',
        transcribe="enabled = true",
    )
    res = doctor(config)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    for title in ("Configuration", "Database", "Backups", "Disk space", "Open files", "Asterisk (AMI)",
                  "FastAGI port", "SMS modem (emulated modem)", "Speech model", "Automated SMS budget"):  # fmt: skip
        assert line(out, title).startswith("[  ok]"), line(out, title)
    assert "rights no broader than needed" in line(out, "Asterisk (AMI)")
    assert "registered" in line(out, "SMS modem (emulated modem)")
    assert "loads" in line(out, "Speech model")
    assert "automated texts may still go out now" in line(out, "Automated SMS budget")
    # The clock line is there with a verdict either way (this machine's kernel clock may not be synchronised).
    assert line(out, "Clock").startswith(("[  ok]", "[WARN]"))


def test_wrong_ami_secret(tmp_path: Path, realpbx: PbxSettings) -> None:  # noqa: F811
    res = doctor(write_config(tmp_path, voice=voice_section(realpbx, secret="not-the-secret")))
    assert res.returncode == 1
    text = line(res.stdout, "Asterisk (AMI)")
    assert text.startswith("[DOWN]")
    assert "refused the AMI login for user 'gateway'" in text
    assert "fix: make voice.ami_username and voice.ami_secret" in text
    assert "manager.conf" in text
    assert "not-the-secret" not in res.stdout


def test_no_modem(tmp_path: Path) -> None:
    res = doctor(write_config(tmp_path, sms=f'enabled = true\ndevice = "{tmp_path}/ttyUSB*"'))
    assert res.returncode == 1
    text = line(res.stdout, "SMS modem")
    assert text.startswith("[DOWN]")
    assert f"no modem at {tmp_path}/ttyUSB*" in text
    assert "fix: plug the USB modem in" in text


def test_sim_pin_required(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "ttyUSB0"
    emu = ModemEmulator("huawei-e3372", link=link, sim_pin="4321", seed=5)
    emu.start()
    try:
        res = doctor(write_config(tmp_path, sms=f'enabled = true\ndevice = "{link}"'))
        # With the PIN configured the doctor does not spend the SIM's one attempt; it says the gateway will.
        with_pin = doctor(write_config(tmp_path, sms=f'enabled = true\ndevice = "{link}"\npin = "4321"'))
    finally:
        emu.stop()
    assert res.returncode == 1
    text = line(res.stdout, "SMS modem (emulated modem)")
    assert text.startswith("[DOWN]")
    assert "the SIM is locked (SIM PIN) and sms.pin is empty" in text
    assert "fix: put the SIM's PIN into sms.pin" in text
    assert with_pin.returncode == 0, with_pin.stdout
    assert line(with_pin.stdout, "SMS modem (emulated modem)").startswith("[WARN]")
    assert emu.pin_ready is False  # nobody entered the PIN


def test_missing_model(tmp_path: Path) -> None:
    res = doctor(write_config(tmp_path, transcribe=f'enabled = true\nmodel_path = "{tmp_path}/no-model"'))
    assert res.returncode == 1
    text = line(res.stdout, "Speech model")
    assert text.startswith("[DOWN]")
    assert "does not exist" in text
    assert "fix: install a Vosk model" in text


def test_damaged_model_does_not_load(tmp_path: Path) -> None:
    model = tmp_path / "model"
    for name in ("am/final.mdl", "conf/model.conf", "graph/HCLG.fst"):
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(b"not a model")
    res = doctor(write_config(tmp_path, transcribe=f'enabled = true\nmodel_path = "{model}"'))
    assert res.returncode == 1
    text = line(res.stdout, "Speech model")
    assert "Vosk could not load the model" in text


def test_read_only_database(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "8m") as mnt:
        migrated(mnt / "data")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        res = doctor(write_config(tmp_path, data_dir=mnt / "data"))
    assert res.returncode == 1
    text = line(res.stdout, "Database")
    assert text.startswith("[DOWN]")
    assert "is read-only" in text
    assert "fix: give the gateway's user write access" in text


def test_full_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "4m") as mnt:
        migrated(mnt / "data")
        with contextlib.suppress(OSError), open(mnt / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        res = doctor(write_config(tmp_path, data_dir=mnt / "data"))
    assert res.returncode == 1
    text = line(res.stdout, "Disk space")
    assert text.startswith("[DOWN]")
    assert "MB free on the disk holding" in text
    assert "fix: free space on the disk" in text
