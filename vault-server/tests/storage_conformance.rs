//! Storage conformance suite: one set of checks, run against every backend.
//!
//! Each `suite_*` function takes a storage URL and exercises the public
//! [`Storage`] API only; the `conformance!` macro at the bottom instantiates
//! every suite once for SQLite (a file in a temporary directory) and once for
//! PostgreSQL (a fresh database in the shared throwaway cluster of
//! `vault_e2e::PgCluster`). PostgreSQL tests never skip: without the server
//! binaries the harness panics with install instructions.
//!
//! Values are real ciphertexts (storage accepts nothing else): they come from
//! [`AeadKey::seal`], and the counter test opens them again to read its
//! integer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use vault_server::crypto::{AeadKey, Ciphertext};
use vault_server::storage::{Expect, SealConfig, Storage, StorageError, WriteBatch};

const KEY: [u8; 32] = [0x42; 32];
const HEADER: &[u8] = &[1];
const AAD: &[u8] = b"conformance";

/// A real ciphertext of `plaintext` (random nonce, so each call differs).
fn ct(plaintext: &[u8]) -> Ciphertext {
    AeadKey::new(&KEY).seal(HEADER, AAD, plaintext)
}

/// Open a ciphertext made by [`ct`].
fn open(c: &Ciphertext) -> Vec<u8> {
    AeadKey::new(&KEY).open(HEADER.len(), AAD, c.as_bytes()).expect("stored value opens").to_vec()
}

async fn put(s: &Storage, path: &str, plaintext: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(path, ct(plaintext));
    s.write(b).await.unwrap_or_else(|e| panic!("put {path}: {e}"));
}

