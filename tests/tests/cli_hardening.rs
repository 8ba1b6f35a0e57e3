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

#[tokio::test(flavor = "multi_thread")]
async fn import_refuses_links_before_writing_and_keeps_the_owner() {
    use std::os::unix::fs::MetadataExt as _;
    let (_store, srv, root, rc) = vault().await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let plain = "APP_ENV=prod\nDB_PASSWORD=s3cr3t-IMPCANARY-1\n";
    std::fs::create_dir(dir.join("shared")).unwrap();
    let real = dir.join("shared/app.env");
    std::fs::write(&real, plain).unwrap();
    std::os::unix::fs::symlink("shared/app.env", dir.join(".env")).unwrap();
    std::fs::hard_link(&real, dir.join("hard.env")).unwrap();

    for (file, want) in [(".env", "symbolic link"), ("hard.env", "hard links")] {
        let mut c = vaultctl(dir, &srv, Some(&root));
        c.current_dir(dir).args(["import", file, "--to", "secret/imp1"]);
        let o = run_for(c, Duration::from_secs(30));
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains(want), "{file}: {err}");
        assert!(!err.contains("IMPCANARY"), "{err}");
    }
    // Nothing reached the vault; the files and the link are as they were.
    let (status, _) = rc.get("secret/data/imp1").await;
    assert_eq!(status, 404);
    assert_eq!(std::fs::read_to_string(&real).unwrap(), plain);
    assert!(std::fs::symlink_metadata(dir.join(".env")).unwrap().file_type().is_symlink());

    // --env-template leaves FILE: a link is fine then.
    let mut c = vaultctl(dir, &srv, Some(&root));
    c.current_dir(dir).args(["import", ".env", "--to", "secret/imp1", "--env-template", "tpl.env"]);
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(std::fs::read_to_string(dir.join("tpl.env")).unwrap().contains("vault:secret/imp1#DB_PASSWORD"));

    // A plain file owned by the app's user keeps its owner and mode.
    std::fs::remove_file(dir.join("hard.env")).unwrap();
    std::fs::remove_file(dir.join(".env")).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    if running_as_root() {
        std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
    }
    let before = std::fs::metadata(&real).unwrap();
    let mut c = vaultctl(dir, &srv, Some(&root));
    c.current_dir(dir).args(["import", "shared/app.env", "--to", "secret/imp2"]);
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let after = std::fs::metadata(&real).unwrap();
    let rewritten = std::fs::read_to_string(&real).unwrap();
    assert!(!rewritten.contains("IMPCANARY") && rewritten.contains("vault:secret/imp2#DB_PASSWORD"), "{rewritten}");
    assert_eq!((after.uid(), after.gid(), after.mode() & 0o777), (before.uid(), before.gid(), 0o600));
}

#[tokio::test(flavor = "multi_thread")]
async fn library_warnings_reach_stderr() {
    let (_store, srv, root, _rc) = vault().await;
    let home = tempfile::tempdir().unwrap();
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.env("VAULT_NAMESPACE", "team-a").env("VAULT_SKIP_VERIFY", "true").arg("status");
    let o = run_for(c, Duration::from_secs(30));
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("vaultctl: warning: VAULT_NAMESPACE is set"), "{err}");
    assert!(err.contains("vaultctl: warning: VAULT_SKIP_VERIFY is not supported"), "{err}");
    assert!(!err.contains(&root), "{err}");

    // Nothing below warn by default; RUST_LOG can silence it.
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.arg("status");
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o.stderr));
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.env("VAULT_NAMESPACE", "team-a").env("RUST_LOG", "off").arg("status");
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn error_messages_do_not_quote_values() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "CANARY-PW-1"})).await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let check = |o: &Output, want: &str| {
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{want:?} not in {err}");
        assert!(!err.contains("LEAKCANARY") && !err.contains("CANARY-PW-1"), "a value was echoed: {err}");
    };

    // A password that starts with '@' is taken for a file: the message names the key only.
    let mut c = vaultctl(dir, &srv, Some(&root));
    c.current_dir(dir).args(["kv", "put", "secret/x", "password=@LEAKCANARY-AT"]);
    check(&run_for(c, Duration::from_secs(30)), "key password: cannot read the file named after '@'");

    // An unquoted multi-line value: the continuation line is not echoed.
    std::fs::write(dir.join("e1"), "A=1\nPRIVATE_KEY=-----BEGIN\nMIIEv+LEAKCANARY/4aB==\n").unwrap();
    let mut c = vaultctl(dir, &srv, Some(&root));
    c.current_dir(dir).args(["exec", "--env-file", "e1", "--", "true"]);
    check(&run_for(c, Duration::from_secs(30)), "e1:3: the text before '=' is not a valid variable name");

    // A template reading a path computed from a secret: the path is not named.
    let cfg = dir.join("a.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[template]]\ncontents = \"{{{{ secret(\\\"x/\\\" ~ secret(\\\"secret/app\\\").password) }}}}\"\n\
             destination = \"{}\"\n",
            dir.join("out").display()
        ),
    )
    .unwrap();
    let mut c = vaultctl(dir, &srv, Some(&root));
    c.args(["agent", "--config", cfg.to_str().unwrap(), "--once"]);
    check(&run_for(c, Duration::from_secs(30)), "a secret at a path the template computed");
    // A path spelled out in the template is still named.
    std::fs::write(
        &cfg,
        format!(
            "[[template]]\ncontents = \"{{{{ secret(\\\"secret/missing\\\").password }}}}\"\ndestination = \"{}\"\n",
            dir.join("out").display()
        ),
    )
    .unwrap();
    let mut c = vaultctl(dir, &srv, Some(&root));
    c.args(["agent", "--config", cfg.to_str().unwrap(), "--once"]);
    check(&run_for(c, Duration::from_secs(30)), "secret secret/missing not found");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_own_failures_exit_1_and_inherited_refs_can_be_ignored() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "CANARY-PW-9"})).await;
    let home = tempfile::tempdir().unwrap();
    let marker = home.path().join("started");

    // An unrelated inherited variable that is a reference to nothing: exit 1
    // (not the 2 of "not found", which the command could return itself),
    // one line naming the variable and where it came from; no start.
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.env("SOME_LABEL", "vault:nomount/x#y").args(["exec", "--", "touch", marker.to_str().unwrap()]);
    let o = run_for(c, Duration::from_secs(30));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot set SOME_LABEL") && err.contains("--no-inherit-refs"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!marker.exists());

    // --no-inherit-refs: inherited references are passed as they are,
    // flags and env files are still resolved.
    let script = "echo \"label=$SOME_LABEL fwd=$HTTP_X_FORWARDED_USER pw=$PW\"";
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.env("SOME_LABEL", "vault:nomount/x#y").env("HTTP_X_FORWARDED_USER", "vault:secret/app#password").args([
        "exec",
        "--no-inherit-refs",
        "--env",
        "PW=secret/app#password",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout).trim(),
        "label=vault:nomount/x#y fwd=vault:secret/app#password pw=CANARY-PW-9",
        "{}",
        text(&o.stderr)
    );

    // A sealed server is vaultctl's failure too: 1, not 2.
    let (s, _) = rc.put("sys/seal", json!({})).await;
    assert!(s == 200 || s == 204, "seal: {s}");
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.env("VAULT_MAX_RETRIES", "0").args(["exec", "--env", "PW=secret/app#password", "--", "true"]);
    let o = run_for(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
}
