"""``./install.sh office`` and ``./install.sh uninstall``: the gateway as a supervised service on a real office box.

Theory of operation: the installer computes, step by step, what the box should look like and changes only what
differs, so a second run changes nothing (and says so). ``--dry-run`` prints every change it would make and makes
none; ``--root DIR`` installs into DIR instead of / (the tests do this twice into a fresh directory and compare the
trees; user accounts, the virtual environment's packages and systemctl are left out there). It uses only the
standard library, so the system Python runs it before any virtual environment exists.

What it sets up: a ``gateway`` system user (groups dialout and, when present, asterisk); the code under
/opt/gateway/src with its virtual environment in /opt/gateway/.venv; /etc/gateway/gateway.toml (0640, root:gateway,
the AMI and webhook secrets generated once and never overwritten); /var/lib/gateway for data and backups (0700);
the udev rule; the systemd unit (Type=notify, watchdog, hardening) enabled; when /etc/asterisk exists, the AMI user
and the gateway's dialplan contexts as ``gateway-*.conf`` files pulled in by ``#include`` lines, after a dated backup
of /etc/asterisk; and, when online, an English Vosk model downloaded and checksummed.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import io
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]
USER = "gateway"
#: What is copied to /opt/gateway/src (the package and the files the box needs beside it).
SHIPPED = ("gateway", "asterisk-config", "systemd", "udev", "hardware", "pyproject.toml", "README.md", "install.sh")
INCLUDES = {
    "manager.conf": "gateway-manager.conf",
    "extensions.conf": "gateway-extensions.conf",
    "ari.conf": "gateway-ari.conf",
}
ARI_USER = "gateway-ari"


@dataclass
class Installer:
    """One run: where, whether for real, and what it changed."""

    root: Path
    dry_run: bool = False
    skip_venv: bool = False
    download: bool = True
    changes: list[str] = field(default_factory=list)
    out: Callable[[str], None] = print

    @property
    def real_root(self) -> bool:
        """True when installing into the running system (users, systemctl, chown)."""
        return self.root == Path("/")

    def p(self, absolute: str) -> Path:
        """A system path inside the install root."""
        return self.root / absolute.lstrip("/")

    def change(self, what: str, apply: Callable[[], object]) -> None:
        """Record one change; make it unless this is a dry run."""
        self.changes.append(what)
        self.out(("would " if self.dry_run else "") + what)
        if not self.dry_run:
            apply()

    def progress(self, step: int, total: int, what: str) -> None:
        """A plain progress line per step (the same on a terminal and in a log)."""
        self.out(f"[{step}/{total}] {what}")

    # -- building blocks ---------------------------------------------------------------------------------------------

    def ensure_dir(self, absolute: str, mode: int, owner: str | None = None) -> None:
        """A directory with a mode (and an owner on the real system)."""
        path = self.p(absolute)
        if not path.is_dir():
            self.change(f"create {absolute} (mode {mode:o})", lambda: path.mkdir(parents=True, mode=mode))
        if path.is_dir() and (path.stat().st_mode & 0o777) != mode:
            self.change(f"set mode {mode:o} on {absolute}", lambda: path.chmod(mode))
        self._own(path, absolute, owner)

    def ensure_file(self, absolute: str, content: bytes, mode: int, owner: str | None = None) -> bool:
        """A file with exactly this content and mode; True when it was (or would be) written."""
        path = self.p(absolute)
        wrote = False
        if not path.is_file() or path.read_bytes() != content:
            verb = "update" if path.exists() else "write"

            def write() -> None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".gateway-new")
                tmp.write_bytes(content)
                tmp.chmod(mode)
                tmp.replace(path)

            self.change(f"{verb} {absolute}", write)
            wrote = True
        elif (path.stat().st_mode & 0o777) != mode:
            self.change(f"set mode {mode:o} on {absolute}", lambda: path.chmod(mode))
        self._own(path, absolute, owner)
        return wrote

    def _own(self, path: Path, absolute: str, owner: str | None) -> None:
        if owner is None or not self.real_root or self.dry_run or not path.exists():
            return
        user, _, group = owner.partition(":")
        try:
            uid = pwd.getpwnam(user).pw_uid
            gid = grp.getgrnam(group or user).gr_gid
        except KeyError:
            return
        st = path.stat()
        if (st.st_uid, st.st_gid) != (uid, gid):
            self.change(f"chown {owner} {absolute}", lambda: os.chown(path, uid, gid))

    def run(self, argv: list[str], what: str) -> None:
        """A command on the real system (recorded as a change)."""
        self.change(what, lambda: subprocess.run(argv, check=True))  # noqa: S603 - fixed system tools

    # -- steps -------------------------------------------------------------------------------------------------------

    def user(self) -> None:
        """The gateway system user."""
        if not self.real_root:
            self.out(f"skipped in --root mode: the {USER} system user (created only on the real system)")
            return
        try:
            pwd.getpwnam(USER)
        except KeyError:
            self.run(
                ["useradd", "--system", "--home-dir", "/var/lib/gateway", "--shell", "/usr/sbin/nologin", USER],
                f"create the system user {USER}",
            )
        for group in ("dialout", "asterisk"):
            try:
                members = grp.getgrnam(group).gr_mem
            except KeyError:
                continue
            if USER not in members:
                self.run(["usermod", "-a", "-G", group, USER], f"add {USER} to the {group} group")

    def code(self) -> None:
        """The code under /opt/gateway/src, copied file by file (unchanged files are left alone)."""
        self.ensure_dir("/opt/gateway", 0o755)
        wanted: dict[str, Path] = {}
        for name in SHIPPED:
            src = SRC / name
            if src.is_file():
                wanted[name] = src
            elif src.is_dir():
                for f in sorted(src.rglob("*")):
                    if f.is_file() and "__pycache__" not in f.parts and not f.name.endswith(".pyc"):
                        wanted[str(f.relative_to(SRC))] = f
        for rel, f in wanted.items():
            mode = 0o755 if os.access(f, os.X_OK) else 0o644
            self.ensure_file(f"/opt/gateway/src/{rel}", f.read_bytes(), mode)
        base = self.p("/opt/gateway/src")
        if base.is_dir():
            for f in sorted(base.rglob("*"), reverse=True):
                rel = str(f.relative_to(base))
                if f.is_file() and rel not in wanted and "__pycache__" not in f.parts:
                    self.change(f"remove /opt/gateway/src/{rel} (no longer shipped)", f.unlink)

    def venv(self) -> None:
        """The virtual environment with the gateway installed from /opt/gateway/src."""
        if self.skip_venv or not self.real_root:
            self.out("skipped: the virtual environment (--skip-venv or --root)")
            return
        venv = self.p("/opt/gateway/.venv")
        digest = hashlib.sha256(self.p("/opt/gateway/src/pyproject.toml").read_bytes()).hexdigest()[:16]
        stamp = venv / f".installed-{digest}"
        if not (venv / "bin" / "python").exists():
            self.run([sys.executable, "-m", "venv", str(venv)], "create the virtual environment /opt/gateway/.venv")
        if not stamp.exists():
            self.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", str(self.p("/opt/gateway/src"))],
                "install the gateway into /opt/gateway/.venv",
            )
            self.change(f"mark {stamp.name}", stamp.touch)

    def config(self) -> dict[str, str]:
        """/etc/gateway/gateway.toml with generated secrets (written once, never overwritten)."""
        self.ensure_dir("/etc/gateway", 0o750, "root:gateway")
        path = self.p("/etc/gateway/gateway.toml")
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as err:
                raise SystemExit(f"install.sh: {path} is not valid TOML ({err}); fix it, then run again") from err
            voice = data.get("voice", {})
            self.out(f"kept {path} (secrets are never regenerated)")
            self._own(path, "/etc/gateway/gateway.toml", "root:gateway")
            if not voice.get("ari_password"):
                self.out(
                    "note: voice.ari_password is not set in /etc/gateway/gateway.toml, so calls are not transcribed "
                    "live; add ari_password (and the same password in /etc/asterisk/gateway-ari.conf) to turn it on"
                )
            return {
                "ami_secret": str(voice.get("ami_secret", "")),
                "ami_user": str(voice.get("ami_username", USER)),
                "ari_password": str(voice.get("ari_password", "")),
                "ari_user": str(voice.get("ari_username", ARI_USER)),
            }
        ami = secrets.token_urlsafe(24)
        ari = secrets.token_urlsafe(24)
        hook = secrets.token_urlsafe(32)
        text = f"""# gateway configuration written by ./install.sh office. Every key and its default:
