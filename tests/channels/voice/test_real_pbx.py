"""The voice channel against the real Asterisk 22 with real SIP calls (sipp caller and sipp phones).

Asterisk runs with the repository's config and tests/realpbx/test.env (AMI 15038, SIP 15060, our
FastAGI server on 14573, phones 201-203 on 15201-15203, the trunk's far end on 15299).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import pytest
from rtp_sniff import RtpSniffer
from voice_sipp import Phone, place_call

from gateway.channels.voice.channel import VoiceChannel
from gateway.channels.voice.settings import VoiceSettings
from gateway.config import Secret
from gateway.domain.bus import Bus, Subscription
from gateway.domain.calls import CallOutcome
from gateway.domain.events import ALL_EVENTS, CallAnswered, CallEnded, CallRinging, LiveTranscript, VoicemailRecorded
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound, TimelineEvent
from gateway.domain.service import ConversationService
from gateway.store import voice as voice_sql
from gateway.store.db import Store
from gateway.transcribe.live import LiveSpeech
from gateway.transcribe.model import default_model_path
from tests.realpbx import harness
from tests.realpbx.fixtures import realpbx  # noqa: F401 - the shared PBX session fixture

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
STAFF = {"201": "alice", "202": "bob", "203": "carol"}


@pytest.fixture(scope="session")
def pbx(realpbx: harness.PbxSettings) -> dict[str, str]:  # noqa: F811 - fixture parameter
    """The running test Asterisk's resolved settings (started by the shared harness)."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed (Debian package sip-tester); the test command installs it")
    return dict(realpbx.values)


class StartPhones(Protocol):
    """The ``phones`` fixture: start SIP phones by extension (``x201="answer"``), each in one mode."""

    async def __call__(self, **modes: str) -> dict[str, Phone]: ...


@dataclass
class Rig:
    vc: VoiceChannel
    service: ConversationService
    store: Store
    bus: Bus
    sub: Subscription
    work: Path
    events: list[object]

    async def wait_for(
        self,
        pred: Callable[[object], bool],
        timeout: float = 30.0,
    ) -> object:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if pred(ev):
                    return ev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching bus event; saw {[type(e).__name__ for e in self.events]}")
            try:
                async with asyncio.timeout(min(remaining, 0.5)):
                    self.events.append(await self.sub.get())
            except TimeoutError:
                pass

    async def ended(self, timeout: float = 40.0) -> CallEnded:
        ev = await self.wait_for(lambda e: isinstance(e, CallEnded), timeout)
        assert isinstance(ev, CallEnded)
        await self.vc.idle()
        return ev

    async def kinds(self, conversation_id: int) -> list[str]:
        return [e.kind for e in await self.service.timeline(conversation_id)]

    async def known(self, number: str, name: str, intent: str) -> int:
        res = await self.service.ingest(
            Inbound(
                Channel.SMS,
                EventKind.MESSAGE_IN,
                IdentityKind.PHONE,
                number,
                f"sms-{number}",
                "hi",
                display_name=name,
            )
        )
        await self.service.update_conversation(res.conversation_id, intent=intent)
        return res.conversation_id


@contextlib.asynccontextmanager
async def _make_rig(
    pbx: dict[str, str],
    pbx_settings: harness.PbxSettings,
    tmp_path: Path,
    speech: LiveSpeech | None = None,
    **overrides: object,
) -> AsyncIterator[Rig]:
    # One test run at a time places calls on the shared PBX (phones, FastAGI port 14573).
    with harness.pbx_call_lock():
        await harness.wait_pbx_quiet(pbx_settings)
        store = Store(tmp_path / "gw.db")
        await store.start()
        bus = Bus()
        service = ConversationService(store, bus)
        host, _, port = pbx["AGI_ADDR"].partition(":")
        settings = VoiceSettings(
            ami_port=int(pbx["AMI_PORT"]),
            ami_username=pbx["AMI_USER"],
            ami_secret=Secret(pbx["AMI_SECRET"]),
            agi_host=host,
            agi_port=int(port),
            staff=STAFF,
            abandon_seconds=4.0,
            ami_ping_interval=2.0,
            ami_ping_timeout=2.0,
            whisper=False,
        )
        settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
        vc = VoiceChannel(settings, service, bus, store=store, speech=speech)
        sub = bus.subscribe("test", 10_000, types=ALL_EVENTS)
        await vc.start()
        await vc.ami.wait_connected(10)
        try:
            yield Rig(vc, service, store, bus, sub, tmp_path, [])
        finally:
            await vc.stop()
            if speech is not None:
                await speech.stop()
            await store.stop()