async fn get_plain(s: &Storage, path: &str) -> Option<(Vec<u8>, i64)> {
    s.get(path).await.unwrap().map(|e| (open(&e.value), e.rev))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn is_conflict(r: &Result<(), StorageError>, path: &str) -> bool {
    matches!(r, Err(StorageError::Conflict(p)) if p == path)
}

// ---------------------------------------------------------------------------
// Suites
// ---------------------------------------------------------------------------

/// A fresh storage is empty: no path, no listing, no seal config; an empty
/// batch is a no-op.
async fn suite_missing(url: &str) {
    let s = Storage::open(url).await.unwrap();
    assert!(s.get("nope").await.unwrap().is_none());
    assert!(s.get("").await.unwrap().is_none());
    assert!(s.get("a/b/c").await.unwrap().is_none());
    assert_eq!(s.list("").await.unwrap(), Vec::<String>::new());
    assert_eq!(s.list("nope/").await.unwrap(), Vec::<String>::new());
    assert_eq!(s.seal_config().await.unwrap(), None);
    s.write(WriteBatch::new()).await.unwrap();
    assert_eq!(s.list("").await.unwrap(), Vec::<String>::new());
    s.close().await;
}

/// Put/get round trip; rev is 1 on creation and +1 per overwrite; paths are
/// exact keys (no prefix or case folding).
async fn suite_put_get_rev(url: &str) {
    let s = Storage::open(url).await.unwrap();
    put(&s, "kv/app/db", b"v1").await;
    assert_eq!(get_plain(&s, "kv/app/db").await, Some((b"v1".to_vec(), 1)));
    put(&s, "kv/app/db", b"v2").await;
    assert_eq!(get_plain(&s, "kv/app/db").await, Some((b"v2".to_vec(), 2)));
    put(&s, "kv/app/db", b"v3").await;
    assert_eq!(get_plain(&s, "kv/app/db").await, Some((b"v3".to_vec(), 3)));

    // The stored bytes are exactly the ciphertext written.
    let c = ct(b"exact");
    let mut b = WriteBatch::new();
    b.put("exact", c.clone());
    s.write(b).await.unwrap();
    assert_eq!(s.get("exact").await.unwrap().unwrap().value, c);

    // Exact-key semantics: neighbours and case variants are distinct paths.
    assert!(s.get("kv/app/d").await.unwrap().is_none());
    assert!(s.get("kv/app/db/").await.unwrap().is_none());
    assert!(s.get("KV/app/db").await.unwrap().is_none());
    put(&s, "KV/app/db", b"upper").await;
    assert_eq!(get_plain(&s, "KV/app/db").await, Some((b"upper".to_vec(), 1)));
    assert_eq!(get_plain(&s, "kv/app/db").await, Some((b"v3".to_vec(), 3)));

    // Unusual but valid path characters.
    for p in ["with space/x", "unicodé/ключ/鍵", "pct%/under_/x", "quote'\"/x", "a//b"] {
        put(&s, p, p.as_bytes()).await;
        assert_eq!(get_plain(&s, p).await, Some((p.as_bytes().to_vec(), 1)), "{p}");
    }
    s.close().await;
}

/// Delete removes the path; deleting a missing path is not an error; a
/// re-created path starts again at rev 1.
async fn suite_delete(url: &str) {
    let s = Storage::open(url).await.unwrap();
    put(&s, "d/x", b"1").await;
    put(&s, "d/x", b"2").await;
    put(&s, "d/y", b"y").await;
    let mut b = WriteBatch::new();
    b.delete("d/x");
    s.write(b).await.unwrap();
    assert!(s.get("d/x").await.unwrap().is_none());
    assert_eq!(s.list("d/").await.unwrap(), strings(&["y"]));
    assert_eq!(get_plain(&s, "d/y").await, Some((b"y".to_vec(), 1)));

    let mut b = WriteBatch::new();
    b.delete("d/x").delete("never/existed");
    s.write(b).await.unwrap();

    put(&s, "d/x", b"again").await;
    assert_eq!(get_plain(&s, "d/x").await, Some((b"again".to_vec(), 1)));

    // Put then delete in one batch: gone; delete then put: present.
    let mut b = WriteBatch::new();
    b.put("d/z", ct(b"z")).delete("d/z");
    s.write(b).await.unwrap();
    assert!(s.get("d/z").await.unwrap().is_none());
    let mut b = WriteBatch::new();
    b.delete("d/y").put("d/y", ct(b"y2"));
    s.write(b).await.unwrap();
    assert_eq!(get_plain(&s, "d/y").await, Some((b"y2".to_vec(), 1)));
    s.close().await;
}

/// LIST: immediate children only, folders with a trailing '/', sorted by
/// bytes, no duplicates, and a prefix never matches a sibling that merely
/// shares its first characters ("a/" vs "ab/", "a0", "a.b").
async fn suite_list(url: &str) {
    let s = Storage::open(url).await.unwrap();
    let paths = [
        "a",
        "a/x",
        "a/y/z",
        "a/y/w",
        "a/y/deep/er/still",
        "a.b",
        "a0",
        "ab/q",
        "ab/r/s",
        "b",
        "B",
        "c/d/e/f",
        "é/1",
        "z~/1",
        "z~x",
        "pct%/x",
        "pctx/y",
        "under_/x",
        "underx/y",
    ];
    for p in paths {
        put(&s, p, b"v").await;
    }
    assert_eq!(s.list("a/").await.unwrap(), strings(&["x", "y/"]));
    assert_eq!(s.list("a/y/").await.unwrap(), strings(&["deep/", "w", "z"]));
    assert_eq!(s.list("a/y/deep/").await.unwrap(), strings(&["er/"]));
    assert_eq!(s.list("ab/").await.unwrap(), strings(&["q", "r/"]));
    assert_eq!(s.list("c/").await.unwrap(), strings(&["d/"]));
    assert_eq!(s.list("c/d/").await.unwrap(), strings(&["e/"]));
    assert_eq!(s.list("c/d/e/").await.unwrap(), strings(&["f"]));
    assert_eq!(s.list("é/").await.unwrap(), strings(&["1"]));
    assert_eq!(s.list("z~/").await.unwrap(), strings(&["1"]));
    // LIKE wildcards in a prefix must be literal.
    assert_eq!(s.list("pct%/").await.unwrap(), strings(&["x"]));
    assert_eq!(s.list("under_/").await.unwrap(), strings(&["x"]));
    // Leaves are not folders; unknown prefixes are empty.
    assert_eq!(s.list("b/").await.unwrap(), Vec::<String>::new());
    assert_eq!(s.list("nope/").await.unwrap(), Vec::<String>::new());
    assert_eq!(s.list("a/x/").await.unwrap(), Vec::<String>::new());
    // Empty prefix: the top level, sorted by bytes ("B" < "a" < "a.b" <
    // "a/" < "a0" < ... < "z~x" < "é/" since 0xC3 > '~').
    assert_eq!(
        s.list("").await.unwrap(),
        strings(&[
            "B", "a", "a.b", "a/", "a0", "ab/", "b", "c/", "pct%/", "pctx/", "under_/", "underx/", "z~/", "z~x", "é/",
        ])
    );
    // Sorted and unique whatever the insertion order.
    let all = s.list("").await.unwrap();
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted);
    // A folder disappears with its last child.
    let mut b = WriteBatch::new();
    b.delete("c/d/e/f");
    s.write(b).await.unwrap();
    assert!(!s.list("").await.unwrap().contains(&"c/".to_string()));
    s.close().await;
}

