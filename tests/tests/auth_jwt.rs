//! The JWT/OIDC and Kubernetes auth methods end to end: configuration with
//! static PEM keys, a JWKS URL and OIDC discovery (served by a local
//! `python3 -m http.server`), roles with audience and claim bindings, logins
//! minting working tokens, every rejection as a clear 400 (audience, issuer,
//! expiry, not-before, signature, `alg: none`, bound claims, unknown role),
//! no lockout of a role by forged tokens but a 429 per client address, and
//! Kubernetes service-account tokens (a 502 when TokenReview is unreachable).
//!
//! Keys are generated and tokens signed with the `openssl` CLI (Ed25519 with
//! `pkeyutl -rawin`, ES256 with `dgst -sha256` and the DER signature turned
//! into raw r||s), since this crate has no JWT library.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store, contains};

const ISS: &str = "https://idp.example.com";
const K8S_ISS: &str = "https://kubernetes.default.svc.cluster.local";

async fn unsealed() -> (Store, ServerProc, Client, String) {
    unsealed_on(Backend::Sqlite).await
}

async fn unsealed_on(backend: Backend) -> (Store, ServerProc, Client, String) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(1, 1).await;
    c.unseal(&keys).await;
    (store, srv, c, root)
}

fn token_of(v: &Value) -> String {
    v["auth"]["client_token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_string()
}

fn error_of(v: &Value) -> String {
    v["errors"][0].as_str().unwrap_or_default().to_string()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

// ---------------------------------------------------------------------------
// base64url and openssl
// ---------------------------------------------------------------------------

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64json(v: &Value) -> String {
    b64url(v.to_string().as_bytes())
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).stderr(Stdio::piped()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// An ECDSA DER signature (SEQUENCE of two INTEGERs) as raw r||s.
fn der_to_raw(der: &[u8], width: usize) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "DER sequence");
    let mut i = if der[1] & 0x80 != 0 { 2 + usize::from(der[1] & 0x7f) } else { 2 };
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "DER integer");
        let len = usize::from(der[i + 1]);
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.iter().take_while(|b| **b == 0).count()..];
        out.extend(std::iter::repeat_n(0u8, width - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A key pair on disk, for signing tokens.
struct Key {
    dir: PathBuf,
    private: PathBuf,
    /// The public key, PEM (what Vault is configured with).
    public_pem: String,
    /// The public key, DER SubjectPublicKeyInfo (the raw key is its tail).
    public_der: Vec<u8>,
    alg: &'static str,
}

impl Key {
    fn generate(dir: &Path, name: &str, alg: &'static str) -> Key {
        let private = dir.join(format!("{name}.pem"));
        let p = private.to_str().unwrap();
        match alg {
            "EdDSA" => openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]),
            "ES256" => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p]),
            other => panic!("unsupported {other}"),
        };
        let public_pem = String::from_utf8(openssl(&["pkey", "-in", p, "-pubout"])).unwrap();
        let public_der = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
        Key { dir: dir.to_path_buf(), private, public_pem, public_der, alg }
    }

    /// A signed token with `claims`.
    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": self.alg, "typ": "JWT"});
        if let Some(k) = kid {
            header["kid"] = json!(k);
        }
        let message = format!("{}.{}", b64json(&header), b64json(claims));
        let file = self.dir.join(format!("msg-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&file, &message).unwrap();
        let (key, msg) = (self.private.to_str().unwrap(), file.to_str().unwrap());
        let sig = match self.alg {
            "EdDSA" => openssl(&["pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", msg]),
            _ => der_to_raw(&openssl(&["dgst", "-sha256", "-sign", key, msg]), 32),
        };
        format!("{message}.{}", b64url(&sig))
    }

    /// The public key as a JWK.
    fn jwk(&self, kid: &str) -> Value {
        let der = &self.public_der;
        match self.alg {
            "EdDSA" => {
                json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid, "x": b64url(&der[der.len() - 32..])})
            }
            _ => {
                let xy = &der[der.len() - 64..];
                json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                       "x": b64url(&xy[..32]), "y": b64url(&xy[32..])})
            }
        }
    }
}

