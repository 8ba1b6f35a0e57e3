-- A lone write batch in one round trip (storage/postgres.rs, `one_shot`).
--
-- Not a numbered migration: every server creates it at startup with
-- CREATE OR REPLACE (postgres.rs, `create_functions`, under an advisory lock
-- so that servers starting at once do not race), because a numbered
-- migration unknown to an older server makes that server refuse to start
-- (sqlx's `VersionMissing`) on a database shared during a rolling upgrade or
-- after a rollback. Older servers never call it. The version suffix is part
-- of the contract: a change of arguments, result or meaning gets a new name,
-- so that servers of two versions on one database each call their own.
--
-- Called as a single statement outside any transaction block, this is its
-- own transaction: the batch costs one round trip and one WAL flush
-- (synchronous_commit stays as the cluster has it) instead of a round trip
-- per statement of BEGIN, lock, read, write, notify, COMMIT.
--
-- It is used for batches in which every path appears once, where each
-- expectation is about the state before the batch and each write's new
-- revision is the stored one plus one (storage/plan.rs, `OneShot`). If an
-- expectation does not hold it writes nothing and returns the first path
-- (in the order of check_paths) whose expectation failed: the batch's
-- conflict. NULL: every expectation held and everything was written.
--
-- lock_keys: advisory lock keys of every path, sorted (the global order that
--   keeps concurrent transactions from deadlocking).
-- check_paths, check_revs: expectations; a NULL revision means "absent".
-- put_paths, put_values: upserts (revision 1, or the stored one plus one).
-- del_paths: deletes. payloads: NOTIFY payloads for `channel`.
CREATE OR REPLACE FUNCTION vault_commit_one_shot_v1(
    lock_keys   BIGINT[],
    check_paths TEXT[],
    check_revs  BIGINT[],
    put_paths   TEXT[],
    put_values  BYTEA[],
    del_paths   TEXT[],
    channel     TEXT,
    payloads    TEXT[]
) RETURNS TEXT
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    k BIGINT;
    stale TEXT;
BEGIN
    FOREACH k IN ARRAY lock_keys LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
    -- In a VOLATILE function each statement takes a new snapshot (READ
    -- COMMITTED): this one sees every transaction that held these locks
    -- before. A stored revision is never NULL, so IS DISTINCT FROM covers
    -- both "absent expected" and "revision r expected".
    SELECT c.path INTO stale
    FROM unnest(check_paths, check_revs) WITH ORDINALITY AS c(path, rev, n)
    LEFT JOIN entries e ON e.path = c.path
    WHERE e.rev IS DISTINCT FROM c.rev
    ORDER BY c.n
    LIMIT 1;
    IF FOUND THEN
        RETURN stale;
    END IF;
    INSERT INTO entries (path, value, rev)
    SELECT u.path, u.value, 1 FROM unnest(put_paths, put_values) AS u(path, value)
    ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = entries.rev + 1;
    DELETE FROM entries WHERE path = ANY (del_paths);
    PERFORM pg_notify(channel, n.payload) FROM unnest(payloads) AS n(payload);
    RETURN NULL;
END
$$;
