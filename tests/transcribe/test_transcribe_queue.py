"""The durable job queue in the real store (no model needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from transcribe_env import Env

from gateway.store import transcribe as q


async def _enqueue(env: Env, n: int, *, max_backlog: int = 100, waiting: bool = False) -> q.TranscriptionJob:
    wav = env.tmp / f"vm{n}.wav"
    conv, ev = await env.voicemail(wav, caller=f"+82 10-4444-{n:04d}")
    job, created = await env.store.write(
        lambda c: q.enqueue_job(c, conv, ev, str(wav), now=1000.0 + n, max_backlog=max_backlog, waiting_model=waiting)
    )
    assert created
    return job


async def test_jobs_are_claimed_oldest_first_and_once(env: Env) -> None:
    jobs = [await _enqueue(env, n) for n in range(3)]
    claims = await asyncio.gather(*(env.store.write(lambda c: q.claim_next(c, now=2000.0)) for _ in range(4)))
    claimed = [c for c in claims if c is not None]
    assert sorted(c.id for c in claimed) == [j.id for j in jobs]  # each exactly once
    assert claims.count(None) == 1
    assert all(c.status == "running" and c.attempts == 1 and c.started_at == 2000.0 for c in claimed)


async def test_enqueue_is_idempotent_per_voicemail(env: Env) -> None:
    job = await _enqueue(env, 1)
    again, created = await env.store.write(
        lambda c: q.enqueue_job(
            c, job.conversation_id, job.voicemail_event_id, "/other", now=5.0, max_backlog=1, waiting_model=False
        )
    )
    assert not created
    assert again == job


async def test_crash_recovery_is_bounded(env: Env) -> None:
    """A file that takes the whole gateway down with it is tried max_attempts times, then failed."""
    job = await _enqueue(env, 1)
    for attempt in (1, 2, 3):
        claimed = await env.store.write(lambda c, t=float(attempt): q.claim_next(c, now=t))
        assert claimed is not None
        assert claimed.attempts == attempt
        # ... the gateway crashes here; at the next start:
        requeued, failed = await env.store.write(lambda c: q.recover_running(c, now=10.0, max_attempts=3))
        assert (requeued, failed) == ((1, 0) if attempt < 3 else (0, 1))
    final = await env.store.read(lambda c: q.get_job(c, job.id))
    assert final is not None
    assert final.status == "failed"
    assert final.last_error is not None
    assert "interrupted 3 time(s)" in final.last_error


async def test_graceful_release_does_not_spend_an_attempt(env: Env) -> None:
    job = await _enqueue(env, 1)
    await env.store.write(lambda c: q.claim_next(c, now=1.0))
    await env.store.write(lambda c: q.release_job(c, job.id, now=2.0))
    again = await env.store.read(lambda c: q.get_job(c, job.id))
    assert again is not None
    assert (again.status, again.attempts) == ("pending", 0)


async def test_waiting_for_a_model_and_release(env: Env) -> None:
    a = await _enqueue(env, 1, waiting=True)
    b = await _enqueue(env, 2)
    assert a.status == "waiting_model"
    assert await env.store.write(lambda c: q.hold_for_model(c, now=3.0)) == 1
    assert await env.store.write(lambda c: q.claim_next(c, now=3.0)) is None
    assert (await env.store.read(q.counts))["waiting_model"] == 2
    assert await env.store.write(lambda c: q.release_waiting(c, now=4.0)) == 2
    first = await env.store.write(lambda c: q.claim_next(c, now=5.0))
    assert first is not None
    assert first.id == a.id
    assert b.id > a.id


async def test_backlog_bound_keeps_the_row_as_failed_and_retryable(env: Env) -> None:
    await _enqueue(env, 1, max_backlog=2)
    await _enqueue(env, 2, max_backlog=2)
    third = await _enqueue(env, 3, max_backlog=2)
    assert third.status == "failed"
    assert third.last_error is not None
    assert "backlog full (2 jobs waiting" in third.last_error
    assert await env.store.read(q.active_count) == 2
    assert await env.store.write(lambda c: q.requeue_failed(c, third.id, now=9.0))
    assert not await env.store.write(lambda c: q.requeue_failed(c, third.id, now=9.0))  # now pending
    assert await env.store.read(q.active_count) == 3


async def test_sweep_finds_voicemails_without_a_job(env: Env, tmp_path: Path) -> None:
    queued = await _enqueue(env, 1)
    conv, ev = await env.voicemail(tmp_path / "missed.wav", caller="+82 10-9999-0000")
    found = await env.store.read(lambda c: q.unqueued_voicemails(c, limit=10))
    assert found == [(ev, conv, str(tmp_path / "missed.wav"))]
    assert queued.voicemail_event_id not in [f[0] for f in found]