/// Standard claims for the JWT tests, with `extra` merged (null removes).
fn claims(extra: Value) -> Value {
    let t = now();
    let mut c = json!({"iss": ISS, "aud": "vault", "sub": "user-1", "email": "alice@example.com",
                       "groups": ["admins", "dev"], "org": {"team": "core"}, "iat": t, "exp": t + 600});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// `python3 -m http.server` on a free loopback port, killed on drop.
struct StaticServer {
    child: Child,
    port: u16,
}

impl StaticServer {
    fn start(dir: &Path) -> StaticServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "python3 http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        StaticServer { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// JWT with static keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn jwt_static_keys_login_and_rejections() {
    let (_store, srv, c, root) = unsealed().await;
    let rc = c.with_token(&root);
    let dir = tempfile::tempdir().unwrap();
    let ed = Key::generate(dir.path(), "ed", "EdDSA");
    let ec = Key::generate(dir.path(), "ec", "ES256");
    let stranger = Key::generate(dir.path(), "stranger", "EdDSA");

    let (s, v) = rc.post("sys/auth/jwt", json!({"type": "jwt"})).await;
    assert_eq!(s, 204, "enable jwt: {v}");
    let (s, v) =
        rc.put("sys/policies/acl/jwt-app", json!({"policy": "path \"kv/*\" { capabilities = [\"read\"] }"})).await;
    assert_eq!(s, 204, "policy: {v}");
    assert_eq!(rc.post("sys/mounts/kv", json!({"type": "kv"})).await.0, 204);
    assert_eq!(rc.put("kv/app", json!({"v": "42"})).await.0, 204);

    // Configuration: exactly one key source; never HMAC.
    let (s, v) = rc.post("auth/jwt/config", json!({"bound_issuer": ISS})).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("exactly one of"), "{v}");
    let (s, v) = rc
        .post("auth/jwt/config", json!({"jwt_validation_pubkeys": [ed.public_pem], "jwt_supported_algs": ["HS256"]}))
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = rc
        .post("auth/jwt/config", json!({"jwt_validation_pubkeys": [ed.public_pem, ec.public_pem], "bound_issuer": ISS}))
        .await;
    assert_eq!(s, 204, "config: {v}");
    let (s, v) = rc.get("auth/jwt/config").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["bound_issuer"], ISS);
    assert_eq!(v["data"]["jwt_validation_pubkeys"].as_array().unwrap().len(), 2);

    // Roles.
    let (s, v) = rc.post("auth/jwt/role/web", json!({"role_type": "oidc", "bound_audiences": ["vault"]})).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("not supported"), "{v}");
    let role = json!({"role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "email",
                      "bound_claims": {"/groups": "admins", "org.team": ["core", "platform"]},
                      "claim_mappings": {"sub": "subject"}, "token_policies": ["jwt-app"], "token_ttl": "1h"});
    let (s, v) = rc.post("auth/jwt/role/app", role.clone()).await;
    assert_eq!(s, 204, "role: {v}");
    assert_eq!(rc.post("auth/jwt/role/locked", role).await.0, 204);
    let (s, v) = rc.get("auth/jwt/role/app").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["bound_audiences"], json!(["vault"]));
    assert_eq!(v["data"]["user_claim"], "email");
    assert_eq!(v["data"]["token_ttl"], 3600);
    let (s, v) = rc.list("auth/jwt/role").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["keys"], json!(["app", "locked"]));

    // Login (no token needed) mints a working token.
    let good = ed.sign(None, &claims(json!({})));
    let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": good})).await;
    assert_eq!(s, 200, "login: {v}");
    assert_eq!(v["auth"]["policies"], json!(["default", "jwt-app"]));
    assert_eq!(v["auth"]["lease_duration"], 3600);
    assert_eq!(v["auth"]["metadata"], json!({"role": "app", "subject": "user-1"}));
    let tc = c.with_token(&token_of(&v));
    let (s, v) = tc.get("auth/token/lookup-self").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["policies"], json!(["default", "jwt-app"]));
    assert_eq!(v["data"]["display_name"], "jwt-alice@example.com");
    assert_eq!(v["data"]["meta"]["role"], "app");
    assert_eq!(tc.get("kv/app").await.1["data"]["v"], "42");
    assert_eq!(tc.put("kv/app", json!({"v": "x"})).await.0, 403);
    // ES256 works as well.
    let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": ec.sign(None, &claims(json!({})))})).await;
    assert_eq!(s, 200, "ES256 login: {v}");

    // Rejections: each a 400 naming the failed check. A good login after
    // each keeps the role's failure counter below the lockout threshold.
    let t = now();
    let unsigned = format!("{}.{}.", b64json(&json!({"alg": "none", "typ": "JWT"})), b64json(&claims(json!({}))));
    let cases = [
        (ed.sign(None, &claims(json!({"aud": "someone-else"}))), "invalid audience"),
        (ed.sign(None, &claims(json!({"iss": "https://evil.example.com"}))), "invalid issuer"),
        (ed.sign(None, &claims(json!({"exp": t - 3600, "iat": t - 7200}))), "token is expired"),
        (ed.sign(None, &claims(json!({"nbf": t + 3600}))), "not yet valid"),
        (stranger.sign(None, &claims(json!({}))), "signature verification failed"),
        (unsigned, "unsigned tokens"),
        (ed.sign(None, &claims(json!({"groups": ["dev"]}))), "does not match any associated bound claim values"),
        (ed.sign(None, &claims(json!({"org": null}))), "claim \"org.team\" is missing"),
    ];
    for (jwt, want) in cases {
        let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": jwt})).await;
        assert_eq!(s, 400, "want {want:?}: {v}");
        assert!(error_of(&v).contains(want), "want {want:?}: {v}");
        let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": good})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = c.post("auth/jwt/login", json!({"role": "ghost", "jwt": good})).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("could not be found"), "{v}");
    let (s, v) = c.post("auth/jwt/login", json!({"role": "app"})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(error_of(&v), "missing jwt");

    // No lockout by role: forged tokens (past Vault's user-lockout threshold
    // of 5) do not lock the role's real workloads out.
    let forged = stranger.sign(None, &claims(json!({})));
    for _ in 0..6 {
        assert_eq!(c.post("auth/jwt/login", json!({"role": "locked", "jwt": forged})).await.0, 400);
    }
    let (s, v) = c.post("auth/jwt/login", json!({"role": "locked", "jwt": good})).await;
    assert_eq!(s, 200, "a role was locked out by forged tokens: {v}");
    assert_eq!(c.post("auth/jwt/login", json!({"role": "app", "jwt": good})).await.0, 200);

    // Role deletion.
    assert_eq!(rc.delete("auth/jwt/role/app").await.0, 204);
    assert_eq!(rc.get("auth/jwt/role/app").await.0, 404);
    assert_eq!(c.post("auth/jwt/login", json!({"role": "app", "jwt": good})).await.0, 400);

    // Tokens never reach the log.
    let logs = srv.log_text();
    assert!(!logs.contains(&good) && !logs.contains(good.split('.').nth(2).unwrap()), "a JWT was logged");
}

// ---------------------------------------------------------------------------
// JWKS URL and OIDC discovery
// ---------------------------------------------------------------------------

#[tokio::test]
async fn jwt_jwks_url_and_oidc_discovery() {
    let (_store, _srv, c, root) = unsealed().await;
    let rc = c.with_token(&root);
    let keys = tempfile::tempdir().unwrap();
    let site = tempfile::tempdir().unwrap();
    let k1 = Key::generate(keys.path(), "k1", "EdDSA");
    let k2 = Key::generate(keys.path(), "k2", "ES256");
    std::fs::write(site.path().join("jwks.json"), json!({"keys": [k1.jwk("k1")]}).to_string()).unwrap();
    let http = StaticServer::start(site.path());

    let (s, v) = rc.post("sys/auth/jwt", json!({"type": "jwt"})).await;
    assert_eq!(s, 204, "enable jwt: {v}");
    let (s, v) = rc.post("auth/jwt/config", json!({"jwks_url": http.url("missing.json")})).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("error checking JWKS URL"), "{v}");
    let (s, v) = rc.post("auth/jwt/config", json!({"jwks_url": http.url("jwks.json"), "bound_issuer": ISS})).await;
    assert_eq!(s, 204, "config: {v}");
    let (s, v) = rc.post("auth/jwt/role/app", json!({"bound_audiences": "vault", "token_policies": "p"})).await;
    assert_eq!(s, 204, "role: {v}");

    let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": k1.sign(Some("k1"), &claims(json!({})))})).await;
    assert_eq!(s, 200, "login with k1: {v}");
    assert_eq!(v["auth"]["policies"], json!(["default", "p"]));

    // Key rotation: the issuer publishes k2; a token naming k2 makes Vault refetch.
    std::fs::write(site.path().join("jwks.json"), json!({"keys": [k1.jwk("k1"), k2.jwk("k2")]}).to_string()).unwrap();
    let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": k2.sign(Some("k2"), &claims(json!({})))})).await;
    assert_eq!(s, 200, "login with k2 after rotation: {v}");
    // An unknown kid, or a kid naming another key, is refused.
    let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": k1.sign(Some("k3"), &claims(json!({})))})).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("key id"), "{v}");
    let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": k1.sign(Some("k2"), &claims(json!({})))})).await;
    assert_eq!(s, 400, "{v}");

    // OIDC discovery on a second mount: the discovery document names the JWKS
    // and the issuer tokens must carry.
    let issuer = http.url("idp");
    std::fs::create_dir_all(site.path().join("idp/.well-known")).unwrap();
    std::fs::write(
        site.path().join("idp/.well-known/openid-configuration"),
        json!({"issuer": issuer, "jwks_uri": http.url("jwks.json")}).to_string(),
    )
    .unwrap();
    assert_eq!(rc.post("sys/auth/oidc", json!({"type": "oidc"})).await.0, 204);
    let (s, v) = rc.post("auth/oidc/config", json!({"oidc_discovery_url": issuer, "default_role": "app"})).await;
    assert_eq!(s, 204, "discovery config: {v}");
    let (s, v) = rc.post("auth/oidc/role/app", json!({"bound_audiences": "vault", "user_claim": "sub"})).await;
    assert_eq!(s, 204, "{v}");
    // The default role applies when the login names none.
    let tok = k1.sign(Some("k1"), &claims(json!({"iss": issuer})));
    let (s, v) = c.post("auth/oidc/login", json!({"jwt": tok})).await;
    assert_eq!(s, 200, "discovery login: {v}");
    let (_, v) = c.with_token(&token_of(&v)).get("auth/token/lookup-self").await;
    assert_eq!(v["data"]["display_name"], "oidc-user-1");
    let (s, v) = c.post("auth/oidc/login", json!({"jwt": k1.sign(Some("k1"), &claims(json!({})))})).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("invalid issuer"), "{v}");
    drop(http);
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

