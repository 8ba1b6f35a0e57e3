//! The library's logins against the real server: AppRole (values and
//! files, mount override), Kubernetes (service-account token file), JWT,
//! userpass with TOTP, token; each with its failure path. Then the token's
//! life: renewal that really extends it, background keep-alive renewing and
//! logging in again when renewal is impossible (short TTLs), clones seeing
//! the new token. No credential ever appears in an error or `Debug` text.
//!
//! JWTs are signed with the `openssl` CLI (Ed25519, ES256) and TOTP codes
//! computed with Python's standard library, independently of the server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use vault_client::{Client, Error, Login};
use vault_e2e::{Backend, ServerProc, Store};

const K8S_ISS: &str = "https://kubernetes.default.svc.cluster.local";
const JWT_ISS: &str = "https://ci.example.com";
const PASSWORD: &str = "correct-horse-PASSWORD-SECRET";

struct Vault {
    _store: Store,
    srv: ServerProc,
    /// Harness client holding the root token.
    rc: vault_e2e::Client,
}

async fn unsealed() -> Vault {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(1, 1).await;
    c.unseal(&keys).await;
    let rc = c.with_token(&root);
    Vault { _store: store, srv, rc }
}

impl Vault {
    /// A library client without a token (quick retries).
    fn client(&self) -> Client {
        Client::builder(self.srv.url())
            .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .build()
            .unwrap()
    }

    async fn enable(&self, path: &str, kind: &str) {
        let (s, v) = self.rc.post(&format!("sys/auth/{path}"), json!({"type": kind})).await;
        assert_eq!(s, 204, "enable {kind} at {path}: {v}");
    }

    async fn write(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.rc.post(path, body).await;
        assert!(s == 200 || s == 204, "{path}: {s} {v}");
        v
    }

    /// An AppRole role at `mount` with `role` settings: (role_id, secret_id).
    async fn approle(&self, mount: &str, name: &str, role: Value) -> (String, String) {
        self.write(&format!("auth/{mount}/role/{name}"), role).await;
        let (s, v) = self.rc.get(&format!("auth/{mount}/role/{name}/role-id")).await;
        assert_eq!(s, 200, "{v}");
        let role_id = v["data"]["role_id"].as_str().unwrap().to_string();
        let v = self.write(&format!("auth/{mount}/role/{name}/secret-id"), json!({})).await;
        (role_id, v["data"]["secret_id"].as_str().unwrap().to_string())
    }

    /// One more secret ID for role `name` at `mount`.
    async fn secret_id(&self, mount: &str, name: &str) -> String {
        let v = self.write(&format!("auth/{mount}/role/{name}/secret-id"), json!({})).await;
        v["data"]["secret_id"].as_str().unwrap().to_string()
    }
}

/// Everything an error can show: Display, Debug, and its sources.
fn shown(e: &Error) -> String {
    let mut s = format!("{e} {e:?}");
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(" {x} {x:?}"));
        src = x.source();
    }
    s
}

fn assert_hidden(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} shown in: {text}");
    }
}

fn token_of(c: &Client) -> String {
    c.token_secret().expect("a token").to_string()
}

// ---------------------------------------------------------------------------
// AppRole
// ---------------------------------------------------------------------------

