//! Key ceremonies and the files and terminals around them, through the real
//! binaries, on SQLite and on PostgreSQL:
//!
//! - who may drive a rekey or a root generation: by default a token with
//!   `sudo` on the endpoint, never an anonymous caller (who could otherwise
//!   cancel an operator's ceremony or start one of their own); opened to
//!   callers without a token only by configuration, which is also how a root
//!   token is generated when none is left;
//! - every share is checked when it is submitted (unseal, rekey,
//!   generate-root): a malformed one is a 400 that neither counts nor resets
//!   the shares already given;
//! - the SQLite directory and files are owner-only;
//! - `vaultctl` reads a share without echo at a terminal and from a pipe
//!   without prompting, and sends `VAULT_TOKEN` for the ceremonies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store, server_bin};

/// Every ceremony step: method, path, a body that would be valid.
fn steps(share: &str) -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "sys/rekey/init", None),
        ("PUT", "sys/rekey/init", Some(json!({"secret_shares": 3, "secret_threshold": 2}))),
        ("POST", "sys/rekey/init", Some(json!({"secret_shares": 3, "secret_threshold": 2}))),
        ("DELETE", "sys/rekey/init", None),
        ("PUT", "sys/rekey/update", Some(json!({"key": share, "nonce": "n"}))),
        ("GET", "sys/generate-root/attempt", None),
        ("PUT", "sys/generate-root/attempt", Some(json!({}))),
        ("DELETE", "sys/generate-root/attempt", None),
        ("PUT", "sys/generate-root/update", Some(json!({"key": share, "nonce": "n"}))),
    ]
}

async fn token_with_policy(rc: &Client, name: &str, policy: &str) -> String {
    let (s, v) = rc.put(&format!("sys/policies/acl/{name}"), json!({"policy": policy})).await;
    assert_eq!(s, 204, "policy {name}: {v}");
    let (s, v) = rc.post("auth/token/create", json!({"policies": [name], "ttl": "1h"})).await;
    assert_eq!(s, 200, "token for {name}: {v}");
    v["auth"]["client_token"].as_str().unwrap().to_string()
}

fn assert_denied((s, v): (u16, Value), what: &str) {
    assert_eq!(s, 403, "{what}: {v}");
    assert_eq!(v, json!({"errors": ["permission denied"]}), "{what}");
}

/// Rekey `keys` (threshold 2) to 3/2 through `cc`; returns the new shares.
async fn rekey(cc: &Client, keys: &[String]) -> Vec<String> {
    let (s, v) = cc.put("sys/rekey/init", json!({"secret_shares": 3, "secret_threshold": 2})).await;
    assert_eq!(s, 200, "rekey init: {v}");
    let nonce = v["nonce"].as_str().unwrap().to_string();
    let (s, v) = cc.put("sys/rekey/update", json!({"key": keys[0], "nonce": nonce})).await;
    assert_eq!((s, v["progress"].as_u64()), (200, Some(1)), "{v}");
    let (s, v) = cc.put("sys/rekey/update", json!({"key": keys[1], "nonce": nonce})).await;
    assert_eq!((s, v["complete"].as_bool()), (200, Some(true)), "{v}");
    v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
}

/// Generate a root token from `keys` (threshold 2) through `cc`.
async fn generate_root(cc: &Client, keys: &[String]) -> String {
    let (s, v) = cc.put("sys/generate-root/attempt", json!({})).await;
    assert_eq!(s, 200, "generate-root attempt: {v}");
    let (otp, nonce) = (v["otp"].as_str().unwrap().to_string(), v["nonce"].as_str().unwrap().to_string());
    let (s, v) = cc.put("sys/generate-root/update", json!({"key": keys[0], "nonce": nonce})).await;
    assert_eq!((s, v["progress"].as_u64()), (200, Some(1)), "{v}");
    let (s, v) = cc.put("sys/generate-root/update", json!({"key": keys[1], "nonce": nonce})).await;
    assert_eq!((s, v["complete"].as_bool()), (200, Some(true)), "{v}");
    vault_api::decode_root_token(v["encoded_token"].as_str().unwrap(), &otp).unwrap()
}

