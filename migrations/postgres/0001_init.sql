-- Barrier entries: clear path, AEAD ciphertext value, revision for
-- optimistic concurrency between servers. COLLATE "C" orders by bytes,
-- which the prefix range scans of LIST rely on.
CREATE TABLE entries (
    path  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value BYTEA            NOT NULL,
    rev   BIGINT           NOT NULL
);

-- The only unencrypted record: share count and threshold (no secret).
CREATE TABLE seal_config (
    id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    config TEXT    NOT NULL
);