/// A projected service-account token's claims.
fn projected(ns: &str, sa: &str) -> Value {
    let t = now();
    json!({"iss": K8S_ISS, "aud": ["https://kubernetes.default.svc"], "sub": format!("system:serviceaccount:{ns}:{sa}"),
           "iat": t, "nbf": t, "exp": t + 3600,
           "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "5d3f6a2e-0001"},
                             "pod": {"name": "web-6d4cf56db6-abcde", "uid": "pod-uid"}}})
}

#[tokio::test]
async fn kubernetes_service_account_login() {
    let (store, _srv, c, root) = unsealed().await;
    let rc = c.with_token(&root);
    let dir = tempfile::tempdir().unwrap();
    let cluster = Key::generate(dir.path(), "sa", "ES256");
    let other = Key::generate(dir.path(), "other", "ES256");

    let (s, v) = rc.post("sys/auth/kubernetes", json!({"type": "kubernetes"})).await;
    assert_eq!(s, 204, "enable kubernetes: {v}");
    let (s, v) = rc
        .post(
            "auth/kubernetes/config",
            json!({"kubernetes_host": "https://10.96.0.1:443", "pem_keys": [cluster.public_pem], "issuer": K8S_ISS,
                   "token_reviewer_jwt": "reviewer-secret"}),
        )
        .await;
    assert_eq!(s, 204, "config: {v}");
    let (s, v) = rc.get("auth/kubernetes/config").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["issuer"], K8S_ISS);
    assert_eq!(v["data"]["token_reviewer_jwt_set"], true);
    assert!(!v.to_string().contains("reviewer-secret"), "{v}");

    let (s, v) = rc
        .post(
            "auth/kubernetes/role/web",
            json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = rc
        .post(
            "auth/kubernetes/role/web",
            json!({"bound_service_account_names": ["web"], "bound_service_account_namespaces": ["apps"],
                   "token_policies": ["k8s-web"], "token_ttl": 900}),
        )
        .await;
    assert_eq!(s, 204, "role: {v}");

    let (s, v) = c
        .post("auth/kubernetes/login", json!({"role": "web", "jwt": cluster.sign(None, &projected("apps", "web"))}))
        .await;
    assert_eq!(s, 200, "login: {v}");
    assert_eq!(v["auth"]["policies"], json!(["default", "k8s-web"]));
    assert_eq!(v["auth"]["lease_duration"], 900);
    assert_eq!(
        v["auth"]["metadata"],
        json!({"role": "web", "service_account_name": "web", "service_account_namespace": "apps",
               "service_account_uid": "5d3f6a2e-0001"})
    );
    let (s, v) = c.with_token(&token_of(&v)).get("auth/token/lookup-self").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["display_name"], "kubernetes-apps-web");

    let cases = [
        (cluster.sign(None, &projected("default", "web")), "namespace not authorized"),
        (cluster.sign(None, &projected("apps", "admin")), "service account name not authorized"),
        (other.sign(None, &projected("apps", "web")), "signature verification failed"),
    ];
    for (jwt, want) in cases {
        let (s, v) = c.post("auth/kubernetes/login", json!({"role": "web", "jwt": jwt})).await;
        assert_eq!(s, 400, "want {want:?}: {v}");
        assert_eq!(error_of(&v), want);
    }
    let mut wrong_iss = projected("apps", "web");
    wrong_iss["iss"] = json!("https://other-cluster.example");
    let (s, v) = c.post("auth/kubernetes/login", json!({"role": "web", "jwt": cluster.sign(None, &wrong_iss)})).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("issuer"), "{v}");

    // The reviewer token is stored encrypted only.
    assert!(!contains(&store.raw_bytes(), b"reviewer-secret"));
}

