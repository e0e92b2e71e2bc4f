-- Core schema: contacts, identities, one conversation per contact, the timeline, the outbox, staff, audit.
-- Times are unix seconds (REAL). JSON columns hold objects, never NULL.

CREATE TABLE contacts (
    id            INTEGER PRIMARY KEY,
    display_name  TEXT,
    merged_into   INTEGER REFERENCES contacts(id),   -- set while this contact is merged into another
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);

CREATE TABLE identities (
    id          INTEGER PRIMARY KEY,
    contact_id  INTEGER NOT NULL REFERENCES contacts(id),
    kind        TEXT NOT NULL CHECK (kind IN ('phone', 'chat', 'email', 'sip')),
    value       TEXT NOT NULL,          -- normalized: E.164, lower-case email, visitor id, extension
    raw         TEXT NOT NULL,          -- what the channel gave us
    valid       INTEGER NOT NULL DEFAULT 1,   -- 0: could not be normalized, kept raw and flagged
    created_at  REAL NOT NULL,
    UNIQUE (kind, value)
);
CREATE INDEX identities_contact ON identities(contact_id);

CREATE TABLE conversations (
    id                   INTEGER PRIMARY KEY,
    contact_id           INTEGER NOT NULL UNIQUE REFERENCES contacts(id),
    status               TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'waiting', 'closed')),
    intent               TEXT,
    next_step            TEXT,
    urgent               INTEGER NOT NULL DEFAULT 0,
    owner                TEXT,
    preferred_channel    TEXT,
    facts                TEXT NOT NULL DEFAULT '{}',
    last_inbound_at      REAL,
    last_outbound_at     REAL,
    awaiting_since       REAL,          -- first unanswered inbound message; NULL when answered
    merged_into          INTEGER REFERENCES conversations(id),
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL
);
CREATE INDEX conversations_waiting ON conversations(awaiting_since) WHERE awaiting_since IS NOT NULL;

CREATE TABLE events (
    id                      INTEGER PRIMARY KEY,
    conversation_id         INTEGER NOT NULL REFERENCES conversations(id),
    origin_conversation_id  INTEGER NOT NULL,   -- where it was first recorded; lets a merge be undone
    kind                    TEXT NOT NULL,
    channel                 TEXT NOT NULL,
    body                    TEXT NOT NULL DEFAULT '',
    meta                    TEXT NOT NULL DEFAULT '{}',
    external_id             TEXT,
    author                  TEXT,
    occurred_at             REAL NOT NULL,
    created_at              REAL NOT NULL
);
CREATE UNIQUE INDEX events_external ON events(channel, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX events_conversation ON events(conversation_id, id);

CREATE VIRTUAL TABLE events_fts USING fts5(body, content='events', content_rowid='id', tokenize='unicode61');
CREATE TRIGGER events_fts_insert AFTER INSERT ON events WHEN new.body <> '' BEGIN
    INSERT INTO events_fts(rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER events_fts_delete AFTER DELETE ON events WHEN old.body <> '' BEGIN
    INSERT INTO events_fts(events_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
CREATE TRIGGER events_fts_update AFTER UPDATE OF body ON events BEGIN
    INSERT INTO events_fts(events_fts, rowid, body) SELECT 'delete', old.id, old.body WHERE old.body <> '';
    INSERT INTO events_fts(rowid, body) SELECT new.id, new.body WHERE new.body <> '';
END;

CREATE TABLE merges (
    id                 INTEGER PRIMARY KEY,
    kept_contact_id    INTEGER NOT NULL REFERENCES contacts(id),
    merged_contact_id  INTEGER NOT NULL REFERENCES contacts(id),
    reason             TEXT NOT NULL,
    author             TEXT,
    created_at         REAL NOT NULL,
    undone_at          REAL,
    undone_by          TEXT
);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    channel          TEXT NOT NULL,
    to_addr          TEXT NOT NULL,
    body             TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'expired', 'unknown')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    expires_at       REAL NOT NULL,
    last_error       TEXT,
    provider_ref     TEXT,              -- e.g. the SMS message reference(s) from +CMGS
    parts            INTEGER NOT NULL DEFAULT 1,
    automated        INTEGER NOT NULL DEFAULT 0,
    author           TEXT,
    event_id         INTEGER REFERENCES events(id),
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE INDEX outbox_due ON outbox(channel, state, next_attempt_at);
CREATE INDEX outbox_event ON outbox(event_id);

CREATE TABLE suppressions (
    address     TEXT PRIMARY KEY,       -- E.164 number (or other address) that must not get automated messages
    reason      TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE staff (
    id             INTEGER PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    extension      TEXT UNIQUE,
    password_hash  TEXT,
    role           TEXT NOT NULL DEFAULT 'staff' CHECK (role IN ('staff', 'admin')),
    created_at     REAL NOT NULL
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_at ON audit_log(at);

-- The conversation's waiting/answered state follows its timeline. Kept in triggers so that every writer (service,
-- channels, imports) gets it right and ingest costs one statement from Python instead of two.
CREATE TRIGGER events_customer_waits AFTER INSERT ON events
WHEN new.kind IN ('message_in', 'voicemail', 'call_missed') BEGIN
    UPDATE conversations SET last_inbound_at = new.occurred_at,
        awaiting_since = COALESCE(awaiting_since, new.occurred_at), status = 'open', updated_at = new.created_at
    WHERE id = new.conversation_id;
END;
CREATE TRIGGER events_business_answers AFTER INSERT ON events
WHEN new.kind IN ('message_out', 'call_answered') AND json_extract(new.meta, '$.automated') IS NOT 1 BEGIN
    UPDATE conversations SET last_outbound_at = new.occurred_at, awaiting_since = NULL, updated_at = new.created_at
    WHERE id = new.conversation_id;
END;
CREATE TRIGGER events_touch AFTER INSERT ON events
WHEN new.kind NOT IN ('message_in', 'voicemail', 'call_missed', 'message_out', 'call_answered')
    OR json_extract(new.meta, '$.automated') IS 1 BEGIN
    UPDATE conversations SET updated_at = new.created_at WHERE id = new.conversation_id;
END;
