"""Recovery after downtime, against the real store: CDR lines as Asterisk 22 wrote them (cdr_custom,
layout gw1) and real WAV files in a recordings directory. The end-to-end run with Asterisk and sipp is
in test_recovery_pbx.py."""

from __future__ import annotations

import os
import struct
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.channels.voice import recovery as rc
from gateway.channels.voice.channel import VoiceChannel
from gateway.channels.voice.label import stored_name
from gateway.channels.voice.settings import VoiceSettings
from gateway.domain.bus import Bus
from gateway.domain.calls import CallOutcome
from gateway.domain.events import CallEnded, Event, VoicemailRecorded
from gateway.domain.models import IdentityKind
from gateway.domain.service import ConversationService
from gateway.store.db import Store

NOW = 1796091000.0


def leg(
    linkedid: str,
    *,
    src: str = "5550855807",
    name: str = "",
    dstchannel: str = "PJSIP/201-00000009",
    app: str = "Dial",
    disposition: str = "NO ANSWER",
    start: float = NOW - 600,
    answer: float = 0.0,
    end: float = NOW - 590,
    context: str = "gw-call",
) -> str:
    clid = f'"{name}" <{src}>'.replace('"', '""')
    fields = [
        "gw1",
        linkedid,
        linkedid,
        f"{start:.6f}",
        f"{answer:.6f}",
        f"{end:.6f}",
        src,
        clid,
        "s",
        context,
        "PJSIP/trunk-00000008",
        dstchannel,
        app,
        disposition,
        str(int(end - start)),
        "0",
    ]
    return ",".join(f'"{f}"' for f in fields) + "\n"


def write_wav(path: Path, seconds: float, *, mtime: float = NOW - 580) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack("<h", 1000) * int(8000 * seconds))
    os.utime(path, (mtime, mtime))
    return path


class Env:
    def __init__(self, tmp: Path, store: Store, service: ConversationService, bus: Bus) -> None:
        self.cdr = tmp / "cdr" / "gateway-calls.csv"
        self.cdr.parent.mkdir()
        self.cdr.touch()
        self.rec_dir = tmp / "recordings"
        self.rec_dir.mkdir()
        self.store, self.service, self.bus = store, service, bus
        self.sub = bus.subscribe("test", 1000, types=(CallEnded, VoicemailRecorded))

    def channel(self) -> VoiceChannel:
        settings = VoiceSettings(cdr_file=str(self.cdr), recordings_dir=str(self.rec_dir), abandon_seconds=5.0)
        vc = VoiceChannel(settings, self.service, self.bus, store=self.store, clock=lambda: NOW)
        vc._connected_at = NOW
        return vc

    def published(self) -> list[Event]:
        out = []
        while (ev := self.sub.get_nowait()) is not None:
            out.append(ev)
        return out


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = Store(tmp_path / "gw.db")
    await store.start()
    bus = Bus()
    yield Env(tmp_path, store, ConversationService(store, bus), bus)
    await store.stop()


def test_parse_real_asterisk_line() -> None:
    line = (
        '"gw1","1796090968.12","1796090968.12","1796090973.747674","1796090973.747757","1796090975.604293",'
        '"5550855807","""김민수"" <5550855807>","s","gw-voicemail","PJSIP/trunk-00000008","","Record","ANSWERED","1","1"'
    )
    got = rc.parse_cdr_line(line)
    assert got is not None
    assert got.linkedid == "1796090968.12"
    assert got.answer == pytest.approx(1796090973.747757)
    assert got.disposition == "ANSWERED"
    assert rc.split_clid(got.clid) == ("김민수", "5550855807")
    assert rc.parse_cdr_line('"gw2","x"') is None
    assert rc.parse_cdr_line("garbage") is None


