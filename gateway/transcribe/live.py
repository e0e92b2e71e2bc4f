"""Live transcription, seen from the daemon: audio streams in, partial text and finished utterances out.

Theory of operation: :class:`LiveSpeech` owns a pool of streaming worker processes
(:mod:`gateway.transcribe.live_worker`, two by default), each started niced with the model loaded once, and
multiplexes the open streams over their stdin (binary frames) and stdout (JSON lines); a new stream goes to the
worker with the fewest streams. :meth:`LiveSpeech.open` returns a
:class:`LiveStream`; the voice channel feeds it 16-bit PCM as RTP arrives and gets each new partial through a
callback within the time the recogniser needs (no batching in between). :meth:`LiveStream.close` flushes the stream
and returns its utterances with their times. Feeding never blocks the event loop: frames go into the pipe's write
buffer, and a worker that falls more than ``max_backlog_bytes`` behind loses audio (counted) rather than the daemon
stalling. If a worker dies, its open streams end with what they had and the next ``open`` starts a new one.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy

from gateway.supervise import cancel_and_wait
from gateway.transcribe.live_worker import AUDIO, CLOSE, HEADER, OPEN
from gateway.values import Health, degraded, down, ok

log = logging.getLogger(__name__)

#: Below this RMS (16-bit samples) a frame is silence: telephone line noise sits far below speech (1000-5000).
SILENCE_RMS = 150.0
#: Silence still sent after speech, so the recogniser hears the pause that ends an utterance.
HANGOVER_S = 0.8
#: Seconds of held-back silence sent ahead of speech that resumes: the first syllable starts quieter than the level
#: that counts as voice, and a recogniser that misses it hears another word.
PREROLL_S = 0.3


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
    rate: int = 16000
    opened_at: float = field(default_factory=time.time)
    utterances: list[Utterance] = field(default_factory=list)
    dropped_bytes: int = 0
    fed_bytes: int = 0
    skipped_bytes: int = 0
    """Silence not sent to the recogniser (see :meth:`feed`)."""
    closed: asyncio.Future[None] | None = None
    latencies: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=1000))
    """Seconds from audio reaching the gateway to the partial text that includes it (the latest 1000)."""
    _fed_at: collections.deque[tuple[int, float]] = field(default_factory=lambda: collections.deque(maxlen=500))
    _segments: list[tuple[int, float]] = field(default_factory=list)
    _last_voice: float = float("-inf")
    _skipping: bool = False
    _held: collections.deque[bytes] = field(default_factory=collections.deque)
    _held_bytes: int = 0

    def feed(self, pcm: bytes) -> None:
        """Queue signed 16-bit little-endian PCM for recognition (never blocks).

        Silence costs the recogniser as much as speech, and on a call each side is silent about half the time: after
        ``HANGOVER_S`` of silence (enough for the recogniser to close the utterance) further silent audio is not sent
        until someone speaks again. Utterance times stay true because every resumed stretch remembers when it began.
        """
        now = time.monotonic()
        samples = numpy.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        if samples.size and float(numpy.sqrt(numpy.mean(samples.astype(numpy.float32) ** 2))) >= SILENCE_RMS:
            self._last_voice = now
        elif now - self._last_voice > HANGOVER_S:
            self.skipped_bytes += len(pcm)
            self._skipping = True
            # Keep the latest silence: it is sent ahead of the speech that ends it (PREROLL_S).
            self._held.append(pcm)
            self._held_bytes += len(pcm)
            while self._held_bytes - len(self._held[0]) >= PREROLL_S * self.rate * 2:
                self._held_bytes -= len(self._held.popleft())
            return
        if self._skipping or not self._segments:
            held, self._held_bytes = b"".join(self._held), 0
            self._held.clear()
            self.skipped_bytes -= len(held)
            self._segments.append((self.fed_bytes // 2, time.time() - len(held) / (2 * self.rate)))
            self._skipping = False
            if held:
                self.owner._send(self, AUDIO, held)  # noqa: SLF001
        self.owner._send(self, AUDIO, pcm)  # noqa: SLF001 - the stream is the speech service's handle
        self._fed_at.append((self.fed_bytes // 2, now))

    def wall_time(self, offset_s: float) -> float:
        """The wall-clock time of a moment given in seconds of audio sent to the recogniser (an utterance's start)."""
        sample = int(offset_s * self.rate)
        starts = [cum for cum, _ in self._segments]
        i = bisect.bisect_right(starts, sample) - 1
        if i < 0:
            return self.opened_at + offset_s
        cum, wall = self._segments[i]
        return wall + (sample - cum) / self.rate

    def _partial_latency(self, samples: int) -> None:
        """Record how long ago the last audio included in a partial arrived."""
        while len(self._fed_at) > 1 and self._fed_at[1][0] <= samples:
            self._fed_at.popleft()
        if self._fed_at and self._fed_at[0][0] <= samples:
            self.latencies.append(time.monotonic() - self._fed_at[0][1])

    async def close(self, limit_s: float = 10.0) -> list[Utterance]:
        """Flush and end the stream; return its utterances (what there is if the worker does not answer)."""
        if self.closed is None:
            self.closed = asyncio.get_running_loop().create_future()
            self.owner._send(self, CLOSE, b"")  # noqa: SLF001
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await asyncio.shield(self.closed)
        self.owner._forget(self)  # noqa: SLF001
        return list(self.utterances)


@dataclass
class _Worker:
    """One worker process and the task reading its answers."""

    proc: asyncio.subprocess.Process
    reader: asyncio.Task[None] | None = None
    streams: int = 0

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class LiveSpeech:
    """The streaming recogniser service: ``workers`` processes (one model each), many streams."""

    def __init__(
        self,
        model_path: str,
        *,
        workers: int = 2,
        nice: int = 10,
        idle: bool = True,
        max_active: int = 0,
        grammar: list[str] | None = None,
        load_timeout: float = 120.0,
        max_backlog_bytes: int = 4 << 20,
    ) -> None:
        self.model_path = model_path
        self.workers = max(1, workers)
        self.nice = nice
        self.idle = idle
        self.max_active = max_active
        self.grammar = grammar
        self.load_timeout = load_timeout
        self.max_backlog_bytes = max_backlog_bytes
        self._pool: list[_Worker] = []
        self._streams: dict[int, LiveStream] = {}
        self._worker_of: dict[int, _Worker] = {}
        self._ids = itertools.count(1)
        self._starting: asyncio.Lock = asyncio.Lock()
        self.last_error: str | None = None
        self.worker_starts = 0

    @property
    def running(self) -> bool:
        """True while every worker process is up."""
        return len(self._pool) == self.workers and all(w.alive for w in self._pool)

    async def start(self) -> None:
        """Start the workers (those not running) and wait until their model is loaded.

        Raises RuntimeError with the reason when a worker cannot load the model.
        """
        async with self._starting:
            self._pool = [w for w in self._pool if w.alive]
            missing = self.workers - len(self._pool)
            if missing > 0:
                started = await asyncio.gather(*(self._spawn() for _ in range(missing)), return_exceptions=True)
                self._pool += [w for w in started if isinstance(w, _Worker)]
                for outcome in started:
                    if isinstance(outcome, BaseException):
                        raise outcome

    async def _spawn(self) -> _Worker:
        argv = [sys.executable, "-m", "gateway.transcribe.live_worker", "--model", self.model_path]
        argv += ["--nice", str(self.nice), "--max-active", str(self.max_active)]
        if self.idle:
            argv.append("--idle")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1 << 20,
            # Its own session: a Ctrl-C in the terminal reaches the daemon, which stops the workers in order.
            start_new_session=True,
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
        worker = _Worker(proc)
        worker.reader = asyncio.create_task(self._read(worker), name=f"live-speech-reader-{proc.pid}")
        self.worker_starts += 1
        log.info("live transcription worker ready (pid %s)", first.get("pid"))
        return worker

    async def stop(self) -> None:
        """End every stream and every worker."""
        pool, self._pool = self._pool, []
        for worker in pool:
            if worker.alive and worker.proc.stdin is not None:
                worker.proc.stdin.close()
        for worker in pool:
            try:
                async with asyncio.timeout(5):
                    await worker.proc.wait()
            except TimeoutError:
                worker.proc.kill()
                await worker.proc.wait()
            await cancel_and_wait(worker.reader, owner="live-transcriber")
        self._end_all(None)

    async def open(self, on_partial: Callable[[str], None], *, rate: int = 16000) -> LiveStream:
        """A new stream on the least busy worker (starts workers that are not running)."""
        if not self.running:
            await self.start()
        worker = min(self._pool, key=lambda w: w.streams)
        stream = LiveStream(next(self._ids), self, on_partial, rate)
        self._streams[stream.id] = stream
        self._worker_of[stream.id] = worker
        worker.streams += 1
        spec = {"rate": rate, "grammar": self.grammar}
        self._send(stream, OPEN, json.dumps(spec, ensure_ascii=False).encode())
        return stream

    def _forget(self, stream: LiveStream) -> None:
        self._streams.pop(stream.id, None)
        worker = self._worker_of.pop(stream.id, None)
        if worker is not None:
            worker.streams = max(0, worker.streams - 1)

    def _send(self, stream: LiveStream, kind: int, payload: bytes) -> None:
        worker = self._worker_of.get(stream.id)
        stdin = worker.proc.stdin if worker is not None and worker.alive else None
        if stdin is None or stdin.is_closing():
            stream.dropped_bytes += len(payload)
            if kind == CLOSE and stream.closed is not None and not stream.closed.done():
                stream.closed.set_result(None)
            return
        if kind == AUDIO and stdin.transport.get_write_buffer_size() > self.max_backlog_bytes:
            stream.dropped_bytes += len(payload)
            return
        if kind == AUDIO:
            stream.fed_bytes += len(payload)
        stdin.write(HEADER.pack(stream.id, kind, len(payload)) + payload)

    async def _read(self, worker: _Worker) -> None:
        proc = worker.proc
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
                self._dispatch(msg)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            if worker in self._pool:
                self._pool.remove(worker)
                self.last_error = self.last_error or f"live transcription worker exited ({proc.returncode})"
                log.warning("live transcription worker exited with %s; its open streams end now", proc.returncode)
            self._end_all(worker)

    def _dispatch(self, msg: dict[str, object]) -> None:
        kind = msg.get("type")
        if kind == "fatal":
            self.last_error = str(msg.get("error"))
            log.error("live transcription worker failed: %s", self.last_error)
            return
        raw_id = msg.get("stream", 0)
        stream = self._streams.get(int(raw_id) if isinstance(raw_id, int | str) else 0)
        if stream is None:
            return
        if kind == "partial":
            samples = msg.get("samples", 0)
            stream._partial_latency(int(samples) if isinstance(samples, int | float) else 0)  # noqa: SLF001
            try:
                stream.on_partial(str(msg.get("text", "")))
            except Exception:
                log.exception("live transcription: partial-text callback failed")
        elif kind == "final":
            start, end, conf = msg.get("start", 0.0), msg.get("end", 0.0), msg.get("confidence")
            # A short utterance can end before any partial named it: the finished text is shown live as well.
            if msg.get("text"):
                try:
                    stream.on_partial(str(msg.get("text", "")))
                except Exception:
                    log.exception("live transcription: partial-text callback failed")
            stream.utterances.append(
                Utterance(
                    str(msg.get("text", "")),
                    float(start) if isinstance(start, int | float) else 0.0,
                    float(end) if isinstance(end, int | float) else 0.0,
                    float(conf) if isinstance(conf, int | float) else None,
                )
            )
        elif kind == "closed" and stream.closed is not None and not stream.closed.done():
            stream.closed.set_result(None)

    def _end_all(self, worker: _Worker | None) -> None:
        """End the streams of ``worker`` (of every worker when None) with what they have."""
        for stream in list(self._streams.values()):
            if worker is not None and self._worker_of.get(stream.id) is not worker:
                continue
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
        await cancel_and_wait(self._warm, owner="live-transcriber")
        await self.speech.stop()

    def health(self) -> Health:
        """Live call transcription's verdict for the status page, ``gateway doctor`` and /metrics."""
        speech = self.speech
        title = "Live call transcription"
        if speech.running:
            return ok(
                "live_transcription",
                title,
                f"{speech.workers} worker process(es) ready",
                details={"worker_starts": speech.worker_starts},
            )
        if self._warm is not None and not self._warm.done():
            return degraded("live_transcription", title, "loading the speech model", "wait a few seconds")
        return down(
            "live_transcription",
            title,
            speech.last_error or "no worker is running",
            "check transcribe.model_path with `gateway doctor`; calls go on without live text meanwhile",
        )
