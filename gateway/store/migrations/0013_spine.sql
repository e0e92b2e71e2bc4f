-- The conversation spine: what the customer wants, what we know, what happens next, how to reach them.
-- intent, urgent, next_step, owner and preferred_channel already live on conversations (0001); this adds the due
-- time and owner of the next step, why the channel preference is what it is, and who set each spine field.
-- Captured facts get their own table so each keeps its source, author, time and confidence.

ALTER TABLE conversations ADD COLUMN next_step_due REAL;
ALTER TABLE conversations ADD COLUMN next_step_owner TEXT;
ALTER TABLE conversations ADD COLUMN preference_why TEXT;
-- field name -> {"set_by": ..., "source": ..., "at": ...} for intent, urgent, next_step, owner, preferred_channel
ALTER TABLE conversations ADD COLUMN spine_provenance TEXT NOT NULL DEFAULT '{}';

CREATE TABLE conversation_facts (
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),  -- where it was captured (merges: see spine.py)
    name             TEXT NOT NULL,
    value            TEXT NOT NULL,        -- JSON: a string, number, or an object (availability: text + ISO start)
    source           TEXT NOT NULL,        -- sms, chat, voicemail, voice, staff, api, system
    set_by           TEXT NOT NULL,        -- a staff username, or "extractor"
    at               REAL NOT NULL,
    confidence       REAL NOT NULL DEFAULT 1.0,
    event_id         INTEGER,              -- the timeline event it was read from, when extracted
    PRIMARY KEY (conversation_id, name)
);

CREATE INDEX conversations_next_step_due ON conversations(next_step_due) WHERE next_step_due IS NOT NULL;

-- The spine reads whole merge chains (facts captured on either side of a merge, a merged contact's numbers): these
-- keep each step of that walk an index lookup instead of a table scan. Partial: almost nothing is ever merged.
CREATE INDEX conversations_merged_into ON conversations(merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX contacts_merged_into ON contacts(merged_into) WHERE merged_into IS NOT NULL;
