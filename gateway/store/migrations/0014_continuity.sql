-- Continuity: durable scheduled sends, the automated sends and customer contacts the restraint counts, and the
-- last human answer per conversation. Times are the continuity clock's unix seconds.

CREATE TABLE IF NOT EXISTS continuity_jobs (
    id               INTEGER PRIMARY KEY,
    rule             TEXT NOT NULL,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    due_at           REAL NOT NULL,
    state            TEXT NOT NULL DEFAULT 'scheduled'
                     CHECK (state IN ('scheduled', 'sending', 'done', 'cancelled', 'suppressed')),
    payload          TEXT NOT NULL DEFAULT '{}',
    reason           TEXT NOT NULL DEFAULT '',
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS continuity_jobs_due ON continuity_jobs(due_at) WHERE state IN ('scheduled', 'sending');
CREATE INDEX IF NOT EXISTS continuity_jobs_conv ON continuity_jobs(conversation_id, state);

CREATE TABLE IF NOT EXISTS continuity_sends (
    id               INTEGER PRIMARY KEY,
    conversation_id  INTEGER NOT NULL,
    rule             TEXT NOT NULL,
    address          TEXT NOT NULL DEFAULT '',
    at               REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS continuity_sends_conv ON continuity_sends(conversation_id, at);
CREATE INDEX IF NOT EXISTS continuity_sends_addr ON continuity_sends(address, rule, at);

CREATE TABLE IF NOT EXISTS continuity_contacts (
    conversation_id  INTEGER NOT NULL,
    at               REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS continuity_contacts_conv ON continuity_contacts(conversation_id, at);

CREATE TABLE IF NOT EXISTS continuity_human (
    conversation_id  INTEGER PRIMARY KEY,
    at               REAL NOT NULL
);

-- The last timeline event the rules have looked at: after a restart they continue from here, so an event that
-- arrived just before a stop is still acted on (the bus is only the wake-up).
CREATE TABLE IF NOT EXISTS continuity_cursor (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    event_id  INTEGER NOT NULL
);
