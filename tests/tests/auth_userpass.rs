//! The userpass auth method end to end: users with Vault's paths and shapes,
//! login minting a working token, one error for a wrong password and an
//! unknown user, lockout, TOTP enrollment with replay protection and one-time
//! backup codes, and no password, TOTP secret or backup code at rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store, contains};

const PASSWORD: &str = "correct-Horse-battery-9f3e1";
const NEW_PASSWORD: &str = "second-Staple-7a61c0";
const INVALID: &str = "invalid username or password";

async fn unsealed(backend: Backend) -> (Store, ServerProc, Client, String) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(1, 1).await;
    c.unseal(&keys).await;
    (store, srv, c, root)
}

/// Enable userpass, a kv mount with one secret, and policy `p` (read kv/*).
async fn setup(rc: &Client) {
    let (s, v) = rc.post("sys/auth/userpass", json!({"type": "userpass"})).await;
    assert_eq!(s, 204, "enable userpass: {v}");
    let (s, v) = rc.put("sys/policies/acl/p", json!({"policy": "path \"kv/*\" { capabilities = [\"read\"] }"})).await;
    assert_eq!(s, 204, "policy: {v}");
    assert_eq!(rc.post("sys/mounts/kv", json!({"type": "kv"})).await.0, 204);
    assert_eq!(rc.put("kv/app", json!({"v": "42"})).await.0, 204);
}

