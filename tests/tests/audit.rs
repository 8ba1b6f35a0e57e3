//! Audit devices end to end (docs/audit.md), through the real binary and
//! `vaultctl audit verify`: secrets never in the file in the clear (a
//! password, a transit plaintext, tokens, an unseal share), `sys/audit-hash`
//! matching the file, every kind of tampering found with its place, fail
//! closed with nothing executed, SIGHUP rotation and restarts continuing
//! the chain, several servers on one PostgreSQL each with its own chain,
//! sudo required. SQLite and PostgreSQL where storage is involved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store, vaultctl_bin};

const PASSWORD: &str = "CANARY-PASSWORD-5d1e";
const PLAINTEXT: &str = "CANARY-PLAINTEXT-8a2f";
const USER_PASSWORD: &str = "CANARY-USERPASS-77c1";

/// A server whose audit files may be in the temporary directory.
fn audited(store: &Store) -> ServerProc {
    ServerProc::start_with_config(store, &vault_e2e::audit_in_temp_dir(), &[])
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `vaultctl audit verify ARGS...`: (exit code, stdout, stderr).
fn verify(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(vaultctl_bin());
    cmd.args(["audit", "verify"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn enable(rc: &Client, path: &str, file: &Path, extra: Value) -> (u16, Value) {
    let mut options = json!({"file_path": file.display().to_string(), "checkpoint_entries": "5"});
    options.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    rc.put(&format!("sys/audit/{path}"), json!({"type": "file", "description": "test", "options": options})).await
}

async fn public_key(rc: &Client, path: &str) -> String {
    let (s, v) = rc.get("sys/audit").await;
    assert_eq!(s, 200, "{v}");
    v["data"][format!("{path}/")]["public_key"].as_str().unwrap().to_string()
}

/// Wait until `f` holds (the writer answers requests only once written,
/// but the response entry is written as the answer leaves).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn canaries_and_hashes(backend: Backend) {
    let store = Store::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let foreign = dir.path().join("passwd");
    std::fs::write(&foreign, "root:x:0:0::/root:/bin/sh\n").unwrap();
    let srv = audited(&store);
    let (keys, root, rc) = srv.kv2_ready().await;

    // Refused options, each a 400 with nothing enabled.
    for (extra, why) in [
        (json!({"log_raw": "true"}), "log_raw"),
        (json!({"format": "jsonx"}), "format"),
        (json!({"fsync": "sometimes"}), "fsync"),
        (json!({"file_path": "relative.log"}), "absolute"),
        (json!({"file_path": "/nonexistent-dir/x/audit.log"}), "[audit] file_dirs"),
        (json!({"file_path": dir.path().join("no-dir/audit.log").display().to_string()}), "No such file"),
        (json!({"file_path": foreign.display().to_string()}), "not an audit log"),
        // Red-team finds: a sink that records nothing, kernel files, a
        // world-writable or executable mode (the places are outside the
        // configured directories; `dev` refuses them by what they are:
        // `place::tests::anywhere_still_refuses_kernel_interfaces`).
        (json!({"file_path": "/dev/null"}), "[audit] file_dirs"),
        (json!({"file_path": "/tmp/../proc/self/mem"}), "'..'"),
        (json!({"mode": "0777"}), "0664"),
        (json!({"mode": "0666"}), "0664"),
    ] {
        let (s, v) = enable(&rc, "file", &file, extra).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["errors"][0].as_str().unwrap().contains(why), "{v}");
    }
    assert_eq!(rc.get("sys/audit").await.1["data"], json!({}));
    let (s, v) = enable(&rc, "file", &file, json!({})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = enable(&rc, "file", &dir.path().join("other.log"), json!({})).await;
    assert_eq!((s, v["errors"][0].as_str().unwrap().contains("in use")), (400, true), "{v}");
    let (s, _) = enable(&rc, "again", &file, json!({})).await;
    assert_eq!(s, 400, "two devices on one file");
    // The same file by another name (`..` is refused outright).
    let dir_name = dir.path().file_name().unwrap().to_str().unwrap();
    let aliased = dir.path().join("..").join(dir_name).join("audit.log");
    let (s, v) = enable(&rc, "again", &aliased, json!({})).await;
    assert_eq!(s, 400, "the same file under another name: {v}");
    assert!(v["errors"][0].as_str().unwrap().contains("'..'"), "{v}");
    // A file with two names is refused at enable (a hard link in the
    // directory could carry the log to a file elsewhere)...
    let spare = dir.path().join("spare.log");
    std::fs::write(&spare, "").unwrap();
    let linked = dir.path().join("hard-link.log");
    std::fs::hard_link(&spare, &linked).unwrap();
    let (s, v) = enable(&rc, "again", &linked, json!({})).await;
    assert_eq!(s, 400, "a file with another name: {v}");
    assert!(v["errors"][0].as_str().unwrap().contains("hard links"), "{v}");
    std::fs::remove_file(&linked).unwrap();
    std::fs::remove_file(&spare).unwrap();
    // ...and the live file getting a second name stops the device as at
    // enable: with no other device, requests are refused (fail closed)
    // until the name is gone, once the writer has looked again (it looks at
    // most every 20 ms, so the test waits past that).
    std::fs::hard_link(&file, &linked).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, v) = rc.get("sys/mounts").await;
    assert!(s >= 500 && v["errors"][0].as_str().unwrap().contains("no audit device could record"), "{s} {v}");
    std::fs::remove_file(&linked).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, v) = rc.get("sys/mounts").await;
    assert_eq!(s, 200, "recorded again once the file has one name: {v}");
    let (_, list) = rc.get("sys/audit").await;
    let dev = &list["data"]["file/"];
    assert_eq!((dev["type"].as_str(), dev["path"].as_str()), (Some("file"), Some("file/")), "{list}");
    assert_eq!(dev["options"]["file_path"], file.display().to_string());
    assert_eq!(dev["options"]["hmac_accessor"], "true");
    let key = public_key(&rc, "file").await;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // Secrets of every kind pass through.
    assert_eq!(rc.post("secret/data/app", json!({"data": {"password": PASSWORD}})).await.0, 200);
    assert_eq!(rc.get("secret/data/app").await.1["data"]["data"]["password"], PASSWORD);
    assert_eq!(rc.post("sys/mounts/transit", json!({"type": "transit"})).await.0, 204);
    assert!(matches!(rc.post("transit/keys/k", json!({})).await.0, 200 | 204));
    let b64 = base64::engine::general_purpose::STANDARD.encode(PLAINTEXT);
    let (s, v) = rc.post("transit/encrypt/k", json!({"plaintext": b64})).await;
    assert_eq!(s, 200, "{v}");
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(rc.post("transit/decrypt/k", json!({"ciphertext": ct})).await.1["data"]["plaintext"], b64);
    assert_eq!(rc.post("sys/auth/userpass", json!({"type": "userpass"})).await.0, 204);
    let (s, _) = rc.post("auth/userpass/users/alice", json!({"password": USER_PASSWORD, "policies": "default"})).await;
    assert_eq!(s, 204);
    let c = srv.client();
    let (s, v) = c.post("auth/userpass/login/alice", json!({"password": USER_PASSWORD})).await;
    assert_eq!(s, 200, "{v}");
    let user_token = v["auth"]["client_token"].as_str().unwrap().to_string();
    let user_accessor = v["auth"]["accessor"].as_str().unwrap().to_string();
    assert_eq!(c.with_token(&user_token).get("auth/token/lookup-self").await.0, 200);
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["default"]})).await;
    let child = v["auth"]["client_token"].as_str().unwrap().to_string();
    // A raw endpoint's secrets: seal, then unseal with the share.
    assert_eq!(rc.put("sys/seal", json!({})).await.0, 204);
    c.unseal(&keys).await;
    assert_eq!(rc.get("secret/data/app").await.0, 200);

    // sys/audit-hash gives what the file holds.
    let (s, v) = rc.post("sys/audit-hash/file", json!({"input": PASSWORD})).await;
    assert_eq!(s, 200, "{v}");
    let pw_hash = v["data"]["hash"].as_str().unwrap().to_string();
    assert!(pw_hash.starts_with("hmac-sha256:") && pw_hash.len() == 12 + 64, "{pw_hash}");
    assert_eq!(rc.post("sys/audit-hash/nope", json!({"input": "x"})).await.0, 400);
    let root_hash = rc.post("sys/audit-hash/file", json!({"input": root})).await.1["data"]["hash"].clone();

    let text = std::fs::read_to_string(&file).unwrap();
    for canary in [PASSWORD, PLAINTEXT, b64.as_str(), USER_PASSWORD, &user_token, &child, &root, &user_accessor, &ct] {
        assert!(!text.contains(canary), "a secret is in the audit file in the clear");
    }
    for k in &keys {
        assert!(!text.contains(k.as_str()), "an unseal share is in the audit file");
    }
    assert!(text.contains(&pw_hash), "the file holds the password's hash");
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "root:x:0:0::/root:/bin/sh\n", "untouched");

    // Vault's shape: a request entry before the response entry of each request.
    let entries = lines(&file);
    let write = entries
        .iter()
        .position(|e| {
            e["type"] == "request" && e["request"]["path"] == "secret/data/app" && e["request"]["operation"] == "update"
        })
        .unwrap();
    let id = entries[write]["request"]["id"].clone();
    let resp = entries.iter().position(|e| e["type"] == "response" && e["request"]["id"] == id).unwrap();
    assert!(resp > write);
    assert_eq!(entries[write]["request"]["data"]["data"]["password"], pw_hash.as_str());
    assert_eq!(entries[write]["request"]["mount_type"], "kv");
    assert_eq!(entries[write]["request"]["remote_address"], "127.0.0.1");
    assert_eq!(entries[resp]["response"]["status_code"], 200);
    assert_eq!(entries[write]["auth"]["client_token"], root_hash, "the caller's token, hashed");
    assert_eq!(entries[write]["auth"]["policies"], json!(["root"]));
    let login = entries
        .iter()
        .find(|e| e["type"] == "response" && e["request"]["path"] == "auth/userpass/login/alice")
        .unwrap();
    assert!(login["response"]["auth"]["client_token"].as_str().unwrap().starts_with("hmac-sha256:"), "{login}");
    assert!(login["response"]["auth"]["accessor"].as_str().unwrap().starts_with("hmac-sha256:"));
    assert_eq!(login["response"]["auth"]["policies"], json!(["default"]));
    assert!(entries.iter().any(|e| e["type"] == "checkpoint" && e["checkpoint"]["reason"] == "close"), "seal closes");
    // Devices load at unseal: the unseal that completes is recorded (its
    // answer), without its share (raw endpoints hand the hooks no data).
    assert!(entries.iter().any(|e| e["type"] == "response" && e["request"]["path"] == "sys/unseal"));

    // The log verifies, with the key given or fetched through the API.
    let (code, out, err) = verify(&[file.to_str().unwrap(), "--public-key", &key], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK:"), "{out}");
    let addr = srv.url();
    let (code, out, err) =
        verify(&[file.to_str().unwrap(), "--device", "file"], &[("VAULT_ADDR", &addr), ("VAULT_TOKEN", &root)]);
    assert_eq!(code, 0, "{out}{err}");
    // Another device's key: every checkpoint is a forgery.
    let other = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOxBq4ZcCzeA=";
    let (code, _, err) = verify(&[file.to_str().unwrap(), "--public-key", other], &[]);
    assert_eq!(code, 1, "{err}");
    // Could not check: no key, a missing file.
    assert_eq!(verify(&[file.to_str().unwrap()], &[]).0, 2);
    assert_eq!(verify(&["/nonexistent.log", "--public-key", &key], &[]).0, 2);
    assert_eq!(verify(&[file.to_str().unwrap(), "--public-key", "junk"], &[]).0, 2);

    drop(srv);
}

