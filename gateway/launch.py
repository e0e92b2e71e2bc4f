"""``gateway up``: the whole product on embedded defaults, in the foreground (what ``./install.sh run`` starts).

Theory of operation: a fixed list of steps, each printed as one progress line with its duration: the local Asterisk
(the distribution's when installed, else the chroot of asterisk-config/local-asterisk.sh, with the shipped
configuration and its staff extensions), the GSM modem emulator on a pseudo-terminal (labelled "emulated modem"
everywhere it shows), the packaged speech model, a generated configuration file in the data directory, the database
with a first admin login (its password printed once), and the gateway itself. A final banner says what runs, where
to click and how to switch to a real modem and a real PBX. Ctrl-C (or SIGTERM) stops everything that was started,
in reverse order, again one line per step; an Asterisk that was already running before is left running. A part that
cannot be had (no Asterisk script, no speech model) is switched off in the generated configuration, and the banner,
the status page and ``gateway doctor`` say so instead of pretending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from gateway import config as config_mod
from gateway.errors import ConfigError
from gateway.values import HealthState

REPO = Path(__file__).resolve().parents[1]
ASTERISK_SCRIPT = REPO / "asterisk-config" / "local-asterisk.sh"
ADMIN = "admin"


class Progress:
    """One line per step with its duration: a live line on a terminal, plain lines in a log."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.tty = self.out.isatty()

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[list[str]]:
        """Run one step; the body may append a short result note to the yielded list."""
        note: list[str] = []
        start = time.monotonic()
        if self.tty:
            self.out.write(f"  ... {what}\r")
            self.out.flush()
        try:
            yield note
        except BaseException as err:
            self.line("FAIL", what, time.monotonic() - start, str(err) or type(err).__name__)
            raise
        self.line("ok", what, time.monotonic() - start, "; ".join(note))

    def line(self, verdict: str, what: str, seconds: float, note: str = "") -> None:
        """Print one finished step."""
        tail = f": {note}" if note else ""
        self.out.write(f"[{verdict:>4}] {what} ({seconds:.1f} s){tail}\n")
        self.out.flush()

    def say(self, text: str) -> None:
        """A plain line."""
        self.out.write(text + "\n")
        self.out.flush()


@dataclass
class Started:
    """What ``up`` started and must stop (in reverse order)."""

    asterisk_started: bool = False
    emulator: object | None = None
    control: object | None = None
    facts: dict[str, str] = field(default_factory=dict)


