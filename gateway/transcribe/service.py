"""Voicemail transcription: a durable job queue in the store served by Vosk worker processes.

Theory of operation ------------------- A voicemail becomes a row in ``transcription_jobs`` (``enqueue``, or the
``VoicemailRecorded`` bus event, or the catch-up sweep at start that finds voicemail events without a job). The row is
the truth; the bus only wakes us.

Each of ``workers`` slots is a task owning one worker process: it claims the oldest ``pending`` job (which marks it
``running`` and counts the attempt, in one write), sends it to its process and waits for the answer:

* ``result`` -> the transcript goes on the caller's timeline as a ``transcript`` event (idempotent: its external id is
  derived from the voicemail event), keywords set the conversation's intent/urgency, the job becomes ``done``.
* ``failed`` with kind ``audio`` -> the file is broken: ``failed`` at once with the reason (retrying cannot help).
* the process crashes or misses its deadline -> it is killed and replaced; the job goes back to ``pending`` until
  ``max_attempts`` claims were spent, then ``failed`` with the last reason.

At start, jobs left ``running`` by a crash go back to ``pending`` (or ``failed`` when out of attempts). While no usable
model exists the jobs wait as ``waiting_model``; a watcher looks for the model every ``model_recheck_seconds`` and
releases them when one appears. Every change of health (workers alive, model error, last error) is published as a
:class:`TranscriptionHealth` event; :meth:`status` gives the same for the status page.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.domain.bus import Bus, Subscription
from gateway.domain.events import TranscriptionFailed, TranscriptionHealth, TranscriptReady, VoicemailRecorded
from gateway.domain.intent import IntentConfig, IntentDecision, IntentRules, KeywordHit
from gateway.domain.models import Channel, EventKind
from gateway.domain.ports import ConversationPort, StorePort
from gateway.errors import PermanentError, StoreError
from gateway.store import transcribe as q
from gateway.supervise import TaskSet, backoff_delay
from gateway.transcribe.config import TranscribeConfig
from gateway.transcribe.model import check_model, resolve_model_path
from gateway.transcribe.process import (
    JobOutcome,
    ModelUnusableError,
    WorkerCrashedError,
    WorkerHungError,
    WorkerProcess,
)
from gateway.transcribe.protocol import Failed, JobRequest, Result
from gateway.values import Health, degraded, down, ok

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest a slot sleeps between looks at the queue when nothing woke it (a safety net, not
#: the trigger).
IDLE_POLL_SECONDS = 5.0
TRANSCRIPT_AUTHOR = "transcriber"


def fix_for(error: str) -> str:
    """What staff or the operator can do about a failed transcription, from its reason."""
    text = error.lower()
    retry = (
        "retry it from the console (Retry transcription on the voicemail), the API "
        "(POST /api/v1/voicemails/<event id>/transcription/retry) or `gateway transcribe retry <event id>`"
    )
    if "does not exist" in text or "moved or deleted" in text:
        return f"put the recording back where the voicemail entry says (the audio is needed), then {retry}"
    if "permission denied" in text:
        return f"let the gateway's user read the recordings directory (RECORDINGS_DIR), then {retry}"
    if "sox" in text:
        return f"install sox (apt-get install sox) or set transcribe.sox_path, then {retry}"
    if "backlog" in text:
        return f"wait until the queue is shorter (or raise transcribe.max_backlog / transcribe.workers), then {retry}"
    if any(w in text for w in ("empty", "zero-length", "truncated", "corrupt", "unsupported", "not a", "codec")):
        return (
            "the recording itself is damaged or not audio: listen to it from the voicemail entry; a retry cannot help"
        )
    if any(w in text for w in ("hung", "timed out", "timeout", "crash", "gave up", "exited", "killed")):
        return (
            f"{retry}; if it fails again, raise transcribe.job_timeout or transcribe.timeout_per_audio_second, "
            "and check the gateway's log for the worker's error"
        )
    return f"{retry}; if it fails again, check the gateway's log for the worker's error"


def worker_command(config: TranscribeConfig, model_path: str) -> list[str]:
    """The command line of one worker process."""
    return [
        sys.executable,
        "-m",
        "gateway.transcribe.worker",
        "--model",
        model_path,
        "--nice",
        str(config.nice),
        "--sox",
        config.sox_path,
        "--max-active",
        str(config.max_active),
        "--fillers",
        json.dumps(config.grammar_fillers, ensure_ascii=False),
        *(["--idle"] if config.idle_class else []),
    ]


def _model_signature(path: str) -> tuple[tuple[str, int, int], ...]:
    """Sizes and mtimes of the model's key files: tells a replaced model from a failed one."""
    sig = []
    for name in (
        "am/final.mdl",
        "conf/model.conf",
        "graph/HCLG.fst",
        "graph/HCLr.fst",
        "graph/Gr.fst",
    ):
        with contextlib.suppress(OSError):
            st = os.stat(Path(path) / name)
            sig.append((name, st.st_size, st.st_mtime_ns))
    return tuple(sig)


