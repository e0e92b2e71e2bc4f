-- Leakage read models: the metrics read a time window of the timeline (every conversation at once), so the
-- timeline needs an index by time; per-conversation reads keep using events_conversation.
CREATE INDEX IF NOT EXISTS leakage_events_time ON events(occurred_at);
