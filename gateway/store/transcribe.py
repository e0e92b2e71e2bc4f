"""SQL for the voicemail transcription queue (table ``transcription_jobs``, migration 0004).

Plain synchronous functions taking a :class:`sqlite3.Connection`; run them through ``Store.write`` or ``Store.read``.
Claiming is one ``UPDATE ... RETURNING`` inside the single writer, so two worker slots never get the same job.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.domain.events import TRANSCRIPTION_ACTIVE_STATES

#: Statuses that still need work (they count against the backlog bound).
ACTIVE = TRANSCRIPTION_ACTIVE_STATES
STATUSES = ("pending", "running", "done", "failed", "waiting_model")

_COLUMNS = (
    "id, conversation_id, voicemail_event_id, path, status, attempts, last_error, "
    "transcript_event_id, "
    "created_at, updated_at, started_at, finished_at"
)


@dataclass(frozen=True, slots=True)
class TranscriptionJob:
    """One row of the queue."""

    id: int
    conversation_id: int
    voicemail_event_id: int
    path: str
    status: str
    attempts: int
    last_error: str | None
    transcript_event_id: int | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None


def _job(row: sqlite3.Row | tuple[object, ...] | None) -> TranscriptionJob | None:
    if row is None:
        return None
    return TranscriptionJob(*row)


def get_job(conn: sqlite3.Connection, job_id: int) -> TranscriptionJob | None:
    """The job with this id."""
    return _job(conn.execute(f"SELECT {_COLUMNS} FROM transcription_jobs WHERE id = ?", (job_id,)).fetchone())


def job_for_voicemail(conn: sqlite3.Connection, voicemail_event_id: int) -> TranscriptionJob | None:
    """The job of a voicemail event, if one was queued."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM transcription_jobs WHERE voicemail_event_id = ?",
        (voicemail_event_id,),
    ).fetchone()
    return _job(row)