#[tokio::test]
async fn approle_login_sets_the_shared_token_and_wrong_secrets_fail_cleanly() {
    let v = unsealed().await;
    v.enable("approle", "approle").await;
    let (role_id, secret_id) = v.approle("approle", "app", json!({"token_policies": ["app"], "token_ttl": 600})).await;

    let client = v.client();
    let watcher = client.clone(); // e.g. a task holding a clone before the login
    let info = client.auth().approle(&role_id, &secret_id).await.unwrap();
    assert_eq!(info.policies, vec!["app", "default"]);
    assert!(info.renewable);
    assert!(info.lease_duration > Duration::from_secs(590) && info.lease_duration <= Duration::from_secs(600));
    assert_eq!(info.metadata.get("role_name").map(String::as_str), Some("app"));
    assert!(info.token().starts_with("hvs."));
    assert_hidden(&format!("{info:?} {info:#?}"), &[info.token(), &secret_id]);
    // The clone made before the login uses the new token.
    assert_eq!(token_of(&watcher), info.token());
    let me = watcher.auth().lookup_self().await.unwrap();
    assert_eq!(me.accessor, info.accessor);
    assert_eq!(me.policies, vec!["app", "default"]);

    // A wrong secret ID: a 400 naming nothing secret; the token is untouched.
    let wrong = "00000000-WRONG-SECRET-ID-0000";
    let e = client.auth().approle(&role_id, wrong).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e:?}");
    assert!(e.to_string().contains("invalid role or secret ID"), "{e}");
    assert_hidden(&shown(&e), &[wrong, &role_id, info.token()]);
    assert_eq!(token_of(&client), info.token());

    // A mount override.
    v.enable("approle-ci", "approle").await;
    let (ci_role, ci_secret) = v.approle("approle-ci", "ci", json!({"token_policies": ["ci"]})).await;
    let e = client.auth().approle(&ci_role, &ci_secret).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "the default mount does not know this role: {e}");
    let ci = client.auth().mount("approle-ci").approle(&ci_role, &ci_secret).await.unwrap();
    assert_eq!(ci.policies, vec!["ci", "default"]);
    let ci_secret2 = v.secret_id("approle-ci", "ci").await;
    let ci2 = client.login(&Login::approle(&ci_role, ci_secret2).with_mount("auth/approle-ci")).await;
    assert_eq!(ci2.unwrap().policies, vec!["ci", "default"]);
    assert_eq!(token_of(&watcher), token_of(&client));
}

#[tokio::test]
async fn approle_from_files_rereads_them_at_each_login() {
    let v = unsealed().await;
    v.enable("approle", "approle").await;
    let (role_id, secret_id) = v.approle("approle", "app", json!({"token_policies": ["app"]})).await;
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = (dir.path().join("role-id"), dir.path().join("secret-id"));
    std::fs::write(&rf, format!("{role_id}\n")).unwrap();
    std::fs::write(&sf, format!("{secret_id}\n")).unwrap();

    let client = v.client();
    let info = client.auth().approle_from_files(&rf, &sf).await.unwrap();
    assert_eq!(info.policies, vec!["app", "default"]);

    // A Login value replays; the secret ID file is read again (rotated by
    // whoever delivers it).
    let login = Login::approle_files(&rf, &sf);
    assert_hidden(&format!("{login:?}"), &[&role_id, &secret_id]);
    let next = v.secret_id("approle", "app").await;
    std::fs::write(&sf, &next).unwrap();
    let again = client.login(&login).await.unwrap();
    assert_ne!(again.accessor, info.accessor);

    // Missing and empty files: errors naming the file, never a value.
    let e = client.auth().approle_from_files(&rf, dir.path().join("nope")).await.unwrap_err();
    assert!(matches!(&e, Error::CredentialFile { what: "AppRole secret ID", .. }), "{e:?}");
    assert!(e.to_string().contains("nope"), "{e}");
    std::fs::write(&sf, "\n").unwrap();
    let e = client.login(&login).await.unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    assert_hidden(&shown(&e), &[&role_id, &next]);
    // The token from the last good login is still there.
    assert_eq!(token_of(&client), again.token());
}

