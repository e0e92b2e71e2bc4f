"""The modem emulator speaks 27.005/27.007 on a real pty, and its control socket and CLI work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from gateway.emulator import ModemEmulator
from gateway.emulator.control import ControlServer, call
from gateway.protocols import at
from gateway.protocols import pdu as pducodec

ROOT = Path(__file__).resolve().parents[2]


class Port:
    """A blocking test client on the pty, framing answers with the real AT parser."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, timeout=0.05)
        self.parser = at.ATParser()
        self.events: list[at.ATEvent] = []

    def pump(self, until: type, timeout: float = 5.0) -> list[at.ATEvent]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.events.extend(self.parser.feed(self.ser.read(4096)))
            for i, ev in enumerate(self.events):
                if isinstance(ev, until):
                    got, self.events = self.events[: i + 1], self.events[i + 1 :]
                    return got
        raise AssertionError(f"no {until.__name__} within {timeout} s; have {self.events}")

    def cmd(self, line: str, extra: bytes | None = None) -> tuple[list[str], at.FinalResult]:
        self.parser.expect(at.response_prefix(line))
        self.ser.write(line.encode() + b"\r")
        if extra is not None:
            self.pump(at.Prompt)
            self.ser.write(extra)
        evs = self.pump(at.FinalResult)
        lines = [e.text for e in evs if isinstance(e, at.ResponseLine)]
        final = evs[-1]
        assert isinstance(final, at.FinalResult)
        return lines, final

    def close(self) -> None:
        self.ser.close()


def _read_until_error(port: Port) -> None:
    for _ in range(20):
        port.ser.read(1)
        time.sleep(0.01)


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[ModemEmulator]:
    e = ModemEmulator("huawei-e3372", link=tmp_path / "modem", seed=1)
    e.start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def port(emu: ModemEmulator) -> Iterator[Port]:
    p = Port(str(emu.link))
    p.cmd("ATE0")
    try:
        yield p
    finally:
        p.close()


def test_identity_and_network_commands(emu: ModemEmulator, port: Port) -> None:
    assert port.cmd("AT")[1].ok
    assert port.cmd("AT+CGSN")[0] == [emu.imei]
    assert port.cmd("AT+CIMI")[0] == [emu.imsi]
    assert port.cmd("AT^ICCID?")[0] == [f"^ICCID: {emu.iccid}"]
    assert port.cmd("AT+CSQ")[0] == [f"+CSQ: {emu.rssi},99"]
    assert port.cmd("AT+CREG?")[0] == ["+CREG: 0,1"]
    assert port.cmd("AT+COPS?")[0] == [f'+COPS: 0,0,"{emu.operator}",7']
    assert port.cmd("AT+CPIN?")[0] == ["+CPIN: READY"]
    assert port.cmd("AT+CGMI")[0] == ["huawei"]
    assert port.cmd("AT^CURC=0")[1].ok  # a profile quirk is accepted
    assert port.cmd("AT+NOSUCH")[1] == at.FinalResult("ERROR")
    port.cmd("AT+CMEE=1")
    assert port.cmd('AT+CPMS="XX"')[1] == at.FinalResult("CMS", 302, "302")


def test_receive_list_read_delete(emu: ModemEmulator, port: Port) -> None:
    port.cmd("AT+CMEE=1")
    port.cmd("AT+CNMI=2,1,0,1,0")
    emu.deliver("+15551234567", "héllo 😀")
    urc = port.pump(at.Unsolicited)[-1]
    assert urc == at.Unsolicited("+CMTI", '"SM",0')
    lines, final = port.cmd("AT+CMGL=4")
    assert final.ok
    stored, problems = at.parse_cmgl(lines)
    assert problems == []
    assert [(s.index, s.stat) for s in stored] == [(0, 0)]
    msg = pducodec.decode(stored[0].pdu)
    assert isinstance(msg, pducodec.SmsDeliver)
    assert msg.text == "héllo 😀"
    assert msg.sender == "+15551234567"
    lines, _ = port.cmd("AT+CMGR=0")
    assert lines[0] == f"+CMGR: 1,,{len(bytes.fromhex(stored[0].pdu)) - 8}"
    assert port.cmd('AT+CPMS="SM"')[0] == ["+CPMS: 1,30,1,30,1,30"]
    assert port.cmd("AT+CMGD=0")[1].ok
    assert emu.deleted == [("SM", 0)]
    assert port.cmd("AT+CMGR=0")[1] == at.FinalResult("CMS", 321, "321")


def test_send_with_prompt_and_status_report(emu: ModemEmulator, port: Port) -> None:
    port.cmd("AT+CMEE=1")
    port.cmd("AT+CNMI=2,1,0,1,0")
    [p] = pducodec.encode_submit("+15557654321", "on my way 🚗")
    lines, final = port.cmd(f"AT+CMGS={p.tpdu_length}", p.hex.encode() + b"\x1a")
    assert final.ok
    mr = int(lines[0].split(":")[1])
    assert emu.sent[0].text == "on my way 🚗"
    assert emu.sent[0].reference == mr
    cds = port.pump(at.Unsolicited)[-1]
    assert isinstance(cds, at.Unsolicited)
    assert cds.name == "+CDS"
    assert cds.pdu is not None
    rep = pducodec.decode(cds.pdu)
    assert isinstance(rep, pducodec.SmsStatusReport)
    assert rep.reference == mr
    assert rep.delivered