/// A batch is all or nothing: when its second op's expectation fails, the
/// first and third ops are not written either (nor a seal config in it).
async fn suite_atomic_batch(url: &str) {
    let s = Storage::open(url).await.unwrap();
    put(&s, "exists", b"original").await;

    // Second op: Expect::Absent on an existing path.
    let mut b = WriteBatch::new();
    b.put("batch/one", ct(b"1")).put_expect("exists", ct(b"clobbered"), Expect::Absent).put("batch/three", ct(b"3"));
    let r = s.write(b).await;
    assert!(is_conflict(&r, "exists"), "{r:?}");
    assert!(s.get("batch/one").await.unwrap().is_none());
    assert!(s.get("batch/three").await.unwrap().is_none());
    assert_eq!(get_plain(&s, "exists").await, Some((b"original".to_vec(), 1)));

    // Second op: Expect::Rev mismatch; the batch also deletes and sets the seal config.
    let mut b = WriteBatch::new();
    b.set_seal_config(SealConfig { secret_shares: 5, secret_threshold: 3 })
        .put_expect("exists", ct(b"clobbered"), Expect::Rev(7))
        .delete("exists")
        .put("batch/four", ct(b"4"));
    let r = s.write(b).await;
    assert!(is_conflict(&r, "exists"), "{r:?}");
    assert_eq!(s.seal_config().await.unwrap(), None);
    assert_eq!(get_plain(&s, "exists").await, Some((b"original".to_vec(), 1)));
    assert!(s.get("batch/four").await.unwrap().is_none());

    // A delete earlier in the batch is undone too.
    let mut b = WriteBatch::new();
    b.delete("exists").put_expect("missing", ct(b"x"), Expect::Rev(1));
    let r = s.write(b).await;
    assert!(is_conflict(&r, "missing"), "{r:?}");
    assert_eq!(get_plain(&s, "exists").await, Some((b"original".to_vec(), 1)));

    // Ops apply in order inside a batch: later expectations see earlier ops.
    let mut b = WriteBatch::new();
    b.put_expect("seq", ct(b"a"), Expect::Absent).put_expect("seq", ct(b"b"), Expect::Rev(1)).put_expect(
        "seq",
        ct(b"c"),
        Expect::Rev(2),
    );
    s.write(b).await.unwrap();
    assert_eq!(get_plain(&s, "seq").await, Some((b"c".to_vec(), 3)));

    // A successful multi-op batch applies everything.
    let mut b = WriteBatch::new();
    b.put("ok/1", ct(b"1"))
        .put_expect("ok/2", ct(b"2"), Expect::Absent)
        .delete_expect("seq", Expect::Rev(3))
        .set_seal_config(SealConfig { secret_shares: 1, secret_threshold: 1 });
    s.write(b).await.unwrap();
    assert_eq!(s.list("ok/").await.unwrap(), strings(&["1", "2"]));
    assert!(s.get("seq").await.unwrap().is_none());
    assert_eq!(s.seal_config().await.unwrap(), Some(SealConfig { secret_shares: 1, secret_threshold: 1 }));
    s.close().await;
}