def active_count(conn: sqlite3.Connection) -> int:
    """Jobs that still need work."""
    row = conn.execute(
        "SELECT count(*) FROM transcription_jobs WHERE status IN ('pending', 'running', 'waiting_model')"
    ).fetchone()
    return int(row[0])


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of jobs per status (every status present, zero when none)."""
    out = dict.fromkeys(STATUSES, 0)
    for status, n in conn.execute("SELECT status, count(*) FROM transcription_jobs GROUP BY status"):
        out[str(status)] = int(n)
    return out


def enqueue_job(
    conn: sqlite3.Connection,
    conversation_id: int,
    voicemail_event_id: int,
    path: str,
    *,
    now: float,
    max_backlog: int,
    waiting_model: bool,
) -> tuple[TranscriptionJob, bool]:
    """Queue a voicemail once. Returns (job, created).

    When ``max_backlog`` jobs are already waiting the row is still written, as ``failed`` with the
    reason, so
    nothing is lost and :func:`requeue_failed` can bring it back later.
    """
    existing = job_for_voicemail(conn, voicemail_event_id)
    if existing is not None:
        return existing, False
    status, error = ("waiting_model" if waiting_model else "pending"), None
    backlog = active_count(conn)
    if backlog >= max_backlog:
        status = "failed"
        error = (
            f"transcription backlog full ({backlog} jobs waiting, transcribe.max_backlog = "
            f"{max_backlog}); "
            "the voicemail is stored; retry it from the console once the backlog has drained"
        )
    cur = conn.execute(
        "INSERT INTO transcription_jobs (conversation_id, voicemail_event_id, path, status, "
        "last_error, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, voicemail_event_id, path, status, error, now, now),
    )
    job = get_job(conn, int(cur.lastrowid or 0))
    assert job is not None
    return job, True


def claim_next(conn: sqlite3.Connection, *, now: float) -> TranscriptionJob | None:
    """Take the oldest pending job: mark it running and count the attempt."""
    row = conn.execute(
        "UPDATE transcription_jobs SET status = 'running', attempts = attempts + 1, started_at = "
        "?, updated_at = ? "
        "WHERE id = (SELECT id FROM transcription_jobs WHERE status = 'pending' ORDER BY id LIMIT "
        "1) "
        f"RETURNING {_COLUMNS}",
        (now, now),
    ).fetchone()
    return _job(row)


def finish_job(conn: sqlite3.Connection, job_id: int, transcript_event_id: int, *, now: float) -> None:
    """The transcript is on the timeline."""
    conn.execute(
        "UPDATE transcription_jobs SET status = 'done', transcript_event_id = ?, last_error = "
        "NULL, "
        "finished_at = ?, updated_at = ? WHERE id = ?",
        (transcript_event_id, now, now, job_id),
    )


def fail_job(
    conn: sqlite3.Connection,
    job_id: int,
    error: str,
    *,
    now: float,
    transcript_event_id: int | None = None,
) -> None:
    """Give up on a job, keeping the reason."""
    conn.execute(
        "UPDATE transcription_jobs SET status = 'failed', last_error = ?, transcript_event_id = ?, "
        "finished_at = ?, updated_at = ? WHERE id = ?",
        (error, transcript_event_id, now, now, job_id),
    )


def retry_job(conn: sqlite3.Connection, job_id: int, error: str, *, now: float) -> None:
    """Put a running job back in the queue after a worker failure (the attempt stays counted)."""
    conn.execute(
        "UPDATE transcription_jobs SET status = 'pending', last_error = ?, updated_at = ? WHERE id = ?",
        (error, now, job_id),
    )


def release_job(conn: sqlite3.Connection, job_id: int, *, now: float) -> None:
    """A graceful stop interrupted this running job: back to the queue, the attempt not counted."""
    conn.execute(
        "UPDATE transcription_jobs SET status = 'pending', attempts = max(attempts - 1, 0), "
        "last_error = 'interrupted: the gateway stopped while transcribing', updated_at = ? "
        "WHERE id = ? AND status = 'running'",
        (now, job_id),
    )


def recover_running(conn: sqlite3.Connection, *, now: float, max_attempts: int) -> tuple[int, int]:
    """After a restart: ``running`` jobs go back to ``pending`` (``failed`` when out of tries).

    Returns (requeued, failed).
    """
    failed = conn.execute(
        "UPDATE transcription_jobs SET status = 'failed', updated_at = ?, finished_at = ?, "
        "last_error = "
        "'interrupted ' || attempts || ' time(s) while transcribing (the gateway stopped or "
        "crashed); last error: ' "
        "|| coalesce(last_error, 'none') WHERE status = 'running' AND attempts >= ?",
        (now, now, max_attempts),
    ).rowcount
    requeued = conn.execute(
        "UPDATE transcription_jobs SET status = 'pending', updated_at = ?, "
        "last_error = 'interrupted: the gateway stopped while transcribing' WHERE status = "
        "'running'",
        (now,),
    ).rowcount
    return requeued, failed


def hold_for_model(conn: sqlite3.Connection, *, now: float) -> int:
    """No usable model: park every pending job as ``waiting_model``."""
    return conn.execute(
        "UPDATE transcription_jobs SET status = 'waiting_model', updated_at = ? WHERE status = 'pending'",
        (now,),
    ).rowcount


def release_waiting(conn: sqlite3.Connection, *, now: float) -> int:
    """A model is there again: ``waiting_model`` jobs become ``pending``."""
    return conn.execute(
        "UPDATE transcription_jobs SET status = 'pending', updated_at = ? WHERE status = 'waiting_model'",
        (now,),
    ).rowcount


def requeue_failed(conn: sqlite3.Connection, job_id: int, *, now: float) -> bool:
    """Staff asked to try a failed job again: fresh attempts. False if the job is not failed."""
    cur = conn.execute(
        "UPDATE transcription_jobs SET status = 'pending', attempts = 0, updated_at = ?, "
        "finished_at = NULL "
        "WHERE id = ? AND status = 'failed'",
        (now, job_id),
    )
    return cur.rowcount == 1


def unqueued_voicemails(conn: sqlite3.Connection, *, limit: int) -> list[tuple[int, int, str]]:
    """Voicemail events with a recording but no job: (event_id, conversation_id, path).

    The bus is only a wake-up; this catches voicemails stored while the transcriber was not
    listening.
    """
    rows = conn.execute(
        "SELECT e.id, e.conversation_id, coalesce(json_extract(e.meta, '$.path'), "
        "json_extract(e.meta, '$.voicemail_path'), json_extract(e.meta, '$.file')) AS path FROM "
        "events e "
        "WHERE e.kind = 'voicemail' AND path IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM transcription_jobs j WHERE j.voicemail_event_id = e.id) "
        "ORDER BY e.id LIMIT ?",
        (limit,),
    ).fetchall()
    return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]


def last_failure(conn: sqlite3.Connection) -> tuple[str, float] | None:
    """(error, when) of the most recently failed job: the status page's last error also after a restart."""
    row = conn.execute(
        "SELECT last_error, updated_at FROM transcription_jobs WHERE status = 'failed' AND last_error IS NOT NULL "
        "ORDER BY updated_at DESC, id DESC LIMIT 1"
    ).fetchone()
    return (str(row[0]), float(row[1])) if row else None


def failed_jobs(conn: sqlite3.Connection, *, limit: int = 100) -> list[TranscriptionJob]:
    """Failed jobs, newest first (``gateway transcribe failed``)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM transcription_jobs WHERE status = 'failed' ORDER BY updated_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [j for r in rows if (j := _job(r)) is not None]


def requeue_failed_voicemail(
    conn: sqlite3.Connection, voicemail_event_id: int, *, now: float
) -> TranscriptionJob | None:
    """Queue the failed job of a voicemail again with fresh attempts; None when it has no failed job."""
    job = job_for_voicemail(conn, voicemail_event_id)
    if job is None or not requeue_failed(conn, job.id, now=now):
        return None
    return get_job(conn, job.id)
