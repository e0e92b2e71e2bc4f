"""End to end with the real pieces, using the packaged Vosk model.

sipp calls the real Asterisk, nobody answers, sipp speaks Korean (espeak-ng) as RTP, Asterisk
records the voicemail, the voice channel announces it, and the transcriber puts the keyword on the
caller's timeline with the intent set.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from transcribe_media import sox, speech

from gateway.channels.voice.channel import VoiceChannel
from gateway.channels.voice.settings import VoiceSettings
from gateway.config import Secret
from gateway.domain.bus import Bus
from gateway.domain.events import TranscriptReady, VoicemailRecorded
from gateway.domain.service import ConversationService
from gateway.store.db import Store
from gateway.transcribe.audio import probe_audio
from gateway.transcribe.config import TranscribeConfig
from gateway.transcribe.service import TranscriptionService

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "channels" / "voice"))
from voice_sipp import place_call  # noqa: E402

from tests.realpbx import harness  # noqa: E402

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]


@pytest.fixture(scope="module")
def pbx() -> dict[str, str]:
    """Asterisk with the test configuration is running; its resolved settings."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed (Debian package sip-tester); the test command installs it")
    try:
        settings, _ = harness.start_pbx()
    except harness.HarnessError as err:
        pytest.fail(f"local Asterisk did not start:\n{err}")
    return dict(settings.values)


@pytest.fixture
async def gateway(
    pbx: dict[str, str], tmp_path: Path, model_path: str
) -> AsyncIterator[tuple[ConversationService, Bus, TranscriptionService]]:
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
        staff={"201": "alice", "202": "bob", "203": "carol"},
        # A ring group of an endpoint that does not exist: every call goes to voicemail at once,
        # whatever phones happen to be registered.
        staff_group="PJSIP/nobody",
        whisper=False,
    )
    transcriber = TranscriptionService(store, service, bus, TranscribeConfig(model_path=model_path))
    voice = VoiceChannel(settings, service, bus, store=store)
    try:
        await transcriber.start()  # subscribed before the voice channel can announce anything
        await voice.start()
        await voice.ami.wait_connected(10)
        yield service, bus, transcriber
    finally:
        await voice.stop()
        await transcriber.stop()
        await bus.stop()
        await store.stop()


async def test_korean_voicemail_through_asterisk_lands_as_text_with_intent(
    gateway: tuple[ConversationService, Bus, TranscriptionService], tmp_path: Path
) -> None:
    service, bus, _ = gateway
    sub = bus.subscribe("e2e", 10_000, types=(VoicemailRecorded, TranscriptReady))
    said = speech("안녕하세요 예약하고 싶습니다. 예약 부탁드립니다", tmp_path / "said.wav")
    # Asterisk answers, beeps for about 0.6 s, then records: lead in with silence, send mu-law RTP.
    rtp = tmp_path / "said_ulaw.wav"
    sox(said, "-e", "u-law", rtp, "pad", "1.2", "0")
    _codec, _rate, seconds = probe_audio(rtp)
    call = await place_call(
        tmp_path,
        number="+821055501234",
        hold_ms=int(seconds * 1000) + 1500,
        answer_timeout_ms=60000,
        rtp_wav=rtp,
        local_port=15071,
    )
    assert call.returncode == 0, call.stderr

    deadline = time.monotonic() + 90
    recorded: VoicemailRecorded | None = None
    ready: TranscriptReady | None = None
    while ready is None:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no transcript; voicemail event: {recorded}"
        try:
            async with asyncio.timeout(remaining):
                event = await sub.get()
        except TimeoutError:
            continue
        if isinstance(event, VoicemailRecorded):
            recorded = event
        elif isinstance(event, TranscriptReady):
            ready = event
    assert recorded is not None
    assert ready.voicemail_event_id == recorded.event_id
    # The recording itself stays for staff to play.
    assert await asyncio.to_thread(Path(recorded.path).exists)

    timeline = await service.timeline(recorded.conversation_id)
    (transcript,) = [e for e in timeline if e.kind == "transcript"]
    assert "예약" in transcript.body
    assert transcript.meta["intent"] == "book"
    assert transcript.meta["voicemail_event_id"] == recorded.event_id
    (voicemail,) = [e for e in timeline if e.kind == "voicemail"]
    assert voicemail.meta["transcription"] == "done"
    summary = await service.summary(recorded.conversation_id)
    assert summary is not None
    assert summary.intent == "book"
    assert summary.phone == "+821055501234"