/// Every failing expectation is a `Conflict` naming the path, and leaves the
/// path untouched; matching expectations succeed.
async fn suite_conflicts(url: &str) {
    let s = Storage::open(url).await.unwrap();
    let write = |b: WriteBatch| {
        let s = s.clone();
        async move { s.write(b).await }
    };
    let mut b = WriteBatch::new();
    b.put_expect("c", ct(b"1"), Expect::Absent);
    write(b).await.unwrap();

    let mut b = WriteBatch::new();
    b.put_expect("c", ct(b"x"), Expect::Absent);
    let r = write(b).await;
    assert!(is_conflict(&r, "c"), "put Absent on existing: {r:?}");

    for wrong in [0, 2, -1, i64::MAX] {
        let mut b = WriteBatch::new();
        b.put_expect("c", ct(b"x"), Expect::Rev(wrong));
        let r = write(b).await;
        assert!(is_conflict(&r, "c"), "put Rev({wrong}) at rev 1: {r:?}");
    }
    let mut b = WriteBatch::new();
    b.put_expect("missing", ct(b"x"), Expect::Rev(1));
    let r = write(b).await;
    assert!(is_conflict(&r, "missing"), "put Rev on missing: {r:?}");
    assert!(s.get("missing").await.unwrap().is_none());
    assert_eq!(get_plain(&s, "c").await, Some((b"1".to_vec(), 1)));

    let mut b = WriteBatch::new();
    b.put_expect("c", ct(b"2"), Expect::Rev(1));
    write(b).await.unwrap();
    assert_eq!(get_plain(&s, "c").await, Some((b"2".to_vec(), 2)));
    // The old revision is stale now.
    let mut b = WriteBatch::new();
    b.put_expect("c", ct(b"stale"), Expect::Rev(1));
    assert!(is_conflict(&write(b).await, "c"));

    // Conditional deletes.
    let mut b = WriteBatch::new();
    b.delete_expect("c", Expect::Rev(1));
    let r = write(b).await;
    assert!(is_conflict(&r, "c"), "delete Rev stale: {r:?}");
    let mut b = WriteBatch::new();
    b.delete_expect("c", Expect::Absent);
    let r = write(b).await;
    assert!(is_conflict(&r, "c"), "delete Absent on existing: {r:?}");
    let mut b = WriteBatch::new();
    b.delete_expect("missing", Expect::Rev(1));
    let r = write(b).await;
    assert!(is_conflict(&r, "missing"), "delete Rev on missing: {r:?}");
    assert_eq!(get_plain(&s, "c").await, Some((b"2".to_vec(), 2)));
    let mut b = WriteBatch::new();
    b.delete_expect("missing", Expect::Absent);
    write(b).await.unwrap();
    let mut b = WriteBatch::new();
    b.delete_expect("c", Expect::Rev(2));
    write(b).await.unwrap();
    assert!(s.get("c").await.unwrap().is_none());
    s.close().await;
}

/// 64 concurrent read-modify-write loops on one counter with `Expect`
/// (Absent for the first, Rev afterwards), retrying on conflict. Conflicting
/// batches land in the same group commit as winning ones, so this checks
/// that each batch's savepoint rolls back only that batch.
async fn suite_concurrent_counter(url: &str) {
    const WRITERS: u64 = 64;
    let s = Storage::open(url).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            loop {
                let current = s.get("counter").await.unwrap();
                let (n, expect) = match &current {
                    None => (0u64, Expect::Absent),
                    Some(e) => {
                        let raw: [u8; 8] = open(&e.value).try_into().unwrap();
                        (u64::from_be_bytes(raw), Expect::Rev(e.rev))
                    }
                };
                let mut b = WriteBatch::new();
                b.put_expect("counter", ct(&(n + 1).to_be_bytes()), expect);
                match s.write(b).await {
                    Ok(()) => return conflicts,
                    Err(StorageError::Conflict(p)) => {
                        assert_eq!(p, "counter");
                        conflicts += 1;
                        assert!(conflicts < 10_000, "livelock");
                    }
                    Err(e) => panic!("unexpected storage error: {e}"),
                }
            }
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let e = s.get("counter").await.unwrap().unwrap();
    let raw: [u8; 8] = open(&e.value).try_into().unwrap();
    assert_eq!(u64::from_be_bytes(raw), WRITERS, "lost updates ({conflicts} conflicts retried)");
    assert_eq!(e.rev, WRITERS as i64);
    s.close().await;
}

