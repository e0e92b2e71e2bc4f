"""The real-call harness works: the local Asterisk comes up with the repository's config, AMI
logs in, sipp calls reach the staff phones and the voicemail, and the dialplan carries on without
a FastAGI server.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.realpbx import harness
from tests.realpbx.harness import (
    AmiCredentials,
    AmiProbe,
    FakeFastAgi,
    PbxSettings,
    SipHarness,
    serve_fake_fastagi,
    unique_caller,
)

LABEL = "Maria R - roof estimate"
DIALLED = "5550100"


def _script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [harness.BASH, str(harness.SCRIPT), *args],
        env={**os.environ, "GATEWAY_ASTERISK_ENV": str(harness.TEST_ENV), **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _port_closed(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) != 0


# --- rendering (no Asterisk needed) ---------------------------------------------------------------


def test_render_fills_placeholders_and_drops_empty_optional_lines(tmp_path: Path) -> None:
    test_out, prod_out = tmp_path / "test", tmp_path / "prod"
    state = {"GATEWAY_ASTERISK_STATE": str(tmp_path / "state")}
    assert _script("render", str(test_out), env=state).returncode == 0
    prod = subprocess.run(
        [harness.BASH, str(harness.SCRIPT), "render", str(prod_out)],
        env={k: v for k, v in {**os.environ, **state}.items() if k != "GATEWAY_ASTERISK_ENV"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert prod.returncode == 0, prod.stderr

    pjsip = (test_out / "pjsip.conf").read_text()
    assert "contact = sip:201@127.0.0.1:15201" in pjsip
    assert "bind = 127.0.0.1:15060" in pjsip
    assert "match = 127.0.0.2" in pjsip
    manager = (test_out / "manager.conf").read_text()
    assert "port = 15038" in manager
    assert "secret = test-ami-secret-loopback-only" in manager
    assert "agi://127.0.0.1:14573/inbound" in (test_out / "extensions.conf").read_text()
    for conf in test_out.iterdir():
        assert not re.search(r"@[A-Z0-9_]+@", conf.read_text()), f"unrendered placeholder in {conf.name}"

    # Production defaults: phones register (no static contact), secrets are generated and kept.
    prod_pjsip = (prod_out / "pjsip.conf").read_text()
    assert "contact = sip:201" not in prod_pjsip
    assert "port = 5038" in (prod_out / "manager.conf").read_text()
    secrets = (tmp_path / "state" / "secrets.env").read_text()
    generated = dict(line.split("=", 1) for line in secrets.splitlines())
    assert len(generated["AMI_SECRET"]) >= 20
    assert f"secret = {generated['AMI_SECRET']}" in (prod_out / "manager.conf").read_text()
    assert (tmp_path / "state" / "secrets.env").stat().st_mode & 0o077 == 0

    # A second render keeps the same generated secret (the gateway's config must not go stale).
    again = tmp_path / "again"
    subprocess.run(
        [harness.BASH, str(harness.SCRIPT), "render", str(again)],
        env={k: v for k, v in {**os.environ, **state}.items() if k != "GATEWAY_ASTERISK_ENV"},
        capture_output=True,
        check=True,
    )
    assert (again / "manager.conf").read_text() == (prod_out / "manager.conf").read_text()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("AMI_PORT", "50x38", "AMI_PORT='50x38' must be a whole number"),
        ("AGI_ADDR", "localhost", "AGI_ADDR='localhost' must be IP:PORT"),
        ("STAFF_GROUP", "PJSIP/201;evil", "STAFF_GROUP must not contain ';'"),
        ("RECORDINGS_DIR", "relative/dir", "RECORDINGS_DIR must be an absolute path"),
    ],
)
def test_bad_setting_is_refused_with_the_fix(tmp_path: Path, name: str, value: str, expected: str) -> None:
    proc = _script(
        "render",
        str(tmp_path / "out"),
        env={f"GATEWAY_ASTERISK_{name}": value, "GATEWAY_ASTERISK_STATE": str(tmp_path / "state")},
    )
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert not (tmp_path / "out").exists()


# --- the running PBX ------------------------------------------------------------------------------


@pytest.mark.asterisk
def test_provision_and_start_are_idempotent_and_fast(realpbx: PbxSettings) -> None:
    t0 = time.monotonic()
    assert _script("provision").returncode == 0
    warm_provision = time.monotonic() - t0
    # A first start may reload a configuration edited since the PBX came up; the second is a no-op.
    assert _script("start").returncode == 0
    t0 = time.monotonic()
    again = _script("start")
    warm_start = time.monotonic() - t0
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert warm_provision < 5
    assert warm_start < 5
    status = _script("status")
    assert status.returncode == 0
    assert status.stdout.startswith("running")


@pytest.mark.asterisk
def test_start_never_fails_while_asterisk_is_up(realpbx: PbxSettings, tmp_path: Path) -> None:
    """An Asterisk this state directory did not start (another state dir, or our pid file lost) is up with the
    same configuration: start adopts it. It used to launch a second Asterisk, which exits at once ("already
    running on asterisk.ctl"), and reported "asterisk exited during start" while Asterisk was up."""
    assert _script("start").returncode == 0
    before = _script("status")
    assert before.returncode == 0, before.stdout
    other_state = {"GATEWAY_ASTERISK_STATE": str(tmp_path / "state")}
    got = _script("start", env=other_state)
    assert got.returncode == 0, got.stderr
    assert "exited" not in got.stderr
    assert "already running" in got.stderr
    # The same process, not a restart; and the adopted instance is what both state dirs now report.
    pid = re.search(r"pid=(\d+)", before.stdout)
    assert pid is not None
    assert f"pid={pid.group(1)} " in _script("status", env=other_state).stdout
    assert f"pid={pid.group(1)} " in _script("status").stdout


@pytest.mark.asterisk
async def test_ami_login_with_config_credentials(ami_credentials: AmiCredentials) -> None:
    probe = AmiProbe(ami_credentials)
    try:
        reply = await probe.connect()
        assert probe.banner.startswith("Asterisk Call Manager/")
        assert reply["Response"] == "Success", reply
        pong = await probe.action("Ping")
        assert pong["Response"] == "Success"
        # write=reporting is enough for the resync after a reconnect.
        channels = await probe.action("CoreShowChannels")
        assert channels["Response"] == "Success", channels
        # Not granted: the Command action (class `command`) would be code execution.
        refused = await probe.action("Command", Command="core show version")
        assert refused["Response"] == "Error"
    finally:
        await probe.close()

    wrong = AmiProbe(AmiCredentials(ami_credentials.host, ami_credentials.port, ami_credentials.username, "nope"))
    try:
        reply = await wrong.connect()
        assert reply["Response"] == "Error"
        assert "Authentication failed" in reply.get("Message", "")
    finally:
        await wrong.close()


@pytest.mark.asterisk
async def test_unanswered_call_reaches_voicemail(
    sip: SipHarness, ami_credentials: AmiCredentials, recordings_dir: Path, korean_speech_wav: Path
) -> None:
    assert _port_closed("127.0.0.1", 14573), "nothing may listen on the FastAGI port in this test"
    phones = [await sip.phone(ext, "ring") for ext in ("201", "202", "203")]
    probe = AmiProbe(ami_credentials)
    assert (await probe.connect())["Response"] == "Success"
    caller = unique_caller()
    try:
        result = await sip.place_call(DIALLED, caller, "Walk In", hold_s=3, rtp_wav=korean_speech_wav)
        assert result.ok, result.stderr
        assert result.answered  # by the voicemail, after the group rang out
        event = await probe.wait_for(
            lambda m: m.get("UserEvent") == "VoicemailRecorded" and m.get("CallerNumber") == caller,
            15,
        )
    finally:
        await probe.close()

    for phone in phones:
        assert len(phone.invites(caller)) == 1, f"phone {phone.extension} should have rung once"
        assert phone.answered_calls(caller) == 0
    wav = Path(event["File"])
    assert wav.parent == recordings_dir
    assert wav.exists()
    assert event["Linkedid"] in wav.name
    assert event["Reason"] == "noanswer"
    assert event["Dialled"] == DIALLED
    assert event["CallerNumber"] == caller
    assert event["CallerIDNum"] == caller
    duration = harness.wav_duration(wav)
    assert 2.0 <= duration <= 6.0, duration
    assert abs(float(event["Duration"]) - duration) < 0.1
    # The read classes and the event filter keep the floods out.
    kinds = {m.get("Event") for m in probe.events}
    assert {"Newchannel", "Hangup", "DialBegin", "DialEnd"} <= kinds
    assert not kinds & {"VarSet", "Newexten", "AGIExecStart", "AGIExecEnd"}


@pytest.mark.asterisk
async def test_answered_call_shows_the_label_set_by_fastagi(sip: SipHarness, realpbx: PbxSettings) -> None:
    agi = FakeFastAgi({"GW_KNOWN": "1", "GW_CONTACT_ID": "42", "GW_FIRST": "202", "CALLERID(name)": LABEL})
    caller = unique_caller()
    first = await sip.phone("202", "answer", ring_s=0.5)
    others = [await sip.phone(ext, "ring") for ext in ("201", "203")]
    host, port = realpbx.agi_addr
    async with serve_fake_fastagi(agi, host, port):
        result = await sip.place_call(DIALLED, caller, "MARIA ROSSI", hold_s=1)
    assert result.ok, result.stderr
    assert result.answered

    (request,) = [r for r in agi.requests if r.get("agi_callerid") == caller]
    assert request["agi_network_script"] == "inbound"
    assert request["agi_arg_1"] == DIALLED
    assert all(reply.startswith("200 result=1") for reply in agi.replies), agi.replies
    # Sticky routing: the returning caller's last staff member rang alone and answered.
    assert first.displays(caller) == [LABEL]
    assert first.answered_calls(caller) == 1
    for phone in others:
        assert phone.invites(caller) == []


@pytest.mark.asterisk
async def test_first_choice_not_answering_falls_back_to_the_group(sip: SipHarness, realpbx: PbxSettings) -> None:
    agi = FakeFastAgi({"GW_FIRST": "203", "CALLERID(name)": LABEL})
    caller = unique_caller()
    late = await sip.phone("203", "ring")
    answering = await sip.phone("201", "answer", ring_s=0.5)
    other = await sip.phone("202", "ring")
    host, port = realpbx.agi_addr
    async with serve_fake_fastagi(agi, host, port):
        result = await sip.place_call(DIALLED, caller, "MARIA ROSSI", hold_s=1)
    assert result.answered
    first_ring_s, _ = realpbx.ring_seconds()
    # 203 rang alone first, then the whole group (203 again, 201, 202); 201 answered.
    assert late.displays(caller) == [LABEL, LABEL]
    assert answering.displays(caller) == [LABEL]
    assert answering.answered_calls(caller) == 1
    assert other.displays(caller) == [LABEL]
    assert late.answered_calls(caller) == 0
    assert other.answered_calls(caller) == 0
    assert result.ended_at - result.started_at >= first_ring_s


@pytest.mark.asterisk
async def test_call_still_works_without_fastagi_server(sip: SipHarness) -> None:
    assert _port_closed("127.0.0.1", 14573)
    answering = await sip.phone("201", "answer", ring_s=0.3)
    ringing = [await sip.phone(ext, "ring") for ext in ("202", "203")]
    caller = unique_caller()
    result = await sip.place_call(DIALLED, caller, 'Bob "the boss"; x', hold_s=1)
    assert result.ok, result.stderr
    assert result.answered
    assert answering.answered_calls(caller) == 1
    # Without the gateway the caller's own name is still filtered before it reaches a phone.
    assert answering.displays(caller) == ["Bob the boss x"]
    for phone in ringing:
        assert len(phone.invites(caller)) == 1


@pytest.mark.asterisk
async def test_all_busy_goes_to_voicemail_with_reason(
    sip: SipHarness, ami_credentials: AmiCredentials, korean_speech_wav: Path
) -> None:
    caller = unique_caller()
    for ext in ("201", "202", "203"):
        await sip.phone(ext, "busy")
    probe = AmiProbe(ami_credentials)
    await probe.connect()
    try:
        result = await sip.place_call(DIALLED, caller, None, hold_s=3, rtp_wav=korean_speech_wav)
        assert result.answered
        event = await probe.wait_for(
            lambda m: m.get("UserEvent") == "VoicemailRecorded" and m.get("CallerNumber") == caller,
            15,
        )
    finally:
        await probe.close()
    assert event["Reason"] == "busy"
    assert Path(event["File"]).exists()


@pytest.mark.asterisk
async def test_caller_hanging_up_while_ringing(sip: SipHarness, ami_credentials: AmiCredentials) -> None:
    phones = [await sip.phone(ext, "ring") for ext in ("201", "202", "203")]
    caller = unique_caller()
    probe = AmiProbe(ami_credentials)
    await probe.connect()
    try:
        result = await sip.place_call(DIALLED, caller, "Quick", hold_s=0, hangup_after_ring_s=1)
        assert result.ok, result.stderr
        assert not result.answered
        assert result.final_status == 487
        hangup = await probe.wait_for(
            lambda m: (
                m.get("Event") == "Hangup"
                and m.get("CallerIDNum") == caller
                and m.get("Channel", "").startswith("PJSIP/trunk-")
            ),
            10,
        )
        # Give a voicemail event (there must be none) time to show up.
        with pytest.raises(TimeoutError):
            await probe.wait_for(
                lambda m: m.get("UserEvent") == "VoicemailRecorded" and m.get("CallerNumber") == caller,
                1.5,
            )
    finally:
        await probe.close()
    assert hangup["Cause-txt"]
    for phone in phones:
        assert len(phone.invites(caller)) == 1


@pytest.mark.asterisk
async def test_click_to_call_rings_staff_then_customer(sip: SipHarness, ami_credentials: AmiCredentials) -> None:
    staff = await sip.phone("202", "answer", ring_s=0.3)
    customer = await sip.customer("answer", ring_s=0.3)
    customer_number = unique_caller()
    probe = AmiProbe(ami_credentials)
    await probe.connect()
    try:
        reply = await probe.action(
            "Originate",
            Channel="PJSIP/202",
            Context="gw-click-to-call",
            Exten=customer_number,
            Priority="1",
            CallerID=f'"{LABEL}" <{customer_number}>',
            Variable="__GW_CONVERSATION_ID=7",
            Async="true",
            Timeout="10000",
        )
        assert reply["Response"] == "Success", reply
        await probe.wait_for(lambda m: m.get("Event") == "OriginateResponse", 15)
        (invite,) = await customer.wait_for_invites(1, 15)
        await probe.wait_for(lambda m: m.get("Event") == "BridgeEnter" and "trunk" in m.get("Channel", ""), 15)
    finally:
        await probe.close()
        # Neither side hangs up by itself; the AMI user may not (no `call`/`system` write class).
        harness.hangup_channels(sip.settings, "PJSIP/202-")
    assert staff.displays(customer_number) == [LABEL]
    assert staff.answered_calls(customer_number) == 1
    assert invite.method == "INVITE"
    assert invite.start_line.startswith(f"INVITE sip:{customer_number}@127.0.0.1:15299")
    assert "<sip:5550100@" in (invite.header("From") or "")


@pytest.mark.asterisk
@pytest.mark.parametrize(
    ("application", "data"),
    [
        ("System", "touch /tmp/gateway-ami-rce-probe"),
        ("Set", "FILE(/tmp/gateway-ami-rce-probe,,,al)=exten => 1,1,System(id)"),
    ],
)
async def test_ami_user_cannot_turn_originate_into_code_execution(
    ami_credentials: AmiCredentials, application: str, data: str
) -> None:
    # The CVE-2024-42365 shape: Originate running an application that executes or writes files.
    probe = AmiProbe(ami_credentials)
    await probe.connect()
    try:
        reply = await probe.action(
            "Originate",
            Channel="Local/nobody@gw-none",
            Application=application,
            Data=data,
            Async="true",
        )
    finally:
        await probe.close()
    assert reply["Response"] == "Error"
    assert "Originate Access Forbidden" in reply.get("Message", "")


def test_status_of_a_stopped_instance_exits_3(tmp_path: Path) -> None:
    # Another state and run directory: no Asterisk of this instance runs (the shared test PBX has its own).
    proc = _script(
        "status",
        env={"GATEWAY_ASTERISK_STATE": str(tmp_path / "state"), "GATEWAY_ASTERISK_RUN_DIR": "/run/gateway-nothing"},
    )
    assert proc.returncode == 3
    assert proc.stdout.startswith("stopped")


def test_unreadable_settings_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    proc = _script("env", env={"GATEWAY_ASTERISK_ENV": str(missing), "GATEWAY_ASTERISK_STATE": str(tmp_path)})
    assert proc.returncode != 0
    assert f"settings file {missing} is not readable" in proc.stderr


def test_malformed_settings_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("AMI_PORT=15038\nthis is not a setting\n")
    proc = _script("env", env={"GATEWAY_ASTERISK_ENV": str(bad), "GATEWAY_ASTERISK_STATE": str(tmp_path)})
    assert proc.returncode != 0
    assert "bad line 'this is not a setting' (expected NAME=value)" in proc.stderr


def test_provision_refuses_a_foreign_root_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "precious.txt").write_text("not ours")
    proc = _script(
        "provision",
        env={
            "GATEWAY_ASTERISK_ROOT": str(root),
            "GATEWAY_ASTERISK_STATE": str(tmp_path / "state"),
            "GATEWAY_ASTERISK_FORCE_CHROOT": "1",
        },
    )
    assert proc.returncode != 0
    assert "exists and is not ours" in proc.stderr
    assert (root / "precious.txt").read_text() == "not ours"


