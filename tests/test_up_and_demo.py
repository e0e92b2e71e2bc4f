"""``gateway up`` (what ``./install.sh run`` starts) followed by ``gateway demo``, with the real parts.

The local Asterisk (the shared test PBX: the same rendered configuration, so it is not restarted), the modem emulator
on a pty, the packaged Vosk model, sipp callers and the real web socket. The test asserts the one demo conversation
holds the chat, the SMS reply, the missed call, the text-back decision of the missed-call rule and the voicemail with
its transcript, and that Ctrl-C stops what ``up`` started, in order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.store import readonly
from tests.realpbx import harness
from tests.realpbx.fixtures import realpbx  # noqa: F401 - fixture found by name

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(600)  # waits for the shared PBX's call lock, then about a minute of real calls
def test_up_then_demo_fills_one_conversation(tmp_path: Path, realpbx: harness.PbxSettings) -> None:  # noqa: F811
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_ASTERISK_ENV": str(harness.TEST_ENV)}
    data = tmp_path / "var"
    port = free_port()
    log = (tmp_path / "up.txt").open("w")
    with harness.pbx_call_lock(timeout=600):
        # A newcomer's PBX has no recordings yet. The shared test PBX keeps the voicemails earlier tests left, and
        # `gateway up` recovers those made within voice.recovery_window_hours: each run would make the demo wait
        # for more transcriptions than the last. They belong to finished tests (we hold the call lock).
        for old in realpbx.recordings_dir.glob("*.wav"):
            old.unlink(missing_ok=True)
        up = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "up", "--data-dir", str(data), "--port", str(port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while "gateway is running" not in (tmp_path / "up.txt").read_text():
                assert up.poll() is None, (tmp_path / "up.txt").read_text()
                assert time.monotonic() < deadline, (tmp_path / "up.txt").read_text()
                time.sleep(0.5)
            banner = (tmp_path / "up.txt").read_text()
            started = time.monotonic()
            demo = subprocess.run(
                [sys.executable, "-m", "gateway.cli", "--config", str(data / "gateway.toml"), "demo"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
            )  # fmt: skip
            took = time.monotonic() - started
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=60)
            log.close()
    out = (tmp_path / "up.txt").read_text()
    # Every step printed with its duration, the banner, the login shown once.
    for step in (
        "Asterisk: starting",
        "emulated modem:",
        "speech model",
        "configuration",
        "database and first admin login",
    ):
        assert any(line.startswith("[  ok] " + step) and " s)" in line for line in out.splitlines()), out
    assert "SMS modem (emulated modem) ok, Asterisk (AMI) ok, Voicemail transcription ok" in banner
    assert f"console      http://127.0.0.1:{port}/console" in banner
    assert "login        admin / " in banner
    assert "emulated modem at" in banner
    # Ctrl-C: the gateway first, then the emulator; the shared Asterisk was already running, so it stays.
    tail = out[out.index("stop requested") :]
    assert tail.index("stopping the gateway") < tail.index("stopping the emulated modem"), tail
    assert "everything started here is stopped" in tail
    assert up.returncode == 0
    assert (data / "gateway.toml").stat().st_mode & 0o777 == 0o600

    print(demo.stdout)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert took < 120, f"the demo took {took:.0f} s"
    phone = demo.stdout.split("demo customer ", 1)[1].split()[0]
    found = readonly.conversation_of_phone(data / "gateway.db", phone)
    assert found is not None
    events = readonly.timeline(data / "gateway.db", found)
    kinds = [(e.kind, e.channel) for e in events]
    assert ("message_in", "chat") in kinds
    assert ("message_in", "sms") in kinds
    assert ("call_missed", "voice") in kinds
    assert ("voicemail", "voice") in kinds
    transcripts = [e for e in events if e.kind == "transcript"]
    assert transcripts
    assert transcripts[0].body.strip()
    text_back = [e for e in events if e.kind == "automated" and e.meta.get("rule") == "missed_call"]
    assert text_back, kinds
    assert text_back[-1].meta["decision"] in {"sent", "suppressed", "deferred", "cancelled"}
    assert "text-back: " in demo.stdout
    assert f"look: http://127.0.0.1:{port}/console" in demo.stdout