/// 200 concurrent unconditional writes to distinct paths: all acknowledged,
/// all visible afterwards.
async fn suite_concurrent_distinct(url: &str) {
    const N: usize = 200;
    let s = Storage::open(url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..N {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = WriteBatch::new();
            b.put(format!("many/{i:03}"), ct(format!("value {i}").as_bytes()));
            s.write(b).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let listed = s.list("many/").await.unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("{i:03}")).collect();
    assert_eq!(listed, expected);
    for i in 0..N {
        let got = get_plain(&s, &format!("many/{i:03}")).await;
        assert_eq!(got, Some((format!("value {i}").into_bytes(), 1)), "many/{i:03}");
    }
    s.close().await;
}

/// Concurrent batches that conflict and batches that do not, mixed in the
/// same group commits: the conflicting ones fail alone, the others commit.
async fn suite_concurrent_mixed_conflicts(url: &str) {
    const N: usize = 100;
    let s = Storage::open(url).await.unwrap();
    put(&s, "taken", b"x").await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = WriteBatch::new();
            b.put(format!("mixed/{i:03}"), ct(b"v"));
            if i % 2 == 1 {
                b.put_expect("taken", ct(b"y"), Expect::Absent);
            }
            (i, s.write(b).await)
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if i % 2 == 1 {
            assert!(is_conflict(&r, "taken"), "batch {i}: {r:?}");
        } else {
            r.unwrap_or_else(|e| panic!("batch {i}: {e}"));
        }
    }
    let listed: BTreeSet<String> = s.list("mixed/").await.unwrap().into_iter().collect();
    let expected: BTreeSet<String> = (0..N).step_by(2).map(|i| format!("{i:03}")).collect();
    assert_eq!(listed, expected);
    assert_eq!(get_plain(&s, "taken").await, Some((b"x".to_vec(), 1)));
    s.close().await;
}

/// Concurrent unconditional multi-path batches touching the same two paths
/// in opposite orders (as two requests updating the same pair of records
/// would): every one must succeed, none may fail because of how the storage
/// groups them into transactions.
async fn suite_concurrent_overlapping_batches(url: &str) {
    const N: usize = 64;
    const ROUNDS: usize = 4;
    let s = Storage::open(url).await.unwrap();
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for i in 0..N {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let (first, second) = if i % 2 == 0 { ("pair/a", "pair/b") } else { ("pair/b", "pair/a") };
                let mut b = WriteBatch::new();
                b.put(first, ct(b"1")).put(second, ct(b"2"));
                (i, s.write(b).await)
            }));
        }
        let mut failures = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            if let Err(e) = r {
                failures.push(format!("batch {i}: {e}"));
            }
        }
        assert!(
            failures.is_empty(),
            "round {round}: {} of {N} batches failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    let total = (N * ROUNDS) as i64;
    assert_eq!(s.get("pair/a").await.unwrap().unwrap().rev, total);
    assert_eq!(s.get("pair/b").await.unwrap().unwrap().rev, total);
    s.close().await;
}

/// Many concurrent single-put batches on two hot paths. Each batch touches
/// one row only, yet two group transactions in flight at once can take the
/// two rows' locks in opposite orders; no write may fail because of that.
/// Several rounds, so that an interleaving problem shows up reliably.
async fn suite_concurrent_hot_paths(url: &str) {
    const N: usize = 256;
    const ROUNDS: usize = 4;
    let s = Storage::open(url).await.unwrap();
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for i in 0..N {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let path = if (i / 3) % 2 == 0 { "hot/a" } else { "hot/b" };
                let mut b = WriteBatch::new();
                b.put(path, ct(b"v"));
                (i, s.write(b).await)
            }));
        }
        let mut failures = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            if let Err(e) = r {
                failures.push(format!("batch {i}: {e}"));
            }
        }
        assert!(
            failures.is_empty(),
            "round {round}: {} of {N} single-put batches failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    let a = s.get("hot/a").await.unwrap().unwrap().rev;
    let b = s.get("hot/b").await.unwrap().unwrap().rev;
    assert_eq!(a + b, (N * ROUNDS) as i64);
    s.close().await;
}

/// The seal configuration round-trips through `WriteBatch::set_seal_config`
/// and can be replaced.
async fn suite_seal_config(url: &str) {
    let s = Storage::open(url).await.unwrap();
    assert_eq!(s.seal_config().await.unwrap(), None);
    let c1 = SealConfig { secret_shares: 5, secret_threshold: 3 };
    let mut b = WriteBatch::new();
    b.set_seal_config(c1);
    s.write(b).await.unwrap();
    assert_eq!(s.seal_config().await.unwrap(), Some(c1));
    let c2 = SealConfig { secret_shares: 255, secret_threshold: 255 };
    let mut b = WriteBatch::new();
    b.set_seal_config(c2).put("alongside", ct(b"v"));
    s.write(b).await.unwrap();
    assert_eq!(s.seal_config().await.unwrap(), Some(c2));
    assert!(s.get("alongside").await.unwrap().is_some());
    // The seal config is not an entry: it does not show up in LIST.
    assert_eq!(s.list("").await.unwrap(), strings(&["alongside"]));
    s.close().await;
}