async fn ceremonies_need_a_sudo_token(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(3, 2).await;
    // Sealed: no token can be checked, so 503 as before, whoever asks.
    assert_eq!(c.get("sys/rekey/init").await.0, 503);
    c.unseal(&keys[..2]).await;
    let rc = c.with_token(&root);

    // No token, a bogus token: every step, every method, is refused.
    for (m, p, body) in steps(&keys[0]) {
        assert_denied(c.call(m, p, body.clone()).await, &format!("{m} {p} without a token"));
        assert_denied(
            c.with_token("hvs.NOTATOKENNOTATOKEN123456").call(m, p, body).await,
            &format!("{m} {p} with a bogus token"),
        );
    }
    // Even a malformed body: the token is checked before the body is read.
    assert_denied(c.raw("PUT", "sys/rekey/init", b"{not json".to_vec()).await, "malformed body without a token");

    // The capability without sudo is not enough.
    let no_sudo = token_with_policy(
        &rc,
        "no-sudo",
        r#"path "sys/rekey/*" { capabilities = ["read", "update", "delete"] }
           path "sys/generate-root/*" { capabilities = ["read", "update", "delete"] }"#,
    )
    .await;
    for (m, p, body) in steps(&keys[0]) {
        assert_denied(c.with_token(&no_sudo).call(m, p, body).await, &format!("{m} {p} without sudo"));
    }

    // The operator starts a rekey; nobody without a token can cancel it or
    // start another, and a read-only watcher cannot cancel it either.
    let (s, v) = rc.put("sys/rekey/init", json!({"secret_shares": 3, "secret_threshold": 2})).await;
    assert_eq!(s, 200, "{v}");
    let nonce = v["nonce"].as_str().unwrap().to_string();
    assert_eq!(rc.put("sys/rekey/update", json!({"key": keys[0], "nonce": nonce})).await.0, 200);
    assert_denied(c.delete("sys/rekey/init").await, "anonymous cancel");
    let watcher =
        token_with_policy(&rc, "watcher", r#"path "sys/rekey/init" { capabilities = ["read", "sudo"] }"#).await;
    let (s, v) = c.with_token(&watcher).get("sys/rekey/init").await;
    assert_eq!((s, v["progress"].as_u64(), v["nonce"].as_str()), (200, Some(1), Some(nonce.as_str())), "{v}");
    assert_denied(c.with_token(&watcher).delete("sys/rekey/init").await, "cancel with read+sudo only");
    assert_denied(
        c.with_token(&watcher).put("sys/rekey/update", json!({"key": keys[1], "nonce": nonce})).await,
        "update with read+sudo only",
    );
    let (_, v) = rc.get("sys/rekey/init").await;
    assert_eq!((v["started"].as_bool(), v["progress"].as_u64()), (Some(true), Some(1)), "the rekey survived: {v}");
    assert_eq!(rc.delete("sys/rekey/init").await.0, 204);

    // A token granted sudo and the capabilities on exactly these paths can
    // run both ceremonies end to end (the shares still decide).
    let ceremonies = token_with_policy(
        &rc,
        "ceremonies",
        r#"path "sys/rekey/*" { capabilities = ["read", "update", "delete", "sudo"] }
           path "sys/generate-root/*" { capabilities = ["read", "update", "delete", "sudo"] }"#,
    )
    .await;
    let cc = c.with_token(&ceremonies);
    let new_keys = rekey(&cc, &keys).await;
    let new_root = generate_root(&cc, &new_keys).await;
    assert_eq!(c.with_token(&new_root).get("sys/mounts").await.0, 200, "the generated root token works");
    assert_eq!(rc.delete("sys/generate-root/attempt").await.0, 204);
    assert!(srv.log_text().contains("rekey started"), "ceremony steps are logged");
}

#[tokio::test]
async fn ceremonies_need_a_sudo_token_sqlite() {
    ceremonies_need_a_sudo_token(Backend::Sqlite).await;
}

#[tokio::test]
async fn ceremonies_need_a_sudo_token_postgres() {
    ceremonies_need_a_sudo_token(Backend::Postgres).await;
}

/// With no root token left (revoked), the default refuses everyone; the
/// operator opens root generation alone, for the time of the ceremony, and
/// the share holders mint a new root token without any token.
async fn root_generation_without_any_token(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(3, 2).await;
    c.unseal(&keys[..2]).await;
    let rc = c.with_token(&root);
    assert_eq!(rc.post("auth/token/revoke-self", json!({})).await.0, 204);
    assert_denied(rc.get("sys/mounts").await, "the revoked root token");
    assert_denied(c.put("sys/generate-root/attempt", json!({})).await, "anonymous generate-root by default");
    assert!(srv.terminate().success());

    let srv = ServerProc::start_with_config(&store, "disable_unauthed_generate_root_endpoints = false\n", &[]);
    let c = srv.client();
    c.unseal(&keys[1..]).await;
    assert!(srv.log_text().contains("disable_unauthed_generate_root_endpoints = false"), "the opening is warned about");
    // Only root generation is open; rekey still needs a token.
    assert_denied(c.put("sys/rekey/init", json!({"secret_shares": 3, "secret_threshold": 2})).await, "rekey");
    let new_root = generate_root(&c, &keys[1..]).await;
    let nc = c.with_token(&new_root);
    assert_eq!(nc.get("sys/mounts").await.0, 200, "the new root token works");
    assert!(srv.terminate().success());

    // Closed again (the default) once done; the new root token drives ceremonies.
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    c.unseal(&keys[..2]).await;
    assert_denied(c.get("sys/generate-root/attempt").await, "closed again");
    let nc = c.with_token(&new_root);
    assert_eq!(nc.get("sys/generate-root/attempt").await.0, 200);
    assert_eq!(rekey(&nc, &keys).await.len(), 3);
}

#[tokio::test]
async fn root_generation_without_any_token_sqlite() {
    root_generation_without_any_token(Backend::Sqlite).await;
}

#[tokio::test]
async fn root_generation_without_any_token_postgres() {
    root_generation_without_any_token(Backend::Postgres).await;
}

/// Both switches off: Vault's historical behaviour, for deployments that
/// rely on it (e.g. clients that cannot send a token).
#[tokio::test]
async fn unauthenticated_ceremonies_when_configured() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start_with_config(
        &store,
        "disable_unauthed_rekey_endpoints = false\ndisable_unauthed_generate_root_endpoints = false\n",
        &[],
    );
    let c = srv.client();
    let (keys, _) = c.init(3, 2).await;
    c.unseal(&keys[..2]).await;
    let new_keys = rekey(&c, &keys).await;
    let root = generate_root(&c, &new_keys).await;
    assert_eq!(c.with_token(&root).get("sys/mounts").await.0, 200);
}

