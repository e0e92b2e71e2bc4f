-- Recovery after downtime: how far the voice channel has read Asterisk's call detail records, so each
-- reconnect reads only what is new (a rotated file, seen by its inode, a smaller size or different first bytes,
-- is read from 0).
CREATE TABLE IF NOT EXISTS recovery_cursors (
    source      TEXT PRIMARY KEY,                 -- the file path
    inode       INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    head        TEXT NOT NULL DEFAULT '',         -- SHA-256 of the first bytes read
    updated_at  REAL NOT NULL
);
