-- Voicemail transcription jobs: a durable, bounded queue that survives restarts.
-- One job per voicemail event. status: pending -> running -> done | failed; waiting_model while no usable model.
-- attempts counts claims (a worker crash or a gateway crash mid-job each cost one), so a poison file ends in failed.

CREATE TABLE transcription_jobs (
    id                   INTEGER PRIMARY KEY,
    conversation_id      INTEGER NOT NULL REFERENCES conversations(id),
    voicemail_event_id   INTEGER NOT NULL UNIQUE REFERENCES events(id),
    path                 TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'running', 'done', 'failed', 'waiting_model')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    transcript_event_id  INTEGER REFERENCES events(id),
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL,
    started_at           REAL,
    finished_at          REAL
);
CREATE INDEX transcription_jobs_queue ON transcription_jobs(status, id);
