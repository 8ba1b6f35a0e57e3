//! After sealing, the unseal key is nowhere in the server's memory: we read
//! the live process's writable mappings through /proc/<pid>/mem and search
//! for the raw key bytes. (The share travels as hex text in the request, so
//! searching for the raw 32 bytes checks our own decoded copies, which must
//! have been wiped.) Needs root: the server marks itself non-dumpable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Seek, SeekFrom};

use vault_e2e::{Backend, ServerProc, Store};

fn scan_process(pid: u32, needle: &[u8]) -> (usize, usize) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .expect("reading another process's memory needs root (the server is non-dumpable): run the tests as root");
    let (mut hits, mut scanned) = (0, 0);
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let range = parts.next().unwrap();
        let perms = parts.next().unwrap();
        if !perms.starts_with("rw") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (start, end) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue; // guard pages and the like
        }
        scanned += buf.len();
        hits += buf.windows(needle.len()).filter(|w| *w == needle).count();
    }
    (hits, scanned)
}

#[tokio::test]
async fn key_material_is_wiped_from_memory() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(3, 2).await;
    let raw: Vec<Vec<u8>> = keys.iter().map(|k| hex::decode(k).unwrap()).collect();

    // Control: a submitted share is held (decoded) until the threshold, so
    // the scan must find it; this proves the scan can see our buffers.
    c.put("sys/unseal", serde_json::json!({"key": keys[0]})).await;
    let (hits, scanned) = scan_process(srv.pid(), &raw[0]);
    assert!(scanned > 1 << 20, "scanned only {scanned} bytes: the scan did not work");
    assert!(hits > 0, "control failed: a held share was not found, so the scan proves nothing");

    // Reset: the held share is wiped.
    c.put("sys/unseal", serde_json::json!({"reset": true})).await;
    assert_eq!(scan_process(srv.pid(), &raw[0]).0, 0, "share still in memory after reset");

    // Unseal, use the vault, seal: no share remains.
    c.unseal(&keys[1..]).await;
    let rc = c.with_token(&root);
    rc.post("sys/mounts/kv", serde_json::json!({"type": "kv"})).await;
    rc.put("kv/a", serde_json::json!({"v": 1})).await;
    assert_eq!(rc.put("sys/seal", serde_json::json!({})).await.0, 204);
    for (i, share) in raw.iter().enumerate() {
        assert_eq!(scan_process(srv.pid(), share).0, 0, "share {i} still in memory after seal");
    }
}
