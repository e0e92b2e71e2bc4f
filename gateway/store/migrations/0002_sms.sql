-- SMS channel: raw PDUs exactly as read from the modem (stored before the SIM copy is deleted),
-- assembled messages waiting to be (or already) ingested, and the parts of outbound messages with the
-- message reference each got, so status reports (+CDS) can be matched.

CREATE TABLE sms_inbound_parts (
    id           INTEGER PRIMARY KEY,
    modem        TEXT NOT NULL,          -- which SIM (IMSI, else ICCID, else device) it was read from
    storage      TEXT NOT NULL,          -- SM / ME
    sim_index    INTEGER NOT NULL,       -- index it had in that storage when read
    pdu          TEXT NOT NULL,          -- upper-case hex, SMSC field included
    pdu_hash     TEXT NOT NULL,          -- sha256 of pdu: the same PDU read twice is one part
    state        TEXT NOT NULL DEFAULT 'stored'
                 CHECK (state IN ('stored', 'waiting', 'assembled', 'undecodable')),
    sender       TEXT,
    concat_key   TEXT,                   -- sender|ref|total for parts of a long message
    seq          INTEGER,
    total        INTEGER,
    message_id   INTEGER REFERENCES sms_messages(id),
    error        TEXT,
    received_at  REAL NOT NULL,
    UNIQUE (modem, pdu_hash)
);
CREATE INDEX sms_inbound_parts_state ON sms_inbound_parts(state);
CREATE INDEX sms_inbound_parts_concat ON sms_inbound_parts(concat_key) WHERE concat_key IS NOT NULL;

CREATE TABLE sms_messages (
    id                      INTEGER PRIMARY KEY,
    external_id             TEXT NOT NULL UNIQUE,   -- idempotency key handed to the conversation service
    sender                  TEXT NOT NULL,
    body                    TEXT NOT NULL,
    sent_at                 REAL,                   -- the service centre's timestamp
    parts                   INTEGER NOT NULL DEFAULT 1,
    parts_missing           INTEGER NOT NULL DEFAULT 0,
    keyword                 TEXT,                   -- stop / start / help when the body was one
    state                   TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'ingested')),
    conversation_id         INTEGER,
    event_id                INTEGER,
    confirmation_outbox_id  INTEGER,
    created_at              REAL NOT NULL
);
CREATE INDEX sms_messages_pending ON sms_messages(state) WHERE state = 'pending';

CREATE TABLE sms_sent_parts (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL REFERENCES outbox(id),
    part        INTEGER NOT NULL,               -- 1-based
    reference   INTEGER NOT NULL,               -- TP-MR from +CMGS
    recipient   TEXT NOT NULL,
    sent_at     REAL NOT NULL,
    status      INTEGER,                        -- TP-ST of the last status report
    status_at   REAL,
    UNIQUE (outbox_id, part)
);
CREATE INDEX sms_sent_parts_reference ON sms_sent_parts(reference, sent_at);
