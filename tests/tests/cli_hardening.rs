//! Regression tests of the red-team review of vaultctl, with the real
//! binary against the real server: the child of `exec` / `agent` cannot read
//! vaultctl's environment, `import` refuses links, library warnings reach
//! stderr, error messages do not quote values, and `exec`'s own failures
//! exit 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use vault_e2e::{Backend, Client, ServerProc, Store, vaultctl_bin};

/// A fresh server with `secret/` as KV v2: the store, the server, the root
/// token and a root client.
async fn vault() -> (Store, ServerProc, String, Client) {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, rc) = srv.kv2_ready().await;
    (store, srv, root, rc)
}

async fn put(rc: &Client, path: &str, data: serde_json::Value) {
    let (s, v) = rc.post(&format!("secret/data/{path}"), json!({ "data": data })).await;
    assert_eq!(s, 200, "write secret/{path}: {v}");
}

/// `program` (vaultctl, or a wrapper in front of it) with a clean
/// environment: HOME in `home`, VAULT_ADDR, and VAULT_TOKEN if given.
fn clean(mut c: Command, home: &Path, srv: &ServerProc, token: Option<&str>) -> Command {
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("VAULT_ADDR", srv.url())
        .stdin(Stdio::null());
    if let Some(t) = token {
        c.env("VAULT_TOKEN", t);
    }
    c
}

fn vaultctl(home: &Path, srv: &ServerProc, token: Option<&str>) -> Command {
    clean(Command::new(vaultctl_bin()), home, srv, token)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run to completion, at most `limit`.
fn run_for(mut c: Command, limit: Duration) -> Output {
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("vaultctl did not finish within {limit:?}");
        }
    }
}

fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// vaultctl as an unprivileged user: as is when the tests do not run as
/// root; as `nobody` through `setpriv` when they do (root may read any
/// process's /proc files, which would prove nothing). `None`: root without
/// setpriv, the check cannot be made.
fn unprivileged_vaultctl(home: &Path, srv: &ServerProc, token: &str) -> Option<Command> {
    if !running_as_root() {
        return Some(vaultctl(home, srv, Some(token)));
    }
    let ok = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("running as root without setpriv: skipped");
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(vaultctl_bin());
    // nobody must be able to write the files the test reads back.
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o777)).unwrap();
    Some(clean(c, home, srv, Some(token)))
}

/// What the child prints: its own view of VAULT_TOKEN and DBP, then
/// whatever it can read of its parent's (vaultctl's) environment.
const SNOOP: &str = "echo \"child-token=${VAULT_TOKEN:-unset} dbp=$DBP\"; \
                     tr '\\0' '\\n' < /proc/$PPID/environ; echo \"read-rc=$?\"";

#[tokio::test(flavor = "multi_thread")]
async fn exec_child_cannot_read_vaultctls_environment() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "pw-CANARY-F2"})).await;
    let home = tempfile::tempdir().unwrap();
    let Some(mut c) = unprivileged_vaultctl(home.path(), &srv, &root) else { return };
    c.args(["exec", "--env", "DBP=secret/app#password", "--", "sh", "-c", SNOOP]);
    let o = run_for(c, Duration::from_secs(30));
    let out = text(&o.stdout);
    assert!(o.status.success(), "exit {:?}: {}{out}", o.status, text(&o.stderr));
    assert!(out.contains("child-token=unset dbp=pw-CANARY-F2"), "{out}");
    // vaultctl is non-dumpable: its /proc files belong to root.
    assert!(!out.contains("VAULT_TOKEN") && !out.contains(&root), "the child read vaultctl's token:\n{out}");
    assert!(!out.contains("read-rc=0"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_child_cannot_read_the_agents_environment() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "pw-CANARY-F2"})).await;
    let home = tempfile::tempdir().unwrap();
    let Some(mut c) = unprivileged_vaultctl(home.path(), &srv, &root) else { return };
    let dest = home.path().join("app.env");
    let out = home.path().join("snoop.out");
    let cfg = home.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[template]]\ncontents = \"p={{{{ secret(\\\"secret/app\\\").password }}}}\"\ndestination = \"{d}\"\n\n\
             [exec]\ncommand = [\"sh\", \"-c\", \"(tr '\\\\0' '\\\\n' < /proc/$PPID/environ; echo read-rc=$?) > {o} 2>&1\"]\n",
            d = dest.display(),
            o = out.display()
        ),
    )
    .unwrap();
    c.args(["agent", "--config", cfg.to_str().unwrap()]);
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success(), "exit {:?}: {}", o.status, text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "p=pw-CANARY-F2");
    let snoop = std::fs::read_to_string(&out).unwrap();
    assert!(!snoop.contains("VAULT_TOKEN") && !snoop.contains(&root), "the child read the agent's token:\n{snoop}");
    assert!(snoop.contains("read-rc=") && !snoop.contains("read-rc=0"), "{snoop}");
}