def test_send_errors_and_wrong_length(emu: ModemEmulator, port: Port) -> None:
    port.cmd("AT+CMEE=1")
    [p] = pducodec.encode_submit("+15557654321", "x")
    emu.fail_next_send(42)
    assert port.cmd(f"AT+CMGS={p.tpdu_length}", p.hex.encode() + b"\x1a")[1].code == 42
    assert port.cmd(f"AT+CMGS={p.tpdu_length + 1}", p.hex.encode() + b"\x1a")[1].code == 304
    assert port.cmd(f"AT+CMGS={p.tpdu_length}", b"\x1b")[1].ok  # ESC cancels
    assert emu.sent == []


def test_full_sim_holds_messages_in_the_network(emu: ModemEmulator, port: Port) -> None:
    emu.fill_sim()
    emu.deliver("+15551234567", "wait for room")
    assert emu.network_pending == 1
    port.cmd("AT+CNMI=2,1,0,1,0")
    port.cmd(f"AT+CMGD={emu.index_base}")
    assert emu.network_pending == 0
    assert len(emu.stored()) == emu.capacity["SM"]


def test_hang_swallows_commands(emu: ModemEmulator, port: Port) -> None:
    emu.hang()
    port.ser.write(b"AT\r")
    with pytest.raises(AssertionError, match="no FinalResult"):
        port.pump(at.FinalResult, timeout=0.5)
    emu.resume()
    assert port.cmd("AT")[1].ok


def test_command_delay(emu: ModemEmulator, port: Port) -> None:
    emu.command_delay = 0.2
    t0 = time.monotonic()
    port.cmd("AT")
    assert time.monotonic() - t0 >= 0.2


def test_unplug_removes_the_device_and_replug_renames_it(emu: ModemEmulator, port: Port) -> None:
    assert emu.link is not None
    old_path = emu.path
    emu.unplug()
    assert not emu.link.exists()
    with pytest.raises(serial.SerialException):
        _read_until_error(port)
    new_link = emu.link.parent / "modem-2"
    emu.replug(new_link)
    assert new_link.is_symlink()
    assert os.readlink(new_link) == emu.path
    assert emu.boots == 2
    p2 = Port(str(new_link))
    try:
        assert p2.cmd("AT")[1].ok
    finally:
        p2.close()
    assert old_path  # the old pts name may be reused by the kernel; the link is what matters


def test_sim_pin(tmp_path: Path) -> None:
    e = ModemEmulator("simcom-sim800", sim_pin="4321")
    e.start()
    p = Port(e.path)
    try:
        p.cmd("ATE0")
        p.cmd("AT+CMEE=1")
        assert p.cmd("AT+CPIN?")[0] == ["+CPIN: SIM PIN"]
        assert p.cmd("AT+CMGL=4")[1].code == 311
        assert p.cmd('AT+CPIN="0000"')[1].code == 16
        assert p.cmd('AT+CPIN="4321"')[1].ok
        assert e.pin_attempts == 2
    finally:
        p.close()
        e.stop()


def test_control_socket(emu: ModemEmulator, port: Port, tmp_path: Path) -> None:
    ctl = ControlServer(emu, tmp_path / "modem.ctl")
    ctl.start()
    try:
        assert call(ctl.path, "deliver", sender="+15551234567", text="via control", order=None) == 1
        assert len(emu.stored()) == 1
        with pytest.raises(RuntimeError, match="unknown op"):
            call(ctl.path, "format_disk")
        with pytest.raises(RuntimeError, match="deliver failed"):
            call(ctl.path, "deliver", nonsense=1)
        snap = call(ctl.path, "snapshot")
        assert snap["stored"]["SM"] == 1
    finally:
        ctl.stop()


def test_cli_runs_and_is_scriptable(tmp_path: Path) -> None:
    link = tmp_path / "gateway-modem"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.emulator",
            "--profile",
            "quectel-ec25",
            "--link",
            str(link),
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"emulated quectel-ec25 at /dev/pts/")
        assert link.is_symlink()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.emulator.ctl",
                f"{link}.ctl",
                "deliver",
                "sender=+15551234567",
                "text=hello from the CLI",
            ],
            capture_output=True,
            env=env,
            check=True,
            timeout=30,
        )
        assert out.stdout.strip() == b"1"
        p = Port(str(link))
        try:
            p.cmd("ATE0")
            lines, _ = p.cmd("AT+CMGL=4")
            assert len(at.parse_cmgl(lines)[0]) == 1
        finally:
            p.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert not link.exists()
