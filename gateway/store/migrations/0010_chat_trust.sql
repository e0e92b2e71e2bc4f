-- Trust at the seams: a typed number is a claim, not an identity (see README "Security model").
--
-- identities.verified_at: when the channel itself last proved the identity (SMS sender, caller ID, visitor token:
-- observed, so at creation) or when a claim on it was verified. The reply number of a contact is its own most
-- recently verified phone, never one of a contact merged into it.
ALTER TABLE identities ADD COLUMN verified_at REAL;
UPDATE identities SET verified_at = created_at WHERE verified_at IS NULL;

-- A number (or address) someone typed: recorded on the claimant's own conversation; never merges, never rebinds,
-- never reveals. It becomes verified by an SMS answer from that number, a one-time code, or a staff confirmation.
CREATE TABLE identity_claims (
    id               INTEGER PRIMARY KEY,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),   -- the claimant's own conversation
    contact_id       INTEGER NOT NULL REFERENCES contacts(id),        -- the claimant's own contact
    visitor_hash     TEXT,                                            -- chat visitor that typed it, if any
    kind             TEXT NOT NULL,
    value            TEXT NOT NULL,                                   -- normalized (E.164)
    raw              TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'verified', 'rejected')),
    method           TEXT,                                            -- sms_reply | code | staff
    code_hash        TEXT,                                            -- sha256 of the one-time code, never the code
    code_expires_at  REAL,
    code_attempts    INTEGER NOT NULL DEFAULT 0,
    texted_at        REAL,                                            -- an SMS to the number left this conversation
    merge_id         INTEGER,                                         -- the merge the verification caused, if any
    created_at       REAL NOT NULL,
    verified_at      REAL,
    verified_by      TEXT
);
CREATE INDEX identity_claims_pending ON identity_claims(kind, value) WHERE state = 'pending';
CREATE INDEX identity_claims_conversation ON identity_claims(conversation_id);

-- Chat hand-offs ("continue by text", "call me"): idempotent by the widget's client id, counted per visitor and per
-- conversation for the daily limit.
CREATE TABLE chat_handoffs (
    id               INTEGER PRIMARY KEY,
    visitor_hash     TEXT NOT NULL,
    conversation_id  INTEGER NOT NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('sms', 'call')),
    client_id        TEXT NOT NULL,
    decision         TEXT NOT NULL,                                   -- sent | suppressed | limited
    created_at       REAL NOT NULL,
    UNIQUE (visitor_hash, client_id)
);
CREATE INDEX chat_handoffs_visitor ON chat_handoffs(visitor_hash, mode, created_at);
CREATE INDEX chat_handoffs_conversation ON chat_handoffs(conversation_id, mode, created_at);

-- A visitor that proved a number with a one-time code may see that contact's messages (never notes).
ALTER TABLE web_visitors ADD COLUMN verified_contact_id INTEGER REFERENCES contacts(id) ON DELETE SET NULL;
