"""Live transcription, seen from the daemon: audio streams in, partial text and finished utterances out.

Theory of operation: :class:`LiveSpeech` owns one streaming worker process
(:mod:`gateway.transcribe.live_worker`), started niced with the model loaded once, and multiplexes every open
stream over its stdin (binary frames) and stdout (JSON lines). :meth:`LiveSpeech.open` returns a
:class:`LiveStream`; the voice channel feeds it 16-bit PCM as RTP arrives and gets each new partial through a
callback within the time the recogniser needs (no batching in between). :meth:`LiveStream.close` flushes the stream
and returns its utterances with their times. Feeding never blocks the event loop: frames go into the pipe's write
buffer, and a worker that falls more than ``max_backlog_bytes`` behind loses audio (counted) rather than the daemon
stalling. If the worker dies, its open streams end with what they had and the next ``open`` starts a new worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.transcribe.live_worker import AUDIO, CLOSE, HEADER, OPEN

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Utterance:
    """One finished utterance of a stream; times in seconds from the stream's start."""

    text: str
    start: float
    end: float
    confidence: float | None


@dataclass
class LiveStream:
    """One direction of one call being transcribed."""

    id: int
    owner: LiveSpeech
    on_partial: Callable[[str], None]
    opened_at: float = field(default_factory=time.time)
    utterances: list[Utterance] = field(default_factory=list)
    dropped_bytes: int = 0
    fed_bytes: int = 0
    closed: asyncio.Future[None] | None = None

    def feed(self, pcm: bytes) -> None:
        """Queue signed 16-bit little-endian PCM for recognition (never blocks)."""
        self.owner._send(self, AUDIO, pcm)  # noqa: SLF001 - the stream is the speech service's handle

    async def close(self, limit_s: float = 10.0) -> list[Utterance]:
        """Flush and end the stream; return its utterances (what there is if the worker does not answer)."""
        if self.closed is None:
            self.closed = asyncio.get_running_loop().create_future()
            self.owner._send(self, CLOSE, b"")  # noqa: SLF001
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await asyncio.shield(self.closed)
        self.owner._streams.pop(self.id, None)  # noqa: SLF001
        return list(self.utterances)


class LiveSpeech:
    """The streaming recogniser service (one worker process, many streams)."""

    def __init__(
        self,
        model_path: str,
        *,
        nice: int = 10,
        max_active: int = 0,
        grammar: list[str] | None = None,
        load_timeout: float = 120.0,
        max_backlog_bytes: int = 4 << 20,
    ) -> None:
        self.model_path = model_path
        self.nice = nice
        self.max_active = max_active
        self.grammar = grammar
        self.load_timeout = load_timeout
        self.max_backlog_bytes = max_backlog_bytes
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._streams: dict[int, LiveStream] = {}
        self._ids = itertools.count(1)
        self._starting: asyncio.Lock = asyncio.Lock()
        self.last_error: str | None = None
        self.worker_starts = 0

    @property
    def running(self) -> bool:
        """True while a worker process is up."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the worker and wait until its model is loaded (raises RuntimeError with the reason)."""
        async with self._starting:
            if self.running:
                return
            argv = [sys.executable, "-m", "gateway.transcribe.live_worker", "--model", self.model_path]
            argv += ["--nice", str(self.nice), "--max-active", str(self.max_active)]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                limit=1 << 20,
            )
            assert proc.stdout is not None
            try:
                async with asyncio.timeout(self.load_timeout):
                    first = json.loads(await proc.stdout.readline() or b'{"type": "fatal", "error": "exited"}')
            except (TimeoutError, ValueError) as err:
                proc.kill()
                await proc.wait()
                self.last_error = f"live transcription worker did not start: {type(err).__name__}"
                raise RuntimeError(self.last_error) from err
            if first.get("type") != "ready":
                await proc.wait()
                self.last_error = str(first.get("error", "the worker exited while loading the model"))
                raise RuntimeError(self.last_error)
            self._proc = proc
            self.worker_starts += 1
            self._reader = asyncio.create_task(self._read(proc), name="live-speech-reader")
            log.info("live transcription worker ready (pid %s)", first.get("pid"))

    async def stop(self) -> None:
        """End every stream and the worker."""
        proc, reader = self._proc, self._reader
        self._proc, self._reader = None, None
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._end_all()

    async def open(self, on_partial: Callable[[str], None], *, rate: int = 16000) -> LiveStream:
        """A new stream (starts the worker if it is not running)."""
        if not self.running:
            await self.start()
        stream = LiveStream(next(self._ids), self, on_partial)
        self._streams[stream.id] = stream
        spec = {"rate": rate, "grammar": self.grammar}
        self._send(stream, OPEN, json.dumps(spec, ensure_ascii=False).encode())
        return stream

    def _send(self, stream: LiveStream, kind: int, payload: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            stream.dropped_bytes += len(payload)
            if kind == CLOSE and stream.closed is not None and not stream.closed.done():
                stream.closed.set_result(None)
            return
        transport = proc.stdin.transport
        if kind == AUDIO and transport.get_write_buffer_size() > self.max_backlog_bytes:
            stream.dropped_bytes += len(payload)
            return
        if kind == AUDIO:
            stream.fed_bytes += len(payload)
        proc.stdin.write(HEADER.pack(stream.id, kind, len(payload)) + payload)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                line = await proc.stdout.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                stream = self._streams.get(int(msg.get("stream", 0)))
                kind = msg.get("type")
                if kind == "fatal":
                    self.last_error = str(msg.get("error"))
                    log.error("live transcription worker failed: %s", self.last_error)
                if stream is None:
                    continue
                if kind == "partial":
                    try:
                        stream.on_partial(str(msg.get("text", "")))
                    except Exception:
                        log.exception("live transcription: partial-text callback failed")
                elif kind == "final":
                    stream.utterances.append(
                        Utterance(
                            str(msg.get("text", "")),
                            float(msg.get("start", 0.0)),
                            float(msg.get("end", 0.0)),
                            msg.get("confidence"),
                        )
                    )
                elif kind == "closed" and stream.closed is not None and not stream.closed.done():
                    stream.closed.set_result(None)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            if self._proc is proc:
                self._proc = None
                self.last_error = self.last_error or f"live transcription worker exited ({proc.returncode})"
                log.warning("live transcription worker exited with %s; open streams end now", proc.returncode)
            self._end_all()

    def _end_all(self) -> None:
        for stream in list(self._streams.values()):
            if stream.closed is None:
                stream.closed = asyncio.get_running_loop().create_future()
            if not stream.closed.done():
                stream.closed.set_result(None)


class LiveSpeechPart:
    """The daemon's part for :class:`LiveSpeech`: loads the model in the background so the daemon starts at once."""

    def __init__(self, speech: LiveSpeech) -> None:
        self.speech = speech
        self._warm: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start loading the model (a call answered before it is ready waits for the load)."""
        self._warm = asyncio.create_task(self._load(), name="live-speech-load")

    async def _load(self) -> None:
        try:
            await self.speech.start()
        except RuntimeError as err:
            log.warning("live transcription is off until a model loads: %s", err)

    async def stop(self) -> None:
        """Stop loading or the worker."""
        if self._warm is not None:
            self._warm.cancel()
            await asyncio.gather(self._warm, return_exceptions=True)
        await self.speech.stop()
