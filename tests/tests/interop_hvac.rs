//! Interoperability with the real Python client `hvac` (2.4.0): start the
//! server on each backend and run a script of `tests/interop/` against it:
//! `test_hvac_sys.py` (init, unseal, seal, rekey, generate-root, mounts, KV
//! v1) and `test_hvac_auth.py` (policies, auth mounts, tokens, capabilities,
//! AppRole, userpass, JWT and Kubernetes). Each script gets a fresh,
//! uninitialized server.
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
    let srv = ServerProc::start(&store, &[]);
    let out = Command::new(&py)
        .arg(&script)
        .env("VAULT_ADDR", srv.url())
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
    let status = srv.terminate();
    assert!(status.success(), "vault-server exited with {status} after the hvac run of {name}");
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