fn token_of(v: &Value) -> String {
    v["auth"]["client_token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_string()
}

fn error_of(v: &Value) -> String {
    v["errors"][0].as_str().unwrap_or_default().to_string()
}

async fn login(c: &Client, user: &str, body: Value) -> (u16, Value) {
    c.post(&format!("auth/userpass/login/{user}"), body).await
}

/// The current RFC 6238 code (SHA-1, 6 digits, 30 s) for a base32 secret,
/// computed independently of the server with Python's standard library.
fn totp_now(secret_b32: &str) -> String {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, struct, sys, time
s = sys.argv[1].upper()
key = base64.b32decode(s + "=" * (-len(s) % 8))
mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
o = mac[-1] & 15
print("%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % 1000000))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(secret_b32)
        .output()
        .expect("python3 is needed to compute TOTP codes");
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    let code = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(code.len(), 6, "{code}");
    code
}

/// RFC 4648 base32 decoding (no padding), to look for the raw secret at rest.
fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buf, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase()).unwrap() as u64;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn userpass_sqlite() {
    let (store, _srv, c, root) = unsealed(Backend::Sqlite).await;
    let rc = c.with_token(&root);
    setup(&rc).await;

    // Create users (with token settings; `policies` is the legacy alias).
    let (s, v) = rc
        .post("auth/userpass/users/alice", json!({"password": PASSWORD, "token_policies": ["p"], "token_ttl": "1h"}))
        .await;
    assert_eq!(s, 204, "create: {v}");
    let (s, v) = rc.post("auth/userpass/users/locked", json!({"password": PASSWORD, "policies": "p"})).await;
    assert_eq!(s, 204, "create: {v}");
    let (s, v) = rc.post("auth/userpass/users/bad@name", json!({"password": PASSWORD})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = rc.post("auth/userpass/users/nopass", json!({"token_policies": "p"})).await;
    assert_eq!(s, 400, "a new user needs a password: {v}");

    // Read: settings, never the password or its hash.
    let (s, v) = rc.get("auth/userpass/users/alice").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["token_policies"], json!(["p"]));
    assert_eq!(v["data"]["token_ttl"], 3600);
    assert_eq!(v["data"]["totp_enabled"], false);
    assert!(v["data"].get("password").is_none() && v["data"].get("password_hash").is_none(), "{v}");
    assert!(!v.to_string().contains("argon2"), "{v}");
    assert_eq!(rc.get("auth/userpass/users/nobody").await.0, 404);
    assert_eq!(c.get("auth/userpass/users/alice").await.0, 403, "management needs a token");

    // List.
    let (s, v) = rc.list("auth/userpass/users").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["keys"], json!(["alice", "locked"]));

    // Login: a working token with the user's policies; user names are case-insensitive.
    let (s, v) = login(&c, "Alice", json!({"password": PASSWORD})).await;
    assert_eq!(s, 200, "login: {v}");
    assert_eq!(v["auth"]["policies"], json!(["default", "p"]));
    assert_eq!(v["auth"]["metadata"]["username"], "alice");
    assert_eq!(v["auth"]["lease_duration"], 3600);
    assert_eq!(v["auth"]["renewable"], true);
    let uc = c.with_token(&token_of(&v));
    let (s, v) = uc.get("kv/app").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["v"], "42");
    assert_eq!(uc.put("kv/app", json!({"v": "no"})).await.0, 403);
    let (_, v) = uc.get("auth/token/lookup-self").await;
    assert_eq!(v["data"]["display_name"], "userpass-alice", "{v}");

    // Wrong password and unknown user: the same 400, and comparable time (the
    // unknown user still costs an Argon2 verification).
    let t = Instant::now();
    let (s, wrong) = login(&c, "alice", json!({"password": "wrong"})).await;
    let wrong_time = t.elapsed();
    assert_eq!(s, 400, "{wrong}");
    let t = Instant::now();
    let (s, unknown) = login(&c, "nobody", json!({"password": "wrong"})).await;
    let unknown_time = t.elapsed();
    assert_eq!(s, 400, "{unknown}");
    assert_eq!(error_of(&wrong), INVALID);
    assert_eq!(error_of(&unknown), INVALID);
    assert!(unknown_time * 3 > wrong_time, "unknown user answered too fast: {unknown_time:?} vs {wrong_time:?}");
    assert_eq!(login(&c, "alice", json!({})).await.0, 400, "missing password");

    // Lockout: after 5 failures even the right password gets a 429.
    for i in 0..5 {
        let (s, v) = login(&c, "locked", json!({"password": format!("guess-{i}")})).await;
        assert_eq!(s, 400, "attempt {i}: {v}");
    }
    let (s, v) = login(&c, "locked", json!({"password": PASSWORD})).await;
    assert_eq!(s, 429, "locked out: {v}");
    assert!(error_of(&v).contains("locked out"), "{v}");

    // TOTP enrollment (an authenticated path).
    assert_eq!(c.post("auth/userpass/users/alice/totp", json!({})).await.0, 403);
    let (s, v) = rc.post("auth/userpass/users/alice/totp", json!({})).await;
    assert_eq!(s, 200, "enroll: {v}");
    let secret = v["data"]["secret"].as_str().unwrap().to_string();
    let url = v["data"]["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/vault:alice?"), "{url}");
    assert!(url.contains(&format!("secret={secret}")) && url.contains("issuer=vault"), "{url}");
    let backup: Vec<String> =
        v["data"]["backup_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(backup.len(), 10);
    let mut unique = backup.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10);
    assert_eq!(rc.get("auth/userpass/users/alice").await.1["data"]["totp_enabled"], true);

    // Without a code; with a wrong code; with the right one; the same one again.
    let (s, v) = login(&c, "alice", json!({"password": PASSWORD})).await;
    assert_eq!((s, error_of(&v).as_str()), (400, "TOTP code required"), "{v}");
    let code = totp_now(&secret);
    let wrong_code = format!("{:06}", (code.parse::<u32>().unwrap() + 500_000) % 1_000_000);
    let (s, v) = login(&c, "alice", json!({"password": PASSWORD, "totp": wrong_code})).await;
    assert_eq!(s, 400, "wrong code: {v}");
    let (s, v) = login(&c, "alice", json!({"password": PASSWORD, "totp": code})).await;
    assert_eq!(s, 200, "right code: {v}");
    assert_eq!(c.with_token(&token_of(&v)).get("kv/app").await.0, 200);
    let (s, v) = login(&c, "alice", json!({"password": PASSWORD, "totp": code})).await;
    assert_eq!(s, 400, "a TOTP code works once: {v}");

    // Backup codes: each works once.
    let (s, v) = login(&c, "alice", json!({"password": PASSWORD, "backup_code": backup[0]})).await;
    assert_eq!(s, 200, "backup code: {v}");
    let (s, v) = login(&c, "alice", json!({"password": PASSWORD, "backup_code": backup[0]})).await;
    assert_eq!(s, 400, "a backup code works once: {v}");
    let (s, v) = rc.get("auth/userpass/users/alice/totp").await;
    assert_eq!((s, v["data"]["backup_codes_remaining"].as_u64()), (200, Some(9)), "{v}");

    // Password change.
    let (s, v) = rc.post("auth/userpass/users/alice/password", json!({"password": NEW_PASSWORD})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = login(&c, "alice", json!({"password": PASSWORD, "backup_code": backup[1]})).await;
    assert_eq!((s, error_of(&v).as_str()), (400, INVALID), "old password: {v}");
    let (s, v) = login(&c, "alice", json!({"password": NEW_PASSWORD, "backup_code": backup[1]})).await;
    assert_eq!(s, 200, "new password: {v}");
    assert_eq!(rc.post("auth/userpass/users/ghost/password", json!({"password": "x"})).await.0, 400);

    // Policies endpoint.
    let (s, v) = rc.post("auth/userpass/users/alice/policies", json!({"token_policies": "p,extra"})).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rc.get("auth/userpass/users/alice").await.1["data"]["token_policies"], json!(["extra", "p"]));

    // Unenroll: the password alone works again.
    assert_eq!(rc.delete("auth/userpass/users/alice/totp").await.0, 204);
    let (s, v) = login(&c, "alice", json!({"password": NEW_PASSWORD})).await;
    assert_eq!(s, 200, "after unenroll: {v}");
    assert_eq!(v["auth"]["policies"], json!(["default", "extra", "p"]));

    // Nothing secret at rest: not the passwords, the TOTP secret (base32 or
    // raw) or any backup code.
    let raw = store.raw_bytes();
    assert!(!contains(&raw, PASSWORD.as_bytes()), "the password was found in storage");
    assert!(!contains(&raw, NEW_PASSWORD.as_bytes()), "the new password was found in storage");
    assert!(!contains(&raw, secret.as_bytes()), "the TOTP secret was found in storage");
    assert!(!contains(&raw, &base32_decode(&secret)), "the raw TOTP secret was found in storage");
    for code in &backup {
        assert!(!contains(&raw, code.as_bytes()), "a backup code was found in storage");
        assert!(!contains(&raw, code.replace('-', "").as_bytes()), "a backup code was found in storage");
    }

    // Delete.
    assert_eq!(rc.delete("auth/userpass/users/alice").await.0, 204);
    assert_eq!(rc.get("auth/userpass/users/alice").await.0, 404);
    let (s, v) = login(&c, "alice", json!({"password": NEW_PASSWORD})).await;
    assert_eq!((s, error_of(&v).as_str()), (400, INVALID), "{v}");
    let (_, v) = rc.list("auth/userpass/users").await;
    assert_eq!(v["data"]["keys"], json!(["locked"]));
}

