//! CORS through `sys/config/cors`, as Vault: off by default (no CORS
//! header, `OPTIONS` refused), then preflights answered and answers
//! carrying `Access-Control-Allow-Origin` + `Vary: Origin` for allowed
//! origins, 403 for the others; kept across a restart; sudo needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use vault_e2e::{Backend, ServerProc, Store};

const APP: &str = "https://app.example";

/// One request with an `Origin` (and preflight headers for `OPTIONS`).
async fn with_origin(srv: &ServerProc, method: &str, path: &str, origin: &str, token: &str) -> reqwest::Response {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = reqwest::Client::new().request(m, format!("{}/v1/{path}", srv.url())).header("Origin", origin);
    if method == "OPTIONS" {
        rb =
            rb.header("Access-Control-Request-Method", "GET").header("Access-Control-Request-Headers", "X-Vault-Token");
    } else {
        rb = rb.header("X-Vault-Token", token);
    }
    rb.send().await.unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

async fn cors(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let (keys, root, rc) = srv.kv2_ready().await;

    // Off by default: no CORS header on any answer; a preflight is a 405.
    let (s, v) = rc.get("sys/config/cors").await;
    assert_eq!((s, &v["data"]["enabled"]), (200, &json!(false)), "{v}");
    let r = with_origin(&srv, "GET", "sys/mounts", APP, &root).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", r.headers());
    assert_eq!(with_origin(&srv, "OPTIONS", "sys/mounts", APP, &root).await.status(), 405);

    // Bad settings are 400s.
    for bad in [
        json!({"enabled": true}),
        json!({"enabled": true, "allowed_origins": ["*", APP]}),
        json!({"enabled": true, "allowed_origins": ["https://app.example/\r\nx: y"]}),
    ] {
        assert_eq!(rc.put("sys/config/cors", bad.clone()).await.0, 400, "{bad}");
    }
    // Writing it needs sudo (as Vault's sys/config/*).
    let (s, v) = rc
        .put(
            "sys/policies/acl/cors-writer",
            json!({"policy": "path \"sys/config/cors\" { capabilities = [\"read\", \"update\"] }"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["cors-writer"]})).await;
    let writer = srv.client().with_token(v["auth"]["client_token"].as_str().unwrap());
    assert_eq!(writer.put("sys/config/cors", json!({"enabled": true, "allowed_origins": "*"})).await.0, 403);

    let (s, v) = rc
        .put("sys/config/cors", json!({"enabled": true, "allowed_origins": [APP], "allowed_headers": ["X-Custom"]}))
        .await;
    assert_eq!(s, 204, "{v}");
    let (_, v) = rc.get("sys/config/cors").await;
    assert_eq!(v["data"]["enabled"], true);
    assert_eq!(v["data"]["allowed_origins"], json!([APP]));
    let headers = v["data"]["allowed_headers"].as_array().unwrap();
    assert!(headers.contains(&json!("X-Vault-Token")) && headers.contains(&json!("X-Custom")), "{v}");

    // Preflight from an allowed origin: 204 with the origin, methods and headers.
    let r = with_origin(&srv, "OPTIONS", "secret/data/x", APP, &root).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some(APP));
    let methods = header(&r, "access-control-allow-methods").unwrap();
    assert!(methods.contains("GET") && methods.contains("LIST"), "{methods}");
    let allowed = header(&r, "access-control-allow-headers").unwrap();
    assert!(allowed.contains("X-Vault-Token") && allowed.contains("X-Custom"), "{allowed}");
    // An answer to an allowed origin names it, and varies by origin.
    let r = with_origin(&srv, "GET", "sys/mounts", APP, &root).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some(APP));
    assert!(r.headers().get_all("vary").iter().any(|v| v == "Origin"), "{:?}", r.headers());
    // Error answers too (a browser must be able to read the error).
    let r = with_origin(&srv, "GET", "secret/data/missing", APP, &root).await;
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some(APP));
    // Another origin: 403, preflight or not, and nothing runs.
    for method in ["OPTIONS", "GET"] {
        let r = with_origin(&srv, method, "sys/mounts", "https://evil.example", &root).await;
        assert_eq!(r.status(), 403, "{method}");
        assert_eq!(header(&r, "access-control-allow-origin"), None);
    }
    // No Origin (a server-side client): untouched.
    assert_eq!(rc.get("sys/mounts").await.0, 200);

    // Kept across a restart.
    drop(srv);
    let srv = ServerProc::start(&store, &[]);
    srv.client().unseal(&keys).await;
    let r = with_origin(&srv, "GET", "sys/mounts", APP, &root).await;
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some(APP));

    // DELETE turns it off again.
    let rc = srv.client().with_token(&root);
    assert_eq!(rc.delete("sys/config/cors").await.0, 204);
    let r = with_origin(&srv, "GET", "sys/mounts", "https://evil.example", &root).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    // The wildcard allows any origin.
    assert_eq!(rc.put("sys/config/cors", json!({"enabled": true, "allowed_origins": "*"})).await.0, 204);
    let r = with_origin(&srv, "GET", "sys/mounts", "https://any.example", &root).await;
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some("https://any.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_sqlite() {
    cors(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_postgres() {
    cors(Backend::Postgres).await;
}