// ---------------------------------------------------------------------------
// JWT and Kubernetes (tokens signed with openssl)
// ---------------------------------------------------------------------------

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).stderr(Stdio::piped()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// An Ed25519 key pair on disk.
struct Key {
    dir: PathBuf,
    private: PathBuf,
    public_pem: String,
}

impl Key {
    fn generate(dir: &Path, name: &str) -> Key {
        let private = dir.join(format!("{name}.pem"));
        let p = private.to_str().unwrap();
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]);
        let public_pem = String::from_utf8(openssl(&["pkey", "-in", p, "-pubout"])).unwrap();
        Key { dir: dir.to_path_buf(), private, public_pem }
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "typ": "JWT"});
        let message = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let file = self.dir.join(format!("msg-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&file, &message).unwrap();
        let sig = openssl(&[
            "pkeyutl",
            "-sign",
            "-rawin",
            "-inkey",
            self.private.to_str().unwrap(),
            "-in",
            file.to_str().unwrap(),
        ]);
        format!("{message}.{}", b64url(&sig))
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn jwt_login_and_a_forged_token() {
    let v = unsealed().await;
    let dir = tempfile::tempdir().unwrap();
    let idp = Key::generate(dir.path(), "idp");
    let forger = Key::generate(dir.path(), "forger");
    v.enable("jwt", "jwt").await;
    v.write("auth/jwt/config", json!({"jwt_validation_pubkeys": [idp.public_pem], "bound_issuer": JWT_ISS})).await;
    v.write(
        "auth/jwt/role/ci",
        json!({"role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub", "token_policies": ["ci"]}),
    )
    .await;
    let t = now();
    let claims = json!({"iss": JWT_ISS, "aud": "vault", "sub": "runner-7", "iat": t, "nbf": t, "exp": t + 600});

    let client = v.client();
    let jwt = idp.sign(&claims);
    let info = client.auth().jwt("ci", &jwt).await.unwrap();
    assert_eq!(info.policies, vec!["ci", "default"]);
    assert_eq!(token_of(&client), info.token());

    let forged = forger.sign(&claims);
    let e = client.auth().jwt("ci", &forged).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e:?}");
    assert_hidden(&shown(&e), &[&forged, &jwt, info.token()]);
    let e = client.auth().jwt("no-such-role", &jwt).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e:?}");

    // From a file, replayed.
    let file = dir.path().join("ci.jwt");
    std::fs::write(&file, format!("{jwt}\n")).unwrap();
    let login = Login::jwt_file("ci", &file);
    assert_hidden(&format!("{login:?}"), &[&jwt]);
    assert_eq!(client.login(&login).await.unwrap().policies, vec!["ci", "default"]);
}

/// A projected service-account token's claims.
fn projected(ns: &str, sa: &str) -> Value {
    let t = now();
    json!({"iss": K8S_ISS, "aud": ["https://kubernetes.default.svc"], "sub": format!("system:serviceaccount:{ns}:{sa}"),
           "iat": t, "nbf": t, "exp": t + 3600,
           "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "5d3f6a2e-0001"}}})
}

#[tokio::test]
async fn kubernetes_login_from_the_service_account_token_file() {
    let v = unsealed().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Key::generate(dir.path(), "sa");
    let other = Key::generate(dir.path(), "other");
    v.enable("kubernetes", "kubernetes").await;
    // Static signing keys: the server verifies tokens locally (no TokenReview).
    v.write(
        "auth/kubernetes/config",
        json!({"kubernetes_host": "https://10.96.0.1:443", "pem_keys": [cluster.public_pem], "issuer": K8S_ISS}),
    )
    .await;
    v.write(
        "auth/kubernetes/role/web",
        json!({"bound_service_account_names": ["web"], "bound_service_account_namespaces": ["apps"],
               "token_policies": ["k8s-web"], "token_ttl": 900}),
    )
    .await;
    let token_file = dir.path().join("token");
    let sa_jwt = cluster.sign(&projected("apps", "web"));
    std::fs::write(&token_file, &sa_jwt).unwrap();

    let client = v.client();
    let info = client.auth().kubernetes_from_file("web", Some(&token_file)).await.unwrap();
    assert_eq!(info.policies, vec!["default", "k8s-web"]);
    assert_eq!(info.lease_duration, Duration::from_secs(900));
    assert_eq!(info.metadata.get("service_account_namespace").map(String::as_str), Some("apps"));
    let me = client.auth().lookup_self().await.unwrap();
    assert_eq!(me.accessor, info.accessor);

    // The token as a value, and the login replayed after the kubelet
    // refreshed the file.
    assert_eq!(client.auth().kubernetes("web", &sa_jwt).await.unwrap().policies, vec!["default", "k8s-web"]);
    let login = Login::kubernetes_file("web", Some(&token_file));
    std::fs::write(&token_file, cluster.sign(&projected("apps", "web"))).unwrap();
    assert!(client.login(&login).await.is_ok());

    // Failures: another cluster's key, a service account the role does not
    // bind, a missing file; the default path (not in a pod here).
    let forged = other.sign(&projected("apps", "web"));
    let e = client.auth().kubernetes("web", &forged).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e:?}");
    assert!(e.to_string().contains("signature"), "{e}");
    assert_hidden(&shown(&e), &[&forged, &sa_jwt]);
    let e = client.auth().kubernetes("web", &cluster.sign(&projected("apps", "admin"))).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e:?}");
    let e = client.auth().kubernetes_from_file("web", Some(&dir.path().join("gone"))).await.unwrap_err();
    assert!(matches!(e, Error::CredentialFile { .. }), "{e:?}");
    if !Path::new(vault_client::auth::DEFAULT_KUBERNETES_TOKEN_PATH).exists() {
        let e = client.auth().kubernetes_from_file("web", None).await.unwrap_err();
        assert!(e.to_string().contains(vault_client::auth::DEFAULT_KUBERNETES_TOKEN_PATH), "{e}");
    }
}

