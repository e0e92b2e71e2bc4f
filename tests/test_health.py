"""Each part's verdicts: ok, degraded and down states with the cause and the fix in words."""

from __future__ import annotations

import dataclasses
import os
import pty
from pathlib import Path

import pytest

from gateway import health
from gateway.channels.sms.health import modem_verdict
from gateway.channels.voice.health import ami_verdict
from gateway.channels.voice.settings import VoiceSettings
from gateway.domain.events import ModemHealth
from gateway.values import HealthState

GOOD = ModemHealth(
    device="/dev/ttyUSB0", connected=True, connected_since=1.0, profile="generic", signal_dbm=-71,
    operator="TestNet", registration=1, registration_text="registered, home network", storage_percent=10,
)  # fmt: skip


def verdict(state: ModemHealth, **kw: object) -> tuple[HealthState, str, str]:
    args: dict[str, object] = {
        "configured_device": "/dev/ttyUSB0",
        "up": True,
        "since": 1.0,
        "last_error": None,
        "pin_problem": None,
        "storage_warn_percent": 80,
    }
    args.update(kw)
    h = modem_verdict(state, **args)  # type: ignore[arg-type]
    return h.state, h.cause, h.fix


@pytest.mark.parametrize(
    ("change", "kw", "state", "cause", "fix"),
    [
        ({}, {}, HealthState.OK, "registered on TestNet, signal -71 dBm", ""),
        ({}, {"pin_problem": "the SIM needs a PIN"}, HealthState.DOWN, "the SIM is locked", "sms.pin"),
        ({"device": None}, {"up": False, "configured_device": "/nonexistent/tty*"}, HealthState.DOWN,
         "no modem at /nonexistent/tty*", "plug the USB modem in"),
        ({}, {"up": False, "last_error": "no answer to AT"}, HealthState.DOWN, "does not answer (no answer to AT)",
         "unplug the modem"),
        ({"registration": 3, "registration_text": "registration denied"}, {}, HealthState.DOWN,
         "not on the mobile network", "SIM is activated"),
        ({"registration": 2, "registration_text": "searching"}, {}, HealthState.DEGRADED, "looking for the mobile",
         "wait a minute"),
        ({"signal_dbm": -111}, {}, HealthState.DEGRADED, "weak signal (-111 dBm)", "near a window"),
        ({"storage_percent": 95}, {}, HealthState.DEGRADED, "95% full", "drains within minutes"),
    ],
)  # fmt: skip
def test_modem_verdicts(
    change: dict[str, object], kw: dict[str, object], state: HealthState, cause: str, fix: str
) -> None:
    got_state, got_cause, got_fix = verdict(dataclasses.replace(GOOD, **change), **kw)  # type: ignore[arg-type]
    assert got_state is state
    assert cause in got_cause
    assert fix in got_fix


def test_emulated_modem_is_labelled() -> None:
    leader, follower = pty.openpty()
    try:
        h = modem_verdict(
            dataclasses.replace(GOOD, device=os.ttyname(follower)),
            configured_device="x", up=True, since=None, last_error=None, pin_problem=None, storage_warn_percent=80,
        )  # fmt: skip
    finally:
        os.close(leader)
        os.close(follower)
    assert h.title == "SMS modem (emulated modem)"
    assert h.details["emulated"] is True
    assert verdict(GOOD)[0] is HealthState.OK


def test_ami_verdicts() -> None:
    settings = VoiceSettings()
    assert ami_verdict(settings, up=True, since=1.0, last_error=None).state is HealthState.OK
    down = ami_verdict(settings, up=False, since=1.0, last_error="cannot connect to AMI at 127.0.0.1:5038")
    assert down.state is HealthState.DOWN
    assert "systemctl start asterisk" in down.fix
    refused = ami_verdict(settings, up=False, since=1.0, last_error="AMI at x refused login for user 'gateway'")
    assert "voice.ami_secret" in refused.fix
    remote = ami_verdict(VoiceSettings(ami_host="192.0.2.10"), up=True, since=1.0, last_error=None)
    assert remote.state is HealthState.DEGRADED


def test_box_checks(tmp_path: Path) -> None:
    assert health.check_clock(lambda: 0).state is HealthState.OK
    unsynced = health.check_clock(lambda: 5)
    assert unsynced.state is HealthState.DEGRADED
    assert "chrony" in unsynced.fix
    assert health.check_descriptors(open_count=10).state in (HealthState.OK, HealthState.DEGRADED)
    assert health.check_backup(tmp_path).state is HealthState.DEGRADED
    (tmp_path / "gateway-1.db").write_bytes(b"x")
    assert health.check_backup(tmp_path).state is HealthState.OK
    old = health.check_backup(tmp_path, now=(tmp_path / "gateway-1.db").stat().st_mtime + 5 * 86400)
    assert old.state is HealthState.DEGRADED
    assert "5 days old" in old.cause
    assert health.check_database(tmp_path / "new" / "gateway.db", 1).state is HealthState.OK
    assert health.check_disk(tmp_path).state in (HealthState.OK, HealthState.DEGRADED)


def test_doctor_line_and_exit_code(tmp_path: Path) -> None:
    broken = health.check_clock(lambda: 5)
    assert health.doctor_line(broken).startswith(
        "[WARN] Clock: the clock is not synchronised with a time server -> fix: "
    )
    assert health.exit_code([broken]) == 0
    (tmp_path / "a-file").write_text("")
    nowhere = health.check_database(tmp_path / "a-file" / "gateway.db", 1)
    assert nowhere.state is HealthState.DOWN
    assert health.exit_code([broken, nowhere]) == 1