def test_outcomes_like_the_live_tracker() -> None:
    legs = [
        rc.parse_cdr_line(x)
        for x in (
            leg("a.1", dstchannel="PJSIP/201-1", disposition="NO ANSWER"),
            leg("a.1", dstchannel="PJSIP/202-2", disposition="ANSWERED", answer=NOW - 595),
            leg("m.1"),
            leg("b.1", disposition="BUSY"),
            leg("q.1", end=NOW - 598),
            leg("v.1"),
            leg("o.1", context="gw-staff"),
        )
    ]
    calls = {
        c.call_id: c for c in rc.calls_from_legs([x for x in legs if x], abandon_seconds=5, voicemails={"v.1": None})
    }
    assert calls["a.1"].outcome is CallOutcome.ANSWERED
    assert calls["a.1"].answered_by == "202"
    assert calls["a.1"].extensions_rung == ("201", "202")
    assert calls["m.1"].outcome is CallOutcome.MISSED
    assert calls["b.1"].outcome is CallOutcome.BUSY
    assert calls["q.1"].outcome is CallOutcome.ABANDONED
    assert calls["v.1"].outcome is CallOutcome.VOICEMAIL
    assert "o.1" not in calls  # a staff call is nobody waiting for an answer


async def test_missed_call_and_voicemail_recovered_once(env: Env) -> None:
    env.cdr.write_text(
        leg("m.1", src="5550855807", name="김민수")
        + leg("v.2", src="5551110000")
        + leg(
            "v.2",
            app="Record",
            dstchannel="",
            disposition="ANSWERED",
            context="gw-voicemail",
            answer=NOW - 590,
            end=NOW - 580,
        )
    )
    write_wav(env.rec_dir / "vm-20261201-020906-v.2.wav", 2.0)
    vc = env.channel()
    assert await vc.recover() is False

    missed = await env.service.find_contact(IdentityKind.PHONE, "+15550855807")
    assert missed is not None
    assert missed.display_name == "김민수"  # the name as written, not the phone display's ASCII
    (ev,) = await env.service.timeline(missed.conversation_id)
    assert ev.kind == "call_missed"
    assert ev.meta["recovered"] == "after downtime"
    assert ev.occurred_at == pytest.approx(NOW - 590)

    vm_contact = await env.service.find_contact(IdentityKind.PHONE, "+15551110000")
    assert vm_contact is not None
    kinds = [e.kind for e in await env.service.timeline(vm_contact.conversation_id)]
    assert kinds == ["call_ended", "voicemail"]

    ended = [e for e in env.published() if isinstance(e, CallEnded | VoicemailRecorded)]
    assert {type(e).__name__ for e in ended} == {"CallEnded", "VoicemailRecorded"}
    assert all(e.recovered for e in ended)
    missed_ev = next(e for e in ended if isinstance(e, CallEnded) and e.call_id == "m.1")
    assert missed_ev.outcome is CallOutcome.MISSED
    assert missed_ev.call.ended_at == pytest.approx(NOW - 590)  # the original time: rules judge "too old"
    health = vc.snapshot()
    assert (health.recovered_calls, health.recovered_voicemails) == (2, 1)

    # Again, and again with a fresh channel (a restart): nothing new, nothing published.
    assert await vc.recover() is False
    vc2 = env.channel()
    await vc2.recover()
    assert env.published() == []
    assert vc2.snapshot().recovered_calls == 0
    assert len(await env.service.timeline(vm_contact.conversation_id)) == 2


async def test_rotated_cdr_file_is_read_from_the_start(env: Env) -> None:
    env.cdr.write_text(leg("m.1"))
    await env.channel().recover()
    env.cdr.unlink()
    env.cdr.write_text(leg("m.2", src="5552223333"))
    vc = env.channel()
    await vc.recover()
    assert vc.snapshot().recovered_calls == 1
    assert await env.service.find_contact(IdentityKind.PHONE, "+15552223333") is not None