def _script(*args: str, timeout: float = 1800, show: bool = False) -> subprocess.CompletedProcess[str]:
    """Run local-asterisk.sh; with ``show`` its own progress lines go straight to the terminal (or the log)."""
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run(  # noqa: S603 - our own script with fixed arguments
        [bash, str(ASTERISK_SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=None if show else subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )


def _pbx_env() -> dict[str, str]:
    done = _script("env", timeout=60)
    if done.returncode != 0:
        raise ConfigError(f"local-asterisk.sh env failed: {done.stderr.strip()[-300:]}")
    values: dict[str, str] = {}
    for raw in done.stdout.splitlines():
        key, sep, value = raw.partition("=")
        if sep:
            values[key] = value
    return values


def start_asterisk(progress: Progress, started: Started) -> dict[str, str] | None:
    """Provision and start the local Asterisk; None (voice off) when this checkout has no script."""
    if not ASTERISK_SCRIPT.is_file():
        progress.say(f"[ off] Asterisk: {ASTERISK_SCRIPT} is not here; the voice channel stays off")
        return None
    with progress.step("Asterisk: provisioning the local PBX (the first time takes a few minutes)") as note:
        done = _script("provision", show=True)  # the first time it installs a chroot: its lines show progress
        if done.returncode != 0:
            raise ConfigError("provisioning Asterisk failed (its messages are above)")
        note.append("installed")
    # Calls from sipp on 127.0.0.2 play the trunk (the demo's customer calls in that way).
    os.environ.setdefault("GATEWAY_ASTERISK_TRUNK_MATCH", "127.0.0.2")
    with progress.step("Asterisk: starting with the shipped configuration") as note:
        was_running = _script("status", timeout=60).returncode == 0
        done = _script("start", timeout=300)
        if done.returncode != 0:
            raise ConfigError(f"starting Asterisk failed: {done.stderr.strip()[-500:]}")
        env = _pbx_env()
        started.asterisk_started = not was_running
        note.append(
            f"{env.get('MODE', '?')} Asterisk, AMI on 127.0.0.1:{env['AMI_PORT']}, SIP on "
            f"{env['SIP_BIND']}:{env['SIP_PORT']}" + (" (already running, left as it was)" if was_running else "")
        )
    return env


def start_emulator(progress: Progress, started: Started, data_dir: Path) -> Path:
    """The GSM modem emulator on a pty, with its control socket (``gateway demo`` texts through it)."""
    from gateway.emulator.control import ControlServer  # noqa: PLC0415
    from gateway.emulator.modem import ModemEmulator  # noqa: PLC0415

    link = data_dir / "emulated-modem"
    with progress.step("emulated modem: GSM modem emulator on a pseudo-terminal") as note:
        emulator = ModemEmulator("huawei-e3372", link=link, own_number="+15550001111")
        emulator.start()
        started.emulator = emulator
        control = ControlServer(emulator, data_dir / "emulated-modem.ctl")
        control.start()
        started.control = control
        note.append(f"{link} -> {os.path.realpath(link)}, SIM number +15550001111")
    return link


def find_model(progress: Progress) -> str:
    """The packaged speech model's path, or "" (transcription off)."""
    from gateway.transcribe.model import check_model, resolve_model_path  # noqa: PLC0415

    with progress.step("speech model") as note:
        path = resolve_model_path("")
        problem = check_model(path)
        if problem:
            note.append(f"none, transcription off ({problem})")
            return ""
        note.append(path)
    return path


def _live_call_lines(pbx: dict[str, str]) -> list[str]:
    """The whisper cache and live transcription over ARI, when the local Asterisk offers them."""
    lines: list[str] = []
    if pbx.get("WHISPER_DIR"):
        lines.append(f'whisper_dir = "{pbx["WHISPER_DIR"]}"')
    if pbx.get("HOST_RECORDINGS_DIR"):
        lines.append(f'recordings_dir = "{pbx["HOST_RECORDINGS_DIR"]}"')
    if pbx.get("ARI_PORT") and pbx.get("ARI_PASSWORD"):
        lines += [
            f'ari_url = "http://127.0.0.1:{int(pbx["ARI_PORT"])}"',
            f'ari_username = "{pbx.get("ARI_USER", "gateway-ari")}"',
            f'ari_password = "{pbx["ARI_PASSWORD"]}"',
            "# One live transcription worker is enough for the demo's calls (each holds the model once).",
            "live_workers = 1",
        ]
    return lines


def render_config(data_dir: Path, pbx: dict[str, str] | None, modem: Path, model: str, port: int) -> str:
    """The generated configuration for this run (TOML)."""
    lines = [
        "# Generated by `gateway up` for the all-in-one first run; rewritten at every start.",
        "# For a real office box use ./install.sh office, which writes /etc/gateway/gateway.toml.",
        "[gateway]",
        f'data_dir = "{data_dir}"',
        "[sms]",
        "enabled = true",
        f'device = "{modem}"',
        'profile = "huawei-e3372"',
    ]
    if pbx is None:
        lines += ["[voice]", "enabled = false"]
    else:
        agi_host, _, agi_port = pbx["AGI_ADDR"].rpartition(":")
        lines += [
            "[voice]",
            "enabled = true",
            'ami_host = "127.0.0.1"',
            f"ami_port = {int(pbx['AMI_PORT'])}",
            f'ami_username = "{pbx["AMI_USER"]}"',
            f'ami_secret = "{pbx["AMI_SECRET"]}"',
            f'agi_host = "{agi_host}"',
            f"agi_port = {int(agi_port)}",
            f'staff = {{ "201" = "{ADMIN}" }}',
            *_live_call_lines(pbx),
            "# Demo pacing: the test PBX rings the group for a few seconds only.",
            "abandon_seconds = 3.0",
        ]
        # Recovery after downtime reads Asterisk's own call records where the host sees them.
        if pbx.get("HOST_CDR_FILE"):
            lines.append(f'cdr_file = "{pbx["HOST_CDR_FILE"]}"')
    lines += ["[transcribe]", f"enabled = {'true' if model else 'false'}"]
    if model:
        lines.append(f'model_path = "{model}"')
    lines += [
        "[continuity]",
        "# Demo pacing: the missed-call text-back is decided 20 s after the call instead of 3 minutes.",
        "missed_call_delay_seconds = 20",
        "# Demo pacing: one customer does everything within two minutes, which the default restraint (one",
        "# automated message per episode) would rightly hold back to a single text.",
        "max_per_episode = 3",
        "[web]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "secure_cookies = false",
    ]
    if pbx is not None:
        lines.append(f'voicemail_dir = "{pbx["HOST_RECORDINGS_DIR"]}"')
    return "\n".join(lines) + "\n"


def write_config(progress: Progress, path: Path, text: str) -> config_mod.Config:
    """Write the generated configuration (0600: it holds the AMI secret) and load it back."""
    with progress.step("configuration") as note:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, 0o600)
        cfg = config_mod.load(path)
        note.append(str(path))
    return cfg


async def ensure_admin(progress: Progress, cfg: config_mod.Config) -> str | None:
    """Create the first admin login when there is no staff user yet; its password is returned (shown once)."""
    import secrets  # noqa: PLC0415

    from gateway.store import queries as q  # noqa: PLC0415
    from gateway.store.db import Store  # noqa: PLC0415
    from gateway.web.pages import create_staff_user  # noqa: PLC0415

    with progress.step("database and first admin login") as note:
        store = Store(cfg.db_path)
        await store.start()
        try:
            users = await store.read(q.all_staff)
            if users:
                note.append(f"{cfg.db_path}, {len(users)} staff login(s) already")
                return None
            password = secrets.token_urlsafe(12)
            await create_staff_user(store, ADMIN, password, display_name="Administrator", extension="201", role="admin")
            note.append(f"{cfg.db_path}, login {ADMIN!r} created")
            return password
        finally:
            await store.stop()


def banner(progress: Progress, cfg: config_mod.Config, pbx: dict[str, str] | None, password: str | None) -> None:
    """What runs, where to click, how to go real."""
    url = f"http://{cfg.web.host}:{cfg.web.port}"
    out = [
        "",
        "=" * 78,
        "gateway is running on embedded defaults",
        f"  console      {url}/console",
        f"  chat demo    {url}/demo",
        f"  status       {url}/status   (or `gateway --config {cfg.source} doctor`)",
    ]
    if password:
        out.append(f"  login        {ADMIN} / {password}   (shown once: write it down)")
    else:
        out.append(f"  login        {ADMIN} (created at the first run; `gateway staff add {ADMIN} --admin` resets it)")
    out.append(f"  SMS          emulated modem at {cfg.sms.device} (no real texts leave this machine)")
    if pbx is None:
        out.append("  calls        off: no local Asterisk")
    else:
        out.append(
            f"  calls        local Asterisk, SIP {pbx['SIP_BIND']}:{pbx['SIP_PORT']}; demo extensions 201 and 202 "
            f"(passwords {pbx.get('PHONE_201_PASSWORD', '?')} / {pbx.get('PHONE_202_PASSWORD', '?')})"
        )
    out.append(
        "  transcription "
        + (f"packaged model {cfg.transcribe.model_path}" if cfg.transcribe.enabled else "off: no speech model")
    )
    out += [
        "",
        f"  try it:      gateway --config {cfg.source} demo   (in a second terminal)",
        "  go real:     plug in a USB GSM modem and set [sms] device (see udev/README.md); point [voice] at your",
        "               Asterisk's AMI (./install.sh office merges the snippets into /etc/asterisk)",
        "  stop:        Ctrl-C stops everything started here, in order",
        "=" * 78,
    ]
    for text in out:
        progress.say(text)


async def _serve(progress: Progress, cfg: config_mod.Config, pbx: dict[str, str] | None, password: str | None) -> None:
    """Start the gateway, print the banner, wait for SIGINT/SIGTERM, stop the gateway."""
    from gateway.app import App  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = App(cfg)
    try:
        with progress.step("gateway: store, channels, web") as note:
            await app.start()
            # The modem handshake and the speech worker's model load take a few seconds: report them settled.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(  # noqa: ASYNC110 - no event says "settled"; poll health
                h.state is HealthState.DOWN for h in app.health() if h.name in PARTS
            ):
                await asyncio.sleep(0.5)
            note.append(", ".join(f"{h.title} {h.state.value}" for h in app.health() if h.name in PARTS))
        banner(progress, cfg, pbx, password)
        await stop.wait()
        progress.say("stop requested; stopping what was started, in reverse order")
    finally:
        with progress.step("stopping the gateway"):
            await app.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