/// A share as hex with identifier `id` (first byte), bytes otherwise from `like`.
fn with_id(like: &str, id: u8) -> String {
    let mut b = hex::decode(like).unwrap();
    b[0] = id;
    hex::encode(b)
}

/// A share with the same identifier as `share` but another value.
fn forged(share: &str) -> String {
    let mut b = hex::decode(share).unwrap();
    b[7] ^= 0x5a;
    hex::encode(b)
}

/// Malformed for a 3/2 seal: identifier 0; 32 bytes (an unseal key, not a
/// share); 16 bytes; as base64, identifier 0 again.
fn malformed(share: &str) -> Vec<String> {
    let zero = with_id(share, 0);
    vec![zero.clone(), share[2..].to_string(), share[..32].to_string(), b64(&hex::decode(&zero).unwrap())]
}

fn b64(bytes: &[u8]) -> String {
    // Standard base64 without a dependency: the tests crate has none.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn assert_refused((s, v): (u16, Value), what: &str) {
    assert_eq!(s, 400, "{what}: {v}");
    let e = v["errors"][0].as_str().unwrap_or_else(|| panic!("{what}: no error message in {v}"));
    assert!(e.starts_with("invalid key"), "{what}: {e}");
}

async fn bad_shares_are_refused_on_submission(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(3, 2).await;
    let rc = c.with_token(&root);

    // Unseal: refused, not counted, whether first or after a good share.
    for bad in malformed(&keys[0]) {
        assert_refused(c.put("sys/unseal", json!({"key": bad})).await, "unseal, first share");
        let (_, st) = c.get("sys/seal-status").await;
        assert_eq!((st["progress"].as_u64(), st["nonce"].as_str()), (Some(0), Some("")), "not counted: {st}");
    }
    let (_, v) = c.put("sys/unseal", json!({"key": keys[0]})).await;
    let nonce = v["nonce"].as_str().unwrap().to_string();
    for bad in malformed(&keys[1]).into_iter().chain([forged(&keys[0])]) {
        assert_refused(c.put("sys/unseal", json!({"key": bad})).await, "unseal, after a good share");
        let (_, st) = c.get("sys/seal-status").await;
        assert_eq!((st["progress"].as_u64(), st["nonce"].as_str()), (Some(1), Some(nonce.as_str())), "{st}");
    }
    let v = c.unseal(&keys[2..]).await;
    assert_eq!(v["sealed"], false, "the good shares still unseal: {v}");

    // Rekey: same, with the attempt kept.
    let (_, v) = rc.put("sys/rekey/init", json!({"secret_shares": 3, "secret_threshold": 2})).await;
    let rnonce = v["nonce"].as_str().unwrap().to_string();
    let update = |key: String| rc.put("sys/rekey/update", json!({"key": key, "nonce": rnonce}));
    assert_refused(update(with_id(&keys[0], 0)).await, "rekey, first share");
    assert_eq!(rc.get("sys/rekey/init").await.1["progress"], 0);
    assert_eq!(update(keys[1].clone()).await.1["progress"], 1);
    for bad in malformed(&keys[2]).into_iter().chain([forged(&keys[1])]) {
        assert_refused(update(bad).await, "rekey, after a good share");
        let (_, v) = rc.get("sys/rekey/init").await;
        assert_eq!((v["progress"].as_u64(), v["nonce"].as_str()), (Some(1), Some(rnonce.as_str())), "{v}");
    }
    let (s, v) = update(keys[2].clone()).await;
    assert_eq!((s, v["complete"].as_bool()), (200, Some(true)), "{v}");
    let new_keys: Vec<String> = v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();

    // Generate-root: same.
    let (_, v) = rc.put("sys/generate-root/attempt", json!({})).await;
    let (otp, gnonce) = (v["otp"].as_str().unwrap().to_string(), v["nonce"].as_str().unwrap().to_string());
    let update = |key: String| rc.put("sys/generate-root/update", json!({"key": key, "nonce": gnonce}));
    assert_refused(update(with_id(&new_keys[0], 0)).await, "generate-root, first share");
    assert_eq!(update(new_keys[0].clone()).await.1["progress"], 1);
    for bad in malformed(&new_keys[1]).into_iter().chain([forged(&new_keys[0])]) {
        assert_refused(update(bad).await, "generate-root, after a good share");
        let (_, v) = rc.get("sys/generate-root/attempt").await;
        assert_eq!((v["progress"].as_u64(), v["nonce"].as_str()), (Some(1), Some(gnonce.as_str())), "{v}");
    }
    let (s, v) = update(new_keys[2].clone()).await;
    assert_eq!((s, v["complete"].as_bool()), (200, Some(true)), "{v}");
    let token = vault_api::decode_root_token(v["encoded_token"].as_str().unwrap(), &otp).unwrap();
    assert_eq!(c.with_token(&token).get("sys/mounts").await.0, 200);
    assert!(!srv.log_text().contains("panicked"));
}