// ---------------------------------------------------------------------------
// Userpass + TOTP, token
// ---------------------------------------------------------------------------

/// The RFC 6238 code (SHA-1, 6 digits, 30 s) for a base32 secret at
/// `offset` steps from now, computed with Python's standard library.
fn totp(secret_b32: &str, offset: i64) -> String {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, struct, sys, time
s = sys.argv[1].upper()
key = base64.b32decode(s + "=" * (-len(s) % 8))
mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30 + int(sys.argv[2])), hashlib.sha1).digest()
o = mac[-1] & 15
print("%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % 1000000))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(secret_b32)
        .arg(offset.to_string())
        .output()
        .expect("python3 is needed to compute TOTP codes");
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn userpass_with_and_without_totp() {
    let v = unsealed().await;
    v.enable("userpass", "userpass").await;
    v.write("auth/userpass/users/alice", json!({"password": PASSWORD, "token_policies": ["dev"]})).await;
    let client = v.client();

    let info = client.auth().userpass("alice", PASSWORD, None).await.unwrap();
    assert_eq!(info.policies, vec!["default", "dev"]);
    let e = client.auth().userpass("alice", "WRONG-PASSWORD-SECRET", None).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("invalid username or password"), "{e}");
    assert_hidden(&shown(&e), &["WRONG-PASSWORD-SECRET", PASSWORD, info.token()]);
    // A "user name" that is not one path segment is refused before sending.
    let e = client.auth().userpass("a/b", PASSWORD, None).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");

    // Enrolled in TOTP: the code is required, a wrong one refused.
    let enrolled = v.write("auth/userpass/users/alice/totp", json!({})).await;
    let secret = enrolled["data"]["secret"].as_str().unwrap().to_string();
    let e = client.auth().userpass("alice", PASSWORD, None).await.unwrap_err();
    assert!(e.to_string().contains("TOTP code required"), "{e}");
    let stale = totp(&secret, -20);
    let e = client.auth().userpass("alice", PASSWORD, Some(&stale)).await.unwrap_err();
    assert!(e.to_string().contains("invalid TOTP code"), "{e}");
    assert_hidden(&shown(&e), &[&stale, PASSWORD]);
    let code = totp(&secret, 0);
    let login = Login::userpass("alice", PASSWORD, Some(&code));
    assert_hidden(&format!("{login:?}"), &[&code, PASSWORD]);
    let info = client.login(&login).await.unwrap();
    assert_eq!(info.metadata.get("username").map(String::as_str), Some("alice"));
    assert_eq!(token_of(&client), info.token());
}

