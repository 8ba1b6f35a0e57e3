#!/usr/bin/env python3
"""The SQLite floor for durable-write figures (scripts/bench-kv).

A plain loop of single-row transactions through the SQLite C library, as
issue 14 states it: `BEGIN IMMEDIATE; INSERT ...; COMMIT` with WAL and
synchronous=FULL, one connection, no threads, nothing batched. It runs in
the directory given (put it on the disk that holds the server's database)
into its own file, so it never touches vault data.

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
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    # isolation_level=None: the module issues no BEGIN/COMMIT of its own.
    c = sqlite3.connect(path, isolation_level=None)
    mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    c.execute("PRAGMA synchronous=FULL")
    assert mode == "wal", mode
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 2, "synchronous must be FULL"
    c.execute(
        "CREATE TABLE entries (path TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, rev INTEGER NOT NULL) "
        "WITHOUT ROWID"
    )
    upsert = (
        "INSERT INTO entries (path, value, rev) VALUES (?, ?, 1) "
        "ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = entries.rev + 1"
    )
    value = bytes(range(100))
    start = time.perf_counter()
    warm, n, lat = start + 0.5, 0, []
    end = warm + secs
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        c.execute("BEGIN IMMEDIATE")
        c.execute(upsert, ("raw/%d" % n, value))
        c.execute("COMMIT")
        n += 1
        t1 = time.perf_counter()
        if t0 >= warm and t1 <= end:
            lat.append(t1 - t0)
    c.close()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    lat.sort()
    p50 = 1e6 * lat[len(lat) // 2] if lat else float("nan")
    print(
        "%.0f commits/s p50 %.0f us (sqlite C library via python %s, SQLite %s)"
        % (len(lat) / secs, p50, sys.version.split()[0], sqlite3.sqlite_version)
    )


if __name__ == "__main__":
    main()
