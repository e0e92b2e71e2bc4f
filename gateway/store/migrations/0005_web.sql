-- Web layer: staff sessions, login lockout, chat visitors, API tokens, webhook queue.

CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash   TEXT PRIMARY KEY,            -- sha256 of the cookie value; the cookie itself is never stored
    staff_id     INTEGER NOT NULL REFERENCES staff(id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    remote       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS web_sessions_staff ON web_sessions(staff_id);

CREATE TABLE IF NOT EXISTS web_login_failures (
    key          TEXT PRIMARY KEY,            -- 'user:<name>' or 'addr:<ip>'
    failures     INTEGER NOT NULL DEFAULT 0,
    last_failure REAL NOT NULL,
    locked_until REAL NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS web_visitors (
    visitor_hash    TEXT PRIMARY KEY,         -- sha256 of the token kept in the visitor's browser
    contact_id      INTEGER REFERENCES contacts(id) ON DELETE SET NULL,
    conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
    created_at      REAL NOT NULL,
    last_seen_at    REAL NOT NULL,
    remote          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS web_visitors_conversation ON web_visitors(conversation_id);

CREATE TABLE IF NOT EXISTS api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,        -- sha256 of the bearer token; shown once at creation
    created_at   REAL NOT NULL,
    last_used_at REAL,
    revoked_at   REAL
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    url             TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,            -- JSON, signed as-is at send time
    state           TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    delivered_at    REAL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);
