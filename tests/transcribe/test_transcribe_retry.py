"""A failed transcription says how to fix it, shows on the status page also after a restart, and can be retried
from the API and the CLI (issue 12). The console's button calls the same API (tests/web)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from transcribe_env import Env

from gateway.store import transcribe as q
from gateway.transcribe.config import TranscribeConfig
from gateway.transcribe.service import TranscriptionService, fix_for

ROOT = Path(__file__).resolve().parents[2]


def test_every_failure_reason_comes_with_a_fix() -> None:
    for reason in (
        "x.wav: the recording is truncated",
        "worker w0 hung: no answer within 60 s",
        "x.wav: the recording does not exist (was it moved or deleted?)",
        "gave up after 3 attempt(s): worker crashed",
        "something nobody foresaw",
    ):
        fix = fix_for(reason)
        assert fix
        assert "gateway" in fix or "recording" in fix
    assert "retry cannot help" in fix_for("x.wav: the recording is truncated")
    assert "gateway transcribe retry" in fix_for("worker w0 hung")


async def test_failed_transcription_has_a_fix_survives_restart_and_can_be_retried(env: Env, model_path: str) -> None:
    bad = env.tmp / "vm-broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # a header cut short
    svc = TranscriptionService(env.store, env.service, env.bus, TranscribeConfig(model_path=model_path))
    await svc.start()
    try:
        _conv, ev = await env.voicemail(bad)
        await svc.enqueue(_conv, ev, str(bad))
        job = await env.wait_status(ev, ("failed",))
        assert job.last_error is not None
        assert "Fix:" in job.last_error
        status = await svc.status()
        assert status["jobs_failed"] == 1
        assert status["last_error"] is not None
        assert "Fix:" in status["last_error"]
    finally:
        await svc.stop()

    # A new daemon (no error in memory): the status page still shows why the failed job failed.
    svc2 = TranscriptionService(env.store, env.service, env.bus, TranscribeConfig(model_path=model_path))
    health = await svc2.snapshot()
    assert health.last_error is not None
    assert "truncated" in health.last_error or "header" in health.last_error

    # Retry from the CLI (the daemon is stopped; a running one picks the job up from the store).
    await env.store.stop()
    cfg = env.tmp / "gateway.toml"
    cfg.write_text(f'[store]\npath = "{env.tmp / "gateway.db"}"\n')
    run = [sys.executable, "-m", "gateway.cli", "--config", str(cfg), "transcribe"]
    envvars = {**os.environ, "PYTHONPATH": str(ROOT)}
    listed = subprocess.run([*run, "failed"], capture_output=True, text=True, env=envvars, check=False, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert f"voicemail {ev} " in listed.stdout
    assert "Fix:" in listed.stdout
    again = subprocess.run(
        [*run, "retry", str(ev)], capture_output=True, text=True, env=envvars, check=False, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert f"voicemail {ev}: queued again" in again.stdout
    twice = subprocess.run(
        [*run, "retry", str(ev)], capture_output=True, text=True, env=envvars, check=False, timeout=60
    )
    assert twice.returncode == 1
    assert "no failed transcription to retry" in twice.stderr
    await env.store.start()
    job = await env.job(ev)
    assert job.status == "pending"
    assert job.attempts == 0
    meta = next(e for e in await env.service.timeline(_conv) if e.id == ev).meta
    assert meta["transcription"] == "pending"
    assert await env.store.read(q.failed_jobs) == []