#[tokio::test]
async fn token_login_checks_the_token_first() {
    let v = unsealed().await;
    let t = v.write("auth/token/create", json!({"policies": ["app"], "ttl": "1h"})).await;
    let token = t["auth"]["client_token"].as_str().unwrap().to_string();
    let client = v.client();
    let info = client.auth().token(&token).await.unwrap();
    assert_eq!(info.policies, vec!["app", "default"]);
    assert_eq!(info.accessor, t["auth"]["accessor"].as_str().unwrap());
    assert!(info.renewable && info.lease_duration > Duration::from_secs(3500));
    assert_eq!(token_of(&client), token);

    let bogus = "hvs.NOT-A-REAL-TOKEN-SECRET-123456";
    let e = client.auth().token(bogus).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e:?}");
    assert_hidden(&shown(&e), &[bogus, &token]);
    assert_eq!(token_of(&client), token, "a refused token is not set");

    // revoke-self forgets it.
    client.auth().revoke_self().await.unwrap();
    assert!(!client.has_token());
    assert!(matches!(client.auth().lookup_self().await, Err(Error::Auth(_))));
}

// ---------------------------------------------------------------------------
// Renewal and keep-alive
// ---------------------------------------------------------------------------

/// Wait until the keep-alive status satisfies `ok` (or panic after `limit`).
async fn wait_status(
    ka: &vault_client::KeepAlive,
    limit: Duration,
    what: &str,
    ok: impl Fn(&vault_client::KeepAliveStatus) -> bool,
) -> vault_client::KeepAliveStatus {
    let mut rx = ka.status();
    let r = tokio::time::timeout(limit, rx.wait_for(|s| ok(s))).await;
    match r {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("{what}: not within {limit:?}; status {:?}", *ka.status().borrow()),
    }
}

#[tokio::test]
async fn renewal_extends_the_token_and_keep_alive_keeps_it_valid() {
    let v = unsealed().await;
    let t = v.write("auth/token/create", json!({"policies": ["app"], "ttl": "3s", "explicit_max_ttl": "1h"})).await;
    let token = t["auth"]["client_token"].as_str().unwrap().to_string();
    let client = v.client();
    client.set_token(&token);
    let before = client.auth().lookup_self().await.unwrap();
    assert!(before.ttl <= Duration::from_secs(3));
    let renewed = client.auth().renew_self(Some(Duration::from_secs(120))).await.unwrap();
    assert!(renewed.lease_duration > Duration::from_secs(100), "{renewed:?}");
    assert_eq!(renewed.token(), token);
    assert!(client.auth().lookup_self().await.unwrap().ttl > Duration::from_secs(100));
    // Back to a short TTL (increment 2 s) for the keep-alive.
    let short = client.auth().renew_self(Some(Duration::from_secs(2))).await.unwrap();
    assert!(short.lease_duration <= Duration::from_secs(2));

    // No login to replay: renewal alone keeps the token alive well past
    // its 2 s TTL.
    let ka = client.keep_alive(None);
    let started = Instant::now();
    let s = wait_status(&ka, Duration::from_secs(30), "three renewals", |s| s.renewals >= 3).await;
    assert_eq!(s.logins, 0);
    assert!(started.elapsed() > Duration::from_millis(1500), "renewals come at ~2/3 of the TTL, no faster");
    let me = client.auth().lookup_self().await.unwrap();
    assert_eq!(me.accessor, before.accessor, "the same token, renewed");
    drop(ka);
}

