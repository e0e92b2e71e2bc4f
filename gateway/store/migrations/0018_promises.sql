-- Promises staff made to customers, found in call transcripts and staff messages. A promise is proposed until a
-- staff member confirms it (it then becomes the conversation's next step) or dismisses it. Whether a confirmed
-- promise was kept is read from the timeline (a staff contact after it was made, before it was due).
CREATE TABLE promises (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    event_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    due REAL,
    phrase TEXT NOT NULL,
    said_by TEXT,
    status TEXT NOT NULL DEFAULT 'proposed' CHECK (status IN ('proposed', 'confirmed', 'dismissed')),
    created_at REAL NOT NULL,
    decided_by TEXT,
    decided_at REAL,
    UNIQUE (event_id, step)
);
CREATE INDEX promises_by_conversation ON promises(conversation_id, status);
CREATE INDEX promises_by_due ON promises(status, due);
