"""One transcription worker process, seen from the daemon's event loop.

Theory of operation: :meth:`WorkerProcess.start` spawns the worker (``python -m gateway.transcribe.worker``) with pipes
and waits, up to ``load_timeout``, for ``ready``; a ``fatal`` answer means the model is unusable
(:class:`ModelUnusableError`), an exit before ``ready`` is a crash. :meth:`run` sends one job and reads until its
``result``/``failed``: the audio must be decoded within ``decode_timeout`` and recognised within ``decode_timeout +
per_second * duration`` (the duration comes with ``started``). A worker that exits mid-job raises
:class:`WorkerCrashedError`; one that misses a deadline raises :class:`WorkerHungError`. After either, the process is
killed and must not be reused: the caller starts a fresh one. stderr is drained by a task the process owns and logged at
DEBUG; its last lines explain a crash.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import ConfigError, ProtocolError, TransientError
from gateway.supervise import cancel_and_wait
from gateway.transcribe.protocol import (
    Failed,
    Fatal,
    JobRequest,
    Ready,
    Result,
    Started,
    WorkerMessage,
    WorkerMessageParser,
    encode,
)

log = logging.getLogger(__name__)


class WorkerCrashedError(TransientError):
    """The worker process died (or broke the protocol) before answering."""


class WorkerHungError(TransientError):
    """The worker process did not answer in time; it has been killed."""


class ModelUnusableError(ConfigError):
    """The worker could not load the model; the message says why and how to fix it."""


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What a worker answered for one job."""

    started: Started | None
    answer: Result | Failed
    wall_seconds: float


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class WorkerProcess:
    """A worker process and its pipes. Not reusable after a crash or a hang."""

    def __init__(self, argv: Sequence[str], *, name: str, load_timeout: float) -> None:
        self.argv = list(argv)
        self.name = name
        self.load_timeout = load_timeout
        self.ready: Ready | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._parser = WorkerMessageParser()
        self._pending: collections.deque[WorkerMessage] = collections.deque()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self._proc is not None and self._proc.returncode is None

    def stderr_tail(self) -> str:
        """The worker's last log lines (for error reports)."""
        return " | ".join(self._stderr_tail)

    async def start(self) -> Ready:
        """Spawn the process and wait until the model is loaded."""
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # A terminal's Ctrl-C goes to the daemon, which stops the workers itself.
            start_new_session=True,
        )
        self._stderr_task = asyncio.create_task(self._drain_stderr(), name=f"{self.name}-stderr")
        log.info("transcription worker %s started (pid %d), loading the model", self.name, self._proc.pid)
        try:
            async with asyncio.timeout(self.load_timeout):
                message = await self._next()
        except TimeoutError as err:
            await self.kill()
            raise WorkerHungError(
                f"worker {self.name} did not load the model within {self.load_timeout:.0f} s; "
                "raise transcribe.load_timeout on a slow machine"
            ) from err
        except BaseException:
            await self.kill()
            raise
        if isinstance(message, Fatal):
            await self.kill()
            raise ModelUnusableError(message.error)
        if not isinstance(message, Ready):
            await self.kill()
            raise WorkerCrashedError(f"worker {self.name} sent {type(message).__name__} before ready")
        self.ready = message
        log.info(
            "transcription worker %s ready (model %s, %d Hz)",
            self.name,
            message.model,
            message.sample_rate,
        )
        return message

    async def run(self, job: JobRequest, *, decode_timeout: float, per_second: float) -> JobOutcome:
        """Send ``job`` and wait for its answer (see module docstring for the deadlines)."""
        proc = self._proc
        if proc is None or proc.stdin is None or not self.alive:
            raise WorkerCrashedError(f"worker {self.name} is not running")
        t0 = time.monotonic()
        try:
            proc.stdin.write(encode(job))
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as err:
            raise await self._crashed(f"while receiving job {job.job}") from err
        started: Started | None = None
        deadline = t0 + decode_timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    message = await self._next()
            except TimeoutError as err:
                phase = "recognising" if started else "decoding the audio of"
                await self.kill()
                raise WorkerHungError(
                    f"worker {self.name} hung {phase} job {job.job}: no answer after "
                    f"{time.monotonic() - t0:.0f} s; it was killed"
                ) from err
            if isinstance(message, Started) and message.job == job.job:
                started = message
                deadline = time.monotonic() + decode_timeout + per_second * message.duration
            elif isinstance(message, Result | Failed) and message.job == job.job:
                return JobOutcome(started, message, time.monotonic() - t0)
            else:
                await self.kill()
                raise WorkerCrashedError(
                    f"worker {self.name} sent an unexpected {type(message).__name__} during job {job.job}"
                )

    async def stop(self, grace: float = 5.0) -> None:
        """Close stdin (the worker exits after its job) and wait; kill after ``grace`` s."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                async with asyncio.timeout(grace):
                    await proc.wait()
            except TimeoutError:
                pass
        await self.kill()

    async def kill(self) -> None:
        """Kill the process (no-op if gone) and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        if self._stderr_task is not None:
            await asyncio.wait([self._stderr_task], timeout=2.0)  # let it log the worker's last words
            await cancel_and_wait(self._stderr_task, owner=f"worker {self.name}")
            self._stderr_task = None
        if proc.stdin is not None:
            proc.stdin.close()

    async def _next(self) -> WorkerMessage:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        while not self._pending:
            data = await proc.stdout.read(65536)
            if not data:
                raise await self._crashed("before answering")
            try:
                messages = self._parser.feed(data)
            except ProtocolError as err:
                await self.kill()
                raise WorkerCrashedError(f"worker {self.name} broke the protocol: {err}") from err
            for message in messages:
                if isinstance(message, JobRequest):
                    await self.kill()
                    raise WorkerCrashedError(f"worker {self.name} broke the protocol: echoed a job")
                self._pending.append(message)
        return self._pending.popleft()

    async def _crashed(self, when: str) -> WorkerCrashedError:
        proc = self._proc
        assert proc is not None
        try:
            async with asyncio.timeout(5.0):
                await proc.wait()
        except TimeoutError:
            await self.kill()
        if self._stderr_task is not None:
            await asyncio.wait({self._stderr_task}, timeout=1.0)  # let the last log lines arrive
        tail = self.stderr_tail()
        return WorkerCrashedError(
            f"worker {self.name} {_describe_exit(proc.returncode)} {when}" + (f" ({tail[-300:]})" if tail else "")
        )

    async def _drain_stderr(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr_tail.append(text)
                log.debug("worker %s: %s", self.name, text)