// ---------------------------------------------------------------------------
// Abuse: per-address budget, unreachable TokenReview
// ---------------------------------------------------------------------------

/// Forged tokens drain only the sender's address budget: a 429 for that
/// address (even with a valid token) after a burst, in Vault's error shape.
async fn forged_tokens_limit_only_their_address(backend: Backend) {
    let (_store, _srv, c, root) = unsealed_on(backend).await;
    let rc = c.with_token(&root);
    let dir = tempfile::tempdir().unwrap();
    let ed = Key::generate(dir.path(), "ed", "EdDSA");
    let stranger = Key::generate(dir.path(), "stranger", "EdDSA");
    assert_eq!(rc.post("sys/auth/jwt", json!({"type": "jwt"})).await.0, 204);
    let (s, v) =
        rc.post("auth/jwt/config", json!({"jwt_validation_pubkeys": [ed.public_pem], "bound_issuer": ISS})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = rc.post("auth/jwt/role/app", json!({"bound_audiences": ["vault"], "user_claim": "email"})).await;
    assert_eq!(s, 204, "{v}");
    let good = ed.sign(None, &claims(json!({})));
    let forged = stranger.sign(None, &claims(json!({})));

    // The budget (30 at once, then one a second) refills while we send.
    let mut bad = 0;
    let (s, v) = loop {
        let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": forged})).await;
        if s != 400 || bad > 90 {
            break (s, v);
        }
        bad += 1;
    };
    assert_eq!(s, 429, "after {bad} forged tokens: {v}");
    assert!(bad >= 30, "limited after only {bad} bad requests");
    assert!(error_of(&v).contains("from this address"), "{v}");
    let (s, v) = c.post("auth/jwt/login", json!({"role": "app", "jwt": good})).await;
    assert_eq!(s, 429, "{v}");
    // Administration from the same address is not a login: unaffected.
    assert_eq!(rc.get("auth/jwt/role/app").await.0, 200);
}

#[tokio::test]
async fn forged_tokens_limit_only_their_address_sqlite() {
    forged_tokens_limit_only_their_address(Backend::Sqlite).await;
}

#[tokio::test]
async fn forged_tokens_limit_only_their_address_postgres() {
    forged_tokens_limit_only_their_address(Backend::Postgres).await;
}

/// A TokenReview API that cannot be reached is a prompt 502 whose message
/// does not help map the network (no address, no error text).
async fn unreachable_token_review_is_502(backend: Backend) {
    let (_store, srv, c, root) = unsealed_on(backend).await;
    let rc = c.with_token(&root);
    let dir = tempfile::tempdir().unwrap();
    let sa = Key::generate(dir.path(), "sa", "ES256");
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_eq!(rc.post("sys/auth/kubernetes", json!({"type": "kubernetes"})).await.0, 204);
    let (s, v) = rc
        .post(
            "auth/kubernetes/config",
            json!({"kubernetes_host": format!("http://127.0.0.1:{port}"), "token_reviewer_jwt": "reviewer-secret"}),
        )
        .await;
    assert_eq!(s, 204, "config: {v}");
    let (s, v) = rc
        .post(
            "auth/kubernetes/role/web",
            json!({"bound_service_account_names": ["web"], "bound_service_account_namespaces": ["apps"]}),
        )
        .await;
    assert_eq!(s, 204, "role: {v}");
    let started = Instant::now();
    let (s, v) =
        c.post("auth/kubernetes/login", json!({"role": "web", "jwt": sa.sign(None, &projected("apps", "web"))})).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["errors"], json!(["TokenReview request failed"]));
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert!(!v.to_string().contains(&port.to_string()), "{v}");
    assert!(!srv.log_text().contains("reviewer-secret"), "the reviewer token was logged");
}

#[tokio::test]
async fn unreachable_token_review_is_502_sqlite() {
    unreachable_token_review_is_502(Backend::Sqlite).await;
}

#[tokio::test]
async fn unreachable_token_review_is_502_postgres() {
    unreachable_token_review_is_502(Backend::Postgres).await;
}