@pytest.mark.asterisk
async def test_gateway_can_close_the_office(
    sip: SipHarness, realpbx: PbxSettings, ami_credentials: AmiCredentials, korean_speech_wav: Path
) -> None:
    phones = [await sip.phone(ext, "answer") for ext in ("201", "202", "203")]
    caller = unique_caller()
    # A contact id with a comma would split the UserEvent's fields: only digits pass.
    agi = FakeFastAgi({"GW_CLOSED": "1", "GW_CONTACT_ID": "42,Reason: forged"})
    probe = AmiProbe(ami_credentials)
    await probe.connect()
    try:
        async with serve_fake_fastagi(agi, *realpbx.agi_addr):
            result = await sip.place_call(DIALLED, caller, "Late", hold_s=3, rtp_wav=korean_speech_wav)
        assert result.answered
        event = await probe.wait_for(
            lambda m: m.get("UserEvent") == "VoicemailRecorded" and m.get("CallerNumber") == caller,
            15,
        )
    finally:
        await probe.close()
    assert event["Reason"] == "closed"
    assert event["ContactId"] == "42"
    for phone in phones:
        assert phone.invites(caller) == []


@pytest.mark.asterisk
@pytest.mark.parametrize(
    ("variables", "rung"),
    [
        # A valid group from the gateway replaces the default one.
        ({"GW_GROUP": "PJSIP/203"}, {"203"}),
        # Anything but PJSIP endpoints joined by & is ignored: the default group rings.
        ({"GW_GROUP": "Local/5551234@gw-click-to-call"}, {"201", "202", "203"}),
        ({"GW_GROUP": "PJSIP/201,,tT"}, {"201", "202", "203"}),
        # GW_FIRST is filtered to an endpoint name; a mangled one matches no device and is skipped.
        ({"GW_FIRST": "201&Local/1@gw-staff"}, {"201", "202", "203"}),
    ],
)
async def test_routing_variables_from_the_gateway_are_validated(
    sip: SipHarness, realpbx: PbxSettings, variables: dict[str, str], rung: set[str]
) -> None:
    phones = {ext: await sip.phone(ext, "ring") for ext in ("201", "202", "203")}
    caller = unique_caller()
    async with serve_fake_fastagi(FakeFastAgi(variables), *realpbx.agi_addr):
        result = await sip.place_call(DIALLED, caller, "Routing", hold_s=0.5, media_delay_s=0.1, timeout_s=40)
    assert result.answered  # by the voicemail once the group rang out
    got = {ext for ext, phone in phones.items() if phone.invites(caller)}
    assert got == rung
    for phone in phones.values():
        assert len(phone.invites(caller)) <= 1  # nobody rang alone first