/// Close and reopen the same URL: data, revisions and the seal config are
/// all still there, and the reopened storage keeps working. A closed handle
/// refuses writes.
async fn suite_reopen(url: &str) {
    let cfg = SealConfig { secret_shares: 3, secret_threshold: 2 };
    {
        let s = Storage::open(url).await.unwrap();
        put(&s, "keep/a", b"a").await;
        put(&s, "keep/b", b"b1").await;
        put(&s, "keep/b", b"b2").await;
        put(&s, "gone", b"x").await;
        let mut b = WriteBatch::new();
        b.set_seal_config(cfg).delete("gone");
        s.write(b).await.unwrap();
        s.close().await;
        let mut b = WriteBatch::new();
        b.put("after/close", ct(b"x"));
        let r = s.write(b).await;
        assert!(matches!(r, Err(StorageError::Closed)), "write after close: {r:?}");
    }
    let s = Storage::open(url).await.unwrap();
    assert_eq!(get_plain(&s, "keep/a").await, Some((b"a".to_vec(), 1)));
    assert_eq!(get_plain(&s, "keep/b").await, Some((b"b2".to_vec(), 2)));
    assert!(s.get("gone").await.unwrap().is_none());
    assert!(s.get("after/close").await.unwrap().is_none());
    assert_eq!(s.seal_config().await.unwrap(), Some(cfg));
    assert_eq!(s.list("").await.unwrap(), strings(&["keep/"]));
    // Migrations ran once; the reopened storage is writable and revisions continue.
    put(&s, "keep/b", b"b3").await;
    assert_eq!(get_plain(&s, "keep/b").await, Some((b"b3".to_vec(), 3)));
    s.close().await;
    // And a third open still sees the write made after the first reopen.
    let s = Storage::open(url).await.unwrap();
    assert_eq!(get_plain(&s, "keep/b").await, Some((b"b3".to_vec(), 3)));
    s.close().await;
}

/// Binary values: every byte value 0..=255 (including NUL and invalid
/// UTF-8) is stored and returned exactly. The AEAD header is caller-chosen
/// and stored verbatim, so putting all 256 byte values there guarantees the
/// stored value literally contains each of them; the plaintext holds them
/// too. Also: an empty plaintext and a 1 MiB value.
async fn suite_binary(url: &str) {
    let s = Storage::open(url).await.unwrap();
    let all: Vec<u8> = (0..=255u8).collect();
    let key = AeadKey::new(&KEY);

    let mut reversed = all.clone();
    reversed.reverse();
    let mut plain = all.clone();
    plain.extend_from_slice(&reversed);
    plain.extend_from_slice(&[0, 0, 0]);
    let c = key.seal(&all, b"bin", &plain);
    assert_eq!(&c.as_bytes()[..256], &all[..]);
    let mut b = WriteBatch::new();
    b.put("bin/all", c.clone());
    s.write(b).await.unwrap();
    let got = s.get("bin/all").await.unwrap().unwrap().value;
    assert_eq!(got.as_bytes(), c.as_bytes());
    assert_eq!(&**key.open(256, b"bin", got.as_bytes()).unwrap(), &plain[..]);

    // A value that starts with NUL and one that is almost all 0xFF.
    for (path, header) in [("bin/nul", vec![0u8; 64]), ("bin/ff", vec![0xFF; 64])] {
        let c = key.seal(&header, b"bin", &header);
        let mut b = WriteBatch::new();
        b.put(path, c.clone());
        s.write(b).await.unwrap();
        assert_eq!(s.get(path).await.unwrap().unwrap().value, c, "{path}");
    }

    // Empty plaintext: the smallest possible ciphertext (header, nonce, tag).
    let empty = key.seal(&[], b"", b"");
    let mut b = WriteBatch::new();
    b.put("bin/empty", empty.clone());
    s.write(b).await.unwrap();
    assert_eq!(s.get("bin/empty").await.unwrap().unwrap().value, empty);

    // 1 MiB.
    let big_plain: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let big = key.seal(&all, b"big", &big_plain);
    let mut b = WriteBatch::new();
    b.put("bin/big", big.clone());
    s.write(b).await.unwrap();
    let got = s.get("bin/big").await.unwrap().unwrap().value;
    assert_eq!(got.as_bytes().len(), big.as_bytes().len());
    assert!(got == big, "1 MiB value differs after round trip");
    s.close().await;
}