# `gateway show-config --defaults`. Check it with `gateway doctor`.
[gateway]
data_dir = "/var/lib/gateway"

[sms]
enabled = true
# The udev rule names the modem /dev/gateway-modem (udev/README.md).
device = "/dev/gateway-modem"

[voice]
enabled = true
ami_host = "127.0.0.1"
ami_port = 5038
ami_username = "{USER}"
# Generated; the same secret is in /etc/asterisk/gateway-manager.conf.
ami_secret = "{ami}"
# Live transcription of answered calls through ARI on loopback (Asterisk's HTTP server must be on, see
# /etc/asterisk/http.conf). Generated; the same password is in /etc/asterisk/gateway-ari.conf.
ari_url = "http://127.0.0.1:8088"
ari_username = "{ARI_USER}"
ari_password = "{ari}"

[transcribe]
enabled = true
# Empty: the English model below when it was downloaded, else the packaged model if installed.
model_path = "{self._model_dir()}"

[web]
host = "127.0.0.1"
port = 8080
# Generated; signs webhook deliveries once you add webhook_urls.
webhook_secret = "{hook}"
"""
        self.ensure_file("/etc/gateway/gateway.toml", text.encode(), 0o640, "root:gateway")
        return {"ami_secret": ami, "ami_user": USER, "ari_password": ari, "ari_user": ARI_USER}

    def _model_dir(self) -> str:
        models = self.p("/var/lib/gateway/models")
        found = sorted(p for p in models.glob("vosk-model-*") if p.is_dir()) if models.is_dir() else []
        return f"/var/lib/gateway/models/{found[-1].name}" if found else ""

    def data(self) -> None:
        """/var/lib/gateway and its backups directory."""
        self.ensure_dir("/var/lib/gateway", 0o700, "gateway:gateway")
        self.ensure_dir("/var/lib/gateway/backups", 0o700, "gateway:gateway")
        self.ensure_dir("/var/lib/gateway/models", 0o755, "gateway:gateway")

    def udev(self) -> None:
        """The udev rule that names the modem."""
        rule = (SRC / "udev" / "99-gateway-modem.rules").read_bytes()
        wrote = self.ensure_file("/etc/udev/rules.d/99-gateway-modem.rules", rule, 0o644)
        if wrote and self.real_root and shutil.which("udevadm"):
            self.run(["udevadm", "control", "--reload"], "reload the udev rules")

    def unit(self) -> None:
        """The systemd unit, enabled."""
        unit = (SRC / "systemd" / "gateway.service").read_bytes()
        wrote = self.ensure_file("/etc/systemd/system/gateway.service", unit, 0o644)
        if self.real_root and Path("/run/systemd/system").is_dir():
            if wrote:
                self.run(["systemctl", "daemon-reload"], "reload systemd")
            enabled = subprocess.run(
                ["systemctl", "is-enabled", "--quiet", "gateway.service"],  # noqa: S607 - the system's systemctl
                check=False,
            )
            if enabled.returncode != 0:
                self.run(["systemctl", "enable", "gateway.service"], "enable gateway.service")

    def asterisk(self, secrets_: dict[str, str]) -> None:
        """Merge the AMI user and the gateway's dialplan into an existing /etc/asterisk through #include files."""
        etc = self.p("/etc/asterisk")
        if not etc.is_dir():
            self.out("skipped: /etc/asterisk does not exist (no Asterisk on this box; see asterisk-config/README.md)")
            return
        rendered = self._render(secrets_)
        planned: list[tuple[str, bytes]] = [
            (
                "/etc/asterisk/gateway-manager.conf",
                _section_from(rendered["manager.conf"], f"[{secrets_['ami_user']}]"),
            ),
            ("/etc/asterisk/gateway-extensions.conf", _section_from(rendered["extensions.conf"], "[globals]")),
        ]
        if secrets_.get("ari_password"):
            planned.append(
                ("/etc/asterisk/gateway-ari.conf", _section_from(rendered["ari.conf"], f"[{secrets_['ari_user']}]"))
            )
        self._check_http(etc)
        includes: list[tuple[str, bytes]] = []
        for conf, snippet in INCLUDES.items():
            if conf == "ari.conf" and not secrets_.get("ari_password"):
                continue
            path = etc / conf
            current = path.read_bytes() if path.exists() else b""
            line = f'#include "{snippet}"'.encode()
            if line not in current.splitlines():
                sep = b"" if not current or current.endswith(b"\n") else b"\n"
                includes.append((f"/etc/asterisk/{conf}", current + sep + b"; gateway\n" + line + b"\n"))
        differs = [(a, c) for a, c in planned + includes if not self.p(a).is_file() or self.p(a).read_bytes() != c]
        if not differs:
            self.out("Asterisk: the gateway's snippets are in place")
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = self.p(f"/var/backups/gateway/asterisk-{stamp}.tar.gz")
        self.change(f"back up /etc/asterisk to /var/backups/gateway/{backup.name}", lambda: _tar(etc, backup))
        for absolute, content in differs:
            mode = 0o640 if "manager" in absolute or "-ari" in absolute else 0o644
            self.ensure_file(absolute, content, mode)
        if self.real_root and shutil.which("asterisk"):
            self.run(["asterisk", "-rx", "core reload"], "reload Asterisk's configuration")

    def _check_http(self, etc: Path) -> None:
        """Say so when Asterisk's HTTP server (which ARI needs) is off or not on loopback; never edits http.conf."""
        path = etc / "http.conf"
        general: dict[str, str] = {}
        section = ""
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        for raw in text.splitlines():
            line = raw.split(";", 1)[0].strip()
            if line.startswith("[") and "]" in line:
                section = line[1 : line.index("]")].strip().lower()
            elif "=" in line and section == "general":
                key, _, value = line.partition("=")
                general[key.strip().lower()] = value.strip().lstrip(">").strip()
        enabled = general.get("enabled", "no").lower() in ("yes", "true", "1", "on")
        loopback = general.get("bindaddr", "") in ("127.0.0.1", "::1", "localhost")
        if enabled and loopback:
            self.out("Asterisk: the HTTP server for ARI is on, on loopback")
            return
        self.out(
            "note: live call transcription needs Asterisk's HTTP server on loopback; in /etc/asterisk/http.conf set "
            "[general] enabled = yes, bindaddr = 127.0.0.1, bindport = 8088 (then `asterisk -rx 'module reload "
            "http'`). Until then calls are recorded and transcribed after they end."
        )

    def _render(self, secrets_: dict[str, str]) -> dict[str, str]:
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                **os.environ,
                "GATEWAY_ASTERISK_STATE": str(Path(tmp) / "state"),
                "GATEWAY_ASTERISK_AMI_SECRET": secrets_["ami_secret"],
                "GATEWAY_ASTERISK_AMI_USER": secrets_["ami_user"],
                "GATEWAY_ASTERISK_ARI_USER": secrets_.get("ari_user") or ARI_USER,
                "GATEWAY_ASTERISK_ARI_PASSWORD": secrets_.get("ari_password") or "unused",
            }
            script = SRC / "asterisk-config" / "local-asterisk.sh"
            bash = shutil.which("bash") or "/bin/bash"
            subprocess.run(  # noqa: S603 - our own script
                [bash, str(script), "render", str(Path(tmp) / "out")], env=env, check=True, capture_output=True
            )
            return {p.name: p.read_text(encoding="utf-8") for p in (Path(tmp) / "out").glob("*.conf")}

    def model(self) -> None:
        """An English Vosk model, downloaded and checksummed (only when online and asked to)."""
        if not self.download or not self.real_root:
            self.out("skipped: the English speech model download (--no-download or --root)")
            return
        if self._model_dir():
            self.out("English speech model already installed")
            return
        script = SRC / "gateway" / "transcribe" / "install-model.sh"
        bash = shutil.which("bash") or "/bin/bash"
        self.change(
            "download and checksum an English Vosk model into /var/lib/gateway/models",
            lambda: _try_download([bash, str(script), "/var/lib/gateway/models"], self.out),
        )

    # -- whole runs --------------------------------------------------------------------------------------------------

    def install(self) -> int:
        """Every step, in order."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("system user", self.user),
            ("code under /opt/gateway", self.code),
            ("virtual environment", self.venv),
            ("data under /var/lib/gateway", self.data),
            ("speech model", self.model),
        ]
        for n, (what, step) in enumerate(steps, 1):
            self.progress(n, len(steps) + 4, what)
            step()
        self.progress(len(steps) + 1, len(steps) + 4, "configuration /etc/gateway/gateway.toml")
        found = self.config()
        self.progress(len(steps) + 2, len(steps) + 4, "udev rule")
        self.udev()
        self.progress(len(steps) + 3, len(steps) + 4, "systemd unit")
        self.unit()
        self.progress(len(steps) + 4, len(steps) + 4, "Asterisk")
        self.asterisk(found)
        self._summary()
        return 0

    def _unmerge_asterisk(self) -> None:
        """Take the gateway's #include lines and snippet files out of /etc/asterisk (after a dated backup)."""
        etc = self.p("/etc/asterisk")
        touched = [etc / s for s in INCLUDES.values() if (etc / s).exists()]
        touched += [etc / c for c, s in INCLUDES.items() if (etc / c).exists() and s.encode() in (etc / c).read_bytes()]
        if not touched:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = self.p(f"/var/backups/gateway/asterisk-{stamp}.tar.gz")
        self.change(f"back up /etc/asterisk to /var/backups/gateway/{backup.name}", lambda: _tar(etc, backup))
        for conf, snippet in INCLUDES.items():
            path = etc / conf
            if path.exists():
                drop = (f'#include "{snippet}"'.encode(), b"; gateway")
                kept = b"".join(ln for ln in path.read_bytes().splitlines(keepends=True) if ln.strip() not in drop)
                if kept != path.read_bytes():
                    self.change(f"remove the #include of {snippet} from /etc/asterisk/{conf}", _writer(path, kept))
            if (etc / snippet).exists():
                self.change(f"remove /etc/asterisk/{snippet}", (etc / snippet).unlink)

    def uninstall(self, purge: bool) -> int:
        """Remove what install made; keep configuration and data unless ``purge``."""
        unit = self.p("/etc/systemd/system/gateway.service")
        if unit.exists():
            if self.real_root and Path("/run/systemd/system").is_dir():
                self.run(["systemctl", "disable", "--now", "gateway.service"], "stop and disable gateway.service")
            self.change("remove /etc/systemd/system/gateway.service", unit.unlink)
        rule = self.p("/etc/udev/rules.d/99-gateway-modem.rules")
        if rule.exists():
            self.change("remove /etc/udev/rules.d/99-gateway-modem.rules", rule.unlink)
        opt = self.p("/opt/gateway")
        if opt.exists():
            self.change("remove /opt/gateway", lambda: shutil.rmtree(opt))
        self._unmerge_asterisk()
        if purge:
            for absolute in ("/etc/gateway", "/var/lib/gateway"):
                path = self.p(absolute)
                if path.exists():
                    self.change(f"remove {absolute} (--purge)", _remover(path))
            if self.real_root:
                try:
                    pwd.getpwnam(USER)
                except KeyError:
                    pass
                else:
                    self.run(["userdel", USER], f"remove the system user {USER} (--purge)")
        else:
            self.out("kept /etc/gateway and /var/lib/gateway (configuration, database, backups); --purge removes them")
        self._summary()
        return 0

    def _summary(self) -> None:
        if not self.changes:
            self.out("nothing to change: the box is as it should be")
        elif self.dry_run:
            self.out(f"dry run: {len(self.changes)} change(s) listed above, none made")
        else:
            self.out(f"done: {len(self.changes)} change(s)")