#[tokio::test]
async fn keep_alive_logs_in_again_when_the_max_ttl_is_reached() {
    let v = unsealed().await;
    v.enable("approle", "approle").await;
    // 2 s tokens that can live 5 s at most: renewed once or twice, then a
    // new login is the only way.
    let (role_id, secret_id) =
        v.approle("approle", "short", json!({"token_policies": ["app"], "token_ttl": 2, "token_max_ttl": 5})).await;
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = (dir.path().join("role-id"), dir.path().join("secret-id"));
    std::fs::write(&rf, &role_id).unwrap();
    std::fs::write(&sf, &secret_id).unwrap();

    let client = v.client();
    let reader = client.clone();
    let login = Login::approle_files(&rf, &sf);
    let first = client.login(&login).await.unwrap();
    let ka = client.keep_alive(Some(login));
    let s =
        wait_status(&ka, Duration::from_secs(40), "a renewal then two re-logins", |s| s.renewals >= 1 && s.logins >= 2)
            .await;
    assert!(s.last_error.is_none(), "{s:?}");
    // The clone follows the new token, which works.
    let now_token = token_of(&reader);
    assert_ne!(now_token, first.token());
    assert_ne!(reader.auth().lookup_self().await.unwrap().accessor, first.accessor);
    // The first token ran out (max TTL 5 s), it was not kept alive somehow.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old = v.client().with_token(first.token());
    let e = old.auth().lookup_self().await.unwrap_err();
    assert!(e.is_permission_denied(), "{e:?}");
    // Nothing secret in the status either.
    assert_hidden(&format!("{s:?} {ka:?}"), &[&secret_id, &role_id, &now_token]);
}

#[tokio::test]
async fn keep_alive_logs_in_when_the_token_is_not_renewable_or_already_expired() {
    let v = unsealed().await;
    v.enable("approle", "approle").await;
    let (role_id, secret_id) = v.approle("approle", "app", json!({"token_policies": ["app"]})).await;
    let login = Login::approle(&role_id, &secret_id);

    // A token that cannot be renewed, living 2 s.
    let t = v.write("auth/token/create", json!({"policies": ["app"], "ttl": "2s", "renewable": false})).await;
    let token = t["auth"]["client_token"].as_str().unwrap().to_string();
    let client = v.client();
    client.set_token(&token);
    let ka = client.keep_alive(Some(login.clone()));
    let s = wait_status(&ka, Duration::from_secs(20), "a re-login", |s| s.logins >= 1).await;
    assert_eq!(s.renewals, 0);
    assert_ne!(token_of(&client), token);
    assert_eq!(client.auth().lookup_self().await.unwrap().policies, vec!["app", "default"]);
    drop(ka);

    // An expired (here: revoked) token at the start: logged in at once.
    let t = v.write("auth/token/create", json!({"policies": ["app"]})).await;
    let dead = t["auth"]["client_token"].as_str().unwrap().to_string();
    v.write("auth/token/revoke", json!({"token": dead})).await;
    client.set_token(&dead);
    let ka = client.keep_alive(Some(login));
    wait_status(&ka, Duration::from_secs(20), "a login", |s| s.logins >= 1).await;
    assert!(client.auth().lookup_self().await.is_ok());
    drop(ka);

    // No login to replay and a dead token: reported, without secrets.
    client.set_token(&dead);
    let ka = client.keep_alive(None);
    let s = wait_status(&ka, Duration::from_secs(20), "an error", |s| s.last_error.is_some()).await;
    let e = s.last_error.unwrap();
    assert!(matches!(*e, Error::Auth(_)), "{e:?}");
    assert_hidden(&shown(&e), &[&dead, &secret_id]);
}

#[tokio::test]
async fn keep_alive_follows_a_token_replaced_elsewhere() {
    let v = unsealed().await;
    let long = v.write("auth/token/create", json!({"policies": ["app"], "ttl": "1h"})).await;
    let client = v.client();
    client.set_token(long["auth"]["client_token"].as_str().unwrap());
    let ka = client.keep_alive(None);
    wait_status(&ka, Duration::from_secs(10), "the first lookup", |s| s.ttl.is_some()).await;
    // Another task logs in with a 2 s token: the keep-alive, asleep for the
    // 1 h token's 40 minutes, notices and renews the new one in time.
    let short = v.write("auth/token/create", json!({"policies": ["app"], "ttl": "3s", "explicit_max_ttl": "1h"})).await;
    let other = client.clone();
    other.set_token(short["auth"]["client_token"].as_str().unwrap());
    wait_status(&ka, Duration::from_secs(15), "renewals of the new token", |s| s.renewals >= 2).await;
    let me = client.auth().lookup_self().await.unwrap();
    assert_eq!(me.accessor, short["auth"]["accessor"].as_str().unwrap());
}