def test_host_asterisk_is_used_when_installed(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "asterisk"
    fake.write_text("#!/bin/sh\necho 'Asterisk 22.0.0'\n")
    fake.chmod(0o755)
    proc = _script(
        "env",
        env={
            "PATH": f"{fake_bin}:{os.environ['PATH']}",
            "GATEWAY_ASTERISK_STATE": str(tmp_path / "state"),
        },
    )
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert values["MODE"] == "host"
    assert values["HOST_CONF_DIR"] == "/etc/gateway-asterisk"
    assert values["HOST_RECORDINGS_DIR"] == "/var/spool/gateway-test/recordings"


@pytest.mark.asterisk
@pytest.mark.slow
async def test_restart_during_a_call_and_calls_flow_again(sip: SipHarness, ami_credentials: AmiCredentials) -> None:
    phone = await sip.phone("201", "answer", ring_s=0.2)
    for ext in ("202", "203"):
        await sip.phone(ext, "ring")
    caller = unique_caller()
    call = asyncio.create_task(sip.place_call(DIALLED, caller, "Cut Off", hold_s=8, timeout_s=30))
    try:
        deadline = time.monotonic() + 20
        while phone.answered_calls(caller) == 0:
            assert time.monotonic() < deadline, "the call was never answered"
            await asyncio.sleep(0.1)
        t0 = time.monotonic()
        await asyncio.to_thread(harness.restart_pbx)
        restart_s = time.monotonic() - t0
        cut = await call
    finally:
        if not call.done():
            call.cancel()
    # The call did not survive: Asterisk hung up on the caller on its way down, well before the hold ended.
    assert cut.far_end_hung_up
    assert cut.ended_at - cut.started_at < 8
    assert restart_s < 15
    probe = AmiProbe(ami_credentials)
    try:
        assert (await probe.connect())["Response"] == "Success"
    finally:
        await probe.close()
    again = unique_caller()
    result = await sip.place_call(DIALLED, again, "After Restart", hold_s=0.5)
    assert result.ok, result.stderr
    assert phone.answered_calls(again) == 1


@pytest.mark.asterisk
async def test_staff_phone_hanging_up_first(sip: SipHarness) -> None:
    phone = await sip.phone("201", "answer", ring_s=0.2, hangup_after_s=1.0)
    for ext in ("202", "203"):
        await sip.phone(ext, "ring")
    caller = unique_caller()
    result = await sip.place_call(DIALLED, caller, "Long Talker", hold_s=20)
    assert result.ok, result.stderr
    assert result.answered
    assert result.far_end_hung_up
    assert result.ended_at - result.started_at < 10
    assert phone.answered_calls(caller) == 1
    phone_bye = [m for m in phone.messages() if m.direction == "sent" and m.method == "BYE"]
    assert len(phone_bye) == 1
    ok = [m for m in phone.messages() if m.direction == "received" and m.status == 200]
    assert any(m.cseq_method == "BYE" for m in ok), "Asterisk accepted the phone's BYE"
