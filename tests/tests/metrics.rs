//! Prometheus metrics through the real server, on SQLite and PostgreSQL:
//! `sys/metrics?format=prometheus` needs a token with the right policy
//! (or `[telemetry] unauthenticated_metrics_access`), every exported line
//! parses as Prometheus text, the series move with traffic, labels never
//! carry a request path, the seal gauge follows seal/unseal, logins and
//! unseal failures are counted; and the shipped alert rules and Grafana
//! dashboard name only metrics a server exports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store};

const CANARY: &str = "CANARY-metrics-path-5d1e";

#[test]
fn the_strict_parser_refuses_what_prometheus_refuses() {
    assert!(sample(r#"a_b{x="1",y="q\"\\\n{}"} 2.5"#).is_ok());
    assert_eq!(sample(r#"m{route="data/{path+}"} 1"#).unwrap().1["route"], "data/{path+}");
    for bad in [r#"1a 1"#, r#"m{x=1} 1"#, r#"m{x="1"}1"#, r#"m{x="1} 1"#, "m 1 2 3", "m one", r#"m{x="\q"} 1"#] {
        assert!(sample(bad).is_err(), "{bad}");
    }
}

/// One scrape: status, content type and body.
async fn scrape(base: &str, token: Option<&str>, query: &str) -> (u16, String, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mut rb = http.get(format!("{base}/v1/sys/metrics{query}"));
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

/// One sample line of the text format, parsed strictly (exposition format
/// 0.0.4: `name{label="value",...} value [timestamp]`, label values with
/// `\\`, `\"` and `\n` escapes): (name, labels, value).
fn sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let ok_name = |n: &str, colon: bool| {
        n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    };
    if !ok_name(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            if r[start..].starts_with('}') {
                rest = &r[start + 1..];
                break;
            }
            let eq = r[start..].find('=').ok_or("label without '='")? + start;
            let key = &r[start..eq];
            if !ok_name(key, false) {
                return Err(format!("bad label name {key:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    '\n' => return Err("raw newline in a label value".into()),
                    c => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            match chars.next().map(|(_, c)| c) {
                Some(',') => {}
                Some('}') => {
                    let at = chars.peek().map_or(r.len(), |(i, _)| *i);
                    rest = &r[at..];
                    break;
                }
                _ => return Err("expected ',' or '}'".into()),
            }
        }
    }
    let mut fields = rest.strip_prefix(' ').ok_or("no space before the value")?.split(' ');
    let v = fields.next().ok_or("no value")?;
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok((name.to_string(), labels, value))
}

/// The samples of a scrape by `name{labels}` (labels sorted), after checking
/// that every line is a `# HELP` / `# TYPE` comment or one sample that
/// parses strictly, every sample belongs to the family its `# TYPE` names,
/// and no sample appears twice.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            let mut it = c.splitn(3, ' ');
            match (it.next(), it.next(), it.next()) {
                (Some("HELP"), Some(_), _) => {}
                (Some("TYPE"), Some(n), Some(k @ ("counter" | "gauge" | "histogram" | "summary" | "untyped"))) => {
                    family = Some((n.to_string(), k.to_string()));
                }
                _ => panic!("bad comment line: {line}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line in:\n{text}");
        let (name, labels, value) = sample(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let (fam, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before any # TYPE: {line}"));
        let belongs = match kind.as_str() {
            "histogram" => [&**fam, "_bucket", "_sum", "_count"].iter().skip(1).any(|s| name == format!("{fam}{s}")),
            _ => name == *fam,
        };
        assert!(belongs, "{name} is not of the family {fam} ({kind})");
        if name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "bucket without le: {line}");
        }
        let shown = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(",");
        assert!(out.insert(format!("{name}{{{shown}}}"), value).is_none(), "duplicate sample: {line}");
    }
    out
}

/// Sum of the samples of `name` whose labels include every `want` pair.
fn total(samples: &BTreeMap<String, f64>, name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .filter(|(k, _)| want.iter().all(|(l, v)| k.contains(&format!("{l}=\"{v}\""))))
        .map(|(_, v)| v)
        .sum()
}

/// Names the server exports: every `# TYPE` family, with a histogram's
/// `_bucket`, `_sum` and `_count`.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else { continue };
        let mut it = rest.split(' ');
        let (name, kind) = (it.next().unwrap(), it.next().unwrap());
        names.insert(name.to_string());
        if kind == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{s}"));
            }
        }
    }
    names
}

async fn authenticated(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, rc) = srv.kv2_ready().await;
    let base = srv.url();

    // A token is needed, and a policy granting read on sys/metrics.
    let (s, _, body) = scrape(&base, None, "?format=prometheus").await;
    assert_eq!(s, 403, "{body}");
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["default"]})).await;
    assert_eq!(s, 200, "{v}");
    let plain = v["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(scrape(&base, Some(&plain), "?format=prometheus").await.0, 403);
    let policy = r#"path "sys/metrics" { capabilities = ["read"] }"#;
    assert_eq!(rc.put("sys/policies/acl/prometheus", json!({"policy": policy})).await.0, 204);
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["prometheus"]})).await;
    let scraper = v["auth"]["client_token"].as_str().unwrap().to_string();
    let (s, ct, before) = scrape(&base, Some(&scraper), "?format=prometheus").await;
    assert_eq!(s, 200, "{before}");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let before = parse(&before);

    // Without format=prometheus: a clear 400 in Vault's error shape.
    let (s, _, body) = scrape(&base, Some(&scraper), "").await;
    assert_eq!(s, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["errors"][0].as_str().unwrap().contains("format=prometheus"), "{v}");
    let (s, _, body) = scrape(&base, Some(&scraper), &format!("?format={CANARY}")).await;
    assert_eq!(s, 400, "{body}");
    assert!(!body.contains(CANARY), "the caller's value is not echoed: {body}");

    // A mount path may hold `"` and `\` (an admin's choice): label values
    // are escaped, and the scrape still parses.
    let (s, v) = rc.post("sys/mounts/q%22uote%5Cx", json!({"type": "kv"})).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rc.post("q%22uote%5Cx/k", json!({"a": "b"})).await.0, 204);

    // Traffic: writes and reads to a path that names a secret, a 404, a 403.
    for i in 0..3 {
        let (s, v) = rc.post(&format!("secret/data/{CANARY}"), json!({"data": {"n": i}})).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(rc.get(&format!("secret/data/{CANARY}")).await.0, 200);
    assert_eq!(rc.get(&format!("secret/data/{CANARY}-missing")).await.0, 404);
    assert_eq!(srv.client().get(&format!("secret/data/{CANARY}")).await.0, 403);
    assert_eq!(rc.get(&format!("nomount-{CANARY}/x")).await.0, 404);

    // Logins: one failure, one success (userpass).
    assert_eq!(rc.post("sys/auth/userpass", json!({"type": "userpass"})).await.0, 204);
    assert_eq!(rc.post("auth/userpass/users/alice", json!({"password": "right-horse"})).await.0, 204);
    let c = srv.client();
    assert_eq!(c.post("auth/userpass/login/alice", json!({"password": "wrong"})).await.0, 400);
    assert_eq!(c.post("auth/userpass/login/alice", json!({"password": "right-horse"})).await.0, 200);

    let (s, _, text) = scrape(&base, Some(&scraper), "?format=prometheus").await;
    assert_eq!(s, 200);
    assert!(!text.contains(CANARY), "a request path reached a label:\n{text}");
    let after = parse(&text);
    let writes = |m: &BTreeMap<String, f64>| {
        total(
            m,
            "vault_core_handle_request_seconds_count",
            &[("mount", "secret/"), ("route", "data/{path+}"), ("status", "200")],
        )
    };
    assert!(writes(&after) - writes(&before) >= 4.0, "4 answered requests under secret/:\n{text}");
    assert_eq!(total(&after, "vault_core_handle_request_seconds_count", &[("mount", "q\"uote\\x/")]), 1.0, "{text}");
    let reads_404 =
        total(&after, "vault_core_handle_request_seconds_count", &[("mount", "secret/"), ("status", "404")]);
    assert!(reads_404 >= 1.0, "{text}");
    let denied = total(&after, "vault_core_handle_request_seconds_count", &[("status", "403")]);
    assert!(denied >= 3.0, "two denied scrapes and a denied read:\n{text}");
    // The histogram's buckets move with the count.
    let inf = total(&after, "vault_core_handle_request_seconds_bucket", &[("mount", "secret/"), ("le", "+Inf")]);
    assert!(inf >= writes(&after), "{text}");
    assert_eq!(total(&after, "vault_auth_logins_total", &[("method", "userpass"), ("result", "failure")]), 1.0);
    assert_eq!(total(&after, "vault_auth_logins_total", &[("method", "userpass"), ("result", "success")]), 1.0);
    assert!(total(&after, "vault_token_creation_total", &[("auth_method", "token")]) >= 2.0, "{text}");
    assert_eq!(total(&after, "vault_core_unsealed", &[]), 1.0);
    // Storage: commits happened and were timed; the pool is reported.
    assert!(total(&after, "vault_storage_commit_seconds_count", &[]) >= 4.0, "{text}");
    assert!(total(&after, "vault_storage_group_commit_batches_sum", &[]) >= 4.0, "{text}");
    assert!(total(&after, "vault_storage_pool_max_connections", &[]) >= 1.0, "{text}");
    assert!(total(&after, "vault_storage_cache_hits_total", &[]) >= 1.0, "{text}");
    // The token cache answered the root token's repeated lookups.
    assert!(total(&after, "vault_cache_hits_total", &[("cache", "token")]) >= 1.0, "{text}");
    assert!(total(&after, "vault_cache_misses_total", &[("cache", "acl")]) >= 1.0, "{text}");

    // Rotations are counted by kind: the barrier, a transit key (through
    // the API), a KV v2 secret (rotate-now runs the engine's rotation).
    assert_eq!(rc.post("sys/rotate", json!({})).await.0, 204);
    assert_eq!(rc.post("sys/mounts/transit", json!({"type": "transit"})).await.0, 204);
    assert!(rc.post("transit/keys/k", json!({})).await.0 < 300);
    assert_eq!(rc.post("transit/keys/k/rotate", json!({})).await.0, 200);
    assert_eq!(rc.post("transit/keys/missing/rotate", json!({})).await.0 / 100, 4, "refused: not an attempt");
    let (s, v) = rc.post("secret/rotation/app/db", json!({"period": "24h", "generator": {"type": "password"}})).await;
    assert!(s < 300, "{v}");
    let (s, v) = rc.post("secret/rotate/app/db", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (_, _, text) = scrape(&base, Some(&root), "?format=prometheus").await;
    let m = parse(&text);
    for kind in ["barrier", "transit", "kv2"] {
        assert_eq!(total(&m, "vault_key_rotations_total", &[("kind", kind), ("result", "success")]), 1.0, "{kind}");
        assert_eq!(total(&m, "vault_key_rotations_total", &[("kind", kind), ("result", "failure")]), 0.0, "{kind}");
    }
    assert_eq!(rc.put("sys/seal", json!({})).await.0, 204);
    assert_eq!(scrape(&base, Some(&root), "?format=prometheus").await.0, 503);
}

#[tokio::test]
async fn scrape_needs_a_token_and_moves_with_traffic_sqlite() {
    authenticated(Backend::Sqlite).await;
}

#[tokio::test]
async fn scrape_needs_a_token_and_moves_with_traffic_postgres() {
    authenticated(Backend::Postgres).await;
}

async fn unauthenticated(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start_with_config(&store, "[telemetry]\nunauthenticated_metrics_access = true\n", &[]);
    let base = srv.url();
    let gauge = |text: &str| total(&parse(text), "vault_core_unsealed", &[]);

    // Before init and while sealed: served without a token.
    let (s, ct, text) = scrape(&base, None, "?format=prometheus").await;
    assert_eq!(s, 200, "{text}");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert_eq!(gauge(&text), 0.0);
    let c: Client = srv.client();
    let (keys, root) = c.init(3, 2).await;
    assert_eq!(gauge(&scrape(&base, None, "?format=prometheus").await.2), 0.0);
    // A bad share is an unseal failure; two good ones unseal.
    let (s, _) = c.put("sys/unseal", json!({"key": "not-a-share"})).await;
    assert_eq!(s, 400);
    c.unseal(&keys[..2]).await;
    let text = scrape(&base, None, "?format=prometheus").await.2;
    assert_eq!(gauge(&text), 1.0);
    let m = parse(&text);
    assert_eq!(total(&m, "vault_core_unseal_attempts_total", &[("result", "failure")]), 1.0);
    assert_eq!(total(&m, "vault_core_unseal_attempts_total", &[("result", "success")]), 2.0);
    // Earlier scrapes are counted under sys/, route "metrics" (a scrape is
    // counted once answered, so not in its own text).
    assert!(total(&m, "vault_core_handle_request_seconds_count", &[("mount", "sys/"), ("route", "metrics")]) >= 2.0);
    // Still a 400 without the format, and the token is not needed for it either.
    assert_eq!(scrape(&base, None, "").await.0, 400);

    assert_eq!(c.with_token(&root).put("sys/seal", json!({})).await.0, 204);
    assert_eq!(gauge(&scrape(&base, None, "?format=prometheus").await.2), 0.0);
}

#[tokio::test]
async fn unauthenticated_scrape_by_config_follows_the_seal_sqlite() {
    unauthenticated(Backend::Sqlite).await;
}

#[tokio::test]
async fn unauthenticated_scrape_by_config_follows_the_seal_postgres() {
    unauthenticated(Backend::Postgres).await;
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every `vault_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("vault_") {
        let start = i + pos;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |e| start + e);
        if boundary {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn alerts_and_dashboard_name_only_exported_metrics() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, rc) = srv.kv2_ready().await;
    assert_eq!(rc.post("secret/data/x", json!({"data": {"a": 1}})).await.0, 200);
    let (s, _, text) = scrape(&srv.url(), Some(&root), "?format=prometheus").await;
    assert_eq!(s, 200);
    parse(&text);
    let exported = exported_names(&text);

    // Alert rules: the groups Prometheus loads, each rule with an expression.
    let rules_path = repo().join("deploy/prometheus/alerts.yml");
    let rules: Value = serde_norway::from_str(&std::fs::read_to_string(&rules_path).unwrap()).unwrap();
    let mut alerts = BTreeSet::new();
    let mut exprs = Vec::new();
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().expect("every rule is an alert");
            assert!(r["expr"].is_string(), "{name} has an expression");
            assert!(r["labels"]["severity"].is_string(), "{name} has a severity");
            assert!(r["annotations"]["summary"].is_string(), "{name} has a summary");
            alerts.insert(name.to_string());
            exprs.push(r["expr"].as_str().unwrap().to_string());
        }
    }
    for want in [
        "VaultSealed",
        "VaultAuditLogFailing",
        "VaultHighErrorRate",
        "VaultHighLatency",
        "VaultKeyRotationFailing",
        "VaultBackupFailing",
    ] {
        assert!(alerts.contains(want), "alerts.yml has no {want}");
    }

    // The dashboard: valid JSON with panels, each with Prometheus targets.
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/grafana/vault.json")).unwrap())
        .expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        assert!(!p["targets"].as_array().expect("targets").is_empty(), "{}", p["title"]);
    }
    dashboard_exprs(&dash, &mut exprs);

    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            assert!(exported.contains(&name), "{name} (in `{e}`) is not exported; exported: {exported:?}");
            used.insert(name);
        }
    }
    // What the dashboard and alerts must watch is there.
    for want in [
        "vault_core_unsealed",
        "vault_core_handle_request_seconds_bucket",
        "vault_auth_logins_total",
        "vault_audit_log_request_failure_total",
        "vault_audit_log_response_failure_total",
        "vault_quota_rate_limit_violation_total",
        "vault_storage_commit_seconds_bucket",
        "vault_storage_cache_hits_total",
        "vault_cache_hits_total",
        "vault_transit_streams_in_flight",
        "vault_backup_last_success_timestamp_seconds",
        "vault_backup_failures_total",
        "vault_key_rotations_total",
    ] {
        assert!(used.contains(want), "neither the dashboard nor the alerts use {want}");
    }

    // promtool, where installed (Debian's `prometheus` package), checks the
    // rules and lints the scrape as Prometheus itself would.
    if let Ok(out) = std::process::Command::new("promtool").arg("check").arg("rules").arg(&rules_path).output() {
        assert!(out.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&out.stderr));
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // Parse errors and lint findings (naming, units) both fail.
        assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    } else {
        // scripts/test installs it (VAULT_TEST_PROMTOOL=1): there, missing is a failure.
        assert!(std::env::var_os("VAULT_TEST_PROMTOOL").is_none(), "promtool was promised but is not installed");
        eprintln!("promtool not installed: rules checked by parsing only");
    }
}