#[tokio::test]
async fn bad_shares_are_refused_on_submission_sqlite() {
    bad_shares_are_refused_on_submission(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_shares_are_refused_on_submission_postgres() {
    bad_shares_are_refused_on_submission(Backend::Postgres).await;
}

/// With one share the part is the 32-byte unseal key: a share-shaped part is
/// refused on submission too.
#[tokio::test]
async fn single_key_seal_refuses_a_share_shaped_part() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, _) = c.init(1, 1).await;
    assert_refused(c.put("sys/unseal", json!({"key": format!("01{}", keys[0])})).await, "33 bytes");
    assert_eq!(c.unseal(&keys).await["sealed"], false);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// A server on a fresh directory, under the common umask 022 (which is what
/// made the files 0644 before): the directory it creates is 0700, the
/// database and its WAL and shared-memory files 0600.
#[tokio::test]
async fn database_files_are_owner_only() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("vault-data");
    let store = Store { url: format!("sqlite://{}/vault.db", dir.display()), dir: None, pg: None, db: None };
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("umask 022 && exec \"$0\" \"$@\"").arg(server_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0", "--storage", &store.url]);
    let srv = ServerProc::spawn(cmd);
    let c = srv.client();
    let (keys, _) = c.init(1, 1).await;
    c.unseal(&keys).await;
    assert_eq!(mode(&dir), 0o700, "data directory");
    for f in ["vault.db", "vault.db-wal", "vault.db-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert!(srv.terminate().success());
}

fn vaultctl_bin() -> PathBuf {
    let p = server_bin().with_file_name("vaultctl");
    assert!(p.exists(), "{} not found: run `cargo build --workspace --bins` first", p.display());
    p
}

/// `vaultctl` fed from a pipe: one line, no prompt, nothing echoed.
#[tokio::test]
async fn vaultctl_reads_a_piped_share_without_prompting() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(3, 2).await;
    let run = |args: &[&str], token: Option<&str>, stdin: &str| {
        let mut cmd = Command::new(vaultctl_bin());
        cmd.args(args).env("VAULT_ADDR", srv.url()).env_remove("VAULT_TOKEN");
        if let Some(t) = token {
            cmd.env("VAULT_TOKEN", t);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["unseal"], None, &format!("{}\n", keys[0]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("Unseal Progress") && out.contains("1/2"), "{out}");
    assert!(err.is_empty(), "no prompt when stdin is not a terminal: {err:?}");
    assert!(!out.contains(&keys[0]), "the share is not echoed");
    let (ok, out, _) = run(&["unseal"], None, &format!("{}\n", keys[1]));
    assert!(ok && out.contains("Sealed") && out.contains("false"), "{out}");

    // The ceremonies send VAULT_TOKEN: without it the server refuses.
    let (ok, _, err) = run(&["rekey", "init", "--key-shares", "3", "--key-threshold", "2"], None, "");
    assert!(!ok && err.contains("403") && err.contains("permission denied"), "{err}");
    let (ok, out, err) =
        run(&["--format", "json", "rekey", "init", "--key-shares", "3", "--key-threshold", "2"], Some(&root), "");
    assert!(ok, "{err}");
    let nonce = serde_json::from_str::<Value>(&out).unwrap()["nonce"].as_str().unwrap().to_string();
    let (ok, out, err) = run(&["rekey", "update", "--nonce", &nonce], Some(&root), &format!("{}\n", keys[2]));
    assert!(ok && out.contains("1/2") && err.is_empty(), "{out}{err}");
    let (ok, _, err) = run(&["generate-root", "status"], None, "");
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, out, err) = run(&["generate-root", "status"], Some(&root), "");
    assert!(ok && out.contains("Started"), "{out}{err}");
}

/// `vaultctl unseal` at a terminal (a pseudo-terminal made by `script`):
/// the prompt says the share will be hidden, and the share typed after it
/// never comes back on the terminal.
#[tokio::test]
async fn vaultctl_hides_a_share_typed_at_a_terminal() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, _) = c.init(3, 2).await;
    let mut child = Command::new("script")
        .args(["-qefc", &format!("{} unseal", vaultctl_bin().display()), "/dev/null"])
        .env("VAULT_ADDR", srv.url())
        .env_remove("VAULT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs vaultctl on a pseudo-terminal");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("(will be hidden)") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(b) => seen.extend(b),
            Err(_) => {
                let _ = child.kill();
                panic!("no hidden-input prompt on the terminal; got {:?}", String::from_utf8_lossy(&seen));
            }
        }
    }
    // The prompt is written just before echo is turned off: give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{}\n", keys[0]).as_bytes()).unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    while let Ok(b) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.extend(b);
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(status.success(), "{text}");
    assert!(text.contains("Unseal Progress") && text.contains("1/2"), "{text}");
    assert!(!text.contains(&keys[0]), "the share was echoed on the terminal: {text}");
    assert_eq!(c.get("sys/seal-status").await.1["progress"], 1);
}