def _section_from(text: str, marker: str) -> bytes:
    """The rendered file from the line ``marker`` on, under a header saying where it comes from."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == marker)
    except StopIteration as err:
        raise SystemExit(f"install.sh: the shipped Asterisk configuration has no {marker} section") from err
    head = "; Written by the gateway's ./install.sh office; do not edit (it is rewritten). Pulled in by #include.\n"
    return (head + "\n".join(lines[start:]) + "\n").encode()


def _writer(path: Path, content: bytes) -> Callable[[], None]:
    def write() -> None:
        path.write_bytes(content)

    return write


def _remover(path: Path) -> Callable[[], None]:
    def remove() -> None:
        shutil.rmtree(path)

    return remove


def _tar(directory: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    target.write_bytes(buf.getvalue())
    target.chmod(0o600)


def _try_download(argv: list[str], out: Callable[[str], None]) -> None:
    done = subprocess.run(argv, check=False)  # noqa: S603 - our own script
    if done.returncode != 0:
        out("could not download the English model (offline?); the packaged model is used when installed")


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.installer office|uninstall [...]``."""
    ap = argparse.ArgumentParser(prog="./install.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("office", "uninstall"))
    ap.add_argument("--root", default="/", help="install into this directory instead of / (for tests)")
    ap.add_argument("--dry-run", action="store_true", help="print every change, make none")
    ap.add_argument("--skip-venv", action="store_true", help="do not create /opt/gateway/.venv")
    ap.add_argument("--no-download", action="store_true", help="do not download the English speech model")
    ap.add_argument("--purge", action="store_true", help="uninstall: also remove /etc/gateway and /var/lib/gateway")
    args = ap.parse_args(argv)
    root = Path(args.root).absolute()
    if root == Path("/") and os.geteuid() != 0:
        print("install.sh: run as root (or give --root DIR)", file=sys.stderr)
        return 77
    inst = Installer(root, dry_run=args.dry_run, skip_venv=args.skip_venv, download=not args.no_download)
    if args.command == "office":
        return inst.install()
    return inst.uninstall(args.purge)


if __name__ == "__main__":
    raise SystemExit(main())