#[tokio::test]
async fn userpass_postgres_login() {
    let (store, _srv, c, root) = unsealed(Backend::Postgres).await;
    let rc = c.with_token(&root);
    setup(&rc).await;
    let (s, v) = rc.post("auth/userpass/users/bob", json!({"password": PASSWORD, "token_policies": "p"})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = login(&c, "bob", json!({"password": PASSWORD})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.with_token(&token_of(&v)).get("kv/app").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["v"], "42");
    assert_eq!(login(&c, "bob", json!({"password": "wrong"})).await.0, 400);
    assert!(!contains(&store.raw_bytes(), PASSWORD.as_bytes()), "the password was found in storage");
}

/// The accessor of the `userpass/` mount.
async fn userpass_accessor(rc: &Client) -> String {
    let (s, v) = rc.get("sys/auth").await;
    assert_eq!(s, 200, "{v}");
    v["data"]["userpass/"]["accessor"].as_str().unwrap_or_else(|| panic!("no accessor in {v}")).to_string()
}

/// A token that may only list and unlock locked users.
async fn unlocker(c: &Client, rc: &Client) -> Client {
    let policy = "path \"sys/locked-users\" { capabilities = [\"read\", \"list\"] }\n\
                  path \"sys/locked-users/+/unlock/*\" { capabilities = [\"update\"] }";
    assert_eq!(rc.put("sys/policies/acl/unlocker", json!({"policy": policy})).await.0, 204);
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["unlocker"]})).await;
    assert_eq!(s, 200, "{v}");
    c.with_token(&token_of(&v))
}

