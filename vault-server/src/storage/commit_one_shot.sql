-- A group commit in one round trip (storage/postgres.rs, `one_shot`).
--
-- Called as a single statement outside any transaction block, this is its
-- own transaction: the group costs one round trip and one WAL flush
-- (synchronous_commit stays as the cluster has it) instead of a round trip
-- per statement of BEGIN, lock, read, write, notify, COMMIT.
--
-- It is used for groups in which every path appears once, where each
-- expectation is about the state before the group and each write's new
-- revision is the stored one plus one (storage/plan.rs, `OneShot`). If an
-- expectation does not hold it returns false having written nothing, and
-- the caller plans the group exactly (a conflict for the stale batch only).
--
-- lock_keys: advisory lock keys of every path of the group, sorted (the
--   global order that keeps concurrent groups from deadlocking).
-- check_paths, check_revs: expectations; a NULL revision means "absent".
-- put_paths, put_values: upserts (revision 1, or the stored one plus one).
-- del_paths: deletes. payloads: NOTIFY payloads for `channel`.
CREATE FUNCTION vault_commit_one_shot(
    lock_keys   BIGINT[],
    check_paths TEXT[],
    check_revs  BIGINT[],
    put_paths   TEXT[],
    put_values  BYTEA[],
    del_paths   TEXT[],
    channel     TEXT,
    payloads    TEXT[]
) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    k BIGINT;
BEGIN
    FOREACH k IN ARRAY lock_keys LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
    -- In a VOLATILE function each statement takes a new snapshot (READ
    -- COMMITTED): this one sees every group that held these locks before.
    -- A stored revision is never NULL, so IS DISTINCT FROM covers both
    -- "absent expected" and "revision r expected".
    IF EXISTS (
        SELECT 1
        FROM unnest(check_paths, check_revs) AS c(path, rev)
        LEFT JOIN entries e ON e.path = c.path
        WHERE e.rev IS DISTINCT FROM c.rev
    ) THEN
        RETURN FALSE;
    END IF;
    INSERT INTO entries (path, value, rev)
    SELECT u.path, u.value, 1 FROM unnest(put_paths, put_values) AS u(path, value)
    ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = entries.rev + 1;
    DELETE FROM entries WHERE path = ANY (del_paths);
    PERFORM pg_notify(channel, n.payload) FROM unnest(payloads) AS n(payload);
    RETURN TRUE;
END
$$;
