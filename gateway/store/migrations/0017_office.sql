-- Which gateway wrote this database last (so a downgrade is refused with its version), and other small facts.
CREATE TABLE IF NOT EXISTS gateway_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