/// A watcher of a path is woken by a commit of that path, not of others.
async fn suite_watch(url: &str) {
    let s = Storage::open(url).await.unwrap();
    // PostgreSQL's change listener wakes every watcher once when it connects
    // (changes may have been missed before): a spurious wake-up waiters
    // tolerate by re-checking. Let it connect first.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let n = s.watch("w/a");
    let woke = n.notified();
    tokio::pin!(woke);
    woke.as_mut().enable();
    put(&s, "w/b", b"other").await;
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), woke.as_mut()).await.is_err(),
        "a write of another path woke the watcher"
    );
    put(&s, "w/a", b"mine").await;
    tokio::time::timeout(std::time::Duration::from_secs(5), woke)
        .await
        .expect("the write of the path wakes its watcher");
    s.close().await;
}

/// Reads are served from the cache, yet a write through the same handle is
/// seen at once (hit, miss and "known absent" all invalidated on commit).
async fn suite_cache_read_your_writes(url: &str) {
    let s = Storage::open(url).await.unwrap();
    assert!(s.get("c/k").await.unwrap().is_none());
    assert!(s.get("c/k").await.unwrap().is_none(), "cached absence");
    put(&s, "c/k", b"one").await;
    assert_eq!(get_plain(&s, "c/k").await.unwrap(), (b"one".to_vec(), 1));
    put(&s, "c/k", b"two").await;
    assert_eq!(get_plain(&s, "c/k").await.unwrap(), (b"two".to_vec(), 2));
    let mut b = WriteBatch::new();
    b.delete("c/k");
    s.write(b).await.unwrap();
    assert!(s.get("c/k").await.unwrap().is_none());
    s.close().await;
}

/// A write whose caller gives up (a client that disconnects drops the
/// request's future) still invalidates the cache once it commits: the
/// cached view never stays behind what the database holds.
async fn suite_cache_abandoned_write(url: &str) {
    let s = Storage::open(url).await.unwrap();
    put(&s, "a/k", b"one").await;
    assert_eq!(s.get("a/k").await.unwrap().unwrap().rev, 1); // cached now
    for i in 0..20 {
        let mut b = WriteBatch::new();
        b.put("a/k", ct(format!("v{i}").as_bytes()));
        // Give up almost at once: the batch may or may not reach the writer.
        let _ = tokio::time::timeout(std::time::Duration::from_micros(50), s.write(b)).await;
    }
    // Abandoned writes may still be committing: compare once the database
    // holds still around the cached read (revisions only grow, so a correct
    // cache read between two equal database reads must equal them).
    let fresh = Storage::open_with(url, 0).await.unwrap();
    let rev = async |s: &Storage| s.get("a/k").await.unwrap().unwrap().rev;
    for attempt in 0.. {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let before = rev(&fresh).await;
        let cached = rev(&s).await;
        if rev(&fresh).await == before {
            assert_eq!(cached, before, "the cache fell behind an abandoned write");
            break;
        }
        assert!(attempt < 100, "the abandoned writes never settled");
    }
    fresh.close().await;
    s.close().await;
}

/// Paths the change feed or the index cannot carry are refused before they
/// reach a group, so they cannot fail other writers' batches.
async fn suite_bad_paths(url: &str) {
    let s = Storage::open(url).await.unwrap();
    for bad in ["x/\nnewline".to_string(), "x/".to_string() + &"y".repeat(2000)] {
        let mut b = WriteBatch::new();
        b.put(bad.as_str(), ct(b"v"));
        assert!(matches!(s.write(b).await, Err(StorageError::InvalidPath(_))), "{bad:.20}");
    }
    put(&s, "ok/k", b"fine").await;
    assert!(s.get("ok/k").await.unwrap().is_some());
    s.close().await;
}