@pytest.fixture
async def rig(
    pbx: dict[str, str],
    realpbx: harness.PbxSettings,  # noqa: F811 - fixture parameter
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    async with _make_rig(pbx, realpbx, tmp_path) as r:
        yield r


@pytest.fixture
async def whisper_rig(
    pbx: dict[str, str],
    realpbx: harness.PbxSettings,  # noqa: F811 - fixture parameter
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    """A rig whose calls whisper to the answering phone (cache in a fresh folder under the PBX's WHISPER_DIR)."""
    cache = _whisper_cache(pbx)
    try:
        async with _make_rig(pbx, realpbx, tmp_path, whisper=True, whisper_dir=str(cache)) as r:
            yield r
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _whisper_cache(pbx: dict[str, str]) -> Path:
    """A new, empty whisper cache below WHISPER_DIR (Asterisk sees it at the same path)."""
    return Path(pbx["WHISPER_DIR"]) / f"test-{os.getpid()}-{time.monotonic_ns()}"


@pytest.fixture
async def phones(tmp_path: Path) -> AsyncIterator[StartPhones]:
    started: list[Phone] = []

    async def start(**modes: str) -> dict[str, Phone]:
        out = {}
        for ext, mode in modes.items():
            p = Phone(ext.lstrip("x"), mode, tmp_path)
            await p.start()
            started.append(p)
            out[p.extension] = p
        await asyncio.sleep(0.3)
        return out

    yield start
    for p in started:
        await p.stop()


async def test_answered_call_and_ring_group(rig: Rig, phones: StartPhones) -> None:
    ph = await phones(x201="ring", x202="answer", x203="ring")
    result = await place_call(rig.work, number="+15551230001", name="New Caller", hold_ms=2000)
    assert result.returncode == 0, result.stderr
    end = await rig.ended()
    rec = end.call
    assert end.outcome is CallOutcome.ANSWERED
    assert rec.answered_by == "202"
    assert set(rec.extensions_rung) == {"201", "202", "203"}
    assert rec.talk_seconds >= 1.5
    ringing = {e.extension for e in rig.events if isinstance(e, CallRinging)}
    assert ringing == {"201", "202", "203"}
    answered = [e for e in rig.events if isinstance(e, CallAnswered)]
    assert [(a.extension, a.staff) for a in answered] == [("202", "bob")]
    conv = end.conversation_id
    assert conv is not None
    kinds = await rig.kinds(conv)
    assert "call_answered" in kinds
    assert "call_ended" in kinds
    assert "call_missed" not in kinds  # answered by one member of the group: missed for nobody
    logged = await rig.store.read(lambda c: voice_sql.get_call(c, rec.call_id))
    assert logged is not None
    assert logged.outcome is CallOutcome.ANSWERED
    assert ph["202"].display_names()[0] == "New Caller"  # type: ignore[index]


async def test_missed_call_nobody_answers(rig: Rig, phones: StartPhones) -> None:
    await phones(x201="ring", x202="ring", x203="ring")
    # Nobody answers; voicemail picks up after the ring time and the caller hangs up at once.
    result = await place_call(rig.work, number="+15551230002", hold_ms=300)
    assert result.returncode == 0, result.stderr
    end = await rig.ended()
    assert end.outcome is CallOutcome.MISSED
    assert end.call.answered_by is None
    assert end.conversation_id is not None
    kinds = await rig.kinds(end.conversation_id)
    assert "call_missed" in kinds
    summary = await rig.service.summary(end.conversation_id)
    assert summary is not None
    assert summary.awaiting_since is not None  # the customer waits for a call back


async def test_early_hangup_is_abandoned(rig: Rig, phones: StartPhones) -> None:
    await phones(x201="ring", x202="ring", x203="ring")
    result = await place_call(rig.work, number="+15551230003", cancel_ms=1000)
    assert result.returncode == 0, result.stderr
    end = await rig.ended()
    assert end.outcome is CallOutcome.ABANDONED
    assert end.conversation_id is not None
    kinds = await rig.kinds(end.conversation_id)
    assert "call_abandoned" in kinds
    assert "call_missed" not in kinds


async def test_all_phones_busy(rig: Rig, phones: StartPhones) -> None:
    await phones(x201="busy", x202="busy", x203="busy")
    # Every phone answers 486; voicemail picks up and the caller hangs up without a message.
    result = await place_call(rig.work, number="+15551230010", hold_ms=300)
    assert result.returncode == 0, result.stderr
    end = await rig.ended()
    assert end.outcome is CallOutcome.BUSY
    assert end.call.voicemail_path is None
    assert end.conversation_id is not None
    assert "call_missed" in await rig.kinds(end.conversation_id)


async def test_blind_transfer(rig: Rig, tmp_path: Path) -> None:
    # Only 201 and 202 ring; 201 answers and transfers the caller to 203 (SIP REFER).
    rig.vc.router._settings = dataclasses.replace(rig.vc.settings, staff_group="PJSIP/201&PJSIP/202")
    phones = [
        Phone("201", "refer", tmp_path, hold_ms=1000, transfer_to="203"),
        Phone("202", "ring", tmp_path),
        Phone("203", "answer", tmp_path),
    ]
    try:
        for p in phones:
            await p.start()
        await asyncio.sleep(0.3)
        result = await place_call(rig.work, number="+15551230011", hold_ms=6000)
        assert result.returncode == 0, result.stderr
        end = await rig.ended()
    finally:
        for p in phones:
            await p.stop()
    rec = end.call
    assert end.outcome is CallOutcome.ANSWERED
    assert [(t.kind, t.from_extension, t.to_target) for t in rec.transfers] == [("blind", "201", "203")]
    assert (rec.answered_by, rec.last_answered_by) == ("201", "203")
    answered = [e.extension for e in rig.events if isinstance(e, CallAnswered)]
    assert answered == ["201", "203"]
    assert end.conversation_id is not None
    summary = await rig.service.summary(end.conversation_id)
    assert summary is not None
    assert summary.last_staff_extension == "203"


def _speech(work: Path) -> Path:
    wav = work / "speech_ulaw.wav"
    sox = shutil.which("sox")
    if sox is None:
        pytest.fail("sox is not installed; the test command installs it")
    subprocess.run(
        [sox, "-n", "-r", "8000", "-c", "1", "-e", "u-law", str(wav), "synth", "3", "sine", "440"],
        check=True,
    )
    return wav


async def test_call_to_voicemail(rig: Rig, phones: StartPhones, pbx: dict[str, str]) -> None:
    await phones(x201="busy", x202="busy", x203="busy")
    result = await place_call(rig.work, number="+15551230004", hold_ms=4500, rtp_wav=_speech(rig.work))
    assert result.returncode == 0, result.stderr
    vm = await rig.wait_for(lambda e: isinstance(e, VoicemailRecorded), 30)
    assert isinstance(vm, VoicemailRecorded)
    end = await rig.ended()
    assert end.outcome is CallOutcome.VOICEMAIL
    assert vm.conversation_id == end.conversation_id
    assert vm.duration >= 2
    host_dir = Path(pbx.get("HOST_RECORDINGS_DIR", ""))
    assert (host_dir / Path(vm.path).name).exists()
    events = await rig.service.timeline(vm.conversation_id)
    (ev,) = [e for e in events if e.kind == "voicemail"]
    assert ev.id == vm.event_id
    assert ev.meta["path"] == vm.path


async def test_phone_shows_context_label_and_sticky_routing(rig: Rig, phones: StartPhones) -> None:
    number = "+15551230005"
    conv = await rig.known(number, "Maria Rodriguez", "roof estimate")
    # Carol (203) handled Maria last.
    await rig.service.append_event(conv, EventKind.CALL_ANSWERED, Channel.VOICE, meta={"extension": "203"})
    ph = await phones(x201="ring", x202="ring", x203="answer")
    result = await place_call(rig.work, number=number, name='Evil"; name', hold_ms=1500)
    assert result.returncode == 0, result.stderr
    end = await rig.ended()
    assert end.outcome is CallOutcome.ANSWERED
    assert end.call.answered_by == "203"
    assert end.conversation_id == conv
    # The answering phone saw the context label, not the caller's own (hostile) name.
    assert ph["203"].display_names()[0] == "Maria R - roof estimate"  # type: ignore[index]
    # 203 rang first, alone; the others were never needed.
    first = next(e for e in rig.events if isinstance(e, CallRinging))
    assert first.extension == "203"
    assert first.summary is not None
    assert first.summary.intent == "roof estimate"
    assert first.conversation_id == conv
    assert ph["201"].invites() == 0  # type: ignore[index]


async def test_click_to_call_lands_in_the_conversation(rig: Rig, phones: StartPhones) -> None:
    conv = await rig.known("+12025550143", "Bob Customer", "gutter repair")
    ph = await phones(x201="answer", x299="answer_bye")
    call_id = await rig.vc.click_to_call("201", "+12025550143", conv)
    ring = await rig.wait_for(lambda e: isinstance(e, CallRinging), 15)
    assert isinstance(ring, CallRinging)
    assert ring.extension == "201"
    assert ring.call_id == call_id
    assert ring.conversation_id == conv
    assert ring.summary is not None
    assert ring.summary.intent == "gutter repair"
    end = await rig.ended()
    assert end.call_id == call_id
    assert end.outcome is CallOutcome.ANSWERED
    assert end.conversation_id == conv
    kinds = await rig.kinds(conv)
    assert {"call_ringing", "call_answered", "call_ended"} <= set(kinds)
    # The staff phone showed who it is about to call; the customer's phone got the office number.
    assert ph["201"].display_names()[0] == "Bob C - gutter repair"  # type: ignore[index]
    assert ph["299"].invites() == 1  # type: ignore[index]
    # Sent once: the link never re-sends an Originate.
    assert rig.vc.ami.connects == 1


async def test_stalled_agi_client_while_calls_flow(rig: Rig, phones: StartPhones) -> None:
    port = rig.vc.agi.port
    stalled = []
    for _ in range(5):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"agi_network: yes\nagi_request: agi://x/inbound\n")  # never the blank line
        stalled.append(w)
    conv = await rig.known("+15551230006", "Ana Lima", "boiler service")
    ph = await phones(x201="answer", x202="ring", x203="ring")
    result = await place_call(rig.work, number="+15551230006", hold_ms=1000)
    assert result.returncode == 0, result.stderr
    end = await rig.ended()
    assert end.conversation_id == conv
    assert ph["201"].display_names()[0] == "Ana L - boiler service"  # type: ignore[index]
    assert rig.vc.router.last_answer_ms < 200
    for w in stalled:
        w.close()


async def _until(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_asterisk_restart_mid_call(rig: Rig, phones: StartPhones) -> None:
    await phones(x201="answer", x202="ring", x203="ring")
    call = asyncio.create_task(place_call(rig.work, number="+15551230007", hold_ms=60_000))
    await rig.wait_for(lambda e: isinstance(e, CallAnswered), 20)
    await asyncio.to_thread(harness.restart_pbx)  # raises HarnessError with Asterisk's output if it fails
    end = await rig.ended(timeout=60)
    assert end.outcome is CallOutcome.ANSWERED
    assert end.call.answered_by == "201"
    # The link comes back by itself and resyncs; calls keep being tracked.
    await _until(lambda: rig.vc.ami.connects >= 2 and rig.vc.ami.connected, 40)
    assert rig.vc.resyncs >= 2
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    rig.events.clear()
    result = await place_call(rig.work, number="+15551230008", hold_ms=1000, local_port=15072)
    assert result.returncode == 0, result.stderr
    end2 = await rig.ended()
    assert end2.outcome is CallOutcome.ANSWERED
    assert end2.call.answered_by == "201"
    assert rig.vc.tracker.active_calls() == []


async def test_call_that_ends_while_ami_is_away_is_closed_by_the_resync(rig: Rig, phones: StartPhones) -> None:
    await phones(x201="answer", x202="ring", x203="ring")
    call = asyncio.create_task(place_call(rig.work, number="+15551230009", hold_ms=3000))
    await rig.wait_for(lambda e: isinstance(e, CallAnswered), 20)
    link = rig.vc.ami
    real_port = link.port
    link.port = 1  # nothing listens there: the link stays down until we restore it
    mgr = link._manager
    assert mgr is not None
    mgr.protocol.transport.abort()
    await _until(lambda: not link.connected, 10)
    result = await call  # the caller hangs up while nobody listens to AMI
    assert result.returncode == 0, result.stderr
    assert rig.vc.tracker.active_calls() != []  # we could not know yet
    link.port = real_port
    end = await rig.ended(timeout=60)
    assert end.outcome is CallOutcome.ANSWERED
    assert end.call.hangup_cause == "gone after AMI reconnect"
    assert rig.vc.tracker.active_calls() == []
    assert rig.vc.tracker.busy_extensions() == frozenset()


async def test_real_ami_refuses_a_wrong_secret(pbx: dict[str, str]) -> None:
    from gateway.channels.voice.ami_link import AmiLink  # noqa: PLC0415
    from gateway.errors import ConfigError  # noqa: PLC0415

    link = AmiLink(
        host="127.0.0.1",
        port=int(pbx["AMI_PORT"]),
        username=pbx["AMI_USER"],
        secret="not-the-secret",
        on_event=lambda _e: None,
    )
    with pytest.raises(ConfigError, match=r"voice\.ami_secret"):
        await link.start()
    assert not link.connected


def _record_ami(rig: Rig) -> list[tuple[float, dict[str, str]]]:
    """Every AMI event the gateway's link receives, with its arrival time, from now on."""
    seen: list[tuple[float, dict[str, str]]] = []
    handler = rig.vc.ami._on_event

    def tap(event: dict[str, str]) -> None:
        seen.append((time.time(), dict(event)))
        handler(event)

    rig.vc.ami._on_event = tap
    return seen


def _first(seen: list[tuple[float, dict[str, str]]], name: str, **match: str) -> tuple[int, float]:
    for i, (at, ev) in enumerate(seen):
        if ev.get("Event") == name and all(ev.get(k, "").startswith(v) for k, v in match.items()):
            return i, at
    raise AssertionError(f"no AMI {name} {match}; saw {[e.get('Event') for _, e in seen]}")


async def test_whisper_reaches_the_answering_phone_before_the_bridge(whisper_rig: Rig, phones: StartPhones) -> None:
    rig = whisper_rig
    number = "+15551230031"
    conv = await rig.known(number, "Maria Rodriguez", "chipped tooth")
    await rig.service.update_conversation(conv, urgent=True)
    # Nothing is cached: the line is synthesised while the phones ring (a person takes a moment to pick up).
    assert rig.vc.whisper is not None
    assert not list(Path(rig.vc.settings.whisper_dir).glob("whisper-*.wav"))
    seen = _record_ami(rig)
    ph = await phones(x201="whisper", x202="ring", x203="ring")
    sniff = RtpSniffer(ph["201"].media_port)  # type: ignore[index]
    sniff.start()
    try:
        result = await place_call(rig.work, number=number, hold_ms=1500)
        assert result.returncode == 0, result.stderr
        end = await rig.ended()
    finally:
        sniff.stop()
    assert end.outcome is CallOutcome.ANSWERED
    assert end.call.answered_by == "201"
    # Asterisk ran the whisper on 201's leg, and only then bridged it to the caller.
    played_i, _ = _first(seen, "UserEvent", UserEvent="WhisperPlayed", Endpoint="201")
    bridged_i, bridged_at = _first(seen, "BridgeEnter", Channel="PJSIP/201")
    assert played_i < bridged_i
    # The phone heard speech before the bridge; the caller sent no audio at all, so that speech is the whisper.
    heard = sniff.voiced_seconds(until=bridged_at)
    assert 0.8 <= heard <= 4.5, f"the phone heard {heard:.2f} s of speech before the bridge"
    assert sniff.voiced_seconds() - heard < 0.2
    whisper_files = list(Path(rig.vc.settings.whisper_dir).glob("whisper-*.wav"))
    assert whisper_files


async def test_pressing_2_during_the_whisper_sends_the_caller_to_voicemail(
    whisper_rig: Rig, phones: StartPhones
) -> None:
    rig = whisper_rig
    number = "+15551230032"
    await rig.known(number, "Dana Lee", "estimate")
    seen = _record_ami(rig)
    await phones(x201="whisper_press2", x202="ring", x203="ring")
    result = await place_call(rig.work, number=number, hold_ms=4000, rtp_wav=_speech(rig.work))
    assert result.returncode == 0, result.stderr
    vm = await rig.wait_for(lambda e: isinstance(e, VoicemailRecorded), 40)
    assert isinstance(vm, VoicemailRecorded)
    end = await rig.ended()
    assert end.outcome is CallOutcome.VOICEMAIL
    _first(seen, "UserEvent", UserEvent="WhisperDeclined", Endpoint="201")
    (_, vm_event) = seen[_first(seen, "UserEvent", UserEvent="VoicemailRecorded")[0]]
    assert vm_event.get("Reason") == "declined"
    # 201 was never bridged to the caller.
    assert not [e for _, e in seen if e.get("Event") == "BridgeEnter" and e.get("Channel", "").startswith("PJSIP/201")]


async def test_whisper_off_for_an_extension_bridges_at_once(
    pbx: dict[str, str],
    realpbx: harness.PbxSettings,  # noqa: F811 - fixture parameter
    tmp_path: Path,
    phones: StartPhones,
) -> None:
    cache = _whisper_cache(pbx)
    async with _make_rig(
        pbx, realpbx, tmp_path, whisper=True, whisper_dir=str(cache), whisper_off_extensions=["201"]
    ) as rig:
        await rig.known("+15551230033", "Ron Roofer", "estimate")
        seen = _record_ami(rig)
        ph = await phones(x201="whisper", x202="ring", x203="ring")
        sniff = RtpSniffer(ph["201"].media_port)  # type: ignore[index]
        sniff.start()
        try:
            result = await place_call(rig.work, number="+15551230033", hold_ms=1500)
            assert result.returncode == 0, result.stderr
            end = await rig.ended()
        finally:
            sniff.stop()
        assert end.outcome is CallOutcome.ANSWERED
        assert not [e for _, e in seen if e.get("UserEvent") == "WhisperPlayed"]
        assert sniff.voiced_seconds() < 0.2


@pytest.fixture
async def live_rig(
    pbx: dict[str, str],
    realpbx: harness.PbxSettings,  # noqa: F811 - fixture parameter
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    """A rig that transcribes answered calls live (ARI on the test PBX, the packaged model with a grammar)."""
    speech = LiveSpeech(default_model_path(), grammar=["예약", "취소", "[unk]"])
    await speech.start()
    cache = _whisper_cache(pbx)  # the transcription notice is spoken into this cache, which Asterisk reads
    try:
        async with _make_rig(
            pbx,
            realpbx,
            tmp_path,
            speech,
            live_transcribe=True,
            ari_url=f"http://127.0.0.1:{pbx['ARI_PORT']}",
            ari_username=pbx["ARI_USER"],
            ari_password=Secret(pbx["ARI_PASSWORD"]),
            whisper_dir=str(cache),
            recordings_dir=pbx["RECORDINGS_DIR"],  # the safety-net recordings (voice.live_safety_recording)
        ) as r:
            assert r.vc.ari is not None
            assert await r.vc.ari.wait_connected(10), "the gateway's ARI application did not register"
            for _ in range(100):  # the notice is synthesised at start
                if r.vc._consent_sound() is not None:
                    break
                await asyncio.sleep(0.05)
            yield r
    finally:
        shutil.rmtree(cache, ignore_errors=True)


async def _live_transcript(rig: Rig, conversation_id: int) -> TimelineEvent:
    for _ in range(100):
        found = [e for e in await rig.service.timeline(conversation_id) if e.kind == "transcript"]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no live transcript on the timeline")


async def test_live_transcript_hears_the_caller_on_the_caller_side(live_rig: Rig, phones: StartPhones) -> None:
    rig = live_rig
    conv = await rig.known("+15551230041", "Mina Park", "booking")
    speech = harness.make_speech("예약", rig.work / "caller.wav", pad_before_s=1.5, pad_after_s=1.5)
    await phones(x201="answer", x202="ring", x203="ring")
    t0 = time.time()
    result = await place_call(rig.work, number="+15551230041", hold_ms=5000, rtp_wav=speech)
    assert result.returncode == 0, result.stderr
    end = await rig.ended()
    assert end.outcome is CallOutcome.ANSWERED
    partials = [e for e in rig.events if isinstance(e, LiveTranscript)]
    assert any(p.side == "caller" and "예약" in p.text for p in partials), partials
    first = next(p for p in partials if "예약" in p.text)
    assert first.conversation_id == conv
    assert first.extension == "201"
    ev = await _live_transcript(rig, conv)
    turns = ev.meta["turns"]
    assert [t["side"] for t in turns if "예약" in t["text"]] == ["caller"]
    assert "Caller: 예약" in ev.body
    assert t0 < turns[0]["at"] < time.time()
    assert ev.meta["call_id"] == end.call_id
    # Searchable like any other message.
    hits = await rig.service.search("예약")
    assert any(h.event.id == ev.id for h in hits)


async def _answered_by_speaking_staff(rig: Rig, work: Path, speech: Path, number: str) -> CallEnded:
    """A call from ``number`` answered by extension 201, whose phone plays ``speech`` (202 and 203 only ring)."""
    staff = Phone("201", "answer_speak", work, speech_wav=str(speech))
    others = [Phone(ext, "ring", work) for ext in ("202", "203")]
    for ph in (staff, *others):
        await ph.start()
    try:
        await asyncio.sleep(0.3)
        result = await place_call(rig.work, number=number, hold_ms=9000)
        assert result.returncode == 0, result.stderr
        return await rig.ended()
    finally:
        for ph in (staff, *others):
            await ph.stop()


async def test_live_transcript_hears_the_staff_member_on_the_staff_side(live_rig: Rig, tmp_path: Path) -> None:
    rig = live_rig
    conv = await rig.known("+15551230042", "Jun Choi", "booking")
    # The staff member speaks once the caller has heard the transcription notice (about four seconds).
    speech = harness.make_speech("예약", rig.work / "staff.wav", pad_before_s=5.0, pad_after_s=1.0)
    end = await _answered_by_speaking_staff(rig, tmp_path, speech, "+15551230042")
    assert end.outcome is CallOutcome.ANSWERED
    ev = await _live_transcript(rig, conv)
    sides = [t["side"] for t in ev.meta["turns"] if "예약" in t["text"]]
    assert sides == ["staff"]
    assert "Staff: 예약" in ev.body


async def test_without_ari_the_call_goes_on_and_is_transcribed_after_it_ends(
    pbx: dict[str, str],
    realpbx: harness.PbxSettings,  # noqa: F811 - fixture parameter
    tmp_path: Path,
    phones: StartPhones,
) -> None:
    speech_service = LiveSpeech(default_model_path(), grammar=["예약", "취소", "[unk]"])
    await speech_service.start()
    async with _make_rig(
        pbx,
        realpbx,
        tmp_path,
        speech_service,
        live_transcribe=True,
        ari_url="http://127.0.0.1:9",  # nothing answers there: ARI is unreachable
        ari_username=pbx["ARI_USER"],
        ari_password=Secret(pbx["ARI_PASSWORD"]),
        recordings_dir=pbx["RECORDINGS_DIR"],
    ) as rig:
        assert rig.vc.ari is not None
        assert not rig.vc.ari.connected
        conv = await rig.known("+15551230043", "Ara Lim", "booking")
        speech = harness.make_speech("예약", rig.work / "caller.wav", pad_before_s=1.5, pad_after_s=1.5)
        await phones(x201="answer", x202="ring", x203="ring")
        result = await place_call(rig.work, number="+15551230043", hold_ms=5000, rtp_wav=speech)
        assert result.returncode == 0, result.stderr
        end = await rig.ended()
        assert end.outcome is CallOutcome.ANSWERED, "the call itself is untouched"
        assert not [e for e in rig.events if isinstance(e, LiveTranscript)]
        ev = await _live_transcript(rig, conv)
        assert ev.meta["after_call"] is True
        assert ev.meta["live"] is False
        assert "예약" in ev.body
        recording = Path(ev.meta["path"])
        assert recording.name.startswith("call-")
        recording.unlink(missing_ok=True)


class _TcpRelay:
    """A TCP relay in front of Asterisk's ARI that a test can cut, as when the HTTP server or the link goes away."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()


def _two_phrases(work: Path, first: str, second: str, gap_s: float) -> Path:
    """``first`` after 1.5 s, ``second`` ``gap_s`` later, as 8 kHz mu-law for sipp."""
    a = harness.make_speech(first, work / "first.wav", pad_before_s=1.5, pad_after_s=gap_s)
    b = harness.make_speech(second, work / "second.wav", pad_before_s=0.1, pad_after_s=1.5)
    out = work / "two.wav"
    subprocess.run(["sox", str(a), str(b), str(out)], check=True, capture_output=True)
    return out


@pytest.mark.parametrize("lost", ["ari", "media"])
async def test_ari_stopped_mid_call_the_call_goes_on_and_the_transcript_has_all_of_it(
    pbx: dict[str, str],
    realpbx: harness.PbxSettings,  # noqa: F811 - fixture parameter
    tmp_path: Path,
    phones: StartPhones,
    lost: str,
) -> None:
    """ARI goes away while the caller talks ("ari"), or Asterisk drops the media channels while ARI stays ("media"):
    the call is untouched, the words said before are live (caller side), the words said after come from Asterisk's
    safety-net recording, and both are in one transcript."""
    # espeak-ng's "취소" reads as "예약" to the small model; "안녕하세요" is told apart.
    speech_service = LiveSpeech(default_model_path(), grammar=["예약", "안녕하세요", "[unk]"])
    await speech_service.start()
    relay = _TcpRelay(int(pbx["ARI_PORT"]))
    port = await relay.start()
    async with _make_rig(
        pbx,
        realpbx,
        tmp_path,
        speech_service,
        live_transcribe=True,
        ari_url=f"http://127.0.0.1:{port}",
        ari_username=pbx["ARI_USER"],
        ari_password=Secret(pbx["ARI_PASSWORD"]),
        recordings_dir=pbx["RECORDINGS_DIR"],
        consent_announcement="",
    ) as rig:
        assert rig.vc.ari is not None
        assert await rig.vc.ari.wait_connected(10), "the gateway's ARI application did not register"
        conv = await rig.known("+15551230045", "Eun Seo", "booking")
        speech = _two_phrases(rig.work, "예약", "안녕하세요", gap_s=7.0)
        await phones(x201="answer", x202="ring", x203="ring")
        seconds = float(
            subprocess.run(["sox", "--i", "-D", str(speech)], capture_output=True, text=True, check=True).stdout
        )
        hold = int(seconds * 1000) + 1500
        call = asyncio.create_task(place_call(rig.work, number="+15551230045", hold_ms=hold, rtp_wav=speech))
        await rig.wait_for(lambda e: isinstance(e, LiveTranscript) and "예약" in e.text, timeout=20)
        cut_at = time.time()
        if lost == "ari":
            await relay.cut()
            for _ in range(50):
                if not rig.vc.ari.connected:
                    break
                await asyncio.sleep(0.05)
            assert not rig.vc.ari.connected
        else:
            assert await asyncio.to_thread(harness.hangup_channels, realpbx, "UnicastRTP/")
        result = await call
        assert result.returncode == 0, result.stderr
        end = await rig.ended()
        assert end.outcome is CallOutcome.ANSWERED, "the call itself is untouched"
        assert end.call.talk_seconds >= hold / 1000 - 1.0
        ev = await _live_transcript(rig, conv)
        turns = ev.meta["turns"]
        before = [t for t in turns if "예약" in t["text"]]
        after = [t for t in turns if "안녕하세요" in t["text"]]
        assert [t["side"] for t in before] == ["caller"], turns
        assert before[0]["at"] < cut_at
        assert [t["side"] for t in after] == ["both"], turns  # from the recording: both sides mixed
        assert after[0]["at"] > cut_at
        assert ev.meta["live"] is True
        assert ev.meta["after_call"] is True
        if lost == "ari":
            assert ev.meta["ari_lost_at"] >= cut_at - 0.5
            # The media channels the gateway could not hang up while ARI was away are gone once it is back.
            left = await asyncio.to_thread(harness.asterisk_cli, realpbx, "core show channels concise")
            assert "UnicastRTP/" in left
            await relay.start(port)
            assert await rig.vc.ari.wait_connected(40)
            for _ in range(100):
                left = await asyncio.to_thread(harness.asterisk_cli, realpbx, "core show channels concise")
                if "UnicastRTP/" not in left:
                    break
                await asyncio.sleep(0.1)
            assert "UnicastRTP/" not in left
            await relay.cut()
        else:
            assert "ari_lost_at" not in ev.meta
            assert cut_at <= ev.meta["live_until"] < after[0]["at"]
            await relay.cut()
        assert "Caller: 예약" in ev.body
        assert "Call: 안녕하세요" in ev.body
        Path(ev.meta["path"]).unlink(missing_ok=True)


async def test_with_ari_up_the_safety_recording_is_deleted_when_live_audio_covered_the_call(
    live_rig: Rig, pbx: dict[str, str], phones: StartPhones
) -> None:
    rig = live_rig
    conv = await rig.known("+15551230046", "Ha Neul", "booking")
    speech = harness.make_speech("예약", rig.work / "caller.wav", pad_before_s=1.5, pad_after_s=1.5)
    await phones(x201="answer", x202="ring", x203="ring")
    recordings = Path(pbx["RECORDINGS_DIR"])
    before = set(recordings.glob("call-*.wav"))
    seen: set[Path] = set()

    async def watch() -> None:
        while True:
            seen.update(set(recordings.glob("call-*.wav")) - before)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        result = await place_call(rig.work, number="+15551230046", hold_ms=5000, rtp_wav=speech)
        assert result.returncode == 0, result.stderr
        end = await rig.ended()
        ev = await _live_transcript(rig, conv)
    finally:
        watcher.cancel()
    assert [t["side"] for t in ev.meta["turns"] if "예약" in t["text"]] == ["caller"]
    assert "after_call" not in ev.meta
    # Asterisk recorded this call as the safety net, and the gateway deleted it once live audio had covered it all.
    assert [p.name for p in seen] == [f"call-{end.call_id}.wav"]
    assert not (recordings / f"call-{end.call_id}.wav").exists()


async def test_a_promise_staff_speak_on_a_real_call_becomes_a_next_step_due_the_next_business_day(
    pbx: dict[str, str],
    realpbx: harness.PbxSettings,  # noqa: F811 - fixture parameter
    tmp_path: Path,
) -> None:
    """The staff member says "내일 전화 할게요" ("I'll call you tomorrow"): live transcription hears it on the staff
    side, the promise keeper proposes it, and once confirmed it is the next step, due at the next business day's
    closing time (the call is on a Tuesday at 10:00 by the keeper's clock: Wednesday 17:00)."""
    from gateway.continuity.promise_keeper import PromiseKeeper  # noqa: PLC0415 - only this test needs them
    from gateway.continuity.promises import Hours  # noqa: PLC0415
    from gateway.domain.spine import SpineService  # noqa: PLC0415

    zone = "America/New_York"
    tuesday_10am = dt.datetime(2026, 12, 1, 10, tzinfo=ZoneInfo(zone)).timestamp()
    speech_service = LiveSpeech(default_model_path(), grammar=["내일", "전화", "할게요", "예약", "[unk]"])
    await speech_service.start()
    async with _make_rig(
        pbx,
        realpbx,
        tmp_path,
        speech_service,
        live_transcribe=True,
        ari_url=f"http://127.0.0.1:{pbx['ARI_PORT']}",
        ari_username=pbx["ARI_USER"],
        ari_password=Secret(pbx["ARI_PASSWORD"]),
        consent_announcement="",
    ) as rig:
        assert rig.vc.ari is not None
        assert await rig.vc.ari.wait_connected(10), "the gateway's ARI application did not register"
        spines = SpineService(rig.store, rig.bus)
        office = Hours(dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00"), zone)
        keeper = PromiseKeeper(rig.store, rig.service, spines, rig.bus, office, clock=lambda: tuesday_10am)
        await keeper.start()
        try:
            conv = await rig.known("+15551230047", "Min Ji", "booking")
            # With commas espeak-ng pauses between the words, which the small model needs to tell them apart.
            words = harness.make_speech("내일, 전화, 할게요", rig.work / "staff.wav", pad_before_s=1.5, pad_after_s=1.5)
            await _answered_by_speaking_staff(rig, tmp_path, words, "+15551230047")
            ev = await _live_transcript(rig, conv)
            staff_said = " ".join(t["text"] for t in ev.meta["turns"] if t["side"] == "staff")
            # The small model sometimes hears espeak-ng's first word twice; the promise is in there either way.
            assert "내일 전화 할게요" in staff_said, ev.meta["turns"]
            assert not [t for t in ev.meta["turns"] if t["side"] == "caller"], "the caller said nothing"
            rows = []
            for _ in range(100):
                rows = await keeper.promises(conv)
                if rows:
                    break
                await asyncio.sleep(0.05)
            (row,) = rows
            assert (row.step, row.status, row.said_by) == ("Call back", "proposed", "201")
            assert (await spines.spine(conv)).next_step is None, "not counted before a person confirms it"
            await keeper.confirm(row.id, staff="alice")
            sp = await spines.spine(conv)
            assert sp.next_step == "Call back"
            assert sp.next_step_due == dt.datetime(2026, 12, 2, 17, tzinfo=ZoneInfo(zone)).timestamp()
            assert sp.next_step_owner == "alice"
        finally:
            await keeper.stop()


async def test_the_caller_hears_the_transcription_notice_and_it_is_not_staff_speech(live_rig: Rig) -> None:
    rig = live_rig
    conv = await rig.known("+15551230044", "Noa Han", "booking")
    # Like a real desk phone, the staff phone sends audio all the time (here: silence) once it answers.
    silence = rig.work / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", str(silence), "trim", "0", "9"], check=True)
    staff = Phone("201", "answer_speak", rig.work, speech_wav=str(silence))
    others = [Phone(ext, "ring", rig.work) for ext in ("202", "203")]
    sniff = RtpSniffer(0, address="127.0.0.2")  # everything Asterisk sends to the caller (the trunk's address)
    for ph in (staff, *others):
        await ph.start()
    sniff.start()
    try:
        await asyncio.sleep(0.3)
        result = await place_call(rig.work, number="+15551230044", hold_ms=6000)
        assert result.returncode == 0, result.stderr
        end = await rig.ended()
    finally:
        sniff.stop()
        for ph in (staff, *others):
            await ph.stop()
    assert end.outcome is CallOutcome.ANSWERED
    # The phone sends only silence: the speech the caller heard is the notice.
    heard = sniff.voiced_seconds()
    assert 1.0 <= heard <= 6.0, f"the caller heard {heard:.2f} s of speech"
    staff_partials = [e for e in rig.events if isinstance(e, LiveTranscript) and e.side == "staff"]
    assert staff_partials == [], "the notice is not shown as something the staff member said"
    found = [e for e in await rig.service.timeline(conv) if e.kind == "transcript"]
    assert not any(t["side"] == "staff" for e in found for t in e.meta["turns"])


async def test_dialplan_refuses_premium_and_international_click_to_call(rig: Rig, phones: StartPhones) -> None:
    """The shipped dialplan is a second line against toll fraud: an Originate that bypasses the gateway's own
    number policy (sent straight over AMI) still never reaches the trunk with a premium or foreign number."""
    ph = await phones(x201="answer", x299="answer_bye")
    refused = ["+19005551234", "9005551234", "+447400123456", "011447400123456", "+881612345678"]
    for i, number in enumerate(refused, start=1):
        resp = await rig.vc.ami.action(
            {
                "Action": "Originate",
                "Channel": "PJSIP/201",
                "Context": "gw-click-to-call",
                "Exten": number,
                "Priority": "1",
                "CallerID": '"toll test" <201>',
                "Timeout": "10000",
                "Async": "true",
            },
            timeout=10.0,
            as_list=False,
        )
        assert resp.success
        # The staff phone rang (and answers), so the click-to-call context runs for this number.
        deadline = time.monotonic() + 20
        while ph["201"].invites() < i:  # type: ignore[index]
            assert time.monotonic() < deadline, f"phone 201 never rang for the Originate to {number}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # answered, and time enough for a Dial to the trunk, had there been one
    assert ph["201"].invites() == len(refused)  # type: ignore[index]
    assert ph["299"].invites() == 0  # type: ignore[index]
