"""The whisper line: what it says (a pure function) and how it is made (the real espeak-ng and sox)."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Sequence
from pathlib import Path

from gateway.channels.voice.whisper import MAX_SECONDS, WhisperMaker, WhisperSettings, whisper_text
from gateway.domain.models import ConversationSummary, TimelineEvent

NOW = 1_800_000_000.0


def _summary(
    name: str | None, intent: str | None, *, urgent: bool = False, last: Sequence[TimelineEvent] = ()
) -> ConversationSummary:
    return ConversationSummary(
        conversation_id=1,
        contact_id=1,
        display_name=name,
        status="open",
        intent=intent,
        next_step=None,
        urgent=urgent,
        owner=None,
        preferred_channel=None,
        facts={},
        phone="+15551234567",
        last_by_channel={e.channel: e for e in last},
        latest_transcript=None,
        last_staff_extension=None,
        awaiting_since=None,
    )


def _event(channel: str, kind: str, ago_s: float) -> TimelineEvent:
    return TimelineEvent(1, 1, kind, channel, "", {}, None, None, NOW - ago_s)


def test_whisper_says_who_what_urgency_and_the_last_contact() -> None:
    s = _summary(
        "Maria Rodriguez",
        "chipped tooth",
        urgent=True,
        last=[_event("sms", "message_in", 600), _event("chat", "message_in", 7200)],
    )
    assert whisper_text(s, withheld=False, now=NOW) == "Maria R, chipped tooth, urgent, texted 10 minutes ago"


def test_whisper_for_new_withheld_and_voicemail_callers() -> None:
    assert whisper_text(None, withheld=False, now=NOW) == "New caller"
    assert whisper_text(None, withheld=True, now=NOW) == "Withheld number"
    s = _summary(None, "estimate", last=[_event("voice", "voicemail", 26 * 3600)])
    assert whisper_text(s, withheld=False, now=NOW) == "Known caller, estimate, left a voicemail yesterday"


def test_whisper_is_short_and_plain_whatever_the_customer_typed() -> None:
    s = _summary('Bob "; rm -rf / <speak>' + " word" * 40, "x" * 200, urgent=True)
    text = whisper_text(s, withheld=False, now=NOW)
    assert len(text.split()) <= 12
    assert not set(text) & set('"<>;\\')


async def test_maker_speaks_a_telephone_wav_within_four_seconds(tmp_path: Path) -> None:
    maker = WhisperMaker(WhisperSettings(directory=tmp_path / "w"))
    long_line = "Maria Rodriguez, chipped tooth, urgent, texted ten minutes ago about Saturday morning"
    for text in ("New caller", long_line):
        path = await maker.make(text)
        assert path is not None
        assert path.exists()
        with wave.open(str(path), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
            seconds = w.getnframes() / 8000
        assert 0.3 < seconds <= MAX_SECONDS + 0.05, f"{text!r}: {seconds:.2f} s"
        assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert maker.made == 2
    # The same line again is a cache hit: no second synthesis.
    again = maker.prepare(long_line)
    assert again.exists()
    assert maker.cache_hits == 1
    assert maker.made == 2
    assert not [p for p in (tmp_path / "w").iterdir() if p.name.startswith(".")], "no temporary files left"


async def test_prepare_returns_at_once_and_the_file_appears_later(tmp_path: Path) -> None:
    maker = WhisperMaker(WhisperSettings(directory=tmp_path))
    t0 = time.perf_counter()
    path = maker.prepare("Dana Lee, estimate")
    assert (time.perf_counter() - t0) < 0.05, "the call never waits for speech"
    assert not path.exists()
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.05)
    assert path.exists()
    await maker.stop()


async def test_a_missing_synthesiser_means_no_whisper_not_an_error(tmp_path: Path) -> None:
    maker = WhisperMaker(WhisperSettings(directory=tmp_path, espeak="/nonexistent/espeak-ng"))
    assert await maker.make("New caller") is None
    assert maker.failed == 1
    assert maker.last_error is not None
    assert "FileNotFoundError" in maker.last_error
    assert not list(tmp_path.glob("whisper-*.wav"))
