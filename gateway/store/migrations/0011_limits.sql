-- Limits: outbox order per recipient, the automated-SMS budget, scoped and expiring API tokens, pruning.

-- "Is an earlier message to this number still pending?" is asked for every outbox claim.
CREATE INDEX IF NOT EXISTS outbox_pending_recipient ON outbox(to_addr, id) WHERE state IN ('queued', 'sending');
-- Automated messages queued in the last hour / 24 hours (the global budget).
CREATE INDEX IF NOT EXISTS outbox_automated_recent ON outbox(created_at) WHERE automated = 1;

-- API tokens: what a token may do (comma-separated: read, send, admin) and until when.
-- Tokens made before scopes existed could read and send; they keep exactly that.
ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'read,send';
ALTER TABLE api_tokens ADD COLUMN expires_at REAL;

-- Login throttling rows are pruned by age.
CREATE INDEX IF NOT EXISTS web_login_failures_last ON web_login_failures(last_failure);
-- Visitors and webhook deliveries are pruned by age too.
CREATE INDEX IF NOT EXISTS web_visitors_seen ON web_visitors(last_seen_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_created ON webhook_deliveries(created_at) WHERE state <> 'queued';

-- A changed password or role ends every console session of that staff member, whoever changes it (CLI, API, SQL).
CREATE TRIGGER IF NOT EXISTS staff_credentials_changed AFTER UPDATE OF password_hash, role ON staff
WHEN old.password_hash IS NOT new.password_hash OR old.role IS NOT new.role BEGIN
    DELETE FROM web_sessions WHERE staff_id = new.id;
END;

-- The outbox claim walks queued rows in send order (staff first, then due time) and stops at the first one that
-- no earlier pending message to the same number holds back: this index lets it stop early instead of sorting.
CREATE INDEX IF NOT EXISTS outbox_send_order ON outbox(channel, state, automated, next_attempt_at, id);
