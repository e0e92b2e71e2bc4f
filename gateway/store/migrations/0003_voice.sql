-- Voice: one row per call the tracker saw end (the call log), keyed by Asterisk's Linkedid.
-- Times are unix seconds (REAL). JSON columns hold arrays, never NULL.

CREATE TABLE calls (
    call_id          TEXT PRIMARY KEY,                 -- Asterisk Linkedid (or our Originate ChannelId)
    conversation_id  INTEGER REFERENCES conversations(id),
    direction        TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    caller           TEXT NOT NULL DEFAULT '',         -- customer number; '' when withheld
    dialled          TEXT NOT NULL DEFAULT '',
    started_at       REAL NOT NULL,
    answered_at      REAL,
    ended_at         REAL,
    answered_by      TEXT,                             -- staff extension
    extensions_rung  TEXT NOT NULL DEFAULT '[]',
    outcome          TEXT CHECK (outcome IN ('answered', 'missed', 'abandoned', 'voicemail', 'busy')),
    transfers        TEXT NOT NULL DEFAULT '[]',
    voicemail_path   TEXT,
    hangup_cause     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX calls_conversation ON calls(conversation_id, started_at);
CREATE INDEX calls_started ON calls(started_at);

-- The caller lookup at call start (FastAGI, budget 200 ms) resolves merges through contacts.merged_into;
-- without an index that is a scan of every contact (10 ms at 100,000 contacts, measured).
CREATE INDEX IF NOT EXISTS voice_contacts_merged ON contacts(merged_into) WHERE merged_into IS NOT NULL;