async def test_unusable_recording_is_a_visible_entry(env: Env) -> None:
    env.cdr.write_text(leg("t.1", src="5554445555"))
    (env.rec_dir / "vm-20261201-020906-t.1.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    os.utime(env.rec_dir / "vm-20261201-020906-t.1.wav", (NOW - 580, NOW - 580))
    (env.rec_dir / "notes.txt").write_bytes(b"")
    os.utime(env.rec_dir / "notes.txt", (NOW - 580, NOW - 580))
    vc = env.channel()
    await vc.recover()
    contact = await env.service.find_contact(IdentityKind.PHONE, "+15554445555")
    assert contact is not None
    timeline = await env.service.timeline(contact.conversation_id)
    vm = next(e for e in timeline if e.kind == "voicemail")
    assert vm.meta["transcription"] == "failed"
    assert "truncated" in vm.body or "header" in vm.body or "WAV" in vm.body, vm.body
    # The call itself is still a missed call (the broken file is no voicemail to listen to).
    assert any(e.kind == "call_missed" for e in timeline)
    assert vc.snapshot().recovered_unusable_recordings == 2  # the empty notes.txt too
    assert not [e for e in env.published() if isinstance(e, VoicemailRecorded)]


async def test_live_and_fresh_items_are_left_to_the_live_path(env: Env) -> None:
    env.cdr.write_text(leg("late.1", start=NOW - 5, end=NOW + 1))
    write_wav(env.rec_dir / "vm-20261201-020906-fresh.1.wav", 1.0, mtime=NOW - 1)
    write_wav(env.rec_dir / "vm-20261201-020906-beep.1.wav", 0.02)
    vc = env.channel()
    assert await vc.recover() is True  # the fresh file: look again when it settled
    assert vc.snapshot().recovered_calls == 0
    assert vc.snapshot().recovered_voicemails == 0
    assert env.published() == []


async def test_no_cdr_file_yet_is_no_calls_yet_not_a_problem(env: Env) -> None:
    """A fresh Asterisk writes the file with the first call that ends: before that there is nothing to recover."""
    env.cdr.unlink()
    vc = env.channel()
    await vc.recover()
    assert vc.snapshot().last_recovery_error is None


async def test_missing_cdr_directory_is_reported_with_the_fix(env: Env) -> None:
    env.cdr.unlink()
    env.cdr.parent.rmdir()
    vc = env.channel()
    await vc.recover()
    err = vc.snapshot().last_recovery_error
    assert err is not None
    assert "cdr_custom" in err
    assert "voice.cdr_file" in err


def test_window_and_names() -> None:
    assert rc.linkedid_of("vm-20261201-020906-1796090940.4.wav") == "1796090940.4"
    assert rc.linkedid_of("greeting.wav") is None
    assert stored_name("A\u202eB\x00 C") == "AB C"
    assert stored_name("👩\u200d💻 Ana") == "👩\u200d💻 Ana"
    assert time.time() > 0


def test_gateway_up_points_recovery_at_the_local_asterisk(tmp_path: Path) -> None:
    """`gateway up` (the demo) reads the local Asterisk's call records and recordings where the host sees them."""
    from gateway import config as cfgmod  # noqa: PLC0415
    from gateway.launch import render_config  # noqa: PLC0415

    pbx = {
        "AMI_PORT": "15038",
        "AMI_USER": "gateway",
        "AMI_SECRET": "s",
        "AGI_ADDR": "127.0.0.1:14573",
        "HOST_RECORDINGS_DIR": "/var/spool/gateway-test/recordings",
        "HOST_CDR_FILE": "/var/lib/gateway/asterisk-root/var/log/x/cdr-custom/gateway-calls.csv",
    }
    cfg = cfgmod.parse(render_config(tmp_path, pbx, tmp_path / "tty", "", 8080), "up.toml")
    assert cfg.voice.cdr_file == pbx["HOST_CDR_FILE"]
    assert cfg.voice.recordings_dir == pbx["HOST_RECORDINGS_DIR"]