class TranscriptionService:
    """Transcribes voicemails in worker processes and puts the text on the caller's timeline."""

    def __init__(
        self,
        store: StorePort,
        conversations: ConversationPort,
        bus: Bus,
        config: TranscribeConfig | None = None,
        intent: IntentConfig | IntentRules | None = None,
        *,
        command: Callable[[str], Sequence[str]] | None = None,
        sets_intent: bool = True,
    ) -> None:
        """``command(model_path)`` overrides the worker command line (tests run fakes with it).

        ``sets_intent=False`` leaves the conversation's intent and urgency to the spine learner, which reads them
        from the transcript's meta and records who set them; the transcript carries the decision either way."""
        self.sets_intent = sets_intent
        self.store = store
        self.conversations = conversations
        self.bus = bus
        self.config = config or TranscribeConfig()
        if isinstance(intent, IntentRules):
            self.rules = intent
        else:
            self.rules = IntentRules.from_config(intent or IntentConfig())
        self.model_path = resolve_model_path(self.config.model_path)
        self._command = command or (lambda path: worker_command(self.config, path))
        self._tasks = TaskSet("transcription")
        self._workers: dict[int, WorkerProcess] = {}
        self._current: dict[int, q.TranscriptionJob] = {}
        self._wake = asyncio.Event()
        self._model_ok = asyncio.Event()
        self._model_error: str | None = None
        self._health_since = time.time()
        self._failed_signature: tuple[tuple[str, int, int], ...] | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._missing_keywords: tuple[str, ...] = ()
        self._sub: Subscription | None = None
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover interrupted jobs, catch up on missed voicemails, start workers and listeners."""
        if self._running:
            return
        self._running = True
        now = time.time()
        requeued, failed = await self.store.write(
            lambda c: q.recover_running(c, now=now, max_attempts=self.config.max_attempts)
        )
        if requeued or failed:
            log.warning(
                "transcription: %d job(s) were interrupted by a stop or crash: %d requeued, %d out of attempts",
                requeued + failed,
                requeued,
                failed,
            )
        self._sub = self.bus.subscribe("transcribe", types=(VoicemailRecorded,))
        self._spawn_task(self._listen(self._sub), "transcribe-listen")
        await self._catch_up()
        await self._set_model_state(check_model(self.model_path))
        if not self.config.enabled:
            log.info("transcription is disabled (transcribe.enabled = false); voicemails are queued only")
            return
        self._spawn_task(self._watch_model(), "transcribe-model-watch")
        for n in range(max(1, self.config.workers)):
            self._spawn_task(self._slot(n), f"transcribe-slot-{n}")

    async def stop(self) -> None:
        """Stop listening and stop every worker process (a running job is retried later)."""
        self._running = False
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        await self._tasks.cancel_all()
        for worker in list(self._workers.values()):
            await worker.kill()
        self._workers.clear()
        # Jobs cut short by this stop go back to the queue without spending an attempt: the stop
        # was not their fault. (After a crash, start() finds them still running and does count it.)
        interrupted = list(self._current.values())
        self._current.clear()
        for job in interrupted:
            try:
                await self.store.write(functools.partial(q.release_job, job_id=job.id, now=time.time()))
            except StoreError as err:
                log.warning("job %d stays running until the next start: %s", job.id, err)

    def _spawn_task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.spawn(coro, name)

    # -- public API --------------------------------------------------------------------------------

    async def enqueue(self, conversation_id: int, voicemail_event_id: int, path: str) -> q.TranscriptionJob:
        """Queue a voicemail for transcription (once: a repeat returns the existing job)."""
        waiting = not self._model_ok.is_set()
        job, created = await self.store.write(
            lambda c: q.enqueue_job(
                c,
                conversation_id,
                voicemail_event_id,
                path,
                now=time.time(),
                max_backlog=self.config.max_backlog,
                waiting_model=waiting,
            )
        )
        if created:
            log.info(
                "voicemail event %d queued for transcription as job %d (%s)",
                voicemail_event_id,
                job.id,
                job.status,
            )
            state: dict[str, Any] = {"transcription": "pending" if job.status != "failed" else "failed"}
            if job.status == "failed":
                state["transcription_error"] = job.last_error
            await self._mark_voicemail(job, state)
            self._wake.set()
        return job

    async def retry_voicemail(self, voicemail_event_id: int) -> q.TranscriptionJob | None:
        """Queue a voicemail's failed transcription again (console, API); None when it has no failed job."""
        job = await self.store.read(lambda c: q.job_for_voicemail(c, voicemail_event_id))
        if job is None or not await self.retry(job.id):
            return None
        return await self.store.read(lambda c: q.get_job(c, job.id))

    async def retry(self, job_id: int) -> bool:
        """Queue a failed job again with fresh attempts (staff action); False if not failed."""
        ok = await self.store.write(lambda c: q.requeue_failed(c, job_id, now=time.time()))
        if not ok:
            return False
        if not self._model_ok.is_set():
            await self.store.write(lambda c: q.hold_for_model(c, now=time.time()))
        job = await self.store.read(lambda c: q.get_job(c, job_id))
        if job is not None:
            await self._mark_voicemail(job, {"transcription": "pending", "transcription_error": None})
        self._wake.set()
        return True

    async def job(self, voicemail_event_id: int) -> q.TranscriptionJob | None:
        """The transcription job of a voicemail event."""
        return await self.store.read(lambda c: q.job_for_voicemail(c, voicemail_event_id))

    def health(self) -> Health:
        """Transcription's verdict for the status page, ``gateway doctor`` and /metrics."""
        h = self._health()
        title = "Voicemail transcription"
        details: dict[str, str | int | float | bool | None] = {
            "model": h.model_path,
            "workers": h.workers,
            "workers_alive": h.workers_alive,
        }
        if h.model_error:
            return down(
                "transcription",
                title,
                f"no usable speech model: {h.model_error}",
                "install a Vosk model (./install.sh can download one) and set transcribe.model_path; voicemails "
                "wait and are transcribed once it is there",
                since=self._health_since,
                details=details,
            )
        if h.workers_alive == 0:
            return down(
                "transcription",
                title,
                f"no speech worker is running ({h.last_error or 'starting'})",
                "look at the gateway's log for the worker's error; it restarts the worker by itself, restart the "
                "gateway if this lasts",
                since=self._health_since,
                details=details,
            )
        if h.workers_alive < h.workers:
            return degraded(
                "transcription",
                title,
                f"{h.workers_alive} of {h.workers} speech workers running ({h.last_error or 'restarting'})",
                "nothing to do if it recovers within a minute; otherwise see the gateway's log",
                since=self._health_since,
                details=details,
            )
        return ok(
            "transcription",
            title,
            f"{h.workers_alive} speech worker(s) ready",
            since=self._health_since,
            details=details,
        )

    async def snapshot(self) -> TranscriptionHealth:
        """Current health, with job counts from the store."""
        counts = await self.store.read(q.counts)
        if self._last_error is None and counts.get("failed"):
            # After a restart the in-memory error is gone, but the failed jobs are not: show the newest one's.
            last = await self.store.read(q.last_failure)
            if last is not None:
                self._last_error, self._last_error_at = last
        return self._health(counts)

    async def status(self) -> Mapping[str, Any]:
        """JSON-ready health for the status page (numbers become gauges)."""
        h = await self.snapshot()
        return {
            "model_path": h.model_path,
            "model_error": h.model_error,
            "workers": h.workers,
            "workers_alive": h.workers_alive,
            "backlog": h.backlog,
            **{f"jobs_{k}": v for k, v in h.counts.items()},
            "last_error": h.last_error,
            "last_error_at": h.last_error_at,
            "keywords_not_in_model": list(h.missing_keywords),
        }

    def _health(self, counts: Mapping[str, int] | None = None) -> TranscriptionHealth:
        alive = [w for w in self._workers.values() if w.alive and w.ready is not None]
        return TranscriptionHealth(
            model_path=self.model_path,
            model_error=self._model_error,
            workers=max(1, self.config.workers) if self.config.enabled else 0,
            workers_alive=len(alive),
            worker_pids=tuple(w.pid for w in alive if w.pid is not None),
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            missing_keywords=self._missing_keywords,
            counts=dict(counts or {}),
        )

    def _publish_health(self) -> None:
        self._health_since = time.time()
        self.bus.publish(self._health())

    def _note_error(self, error: str) -> None:
        self._last_error = error
        self._last_error_at = time.time()
        self._publish_health()

    # -- the bus and the catch-up sweep ------------------------------------------------------------

    async def _listen(self, sub: Subscription) -> None:
        async for event in sub:
            match event:
                case VoicemailRecorded(conversation_id=conversation_id, event_id=event_id, path=path):
                    await self._queue_recorded(conversation_id, event_id, path)

    async def _queue_recorded(self, conversation_id: int, event_id: int, path: str) -> None:
        try:
            await self.enqueue(conversation_id, event_id, path)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - the catch-up sweep finds it at the next start
            log.warning("could not queue a voicemail for transcription: %s", err)
            self._note_error(f"could not queue a voicemail: {err}")

    async def _catch_up(self) -> None:
        missed = await self.store.read(lambda c: q.unqueued_voicemails(c, limit=self.config.max_backlog))
        for event_id, conversation_id, path in missed:
            await self.enqueue(conversation_id, event_id, path)
        if missed:
            log.info(
                "transcription: queued %d voicemail(s) recorded while nobody was listening",
                len(missed),
            )

    # -- the model ---------------------------------------------------------------------------------

    async def _set_model_state(self, error: str | None) -> None:
        now = time.time()
        if error is None:
            self._model_error = None
            released = await self.store.write(lambda c: q.release_waiting(c, now=now))
            if released:
                log.info("transcription model available: %d waiting voicemail(s) released", released)
            self._model_ok.set()
            self._wake.set()
        else:
            if self._model_error != error:
                log.error("transcription model unusable: %s", error)
            self._model_error = error
            self._model_ok.clear()
            await self.store.write(lambda c: q.hold_for_model(c, now=now))
        self._publish_health()

    async def _watch_model(self) -> None:
        while True:
            await asyncio.sleep(self.config.model_recheck_seconds)
            if self._model_ok.is_set():
                continue
            error = check_model(self.model_path)
            if error is None and _model_signature(self.model_path) == self._failed_signature:
                continue  # same files that failed to load: wait until they are replaced
            if error is None or error != self._model_error:
                await self._set_model_state(error)

    # -- worker slots ------------------------------------------------------------------------------

    async def _slot(self, n: int) -> None:
        failures = 0
        try:
            while True:
                await self._model_ok.wait()
                worker = self._workers.get(n)
                if worker is None or not worker.alive:
                    worker = await self._start_worker(n)
                    if worker is None:
                        failures += 1
                        await asyncio.sleep(backoff_delay(failures, base=1.0, cap=30.0))
                        continue
                    failures = 0
                self._wake.clear()
                job = await self.store.write(lambda c: q.claim_next(c, now=time.time()))
                if job is None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_POLL_SECONDS):
                            await self._wake.wait()
                    continue
                self._current[n] = job
                await self._process(job, worker)
                self._current.pop(n, None)
        finally:
            worker = self._workers.pop(n, None)
            if worker is not None:
                await worker.kill()

    async def _start_worker(self, n: int) -> WorkerProcess | None:
        worker = WorkerProcess(self._command(self.model_path), name=f"w{n}", load_timeout=self.config.load_timeout)
        try:
            await worker.start()
        except ModelUnusableError as err:
            self._failed_signature = _model_signature(self.model_path)
            self._note_error(str(err))
            await self._set_model_state(str(err))
            return None
        except (WorkerCrashedError, WorkerHungError, OSError) as err:
            self._note_error(f"worker {n} could not start: {err}")
            log.warning("transcription worker %d could not start: %s", n, err)
            return None
        self._workers[n] = worker
        self._publish_health()
        return worker

    async def _process(self, job: q.TranscriptionJob, worker: WorkerProcess) -> None:
        request = JobRequest(job.id, job.path, self.config.max_seconds, tuple(self.rules.grammar_phrases()))
        log.info(
            "transcribing job %d (voicemail event %d, attempt %d)",
            job.id,
            job.voicemail_event_id,
            job.attempts,
        )
        try:
            outcome = await worker.run(
                request,
                decode_timeout=self.config.job_timeout,
                per_second=self.config.timeout_per_audio_second,
            )
        except (WorkerCrashedError, WorkerHungError) as err:
            reason = str(err)
            await worker.kill()
            self._workers.pop(next((k for k, w in self._workers.items() if w is worker), -1), None)
            self._note_error(str(err))
            log.warning("transcription job %d: %s", job.id, err)
            if job.attempts >= self.config.max_attempts:
                await self._fail(job, f"gave up after {job.attempts} attempt(s): {err}")
            else:
                await self.store.write(lambda c: q.retry_job(c, job.id, reason, now=time.time()))
                self._wake.set()
            return
        answer = outcome.answer
        if isinstance(answer, Failed):
            if answer.kind == "audio" or job.attempts >= self.config.max_attempts:
                await self._fail(job, answer.error)
            else:
                self._note_error(answer.error)
                await self.store.write(lambda c: q.retry_job(c, job.id, answer.error, now=time.time()))
            return
        try:
            await self._complete(job, outcome, answer)
        except asyncio.CancelledError:
            raise
        except PermanentError as err:
            await self._fail(job, f"could not store the transcript: {err}")
        except Exception as err:  # noqa: BLE001 - any failure: the job row keeps the state
            reason = str(err)
            self._note_error(f"could not store the transcript of job {job.id}: {err}")
            if job.attempts >= self.config.max_attempts:
                await self._fail(job, f"could not store the transcript: {err}")
            else:
                await self.store.write(lambda c: q.retry_job(c, job.id, reason, now=time.time()))

    async def _fail(self, job: q.TranscriptionJob, error: str) -> None:
        error = f"{error}. Fix: {fix_for(error)}"
        self._note_error(f"voicemail {job.voicemail_event_id}: {error}")
        log.warning("transcription job %d failed: %s", job.id, error)
        await self.store.write(lambda c: q.fail_job(c, job.id, error, now=time.time()))
        await self._mark_voicemail(job, {"transcription": "failed", "transcription_error": error})
        self.bus.publish(TranscriptionFailed(job.conversation_id, job.voicemail_event_id, job.id, error))

    async def _mark_voicemail(self, job: q.TranscriptionJob, patch: Mapping[str, Any]) -> None:
        try:
            await self.conversations.update_event_meta(job.voicemail_event_id, patch)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - a store hiccup: retry while attempts remain
            log.warning("could not mark voicemail event %d: %s", job.voicemail_event_id, err)

    def decide(self, result: Result) -> IntentDecision:
        """Intent and urgency from the transcript text and the grammar pass."""
        hits = self.rules.spot(result.text)
        for kw in result.keywords:
            intent = self.rules.intent_of(kw.word)
            if intent is not None and kw.conf >= self.config.keyword_min_confidence:
                hits.append(KeywordHit(intent, kw.word, "grammar", kw.conf, kw.start))
        hits.sort(key=lambda h: (h.start is None, h.start or 0.0))
        return self.rules.decide(hits)

    async def _complete(self, job: q.TranscriptionJob, outcome: JobOutcome, result: Result) -> None:
        if result.missing_words and result.missing_words != self._missing_keywords:
            self._missing_keywords = result.missing_words
            log.warning(
                "the model does not know these keywords, only the transcript text can match them: %s",
                ", ".join(result.missing_words),
            )
        decision = self.decide(result)
        low = self.config.low_confidence
        started = outcome.started
        body = result.text
        if decision.keywords:
            body = (body + "\n" if body else "") + "keywords: " + ", ".join(decision.keywords)
        meta: dict[str, Any] = {
            "voicemail_event_id": job.voicemail_event_id,
            "job_id": job.id,
            "status": "done",
            "model": self._workers_model(),
            "rtf": round(result.decode_seconds / result.duration, 4) if result.duration > 0 else None,
            "duration": round(result.duration, 3),
            "full_duration": round(started.full_duration, 3) if started else round(result.duration, 3),
            "capped": bool(started.capped) if started else False,
            "codec": started.codec if started else None,
            "no_speech": not result.words,
            "confidence": (round(sum(w.conf for w in result.words) / len(result.words), 3) if result.words else None),
            "low_confidence_threshold": low,
            "words": [
                {
                    "word": w.word,
                    "start": w.start,
                    "end": w.end,
                    "conf": round(w.conf, 3),
                    "low": w.conf < low,
                }
                for w in result.words
            ],
            "keywords": [
                {
                    "keyword": h.keyword,
                    "intent": h.intent,
                    "source": h.source,
                    "conf": round(h.confidence, 3),
                    "start": h.start,
                }
                for h in decision.hits
            ],
            "intent": decision.intent,
            "urgent": decision.urgent,
        }
        event_id = await self.conversations.append_event(
            job.conversation_id,
            EventKind.TRANSCRIPT,
            Channel.VOICE,
            body,
            meta,
            external_id=f"transcript:{job.voicemail_event_id}",
            author=TRANSCRIPT_AUTHOR,
        )
        if self.sets_intent and (decision.intent is not None or decision.urgent):
            await self.conversations.update_conversation(
                job.conversation_id,
                intent=decision.intent,
                urgent=True if decision.urgent else None,
            )
        await self.store.write(lambda c: q.finish_job(c, job.id, event_id, now=time.time()))
        await self._mark_voicemail(job, {"transcription": "done", "transcript_event_id": event_id})
        log.info(
            "job %d transcribed: %.1f s of audio in %.1f s (rtf %.2f), intent %s, urgent %s",
            job.id,
            result.duration,
            result.decode_seconds,
            meta["rtf"] or 0.0,
            decision.intent,
            decision.urgent,
        )
        self.bus.publish(
            TranscriptReady(
                job.conversation_id,
                job.voicemail_event_id,
                event_id,
                decision.intent,
                decision.urgent,
                tuple(decision.keywords),
            )
        )

    def _workers_model(self) -> str | None:
        for worker in self._workers.values():
            if worker.ready is not None:
                return worker.ready.model
        return None
