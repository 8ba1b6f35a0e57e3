//! Rate limits end to end, through the real binary: Vault's
//! `sys/quotas/rate-limit/{name}` and `sys/quotas/config` (429 with
//! `Retry-After`, the most specific quota wins, exempt paths, response
//! headers, kept across a restart, shared by servers on one PostgreSQL),
//! and the built-in per-address limits on logins and unseal (checked
//! before any body byte is read; 0 turns them off).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_e2e::{Backend, RawHttp, ServerProc, Store};

/// Status, headers and JSON body of one request (the harness' client hides headers).
async fn call(srv: &ServerProc, method: &str, path: &str, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let r = http.request(m, format!("{}/v1/{path}", srv.url())).header("X-Vault-Token", token).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn retry_after(h: &reqwest::header::HeaderMap) -> u64 {
    h.get("retry-after").expect("Retry-After on a 429").to_str().unwrap().parse().unwrap()
}

async fn api_quotas(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let (keys, root, rc) = srv.kv2_ready().await;
    let (s, v) = rc.post("secret/data/team/a", json!({"data": {"k": "v"}})).await;
    assert_eq!(s, 200, "{v}");

    // Bad definitions are clear 400s, and nothing is stored.
    for (body, needle) in [
        (json!({"rate": 0}), "rate"),
        (json!({"rate": "fast"}), "rate"),
        (json!({"rate": -1, "path": "secret/"}), "rate"),
        (json!({}), "rate"),
        (json!({"rate": 1, "path": "nomount/"}), "mount"),
        (json!({"rate": 1, "path": "secret/../sys"}), "'..'"),
        (json!({"rate": 1, "role": "web"}), "role"),
        (json!({"rate": 1, "block_interval": "5m"}), "block_interval"),
        (json!({"rate": 1e300, "interval": "1s"}), "rate"),
        // Periods the limiter cannot hold (a red team's finding: the first
        // panicked while stored and on every unseal after; the second wrapped
        // and limited nobody).
        (json!({"rate": 0.1, "path": "secret/", "interval": "876000h"}), "no usable limit"),
        (json!({"rate": 0.17095699858531713, "interval": "876000h"}), "no usable limit"),
        (json!({"rate": 0.001, "interval": "8760h"}), "no usable limit"),
    ] {
        let (s, v) = rc.post("sys/quotas/rate-limit/bad", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["errors"][0].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    assert_ne!(rc.post("sys/quotas/rate-limit/bad%2Fname", json!({"rate": 1})).await.0, 204);
    assert_eq!(rc.list("sys/quotas/rate-limit").await.0, 404);

    // Exempt the quota API itself (so the test can undo what it does) and
    // turn the response headers on.
    let (s, v) = rc
        .put(
            "sys/quotas/config",
            json!({"rate_limit_exempt_paths": ["sys/quotas/*", "sys/health"], "enable_rate_limit_response_headers": true}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (_, v) = rc.get("sys/quotas/config").await;
    assert_eq!(v["data"]["rate_limit_exempt_paths"], json!(["sys/quotas/*", "sys/health"]));
    assert_eq!(v["data"]["enable_rate_limit_response_headers"], true);

    // A mount quota: 3 requests an hour per client on secret/.
    assert_eq!(
        rc.post("sys/quotas/rate-limit/kv", json!({"path": "secret/", "rate": 3, "interval": "1h"})).await.0,
        204
    );
    let (s, v) = rc.get("sys/quotas/rate-limit/kv").await;
    assert_eq!(s, 200);
    let d = &v["data"];
    assert_eq!(
        (d["name"].as_str(), d["path"].as_str(), d["type"].as_str()),
        (Some("kv"), Some("secret/"), Some("rate-limit"))
    );
    assert_eq!((d["rate"].as_f64(), d["interval"].as_u64()), (Some(3.0), Some(3600)));
    assert_eq!(rc.list("sys/quotas/rate-limit").await.1["data"]["keys"], json!(["kv"]));
    for left in ["2", "1", "0"] {
        let (s, h, _) = call(&srv, "GET", "secret/data/team/a", &root).await;
        assert_eq!(s, 200);
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], left);
    }
    let (s, h, v) = call(&srv, "GET", "secret/data/team/a", &root).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["errors"][0], "request path rate limit quota exceeded");
    // One request back in 20 minutes (3 an hour).
    let wait = retry_after(&h);
    assert!((1100..=1200).contains(&wait), "{wait}");
    // Empty segments do not slip past the quota.
    assert_eq!(call(&srv, "GET", "secret//data/team/a", &root).await.0, 429);
    // Other paths are not limited; exempt paths never are.
    assert_eq!(call(&srv, "GET", "sys/mounts", &root).await.0, 200);
    assert_eq!(rc.get("sys/quotas/rate-limit/kv").await.0, 200);

    // The most specific quota wins: a path quota below the mount, and a
    // global one (path "") for everything else.
    assert_eq!(
        rc.post("sys/quotas/rate-limit/team", json!({"path": "secret/data/team", "rate": 2, "interval": "1h"})).await.0,
        204
    );
    assert_eq!(rc.post("sys/quotas/rate-limit/global", json!({"rate": 1000})).await.0, 204);
    // Two quotas on one path are refused.
    let (s, v) = rc.post("sys/quotas/rate-limit/again", json!({"path": "secret/data/team/", "rate": 5})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 200);
    assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 200);
    assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 429);
    assert_eq!(call(&srv, "GET", "secret/data/other", &root).await.0, 429, "the mount quota still applies there");
    let (s, h, _) = call(&srv, "GET", "sys/mounts", &root).await;
    assert_eq!((s, h["x-ratelimit-limit"].to_str().unwrap()), (200, "1000"));
    assert_eq!(call(&srv, "GET", "sys/health", &root).await.1.get("x-ratelimit-limit"), None);

    // Kept across a restart (fresh buckets, same quotas).
    drop(srv);
    let srv = ServerProc::start(&store, &[]);
    srv.client().unseal(&keys).await;
    assert_eq!(
        srv.client().with_token(&root).list("sys/quotas/rate-limit").await.1["data"]["keys"],
        json!(["global", "kv", "team"])
    );
    assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 200);
    assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 200);
    assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 429);

    // A token without a policy on the quota paths cannot change them.
    let rc = srv.client().with_token(&root);
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["default"]})).await;
    assert_eq!(s, 200, "{v}");
    let weak = srv.client().with_token(v["auth"]["client_token"].as_str().unwrap());
    assert_eq!(weak.delete("sys/quotas/rate-limit/team").await.0, 403);
    assert_eq!(weak.put("sys/quotas/config", json!({"rate_limit_exempt_paths": ["*"]})).await.0, 403);

    // Deleted: the mount quota applies again.
    assert_eq!(rc.delete("sys/quotas/rate-limit/team").await.0, 204);
    assert_eq!(rc.get("sys/quotas/rate-limit/team").await.0, 404);
    for _ in 0..3 {
        assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 200);
    }
    assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 429);
    // Exempting the path lifts it.
    let (s, _) =
        rc.put("sys/quotas/config", json!({"rate_limit_exempt_paths": ["sys/quotas/*", "secret/data/team/*"]})).await;
    assert_eq!(s, 204);
    assert_eq!(call(&srv, "GET", "secret/data/team/a", &root).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_quotas_sqlite() {
    api_quotas(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_quotas_postgres() {
    api_quotas(Backend::Postgres).await;
}

/// Poll until `f` is true (10 s at most).
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A quota written through one server limits on another sharing the
/// database (the change feed reloads it), and its removal reaches it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_written_on_one_server_limits_on_another() {
    let store = Store::new(Backend::Postgres);
    let a = ServerProc::start(&store, &[]);
    let (keys, root, ra) = a.kv2_ready().await;
    let b = ServerProc::start(&store, &[]);
    b.client().unseal(&keys).await;
    assert_eq!(call(&b, "GET", "secret/data/x", &root).await.0, 404);

    assert_eq!(
        ra.post("sys/quotas/rate-limit/shared", json!({"path": "secret/", "rate": 2, "interval": "1h"})).await.0,
        204
    );
    let limited = eventually(|| async { call(&b, "GET", "secret/data/x", &root).await.0 == 429 }).await;
    assert!(limited, "server B never applied the quota written on A");
    // B's answer is a proper 429.
    let (s, h, _) = call(&b, "GET", "secret/data/x", &root).await;
    assert_eq!(s, 429);
    assert!(retry_after(&h) >= 1);

    assert_eq!(ra.delete("sys/quotas/rate-limit/shared").await.0, 204);
    let lifted = eventually(|| async { call(&b, "GET", "secret/data/x", &root).await.0 == 404 }).await;
    assert!(lifted, "server B kept a deleted quota");
}

/// The built-in limits: logins and unseal per client address, before the
/// body is read, configurable, 0 turning them off. The default is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_login_and_unseal_limits() {
    let store = Store::new(Backend::Sqlite);
    let toml = "[quotas]\nlogin_rate = 0.01\nlogin_burst = 3\nunseal_rate = 0.01\nunseal_burst = 2\n";
    let srv = ServerProc::start_with_config(&store, toml, &[]);
    let c = srv.client();
    let (keys, root) = c.init(1, 1).await;
    // Two unseal calls per address, then 429 (even with a valid share).
    let (s, v) = c.put("sys/unseal", json!({"key": "00"})).await;
    assert!(s != 429 && s != 200, "{s} {v}");
    c.unseal(&keys).await;
    let (s, h, v) = {
        let http = reqwest::Client::new();
        let r = http.put(format!("{}/v1/sys/unseal", srv.url())).json(&json!({"key": keys[0]})).send().await.unwrap();
        (r.status().as_u16(), r.headers().clone(), r.text().await.unwrap())
    };
    assert_eq!(s, 429, "{v}");
    assert!(retry_after(&h) >= 60);
    // Seal-status and health are not limited.
    assert_eq!(c.get("sys/seal-status").await.0, 200);

    let rc = c.with_token(&root);
    assert_eq!(rc.post("sys/auth/userpass", json!({"type": "userpass"})).await.0, 204);
    assert_eq!(rc.post("auth/userpass/users/alice", json!({"password": "right-password"})).await.0, 204);
    for i in 0..3 {
        let (s, v) = c.post(&format!("auth/userpass/login/u{i}"), json!({"password": "wrong"})).await;
        assert_ne!(s, 429, "{v}");
    }
    // The right password does not help once the address is limited.
    let (s, v) = c.post("auth/userpass/login/alice", json!({"password": "right-password"})).await;
    assert_eq!(s, 429, "{v}");
    // Refused before any body byte is read: a head announcing a body that
    // never comes gets its 429 at once.
    let mut raw = RawHttp::connect(srv.addr).await;
    raw.send(RawHttp::head("POST", "/v1/auth/userpass/login/alice", None, 1000).as_bytes()).await;
    let started = Instant::now();
    let (s, _) = raw.response().await;
    assert_eq!(s, 429);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Other paths are untouched.
    assert_eq!(rc.get("sys/mounts").await.0, 200);
    drop(srv);

    // 0 turns the limits off.
    let srv = ServerProc::start_with_config(&store, "[quotas]\nlogin_rate = 0\nunseal_rate = 0\n", &[]);
    let c = srv.client();
    for _ in 0..30 {
        assert_ne!(c.put("sys/unseal", json!({"key": "00"})).await.0, 429);
    }
    c.unseal(&keys).await;
    for i in 0..8 {
        assert_ne!(c.post(&format!("auth/userpass/login/v{i}"), json!({"password": "wrong"})).await.0, 429);
    }
    drop(srv);

    // The default is on: a flood of bad logins from one address is cut.
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    c.unseal(&keys).await;
    // 120 at once (a flood arrives faster than a password hash is checked):
    // the burst of 50 gets through, the rest is refused.
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(
                async move { c.post(&format!("auth/userpass/login/w{i}"), json!({"password": "wrong"})).await.0 },
            )
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let refused = codes.iter().filter(|s| **s == 429).count();
    assert!((40..=70).contains(&refused), "{refused} refused: {codes:?}");
    // Bad config values are refused at start.
    // (The last: a burst that takes centuries to come back, which the
    // limiter cannot count.)
    for bad in [
        "[quotas]\nlogin_rate = -1\n",
        "[quotas]\nlogin_burst = 0\n",
        "[quotas]\nunseal_rate = nan\n",
        "[quotas]\nlogin_rate = 0.000001\nlogin_burst = 1000000\n",
    ] {
        let path = vault_e2e::config_file(bad);
        let out = std::process::Command::new(vault_e2e::server_bin())
            .args(["server", "--listen", "127.0.0.1:0", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("quotas."),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