/// Poll `f` (up to 10 s) until it returns true.
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    for _ in 0..200 {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// `sys/locked-users` lists a locked user in Vault's shape and unlocks it,
/// with a policy on those paths (and only with one).
async fn locked_users_api(backend: Backend) {
    let (_store, _srv, c, root) = unsealed(backend).await;
    let rc = c.with_token(&root);
    setup(&rc).await;
    assert_eq!(rc.post("auth/userpass/users/erin", json!({"password": PASSWORD})).await.0, 204);
    let accessor = userpass_accessor(&rc).await;
    let admin = unlocker(&c, &rc).await;
    let (s, v) = admin.get("sys/locked-users").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"], json!({"by_namespace": [], "total": 0}));

    for i in 0..5 {
        assert_eq!(login(&c, "erin", json!({"password": format!("guess-{i}")})).await.0, 400);
    }
    assert_eq!(login(&c, "Erin", json!({"password": PASSWORD})).await.0, 429);
    for reply in [admin.get("sys/locked-users").await, admin.list("sys/locked-users").await] {
        let (s, v) = reply;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["data"],
            json!({"by_namespace": [{"namespace_id": "root", "namespace_path": "", "counts": 1,
                   "mount_accessors": [{"mount_accessor": accessor, "counts": 1, "alias_identifiers": ["erin"]}]}],
                   "total": 1})
        );
    }
    let (s, v) = admin.get(&format!("sys/locked-users?mount_accessor={accessor}")).await;
    assert_eq!((s, v["data"]["total"].as_u64()), (200, Some(1)), "{v}");

    // Without a policy on the path: 403; unknown routes under it: 404/405.
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["p"]})).await;
    assert_eq!(s, 200, "{v}");
    let nobody = c.with_token(&token_of(&v));
    assert_eq!(nobody.get("sys/locked-users").await.0, 403);
    assert_eq!(nobody.post(&format!("sys/locked-users/{accessor}/unlock/erin"), json!({})).await.0, 403);
    assert_eq!(login(&c, "erin", json!({"password": PASSWORD})).await.0, 429, "still locked");

    // Unlock (names are case-insensitive for userpass, as at login); idempotent.
    let (s, v) = admin.post(&format!("sys/locked-users/{accessor}/unlock/ERIN"), json!({})).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(admin.post(&format!("sys/locked-users/{accessor}/unlock/erin"), json!({})).await.0, 204);
    assert_eq!(admin.get("sys/locked-users").await.1["data"]["total"], 0);
    let (s, v) = login(&c, "erin", json!({"password": PASSWORD})).await;
    assert_eq!(s, 200, "unlocked: {v}");
}

#[tokio::test]
async fn locked_users_api_sqlite() {
    locked_users_api(Backend::Sqlite).await;
}

#[tokio::test]
async fn locked_users_api_postgres() {
    locked_users_api(Backend::Postgres).await;
}

/// Two servers on one PostgreSQL database share the lockout: a user locked
/// through one is refused by the other, and an unlock through the API on the
/// other lets the user in on the first again.
#[tokio::test]
async fn lockout_is_shared_by_servers() {
    let store = Store::new(Backend::Postgres);
    let a = ServerProc::start(&store, &[]);
    let b = ServerProc::start(&store, &[]);
    let (keys, root) = a.client().init(1, 1).await;
    a.client().unseal(&keys).await;
    b.client().unseal(&keys).await;
    let (ca, cb) = (a.client(), b.client());
    let ra = ca.with_token(&root);
    setup(&ra).await;
    assert_eq!(ra.post("auth/userpass/users/frank", json!({"password": PASSWORD})).await.0, 204);
    let accessor = userpass_accessor(&ra).await;
    // B knows the user (and has the mount) before the lockout begins.
    assert!(
        eventually(|| async { login(&cb, "frank", json!({"password": PASSWORD})).await.0 == 200 }).await,
        "B never accepted the user"
    );

    for i in 0..5 {
        assert_eq!(login(&ca, "frank", json!({"password": format!("guess-{i}")})).await.0, 400);
    }
    assert_eq!(login(&ca, "frank", json!({"password": PASSWORD})).await.0, 429);
    // B sees the lock (polled through the listing, which counts nothing:
    // the change feed is asynchronous, and a login attempt on B would count
    // a failure there or, with the right password, clear the lock)...
    let admin_b = unlocker(&cb, &cb.with_token(&root)).await;
    assert!(
        eventually(|| async {
            let (_, v) = admin_b.get("sys/locked-users").await;
            v["data"]["by_namespace"][0]["mount_accessors"][0]["alias_identifiers"] == json!(["frank"])
        })
        .await,
        "B's sys/locked-users never listed the user locked on A"
    );
    // ...and refuses the right password at its first attempt.
    let (s, v) = login(&cb, "frank", json!({"password": PASSWORD})).await;
    assert_eq!(s, 429, "{v}");
    assert!(error_of(&v).contains("locked out"), "{v}");

    // Unlock on B through the API; A lets the user in again.
    assert_eq!(admin_b.post(&format!("sys/locked-users/{accessor}/unlock/frank"), json!({})).await.0, 204);
    assert!(
        eventually(|| async { login(&ca, "frank", json!({"password": PASSWORD})).await.0 == 200 }).await,
        "A kept refusing a user unlocked on B"
    );
}
