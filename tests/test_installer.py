"""``./install.sh office`` into a fresh install root, twice, and ``./install.sh uninstall``.

The second run must change nothing and leave an identical tree (paths, modes, contents); ``--dry-run`` lists the
changes and makes none; an existing /etc/asterisk gets the gateway's AMI user and dialplan through ``#include``
lines after one dated backup; the generated configuration loads, its AMI secret matches the Asterisk snippet; the
installed unit passes ``systemd-analyze verify``; uninstall keeps configuration and data unless ``--purge``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from gateway import config as config_mod

ROOT = Path(__file__).resolve().parents[1]
MANAGER = "[general]\nenabled = yes\nport = 5038\n\n[admin]\nsecret = office-admin\n"
EXTENSIONS = "[general]\nstatic = yes\n\n[from-trunk]\nexten => _X.,1,Dial(PJSIP/100)\n"


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "install.sh"), *args], capture_output=True, text=True, timeout=300, check=False
    )


def tree(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        mode = path.stat().st_mode & 0o7777
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[rel] = (mode, digest)
    return out


def fresh_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/asterisk").mkdir(parents=True)
    (root / "etc/asterisk/manager.conf").write_text(MANAGER)
    (root / "etc/asterisk/extensions.conf").write_text(EXTENSIONS)
    return root


def test_dry_run_lists_every_change_and_makes_none(tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    before = tree(root)
    res = install("office", "--root", str(root), "--dry-run", "--no-download")
    assert res.returncode == 0, res.stderr
    assert tree(root) == before
    for change in (
        "would write /etc/gateway/gateway.toml",
        "would create /var/lib/gateway (mode 700)",
        "would write /etc/systemd/system/gateway.service",
        "would write /etc/udev/rules.d/99-gateway-modem.rules",
        "would write /opt/gateway/src/gateway/app.py",
        "would back up /etc/asterisk to /var/backups/gateway/asterisk-",
        "would update /etc/asterisk/manager.conf",
    ):
        assert change in res.stdout, change
    assert "none made" in res.stdout


def test_install_twice_gives_the_same_tree(tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    first = install("office", "--root", str(root), "--no-download")
    assert first.returncode == 0, first.stderr
    after_first = tree(root)
    second = install("office", "--root", str(root), "--no-download")
    assert second.returncode == 0, second.stderr
    assert tree(root) == after_first
    assert "nothing to change: the box is as it should be" in second.stdout
    assert "[9/9] Asterisk" in second.stdout  # a progress line per step

    conf = root / "etc/gateway/gateway.toml"
    assert conf.stat().st_mode & 0o777 == 0o640
    assert (root / "var/lib/gateway").stat().st_mode & 0o777 == 0o700
    cfg = config_mod.load(conf)  # the generated file is a valid configuration
    secret = cfg.voice.ami_secret.reveal()
    assert len(secret) >= 24
    assert cfg.web.webhook_secret.reveal()
    snippet = (root / "etc/asterisk/gateway-manager.conf").read_text()
    assert f"secret = {secret}" in snippet
    assert "permit = 127.0.0.1/255.255.255.255" in snippet
    assert "write = reporting,originate" in snippet
    assert (root / "etc/asterisk/gateway-manager.conf").stat().st_mode & 0o777 == 0o640
    manager = (root / "etc/asterisk/manager.conf").read_text()
    assert manager.startswith(MANAGER)  # the office's own settings untouched
    assert manager.rstrip().endswith('#include "gateway-manager.conf"')
    assert '#include "gateway-extensions.conf"' in (root / "etc/asterisk/extensions.conf").read_text()
    assert "[gw-inbound]" in (root / "etc/asterisk/gateway-extensions.conf").read_text()
    # Live transcription: the ARI user with the password the gateway has, included into ari.conf; http.conf is
    # the office's, never edited: the installer says what to set.
    ari = (root / "etc/asterisk/gateway-ari.conf").read_text()
    assert f"[{cfg.voice.ari_username}]" in ari
    assert f"password = {cfg.voice.ari_password.reveal()}" in ari
    assert len(cfg.voice.ari_password.reveal()) >= 24
    assert (root / "etc/asterisk/gateway-ari.conf").stat().st_mode & 0o777 == 0o640
    assert '#include "gateway-ari.conf"' in (root / "etc/asterisk/ari.conf").read_text()
    assert not (root / "etc/asterisk/http.conf").exists()
    assert "needs Asterisk's HTTP server on loopback" in first.stdout
    (backup,) = (root / "var/backups/gateway").glob("asterisk-*.tar.gz")  # one backup, before the first change
    assert backup.stat().st_mode & 0o777 == 0o600
    assert (root / "opt/gateway/src/gateway/app.py").read_bytes() == (ROOT / "gateway/app.py").read_bytes()

    # The installed unit verifies (systemd's own units and the program it starts in the same root).
    analyze = shutil.which("systemd-analyze")
    assert analyze
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    program = root / "opt/gateway/.venv/bin/gateway"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    done = subprocess.run(
        [analyze, "verify", f"--root={root}", str(root / "etc/systemd/system/gateway.service")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_uninstall_keeps_data_unless_purge(tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    assert install("office", "--root", str(root), "--no-download").returncode == 0
    (root / "var/lib/gateway/gateway.db").write_bytes(b"the office's data")
    res = install("uninstall", "--root", str(root))
    assert res.returncode == 0, res.stderr
    assert not (root / "etc/systemd/system/gateway.service").exists()
    assert not (root / "opt/gateway").exists()
    assert not (root / "etc/asterisk/gateway-manager.conf").exists()
    assert (root / "etc/asterisk/manager.conf").read_text() == MANAGER
    assert (root / "etc/asterisk/extensions.conf").read_text() == EXTENSIONS
    assert (root / "var/lib/gateway/gateway.db").read_bytes() == b"the office's data"
    assert (root / "etc/gateway/gateway.toml").exists()
    assert "kept /etc/gateway and /var/lib/gateway" in res.stdout
    purged = install("uninstall", "--root", str(root), "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "var/lib/gateway").exists()
    assert not (root / "etc/gateway").exists()


def test_http_server_check_reads_the_offices_http_conf(tmp_path: Path) -> None:
    from gateway.installer import Installer  # noqa: PLC0415 - the unit under test, beside the end-to-end runs

    said: list[str] = []
    inst = Installer(root=tmp_path, out=said.append)
    etc = tmp_path / "etc/asterisk"
    etc.mkdir(parents=True)
    (etc / "http.conf").write_text("[general]\nenabled = yes ; on\nbindaddr = 127.0.0.1\nbindport = 8088\n")
    inst._check_http(etc)
    (etc / "http.conf").write_text("[general]\nenabled = yes\nbindaddr = 0.0.0.0\n")
    inst._check_http(etc)
    assert said[0] == "Asterisk: the HTTP server for ARI is on, on loopback"
    assert said[1].startswith("note: live call transcription needs Asterisk's HTTP server on loopback")
