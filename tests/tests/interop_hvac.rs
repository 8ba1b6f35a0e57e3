//! Interoperability with the real Python client `hvac` (2.4.0): start the
//! server on each backend and run a script of `tests/interop/` against it:
//! `test_hvac_sys.py` (init, unseal, seal, rekey, generate-root, mounts, KV
//! v1) and `test_hvac_auth.py` (policies, auth mounts, tokens, capabilities,
//! AppRole, userpass, JWT and Kubernetes), `test_hvac_kv2.py` (KV v2) and
//! `test_hvac_transit.py` (the transit engine: every key type, key
//! management, export, backup/restore, encrypt/decrypt/rewrap and batches,
//! data keys, random, hash, HMAC, sign/verify, derived and convergent keys;
//! its last step asserts this server's answer where it still differs from
//! Vault, each difference named in a comment). Each script
//! gets a fresh, uninitialized server.
//!
//! The interpreter is `$VAULT_TEST_PYTHON` if set, else `python3`. These tests
//! never skip: without hvac they fail with the command that installs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use vault_e2e::{Backend, ServerProc, Store};

fn python() -> String {
    std::env::var("VAULT_TEST_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into())
}

/// A script of `tests/interop/`.
fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop").join(name)
}

/// Fail (never skip) when the interpreter cannot import hvac.
fn require_hvac(py: &str) {
    let out = Command::new(py).args(["-c", "import hvac"]).output();
    let problem = match out {
        Ok(o) if o.status.success() => return,
        Ok(o) => format!("`{py} -c \"import hvac\"` failed ({}):\n{}", o.status, String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("cannot run `{py}`: {e}"),
    };
    panic!(
        "{problem}\nThe hvac interop tests need the Python client hvac and never skip.\n\
         Run `scripts/test` (which creates target/pyenv with hvac), or `pip install hvac==2.4.0`;\n\
         set VAULT_TEST_PYTHON to an interpreter that has it (e.g. target/pyenv/bin/python)."
    );
}

/// Run `tests/interop/{name}` against a fresh, uninitialized server on
/// `backend`; fail with the script's output and the server log unless it
/// exits 0 with its `N passed, 0 failed` summary.
fn run_hvac_script(name: &str, backend: Backend) {
    let py = python();
    require_hvac(&py);
    let script = script(name);
    assert!(script.exists(), "{} is missing", script.display());

    let store = Store::new(backend);
    // JSON logs with the access log: one line per request from the hook.
    let srv = ServerProc::start_with_config(
        &store,
        &format!("log_format = \"json\"\naccess_log = true\n{}", vault_e2e::audit_in_temp_dir()),
        &[],
    );
    let ids = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(&py)
        .arg(&script)
        .env("VAULT_ADDR", srv.url())
        .env("VAULT_TEST_IDS_FILE", ids.path())
        .env_remove("VAULT_TOKEN")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the hvac interop script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hvac interop script {name} failed on {backend:?} ({}).\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n\
         --- server log ---\n{}",
        out.status,
        srv.log_text()
    );
    assert!(
        stdout.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "hvac interop script {name} exited 0 without its summary line on {backend:?}.\n--- stdout ---\n{stdout}\n\
         --- stderr ---\n{stderr}"
    );
    eprint!("{stdout}");
    every_response_passed_the_hooks(name, ids.path(), &srv.log_text());
    let status = srv.terminate();
    assert!(status.success(), "vault-server exited with {status} after the hvac run of {name}");
}

/// Every response hvac received carries a request id, and the server's
/// access-log hook wrote exactly one line with that id, path and status:
/// every request (raw `sys/` endpoints such as init and unseal included)
/// passed the hooks, and the ids match.
fn every_response_passed_the_hooks(name: &str, ids: &std::path::Path, log: &str) {
    let responses: Vec<(String, String, u16, String)> =
        serde_json::from_slice(&std::fs::read(ids).unwrap()).expect("the script wrote its responses");
    assert!(!responses.is_empty(), "{name}: no responses recorded");
    let mut seen = std::collections::HashMap::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["target"] != "vault::access" {
            continue;
        }
        let f = &v["fields"];
        let id = f["request_id"].as_str().unwrap_or_default().to_string();
        let entry = (f["path"].as_str().unwrap_or_default().to_string(), f["status"].as_u64().unwrap_or(0));
        assert!(seen.insert(id.clone(), entry).is_none(), "{name}: two access lines for request {id}");
    }
    let mut raw = 0;
    for (method, path, status, id) in &responses {
        assert_eq!(id.len(), 36, "{name}: {method} {path} answered without a request id");
        // A request a rate-limit quota refused skips the hooks unless
        // `enable_rate_limit_audit_logging` (Vault's behaviour: a flood must
        // not become a flood of audit writes).
        if *status == 429 && !seen.contains_key(id) {
            continue;
        }
        let Some((logged_path, logged_status)) = seen.get(id) else {
            panic!("{name}: {method} {path} ({status}, id {id}) never reached the hooks");
        };
        assert_eq!(u64::from(*status), *logged_status, "{name}: {method} {path}");
        let asked = path.trim_start_matches("/v1/").trim_end_matches('/');
        assert!(
            logged_path.trim_end_matches('/').eq_ignore_ascii_case(asked),
            "{name}: {method} {path} logged as {logged_path}"
        );
        raw += usize::from(["sys/init", "sys/unseal", "sys/seal-status", "sys/seal", "sys/health"].contains(&asked));
    }
    if name == "test_hvac_sys.py" {
        assert!(raw > 0, "{name}: the raw sys endpoints were exercised and seen");
    }
    eprintln!("{name}: {} responses, each with one access-log line of the same id ({raw} raw sys)", responses.len());
}

#[test]
fn hvac_sys_and_kv_v1_sqlite() {
    run_hvac_script("test_hvac_sys.py", Backend::Sqlite);
}

#[test]
fn hvac_sys_and_kv_v1_postgres() {
    run_hvac_script("test_hvac_sys.py", Backend::Postgres);
}

#[test]
fn hvac_auth_sqlite() {
    run_hvac_script("test_hvac_auth.py", Backend::Sqlite);
}

#[test]
fn hvac_auth_postgres() {
    run_hvac_script("test_hvac_auth.py", Backend::Postgres);
}

#[test]
fn hvac_kv_v2_sqlite() {
    run_hvac_script("test_hvac_kv2.py", Backend::Sqlite);
}

#[test]
fn hvac_kv_v2_postgres() {
    run_hvac_script("test_hvac_kv2.py", Backend::Postgres);
}

#[test]
fn hvac_transit_sqlite() {
    run_hvac_script("test_hvac_transit.py", Backend::Sqlite);
}

#[test]
fn hvac_transit_postgres() {
    run_hvac_script("test_hvac_transit.py", Backend::Postgres);
}

#[test]
fn hvac_ops_sqlite() {
    run_hvac_script("test_hvac_ops.py", Backend::Sqlite);
}

#[test]
fn hvac_ops_postgres() {
    run_hvac_script("test_hvac_ops.py", Backend::Postgres);
}
