-- pgbench script for scripts/bench-kv: the PostgreSQL floor for durable
-- writes. One transaction per run of this script holding one upsert of a
-- ~100-byte blob under a (random, so practically always new) path into a
-- table shaped like the server's `entries` (migrations/postgres). A single
-- statement outside BEGIN/END is its own transaction: one round trip and
-- one WAL flush (synchronous_commit=on) per commit, the least a durable
-- write can cost. Run with -M prepared (parsed once per connection).
\set n random(1, 1000000000000)
INSERT INTO floor_entries (path, value, rev) VALUES ('floor/' || :client_id || '-' || :n, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60616263'::bytea, 1) ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = floor_entries.rev + 1;