// ---------------------------------------------------------------------------
// Instantiation per backend
// ---------------------------------------------------------------------------

/// Every suite finishes in seconds; one that hangs fails here, named,
/// instead of holding up the whole run.
async fn bounded(suite: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(std::time::Duration::from_secs(120), suite)
        .await
        .expect("the suite did not finish within 120 s");
}

macro_rules! conformance {
    ($($test:ident => $suite:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}/vault.db", dir.path().display());
                    super::bounded(super::$suite(&url)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    // Starting the cluster runs initdb/pg_ctl: keep that off the runtime threads.
                    let pg = tokio::task::spawn_blocking(vault_e2e::PgCluster::shared).await.unwrap();
                    let pg2 = pg.clone();
                    let db = tokio::task::spawn_blocking(move || pg2.create_database()).await.unwrap();
                    super::bounded(super::$suite(&pg.url(&db))).await;
                    // Dropping the last reference stops the cluster (blocking): do it off the runtime.
                    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
                }
            )*
        }
    };
}

conformance! {
    get_missing => suite_missing,
    put_get_rev => suite_put_get_rev,
    delete => suite_delete,
    list => suite_list,
    atomic_batch => suite_atomic_batch,
    conflicts => suite_conflicts,
    concurrent_counter_64 => suite_concurrent_counter,
    concurrent_distinct_200 => suite_concurrent_distinct,
    concurrent_mixed_conflicts => suite_concurrent_mixed_conflicts,
    concurrent_overlapping_batches => suite_concurrent_overlapping_batches,
    concurrent_hot_paths => suite_concurrent_hot_paths,
    seal_config => suite_seal_config,
    reopen => suite_reopen,
    binary_values => suite_binary,
    watch => suite_watch,
    cache_read_your_writes => suite_cache_read_your_writes,
    cache_abandoned_write => suite_cache_abandoned_write,
    bad_paths => suite_bad_paths,
}

/// Two servers on one PostgreSQL database: what one caches is invalidated by
/// the other's writes (change feed), including cached absence; a write
/// conflict caused by a stale copy refreshes it; watchers on one are woken by
/// writes on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cache_and_watch_follow_another_server() {
    let pg = tokio::task::spawn_blocking(vault_e2e::PgCluster::shared).await.unwrap();
    let pg2 = pg.clone();
    let db = tokio::task::spawn_blocking(move || pg2.create_database()).await.unwrap();
    let a = Storage::open(&pg.url(&db)).await.unwrap();
    let b = Storage::open(&pg.url(&db)).await.unwrap();
    // Let both change listeners connect.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let eventually = |s: Storage, rev: i64| async move {
        for _ in 0..100 {
            if s.get("x/k").await.unwrap().map(|e| e.rev) == Some(rev) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the other server's write (rev {rev}) never became visible");
    };
    assert!(b.get("x/k").await.unwrap().is_none());
    let n = b.watch("x/k");
    let woke = n.notified();
    tokio::pin!(woke);
    woke.as_mut().enable();
    put(&a, "x/k", b"one").await;
    tokio::time::timeout(std::time::Duration::from_secs(5), woke).await.expect("B's watcher woken by A's write");
    eventually(b.clone(), 1).await;
    put(&a, "x/k", b"two").await;
    eventually(b.clone(), 2).await;
    // A stale copy on B makes a guarded write conflict; the conflict drops it.
    let stale = b.get("x/k").await.unwrap().unwrap().rev;
    let mut batch = WriteBatch::new();
    batch.put("x/k", ct(b"three"));
    a.write(batch).await.unwrap();
    let mut batch = WriteBatch::new();
    batch.put_expect("x/k", ct(b"late"), Expect::Rev(stale));
    let r = b.write(batch).await;
    assert!(is_conflict(&r, "x/k"), "{r:?}");
    assert_eq!(b.get("x/k").await.unwrap().unwrap().rev, 3, "the conflict refreshed the cached copy");
    a.close().await;
    b.close().await;
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

/// Not backend-specific: a URL of neither kind is refused up front.
#[tokio::test]
async fn invalid_url_is_rejected() {
    for url in ["mysql://localhost/db", "", "file:///tmp/x.db", "sqlite"] {
        let r = Storage::open(url).await;
        assert!(matches!(r, Err(StorageError::InvalidUrl(_))), "{url}: {r:?}");
    }
}
