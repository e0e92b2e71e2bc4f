"""The spoken whisper: a short context line the answering phone hears before it is bridged to the caller.

Theory of operation
-------------------
When a call comes in, the FastAGI lookup (see :mod:`gateway.channels.voice.agi_server`) already knows the caller's
conversation. :func:`whisper_text` turns its summary into a line of at most about four seconds ("Maria R, chipped
tooth, urgent, texted 10 minutes ago"). :class:`WhisperMaker` speaks it with espeak-ng and converts it with sox to
what Asterisk plays without transcoding (8 kHz, 16-bit, mono WAV), into a cache directory that Asterisk can read. The
file name is a hash of the text and the voice settings, so a line is synthesised once and every later call with the
same line reuses the file; files are written to a temporary name and renamed, so Asterisk never sees half a file.

The call never waits for the speech: the lookup hands the dialplan the file's (future) path in ``GW_WHISPER`` at
once and synthesis runs in the background. The dialplan's pre-bridge gosub (``Dial(...,U(gw-whisper))``) plays the
file only if it exists by the time a phone answers: no whisper rather than a late one. Synthesis runs in at most two
child processes at a time, each bounded by a timeout; a failure is logged once per kind and the call goes on silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from gateway.channels.voice.label import sanitize_label, short_name
from gateway.domain.models import ConversationSummary
from gateway.supervise import cancel_and_wait

log = logging.getLogger(__name__)

#: Longest whisper in seconds; a longer synthesis is redone faster (espeak-ng's rate) to fit.
MAX_SECONDS = 4.0
_MAX_WORDS = 12
_BASE_RATE = 175
_MAX_RATE = 320
_CHANNEL_VERBS = {"sms": "texted", "chat": "chatted", "voice": "called", "email": "emailed"}


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''} ago"
    hours = minutes // 60
    if hours < 24:
        return f"{hours} hour{'s' if hours != 1 else ''} ago"
    days = hours // 24
    return "yesterday" if days == 1 else f"{days} days ago"


def whisper_text(summary: ConversationSummary | None, *, withheld: bool, now: float) -> str:
    """The line the answering staff member hears: who, what about, urgency, the last contact.

    At most about a dozen words of plain ASCII text (the same sanitising as the phone display), so it fits in about
    four seconds of speech and cannot carry markup into the speech synthesiser.
    """
    if withheld:
        return "Withheld number"
    if summary is None:
        return "New caller"
    parts: list[str] = []
    who = short_name(sanitize_label(summary.display_name or "", 40))
    parts.append(who or "Known caller")
    about = sanitize_label(summary.intent or summary.next_step or "", 40)
    if about:
        parts.append(about.replace("_", " "))
    if summary.urgent:
        parts.append("urgent")
    latest = None
    for event in summary.last_by_channel.values():
        if event.kind in ("message_in", "call_missed", "voicemail", "call_answered") and (
            latest is None or event.occurred_at > latest.occurred_at
        ):
            latest = event
    if latest is not None:
        verb = "left a voicemail" if latest.kind == "voicemail" else _CHANNEL_VERBS.get(latest.channel, "wrote")
        parts.append(f"{verb} {_ago(max(0.0, now - latest.occurred_at))}")
    words = ", ".join(parts).split()
    return " ".join(words[:_MAX_WORDS])


@dataclass(frozen=True, slots=True)
class WhisperSettings:
    """How whispers are made (taken from ``[voice]``)."""

    directory: Path
    voice: str = "en-us"
    espeak: str = "espeak-ng"
    sox: str = "sox"
    timeout_s: float = 5.0
    max_files: int = 2000


class WhisperMaker:
    """Synthesises whisper lines into a cache directory Asterisk reads (see the module docstring)."""

    def __init__(self, settings: WhisperSettings) -> None:
        self.settings = settings
        self._running: dict[Path, asyncio.Task[Path | None]] = {}
        self._limit = asyncio.Semaphore(2)
        self.made = 0
        self.failed = 0
        self.cache_hits = 0
        self.last_error: str | None = None
        self.last_ms = 0.0

    def path_for(self, text: str) -> Path:
        """Where the WAV for ``text`` lives (whether or not it exists yet)."""
        key = f"{self.settings.voice}\0{text}".encode()
        return self.settings.directory / f"whisper-{hashlib.sha256(key).hexdigest()[:20]}.wav"

    def prepare(self, text: str) -> Path:
        """Return the WAV path for ``text`` at once; synthesise it in the background if it is not there yet."""
        path = self.path_for(text)
        if path.exists():
            self.cache_hits += 1
            return path
        if path not in self._running:
            task = asyncio.create_task(self._make(text, path), name=f"whisper-{path.stem}")
            self._running[path] = task
            task.add_done_callback(functools.partial(self._forget, path))
        return path

    def _forget(self, path: Path, _task: asyncio.Task[Path | None]) -> None:
        self._running.pop(path, None)

    async def make(self, text: str) -> Path | None:
        """Synthesise ``text`` now (or wait for the synthesis already running); None if it failed."""
        path = self.prepare(text)
        task = self._running.get(path)
        if task is not None:
            return await asyncio.shield(task)
        return path if path.exists() else None

    async def stop(self) -> None:
        """Cancel syntheses still running."""
        await cancel_and_wait(*self._running.values(), owner="whisper")

    async def _make(self, text: str, path: Path) -> Path | None:
        started = time.perf_counter()
        async with self._limit:
            try:
                self.settings.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
                rate = _BASE_RATE
                for _ in range(2):
                    seconds = await self._synthesise(text, path, rate)
                    if seconds <= MAX_SECONDS:
                        break
                    rate = min(_MAX_RATE, int(rate * seconds / MAX_SECONDS) + 10)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, RuntimeError, wave.Error) as err:
                self.failed += 1
                message = f"{type(err).__name__}: {err}"
                if message != self.last_error:
                    log.warning(
                        "whisper: could not synthesise a context line (%s); calls go on without a whisper. "
                        "Install espeak-ng and sox, and check voice.whisper_dir is writable",
                        message,
                    )
                self.last_error = message
                return None
        self.made += 1
        self.last_ms = (time.perf_counter() - started) * 1000
        log.debug("whisper: %s ready in %.0f ms", path.name, self.last_ms)
        self._prune()
        return path

    async def _synthesise(self, text: str, path: Path, rate: int) -> float:
        """espeak-ng (text on stdin, never on the command line) -> sox -> 8 kHz mono 16-bit WAV. Returns seconds."""
        raw = path.with_name(f".{path.stem}.{os.getpid()}.raw.wav")
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
        try:
            await self._run(
                [self.settings.espeak, "-v", self.settings.voice, "-s", str(rate), "-w", str(raw)], stdin=text.encode()
            )
            await self._run([self.settings.sox, "-q", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(tmp)])
            with wave.open(str(tmp), "rb") as w:
                seconds = w.getnframes() / float(w.getframerate())
            tmp.chmod(0o640)
            tmp.replace(path)
            return seconds
        finally:
            for leftover in (raw, tmp):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    async def _run(self, argv: list[str], stdin: bytes | None = None) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                _, err = await proc.communicate(stdin)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            first = err.decode(errors="replace").strip().splitlines()[:1]
            raise RuntimeError(f"{Path(argv[0]).name} exited with {proc.returncode}: {' '.join(first)}")

    def _prune(self) -> None:
        """Keep the cache at most ``max_files`` files, oldest first out."""
        try:
            files = sorted(self.settings.directory.glob("whisper-*.wav"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for old in files[: max(0, len(files) - self.settings.max_files)]:
            with contextlib.suppress(OSError):
                old.unlink()
