#!/usr/bin/env python3
"""The SQLite floor for durable-write figures (scripts/bench-kv).

A plain loop of single-row transactions through the SQLite C library, as
issue 14 states it: `BEGIN IMMEDIATE; INSERT ...; COMMIT` with WAL and
synchronous=FULL, one connection, no threads, nothing batched. It runs in
the directory given (put it on the disk that holds the server's database)
into its own file, so it never touches vault data.

Before timing, one transaction writes a blob of the automatic checkpoint's
1000 pages, so that the WAL file has its working size and is checkpointed:
the timed commits then rewrite WAL blocks that exist, as the server's do once
it has run a while. A WAL that grows with every commit made each fdatasync
record a new file size, and on this machine's ext4 that waited for a journal
commit: 4.0 ms per commit whenever other jobs were writing, against
0.07-0.2 ms once the WAL had its size (SQLite deletes the WAL when its last
connection closes, so every run starts with a new one).

    sqlite-floor.py DIR SECONDS

Each commit upserts a fresh ~100-byte blob under a new path into a table
shaped like the server's `entries` (migrations/sqlite). Prints one line:
`<commits/s> commits/s p50 <us> us (sqlite C library via python <ver>, SQLite <ver>)`.
Commits that start in the first 0.5 s (warm-up) are not counted.
"""

import os
import sqlite3
import sys
import time


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: sqlite-floor.py DIR SECONDS")
    d, secs = sys.argv[1], float(sys.argv[2])
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "floor.db")
    # isolation_level=None: the module issues no BEGIN/COMMIT of its own.
    c = sqlite3.connect(path, isolation_level=None)
    mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    c.execute("PRAGMA synchronous=FULL")
    assert mode == "wal", mode
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 2, "synchronous must be FULL"
    c.execute(
        "CREATE TABLE IF NOT EXISTS entries (path TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, "
        "rev INTEGER NOT NULL) WITHOUT ROWID"
    )
    upsert = (
        "INSERT INTO entries (path, value, rev) VALUES (?, ?, 1) "
        "ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = entries.rev + 1"
    )
    value = bytes(range(100))
    n = c.execute("SELECT count(*) FROM entries").fetchone()[0]

    def commit():
        nonlocal n
        c.execute("BEGIN IMMEDIATE")
        c.execute(upsert, ("raw/%d" % n, value))
        c.execute("COMMIT")
        n += 1

    # Grow the WAL to the automatic checkpoint's size in one commit (which
    # then checkpoints); later commits rewrite it from its start.
    page = c.execute("PRAGMA page_size").fetchone()[0]
    pages = c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    c.execute("CREATE TABLE IF NOT EXISTS pad (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT OR REPLACE INTO pad (id, b) VALUES (1, zeroblob(?))", (pages * page,))
    c.execute("COMMIT")
    start = time.perf_counter()
    warm, lat = start + 0.5, []
    end = warm + secs
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        commit()
        t1 = time.perf_counter()
        if t0 >= warm and t1 <= end:
            lat.append(t1 - t0)
    c.close()
    lat.sort()
    p50 = 1e6 * lat[len(lat) // 2] if lat else float("nan")
    print(
        "%.0f commits/s p50 %.0f us (sqlite C library via python %s, SQLite %s)"
        % (len(lat) / secs, p50, sys.version.split()[0], sqlite3.sqlite_version)
    )


if __name__ == "__main__":
    main()
