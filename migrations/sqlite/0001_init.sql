-- Barrier entries: clear path, AEAD ciphertext value, revision for
-- optimistic concurrency. BINARY collation (the default) orders by bytes,
-- which the prefix range scans of LIST rely on.
CREATE TABLE entries (
    path  TEXT    NOT NULL PRIMARY KEY,
    value BLOB    NOT NULL,
    rev   INTEGER NOT NULL
) WITHOUT ROWID;

-- The only unencrypted record: share count and threshold (no secret).
CREATE TABLE seal_config (
    id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    config TEXT    NOT NULL
);