PARTS = ("modem", "asterisk", "transcription")


def shutdown(progress: Progress, started: Started) -> None:
    """Stop what ``up`` started, in reverse order."""
    from gateway.emulator.control import ControlServer  # noqa: PLC0415
    from gateway.emulator.modem import ModemEmulator  # noqa: PLC0415

    if isinstance(started.control, ControlServer):
        started.control.stop()
    if isinstance(started.emulator, ModemEmulator):
        with progress.step("stopping the emulated modem"):
            started.emulator.stop()
    if started.asterisk_started:
        with progress.step("stopping the local Asterisk"):
            _script("stop", timeout=120)


def up(data_dir: Path, *, port: int = 8080, with_asterisk: bool = True, out: TextIO | None = None) -> int:
    """Bring everything up, serve until SIGINT/SIGTERM, bring it down again."""
    from gateway.cli import daemon_lock  # noqa: PLC0415

    progress = Progress(out)
    started = Started()
    data_dir = data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)  # during the start steps; the loop has its own handler
    try:
        pbx = start_asterisk(progress, started) if with_asterisk else None
        modem = start_emulator(progress, started, data_dir)
        model = find_model(progress)
        cfg = write_config(progress, data_dir / "gateway.toml", render_config(data_dir, pbx, modem, model, port))
        facts = data_dir / "demo-pbx.json"
        if pbx is not None:
            keys = (
                "SIP_BIND",
                "SIP_PORT",
                "GROUP_RING_S",
                "PHONE_201_CONTACT",
                "PHONE_202_CONTACT",
                "PHONE_203_CONTACT",
            )
            facts.write_text(json.dumps({k: pbx.get(k, "") for k in keys}), encoding="utf-8")
        else:
            facts.unlink(missing_ok=True)
        with daemon_lock(cfg):
            password = asyncio.run(ensure_admin(progress, cfg))
            asyncio.run(_serve(progress, cfg, pbx, password))
    except KeyboardInterrupt:
        progress.say("stop requested; stopping what was started, in reverse order")
    finally:
        shutdown(progress, started)
        signal.signal(signal.SIGTERM, previous)
    progress.say("everything started here is stopped")
    return 0