#[tokio::test]
async fn secrets_never_reach_the_file_sqlite() {
    canaries_and_hashes(Backend::Sqlite).await;
}

#[tokio::test]
async fn secrets_never_reach_the_file_postgres() {
    canaries_and_hashes(Backend::Postgres).await;
}

use std::os::unix::fs::PermissionsExt as _;

/// A closed log of a few dozen entries, and its device key.
async fn closed_log(dir: &Path) -> (PathBuf, String) {
    let store = Store::new(Backend::Sqlite);
    let file = dir.join("audit.log");
    let srv = audited(&store);
    let (_, _, rc) = srv.kv2_ready().await;
    assert_eq!(enable(&rc, "file", &file, json!({})).await.0, 204);
    let key = public_key(&rc, "file").await;
    for i in 0..8 {
        assert_eq!(rc.post(&format!("secret/data/s{i}"), json!({"data": {"v": i}})).await.0, 200);
    }
    assert!(srv.terminate().success());
    (file, key)
}

fn write_lines(path: &Path, lines: &[&str]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(path, s).unwrap();
}

#[tokio::test]
async fn every_kind_of_tampering_is_found_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (file, key) = closed_log(dir.path()).await;
    let text = std::fs::read_to_string(&file).unwrap();
    let orig: Vec<&str> = text.lines().collect();
    assert!(orig.len() > 20, "{}", orig.len());
    let (code, out, err) = verify(&[file.to_str().unwrap(), "--public-key", &key, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");

    let t = dir.path().join("t.log");
    let ts = t.to_str().unwrap().to_string();
    let check = |lines: &[&str], closed: bool, place: usize, what: &str| {
        write_lines(&t, lines);
        let mut args = vec![ts.as_str(), "--public-key", key.as_str()];
        if closed {
            args.push("--closed");
        }
        let (code, out, err) = verify(&args, &[]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(err.contains(&format!("{ts}:{place}:")), "{what}: expected the place {place}: {err}");
    };
    // Modified: line 5's path changed; line 6 no longer follows it.
    let edited = orig[4].replacen("secret/", "secreT/", 1);
    assert_ne!(edited, orig[4]);
    let mut m = orig.clone();
    m[4] = &edited;
    check(&m, false, 6, "edit");
    // Deleted line 5.
    let mut d = orig.clone();
    d.remove(4);
    check(&d, false, 5, "delete");
    // Inserted: a copy of line 5 after it.
    let mut i = orig.clone();
    i.insert(5, orig[4]);
    check(&i, false, 6, "insert");
    // Reordered: lines 5 and 6 swapped.
    let mut r = orig.clone();
    r.swap(4, 5);
    check(&r, false, 5, "reorder");
    // Truncated: the last 4 lines (the closing checkpoint among them) cut.
    let cut = &orig[..orig.len() - 4];
    write_lines(&t, cut);
    let (code, _, err) = verify(&[&ts, "--public-key", &key], &[]);
    assert_eq!(code, 0, "an open tail alone is only a note: {err}");
    assert!(err.contains("not signed yet"), "{err}");
    check(cut, true, cut.len(), "truncate");
    // Cut in the middle of the last line.
    let mut partial = text.clone();
    partial.truncate(partial.len() - 10);
    std::fs::write(&t, &partial).unwrap();
    let (code, _, err) = verify(&[&ts, "--public-key", &key], &[]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{ts}:{}:", orig.len())), "{err}");
    // A forged checkpoint: the signature of a checkpoint altered.
    let cp = orig.iter().position(|l| l.contains("\"reason\":\"count\"")).unwrap();
    let v: Value = serde_json::from_str(orig[cp]).unwrap();
    let sig = v["checkpoint"]["signature"].as_str().unwrap();
    let mut bytes = base64::engine::general_purpose::STANDARD.decode(sig).unwrap();
    bytes[0] ^= 1;
    let forged_sig = base64::engine::general_purpose::STANDARD.encode(bytes);
    let forged = orig[cp].replace(sig, &forged_sig);
    let mut f = orig.clone();
    f[cp] = &forged;
    // Found at the checkpoint itself (and the next line no longer follows it).
    check(&f, false, cp + 1, "forged checkpoint");
    // The head cut: the first 3 lines deleted, or exactly up to a signed
    // `count` checkpoint (a chain starts only at `open` or `continue`).
    check(&orig[3..], false, 1, "head cut");
    check(&orig[cp..], false, 1, "head cut at a checkpoint");
    // A made-up chain (a new node, starting mid-way, chained among itself)
    // inserted after line 5: found at its first line, without --closed.
    let mut prev = hex::encode([7u8; 32]);
    let mut fake = Vec::new();
    for i in 0..3 {
        let line = format!(
            r#"{{"type":"request","request":{{"path":"secret/data/x{i}"}},"chain":{{"node":"f4ke00000000f4ke","seq":{},"prev":"{prev}"}}}}"#,
            40 + i
        );
        prev = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(line.as_bytes()));
        fake.push(line);
    }
    let mut x = orig.clone();
    x.splice(5..5, fake.iter().map(String::as_str));
    check(&x, false, 6, "fabricated chain");
}

/// A small tmpfs mounted for a test (needs root, as CI runs), unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> Option<SmallDisk> {
        let uid = Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let ok =
            Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs"]).arg(at).status().unwrap();
        assert!(ok.success(), "mount a tmpfs at {}", at.display());
        Some(SmallDisk(at.to_path_buf()))
    }

    /// Fill the disk (a ballast file written until the disk refuses).
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.0.join("ballast")).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).and_then(|()| f.sync_data()).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn fail_closed_nothing_runs_unrecorded() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk")) else {
        // Not root: the full disk cannot be made; the unwritable file
        // (fail_closed_on_an_unwritable_file) is still checked.
        eprintln!("NOTE: not root, the full-disk case of failing closed is not checked");
        return;
    };
    let file = disk.0.join("audit.log");
    let srv = audited(&store);
    let (_, _, rc) = srv.kv2_ready().await;
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "one"}})).await.0, 200);
    assert_eq!(enable(&rc, "full", &file, json!({})).await.0, 204);
    assert_eq!(rc.get("secret/data/app").await.0, 200);
    disk.fill();
    // The file's last page may still hold an entry or two: read until the
    // device can write no more.
    let mut refused = false;
    for _ in 0..50 {
        if rc.get("secret/data/app").await.0 == 500 {
            refused = true;
            break;
        }
    }
    assert!(refused, "a full disk refuses requests");
    let (s, v) = rc.post("secret/data/app", json!({"data": {"v": "two"}})).await;
    assert_eq!(s, 500, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("no audit device could record the request"), "{v}");
    assert_eq!(rc.get("secret/data/app").await.0, 500, "reads are refused too");
    assert!(srv.log_text().contains("no audit device could record the request"));
    // The disk has room again: the device writes, and the refused write never happened.
    disk.free();
    let (s, v) = rc.get("secret/data/app").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["data"]["v"], "one");
    assert_eq!(v["data"]["metadata"]["version"], 1);
    // With a second, working device, a failing one no longer blocks.
    assert_eq!(enable(&rc, "good", &dir.path().join("good.log"), json!({})).await.0, 204);
    disk.fill();
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "three"}})).await.0, 200);
    // The full device's chain has no hole: what it wrote verifies.
    disk.free();
    let key = public_key(&rc, "full").await;
    assert_eq!(rc.get("secret/data/app").await.0, 200);
    assert!(srv.terminate().success());
    let (code, out, err) = verify(&[file.to_str().unwrap(), "--public-key", &key, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn fail_closed_on_an_unwritable_file() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let srv = audited(&store);
    let (_, _, rc) = srv.kv2_ready().await;
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "one"}})).await.0, 200);
    assert_eq!(enable(&rc, "file", &file, json!({})).await.0, 204);
    // The file replaced by something that cannot be written (a directory):
    // the writer sees the path changed, cannot reopen it, refuses.
    let moved = dir.path().join("audit.log.old");
    std::fs::rename(&file, &moved).unwrap();
    std::fs::create_dir(&file).unwrap();
    // The writer looks at the path every 20 ms at most (docs/audit.md).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (s, v) = rc.post("secret/data/app", json!({"data": {"v": "two"}})).await;
    assert_eq!(s, 500, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("no audit device could record the request"), "{v}");
    // Health probes are not audited (as in Vault): a liveness probe must not
    // restart a server whose audit device fails (the unseal would be lost).
    for health in ["sys/health", "sys/health/"] {
        let (s, v) = rc.get(health).await;
        assert_eq!((s, &v["sealed"]), (200, &json!(false)), "{health}: {v}");
    }
    // Usable again: a new file, starting with a signed `continue`; the
    // refused write never happened.
    std::fs::remove_dir(&file).unwrap();
    let (s, v) = rc.get("secret/data/app").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["metadata"]["version"], 1);
    let key = public_key(&rc, "file").await;
    assert!(srv.terminate().success());
    assert_eq!(lines(&file)[0]["checkpoint"]["reason"], "continue");
    assert_eq!(lines(&moved).last().unwrap()["checkpoint"]["reason"], "rotate");
    let (m, f) = (moved.to_str().unwrap(), file.to_str().unwrap());
    let (code, out, err) = verify(&[m, f, "--public-key", &key, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn cuts_are_found_against_the_servers_chain_head() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let f = file.to_str().unwrap().to_string();
    let srv = audited(&store);
    let (keys, root, rc) = srv.kv2_ready().await;
    assert_eq!(enable(&rc, "file", &file, json!({"checkpoint_entries": "1000"})).await.0, 204);
    let key = public_key(&rc, "file").await;
    for i in 0..3 {
        assert_eq!(rc.post(&format!("secret/data/a{i}"), json!({"data": {"v": i}})).await.0, 200);
    }
    // Stopped: cut back to an earlier signed `close`. The restarted server
    // continues from the head it closed at, so the gap shows.
    assert!(srv.terminate().success());
    let first_close = std::fs::metadata(&file).unwrap().len();
    let srv = audited(&store);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    assert_eq!(rc.post("secret/data/b", json!({"data": {"v": 1}})).await.0, 200);
    assert!(srv.terminate().success());
    assert_eq!(verify(&[&f, "--public-key", &key, "--closed"], &[]).0, 0);
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(first_close).unwrap();
    assert_eq!(verify(&[&f, "--public-key", &key, "--closed"], &[]).0, 0, "a cut back to a close looks whole");
    let srv = audited(&store);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    assert_eq!(rc.post("secret/data/c", json!({"data": {"v": 1}})).await.0, 200);
    assert!(srv.log_text().contains("does not end where this server closed its chain"));
    assert!(srv.terminate().success());
    let (code, out, err) = verify(&[&f, "--public-key", &key, "--closed"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("missing"), "{err}");
    // A live file (another device, as the first one now shows a gap).
    let srv = audited(&store);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    let live = dir.path().join("live.log");
    let l = live.to_str().unwrap().to_string();
    assert_eq!(enable(&rc, "live", &live, json!({"checkpoint_entries": "1000"})).await.0, 204);
    let live_key = public_key(&rc, "live").await;
    for i in 0..3 {
        assert_eq!(rc.post(&format!("secret/data/l{i}"), json!({"data": {"v": i}})).await.0, 200);
    }
    let addr = srv.url();
    let env = [("VAULT_ADDR", addr.as_str()), ("VAULT_TOKEN", root.as_str())];
    // Live: the unsigned tail vouched for by the server's head...
    let (code, out, err) = verify(&[&l, "--device", "live"], &env);
    assert_eq!(code, 0, "{out}{err}");
    // ...and a cut of it found (without --device it is only a note; with it,
    // the cut shows against the head, and the request reading the head is
    // itself recorded after the cut, breaking the chain). The writer does
    // not notice a truncation (same file).
    let text = std::fs::read_to_string(&live).unwrap();
    let keep: Vec<&str> = text.lines().collect();
    let cut = format!("{}\n", keep[..keep.len() - 3].join("\n"));
    std::fs::write(&live, &cut).unwrap();
    assert_eq!(verify(&[&l, "--public-key", &live_key], &[]).0, 0);
    let (code, out, err) = verify(&[&l, "--device", "live"], &env);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("were cut") || err.contains("missing"), "{err}");
}

#[tokio::test]
async fn rotation_and_restarts_continue_the_chain() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let srv = audited(&store);
    let (keys, root, rc) = srv.kv2_ready().await;
    assert_eq!(enable(&rc, "file", &file, json!({"fsync": "batch"})).await.0, 204);
    let key = public_key(&rc, "file").await;
    for i in 0..3 {
        assert_eq!(rc.post(&format!("secret/data/a{i}"), json!({"data": {"v": i}})).await.0, 200);
    }
    // Rotation: move the file, SIGHUP, go on.
    std::fs::rename(&file, &rotated).unwrap();
    let pid = srv.pid().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    eventually("the reopened file", || file.exists()).await;
    assert_eq!(rc.post("secret/data/b", json!({"data": {"v": 1}})).await.0, 200);
    assert!(lines(&rotated).last().unwrap()["checkpoint"]["reason"] == "rotate");
    // The reopened file starts with a signed `continue`: it verifies alone.
    assert_eq!(lines(&file)[0]["checkpoint"]["reason"], "continue");
    let (code, out, err) = verify(&[file.to_str().unwrap(), "--public-key", &key], &[]);
    assert_eq!(code, 0, "{out}{err}");
    // A clean restart: the chain goes on in the same file.
    assert!(srv.terminate().success());
    let srv = audited(&store);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    assert_eq!(rc.post("secret/data/c", json!({"data": {"v": 1}})).await.0, 200);
    assert!(srv.terminate().success());
    let (r, f) = (rotated.to_str().unwrap(), file.to_str().unwrap());
    let (code, out, err) = verify(&[r, f, "--public-key", &key, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 chain(s)"), "one chain across rotation and restart: {out}");
    // The files in the wrong order do not verify.
    assert_eq!(verify(&[f, r, "--public-key", &key], &[]).0, 1);
    // A crash (no closing checkpoint): the next server starts a new chain;
    // the crashed chain's unsigned tail is a note, and --closed calls it a cut.
    let srv = audited(&store);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    assert_eq!(rc.post("secret/data/d", json!({"data": {"v": 1}})).await.0, 200);
    srv.kill9();
    let srv = audited(&store);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    assert_eq!(rc.post("secret/data/e", json!({"data": {"v": 1}})).await.0, 200);
    let (code, out, err) = verify(&[r, f, "--public-key", &key], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 chain(s)"), "{out}");
    assert_eq!(verify(&[r, f, "--public-key", &key, "--closed"], &[]).0, 1);
}

#[tokio::test]
async fn disable_enable_and_sudo() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let srv = audited(&store);
    let (_, _, rc) = srv.kv2_ready().await;
    // A token with every capability on sys/audit* but sudo is refused.
    let policy = r#"path "sys/audit*" { capabilities = ["create", "read", "update", "delete", "list"] }"#;
    assert_eq!(rc.put("sys/policies/acl/ops", json!({"policy": policy})).await.0, 204);
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["ops"]})).await;
    let ops = srv.client().with_token(v["auth"]["client_token"].as_str().unwrap());
    assert_eq!(ops.get("sys/audit").await.0, 403);
    assert_eq!(enable(&ops, "file", &dir.path().join("a.log"), json!({})).await.0, 403);
    assert_eq!(enable(&rc, "file", &dir.path().join("a.log"), json!({})).await.0, 204);
    assert_eq!(ops.delete("sys/audit/file").await.0, 403);
    assert_eq!(ops.post("sys/audit-hash/file", json!({"input": "x"})).await.0, 403);
    let first = public_key(&rc, "file").await;
    // Disable: the writer signs off; later requests are not recorded.
    assert_eq!(rc.delete("sys/audit/file").await.0, 204);
    let a = dir.path().join("a.log");
    let last = lines(&a).last().unwrap().clone();
    assert_eq!(last["checkpoint"]["reason"], "close", "{last}");
    assert_eq!(rc.get("sys/audit").await.1["data"], json!({}));
    let n = lines(&a).len();
    assert_eq!(rc.get("sys/mounts").await.0, 200);
    assert_eq!(lines(&a).len(), n);
    assert_eq!(rc.delete("sys/audit/file").await.0, 204, "disabling nothing is fine (Vault)");
    let (code, out, err) = verify(&[a.to_str().unwrap(), "--public-key", &first, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    // Enabled again: a new device with new keys.
    assert_eq!(enable(&rc, "file", &dir.path().join("b.log"), json!({})).await.0, 204);
    assert_ne!(public_key(&rc, "file").await, first);
    assert_eq!(rc.get("sys/mounts").await.0, 200);
    assert!(lines(&dir.path().join("b.log")).len() >= 2);
}

#[tokio::test]
async fn servers_on_one_postgres_keep_their_own_chains() {
    let store = Store::new(Backend::Postgres);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let a = audited(&store);
    let (keys, root, rca) = a.kv2_ready().await;
    let b = audited(&store);
    b.client().unseal(&keys).await;
    let rcb = b.client().with_token(&root);
    assert_eq!(enable(&rca, "file", &file, json!({})).await.0, 204);
    let key = public_key(&rca, "file").await;
    // B hears of the device through the change feed.
    let mut listed = false;
    for _ in 0..100 {
        if rcb.get("sys/audit").await.1["data"]["file/"]["public_key"] == key.as_str() {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "server B loads the device enabled on A");
    assert_eq!(rca.post("secret/data/x", json!({"data": {"v": 1}})).await.0, 200);
    assert_eq!(rcb.get("secret/data/x").await.0, 200);
    let nodes: std::collections::BTreeSet<String> =
        lines(&file).iter().map(|e| e["chain"]["node"].as_str().unwrap().to_string()).collect();
    assert_eq!(nodes.len(), 2, "one chain per server: {nodes:?}");
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let (code, out, err) = verify(&[file.to_str().unwrap(), "--public-key", &key, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 chain(s)"), "{out}");
}

/// A sudo token chooses `file_path`, and every request path lands in the
/// file: outside the directories the operator configured it must not
/// create anything (a shell profile or cron file would run the paths), and
/// a server configured with none writes no audit file at all. The check is
/// made at every open: a device whose file is no longer below a configured
/// directory after a restart fails closed, with the reason in the log.
#[tokio::test]
async fn audit_files_only_below_the_configured_directories() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let elsewhere = dir.path().join("profile.d");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, logs.join("out")).unwrap();

    // No [audit] file_dirs: no file device.
    let srv = ServerProc::start(&store, &[]);
    let (keys, root, rc) = srv.kv2_ready().await;
    let (s, v) = enable(&rc, "file", &logs.join("a.log"), json!({})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("[audit] file_dirs"), "{v}");
    assert!(srv.terminate().success());

    let config = format!("[audit]\nfile_dirs = [{:?}]\n", logs.display().to_string());
    let srv = ServerProc::start_with_config(&store, &config, &[]);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    for (path, why) in [
        (elsewhere.join("x.sh"), "file_dirs"),
        (logs.join("../profile.d/x.sh"), ".."),
        (logs.join("out/x.sh"), "symbolic link"),
        (logs.clone(), "file_dirs"),
    ] {
        let (s, v) = enable(&rc, "file", &path, json!({})).await;
        assert_eq!(s, 400, "{}: {v}", path.display());
        assert!(v["errors"][0].as_str().unwrap().contains(why), "{}: {v}", path.display());
    }
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none(), "nothing was created outside");
    assert_eq!(rc.get("sys/audit").await.1["data"], json!({}));
    let file = logs.join("a.log");
    assert_eq!(enable(&rc, "file", &file, json!({})).await.0, 204);
    let key = public_key(&rc, "file").await;
    assert_eq!(rc.get("sys/mounts").await.0, 200);
    assert!(srv.terminate().success());

    // The same device after a restart without the directory: refused requests, a clear log.
    let srv = ServerProc::start(&store, &[]);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    let (s, v) = rc.get("sys/mounts").await;
    assert_eq!(s, 500, "{v}");
    assert!(srv.log_text().contains("file_dirs"), "{}", srv.log_text());
    assert!(srv.terminate().success());
    // Configured again: recorded again, one chain across the three servers.
    let srv = ServerProc::start_with_config(&store, &config, &[]);
    srv.client().unseal(&keys).await;
    assert_eq!(srv.client().with_token(&root).get("sys/mounts").await.0, 200);
    assert!(srv.terminate().success());
    let (code, out, err) = verify(&[file.to_str().unwrap(), "--public-key", &key, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Readers of `secret/data/app` until `stop`: (answered 200, answered 503).
/// Any other answer fails the test (around a seal: never an audit failure).
fn readers(
    rc: &Client,
    n: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u32>> {
    (0..n)
        .map(|_| {
            let (c, stop) = (rc.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (s, v) = c.get("secret/data/app").await;
                    assert!(s == 200 || s == 503, "{s}: {v}");
                    answered += u32::from(s == 200);
                }
                answered
            })
        })
        .collect()
}

/// Run `during` while 24 readers run; returns how many were answered 200.
async fn under_load<F: std::future::Future<Output = ()>>(rc: &Client, during: F) -> u32 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = readers(rc, 24, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    during.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for l in load {
        answered += l.await.unwrap();
    }
    answered
}

/// Request ids with a request entry and no response entry in `entries`,
/// leaving out requests that do the closing themselves (`except` paths).
fn unanswered(entries: &[Value], except: &[&str]) -> (usize, Vec<String>) {
    let ids = |kind: &str| -> std::collections::HashSet<String> {
        entries
            .iter()
            .filter(|e| e["type"] == kind && !except.contains(&e["request"]["path"].as_str().unwrap_or_default()))
            .map(|e| e["request"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (requests, responses) = (ids("request"), ids("response"));
    (requests.len(), requests.difference(&responses).cloned().collect())
}

/// Seals, a snapshot restore and a device's removal under load: every
/// request recorded has its response recorded too, before the chain's
/// `close` (they wait for the audited requests in flight; requests arriving
/// meanwhile get 503, not recorded, not counted as audit failures), and a
/// slow raw-endpoint body does not hold a seal. Regressions (red team): the
/// response entries of requests still running were lost at a seal, a
/// restore and a disable; the 503s of a seal were logged and counted by the
/// thousand as response entries lost.
#[tokio::test]
async fn closing_under_load_loses_no_response_entry() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let (file, gone) = (dir.path().join("audit.log"), dir.path().join("gone.log"));
    let srv = audited(&store);
    let (keys, _, rc) = srv.kv2_ready().await;
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "one"}})).await.0, 200);
    assert_eq!(enable(&rc, "file", &file, json!({})).await.0, 204);
    assert_eq!(enable(&rc, "gone", &gone, json!({})).await.0, 204);
    let key = public_key(&rc, "file").await;
    let gone_key = public_key(&rc, "gone").await;

    // A device removed under load: the requests it recorded get their
    // response entries before its `close`.
    let answered = under_load(&rc, async {
        assert_eq!(rc.delete("sys/audit/gone").await.0, 204);
    })
    .await;
    assert!(answered > 0, "the load ran");
    let (n, lost) = unanswered(&lines(&gone), &["sys/audit/gone"]);
    assert!(
        n > 20 && lost.is_empty(),
        "{} of {n} requests recorded by the removed device have no response entry",
        lost.len()
    );
    let (code, out, err) = verify(&[gone.to_str().unwrap(), "--public-key", &gone_key, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");

    // Seals under load; one while a client trickles an unseal body (a raw
    // endpoint reads its body after the hooks: the seal must not wait for it).
    let addr: std::net::SocketAddr = srv.url().trim_start_matches("http://").parse().unwrap();
    let mut slow = vault_e2e::RawHttp::connect(addr).await;
    slow.send(vault_e2e::RawHttp::head("PUT", "/v1/sys/unseal", None, 100).as_bytes()).await;
    slow.send(b"{\"key\"").await;
    for round in 0..3 {
        let answered = under_load(&rc, async {
            assert_eq!(rc.put("sys/seal", json!({})).await.0, 204, "round {round}");
        })
        .await;
        assert!(answered > 0, "round {round}: the load ran");
        srv.client().unseal(&keys).await;
    }
    drop(slow);

    // A snapshot restore under load (it seals).
    let (s, snapshot) = rc.raw_bytes("GET", "sys/storage/snapshot").await;
    assert_eq!(s, 200);
    under_load(&rc, async {
        let (s, v) = rc.raw("POST", "sys/storage/snapshot-restore", snapshot.clone()).await;
        assert_eq!((s, &v["restored"]), (200, &json!(true)), "{v}");
    })
    .await;
    srv.client().unseal(&keys).await;
    assert_eq!(rc.get("secret/data/app").await.0, 200);

    let log = srv.log_text();
    assert!(srv.terminate().success());
    let entries = lines(&file);
    let (n, lost) = unanswered(&entries, &["sys/seal", "sys/storage/snapshot-restore"]);
    assert!(n > 100, "{n} requests recorded");
    assert!(lost.is_empty(), "{} of {n} recorded requests have no response entry: {lost:?}", lost.len());
    assert!(!entries.iter().any(|e| e["response"]["status_code"] == 503), "a seal's refusals are not recorded");
    for never in ["could not be handed to the audit device", "still running at"] {
        assert!(!log.contains(never), "the server logged '{never}':\n{log}");
    }
    let closes = entries.iter().filter(|e| e["checkpoint"]["reason"] == "close").count();
    assert!(closes >= 4, "{closes} close checkpoints");
    let (code, out, err) = verify(&[file.to_str().unwrap(), "--public-key", &key, "--closed"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}
