//! Secret injection with the real `vaultctl` binary against the real
//! server: `vaultctl exec` (secrets in the child's environment and not on
//! its command line, exit status, signal forwarding, restart on rotation)
//! and `vaultctl agent` (AppRole from files, `--once` rendering with mode
//! 0400, a daemon re-rendering after a write and signalling a pid-file
//! process, re-login after the token expired, a missing secret writing
//! nothing). What the child got is read from what it wrote, and the rendered
//! files from disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// `vaultctl` with a clean environment: HOME in `home`, VAULT_ADDR, and
/// VAULT_TOKEN if given.
fn vaultctl(home: &Path, srv: &ServerProc, token: Option<&str>) -> Command {
    let mut c = Command::new(vaultctl_bin());
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
            signal(pid, "KILL");
            panic!("vaultctl did not finish within {limit:?}");
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Wait until `f` gives `Some`, at most `limit`; `what` names it in the failure.
async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Wait for a spawned vaultctl to exit, at most `limit`: its exit code and stderr.
async fn exit_of(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let status = wait_for("vaultctl to exit", limit, || child.try_wait().unwrap()).await;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).unwrap();
    }
    (status.code(), err)
}

/// Kills a spawned process if a test fails before it ended.
struct Guard(Option<Child>);

impl Guard {
    fn take(&mut self) -> Child {
        self.0.take().unwrap()
    }
    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_passes_secrets_in_the_environment_only() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "pw-CANARY-1", "user": "app-user", "port": 5432})).await;
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("env.out");
    let envfile = home.path().join("app.env");
    std::fs::write(
        &envfile,
        "# the app\nDB_USER=vault:secret/app#user\nexport LOG_LEVEL=debug\nDB_PORT=\"vault:secret/app#port\"\n",
    )
    .unwrap();

    // The child records its environment and its own command line.
    let script = "env > \"$OUT\"; tr '\\0' ' ' < /proc/$$/cmdline > \"$OUT.cmdline\"";
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.env("OUT", &out).env("OWN_REF", "vault:secret/app#password").args([
        "exec",
        "--env",
        "DB_PASSWORD=secret/app#password",
        "--env-file",
        envfile.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ]);
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success(), "exit {:?}: {}", o.status, text(&o.stderr));
    let env = read(&out).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    for want in
        ["DB_PASSWORD=pw-CANARY-1", "DB_USER=app-user", "LOG_LEVEL=debug", "DB_PORT=5432", "OWN_REF=pw-CANARY-1"]
    {
        assert!(lines.contains(&want), "{want} missing from the child's environment:\n{env}");
    }
    assert!(!env.contains("VAULT_TOKEN") && !env.contains(&root), "the child does not get vaultctl's token");
    let cmdline = read(&home.path().join("env.out.cmdline")).unwrap();
    assert!(cmdline.starts_with("sh -c"), "{cmdline}");
    assert!(!cmdline.contains("CANARY") && !cmdline.contains("app-user"), "no secret on the command line: {cmdline}");
    assert!(!text(&o.stdout).contains("CANARY") && !text(&o.stderr).contains("CANARY"));

    // A missing secret or field: a clear error, the command never started.
    for (flag, want) in [
        // The library's (Client::resolve) wording.
        ("X=secret/nope#password", "vault:secret/nope#password: no secret at this path"),
        ("X=secret/app#nofield", "the secret has no field `nofield`"),
    ] {
        let marker = home.path().join("started");
        let mut c = vaultctl(home.path(), &srv, Some(&root));
        c.args(["exec", "--env", flag, "--", "touch", marker.to_str().unwrap()]);
        let o = run_for(c, Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains(want), "{flag}: {}", text(&o.stderr));
        assert!(!marker.exists(), "the command must not start without its secrets");
    }

    // No token at all: says so.
    let mut c = vaultctl(home.path(), &srv, None);
    c.args(["exec", "--env", "X=secret/app#password", "--", "true"]);
    let o = run_for(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no Vault token"), "{}", text(&o.stderr));

    // A bad token: said so, and not quoted.
    let mut c = vaultctl(home.path(), &srv, Some("hvs.BADTOKEN-CANARY"));
    c.args(["exec", "--env", "X=secret/app#password", "--", "true"]);
    let o = run_for(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("the Vault token was refused"), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("CANARY"), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_exits_with_the_commands_status() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "pw"})).await;
    let home = tempfile::tempdir().unwrap();
    for (script, code) in [("exit 0", 0), ("exit 7", 7), ("kill -9 $$", 128 + 9), ("kill -TERM $$", 128 + 15)] {
        let mut c = vaultctl(home.path(), &srv, Some(&root));
        c.args(["exec", "--env", "P=secret/app#password", "--", "sh", "-c", script]);
        let o = run_for(c, Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(code), "{script}: {}", text(&o.stderr));
    }
    // Plain values only: no login needed, no token given.
    let plain = home.path().join("plain.env");
    std::fs::write(&plain, "MODE=test\n").unwrap();
    let mut c = vaultctl(home.path(), &srv, None);
    c.args(["exec", "--env-file", plain.to_str().unwrap(), "--", "sh", "-c", "test \"$MODE\" = test && exit 4"]);
    let o = run_for(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));

    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.args(["exec", "--env", "P=secret/app#password", "--", "/nonexistent/program"]);
    let o = run_for(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot start /nonexistent/program"), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_forwards_signals() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "pw"})).await;
    let home = tempfile::tempdir().unwrap();
    let (ready, marker) = (home.path().join("ready"), home.path().join("marker"));
    let script = "trap 'echo got-usr1 >> \"$MARKER\"' USR1; trap 'echo got-term >> \"$MARKER\"; exit 3' TERM; \
                  echo ready > \"$READY\"; while true; do sleep 0.1; done";
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.env("READY", &ready).env("MARKER", &marker).stderr(Stdio::piped()).args([
        "exec",
        "--env",
        "P=secret/app#password",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let mut g = Guard(Some(c.spawn().unwrap()));
    wait_for("the command to start", Duration::from_secs(20), || read(&ready)).await;
    signal(g.pid(), "USR1");
    wait_for("SIGUSR1 to reach the command", Duration::from_secs(10), || {
        read(&marker).filter(|m| m.contains("got-usr1"))
    })
    .await;
    signal(g.pid(), "TERM");
    let (code, err) = exit_of(g.take(), Duration::from_secs(20)).await;
    assert_eq!(code, Some(3), "vaultctl exits with the command's status: {err}");
    assert_eq!(read(&marker).unwrap(), "got-usr1\ngot-term\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_restarts_on_rotation() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "v1-CANARY", "user": "u"})).await;
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("starts.log");
    // Each start appends its password and pid; SIGTERM ends it cleanly.
    let script = "echo \"$P $$\" >> \"$LOG\"; trap 'exit 0' TERM; while true; do sleep 0.1; done";
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.env("LOG", &log).stderr(Stdio::piped()).args([
        "exec",
        "--restart-on-rotate",
        "--grace-period",
        "5s",
        "--env",
        "P=secret/app#password",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let mut g = Guard(Some(c.spawn().unwrap()));
    let first =
        wait_for("the first start", Duration::from_secs(20), || read(&log).filter(|l| l.lines().count() == 1)).await;
    assert!(first.starts_with("v1-CANARY "), "{first}");
    let first_pid: i32 = first.split_whitespace().nth(1).unwrap().parse().unwrap();

    // A new version whose field the command got: restarted with the new value.
    put(&rc, "app", json!({"password": "v2-CANARY", "user": "u"})).await;
    let log_text =
        wait_for("a restart with v2", Duration::from_secs(20), || read(&log).filter(|l| l.lines().count() >= 2)).await;
    let second = log_text.lines().nth(1).unwrap();
    assert!(second.starts_with("v2-CANARY "), "{log_text}");
    assert!(!Path::new(&format!("/proc/{first_pid}")).exists(), "the old command was stopped");

    // A rotation (rotate now) restarts it too, with a generated password.
    let (s, b) = rc.post("secret/rotation/app", json!({"period": "1h", "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "rotation policy: {b}");
    let (s, b) = rc.post("secret/rotate/app", json!({})).await;
    assert_eq!(s, 200, "rotate: {b}");
    let log_text = wait_for("a restart after the rotation", Duration::from_secs(20), || {
        read(&log).filter(|l| l.lines().count() >= 3)
    })
    .await;
    let third = log_text.lines().nth(2).unwrap();
    assert!(!third.starts_with("v2-CANARY ") && !third.starts_with(' '), "a new password: {log_text}");

    signal(g.pid(), "TERM");
    let (code, err) = exit_of(g.take(), Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("restarting the command") && !err.contains("CANARY"), "{err}");
    assert_eq!(read(&log).unwrap().lines().count(), 3, "one start per version");
}

/// Enable AppRole with a role `app` that may read `secret/data/app` (tokens
/// of `ttl`/`max_ttl` seconds); write its role ID and a secret ID to files
/// in `dir`.
async fn approle(rc: &Client, dir: &Path, ttl: u32, max_ttl: u32) -> (PathBuf, PathBuf) {
    let (s, v) = rc.post("sys/auth/approle", json!({"type": "approle"})).await;
    assert!(s == 204 || s == 400, "enable approle: {v}");
    let policy = "path \"secret/data/app\" { capabilities = [\"read\"] }";
    let (s, v) = rc.put("sys/policies/acl/app", json!({"policy": policy})).await;
    assert_eq!(s, 204, "policy: {v}");
    let role = json!({"token_policies": ["app"], "token_ttl": ttl, "token_max_ttl": max_ttl});
    let (s, v) = rc.post("auth/approle/role/app", role).await;
    assert_eq!(s, 204, "role: {v}");
    let (s, v) = rc.get("auth/approle/role/app/role-id").await;
    assert_eq!(s, 200, "{v}");
    let role_id = v["data"]["role_id"].as_str().unwrap().to_string();
    let (s, v) = rc.post("auth/approle/role/app/secret-id", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let secret_id = v["data"]["secret_id"].as_str().unwrap().to_string();
    let (rp, sp) = (dir.join("role-id"), dir.join("secret-id"));
    std::fs::write(&rp, format!("{role_id}\n")).unwrap();
    std::fs::write(&sp, format!("{secret_id}\n")).unwrap();
    (rp, sp)
}

fn approle_auth(rp: &Path, sp: &Path) -> String {
    format!(
        "[auto_auth]\nmethod = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"\n",
        rp.display(),
        sp.display()
    )
}

/// A template rendering `secret/app`'s user and password, as a TOML value
/// (a multi-line literal string).
const APP_TEMPLATE: &str = "'''user={{ secret(\"secret/app\").user }}
password={{ secret(\"secret/app\").password }}
'''";

#[tokio::test(flavor = "multi_thread")]
async fn agent_once_renders_with_approle_from_files() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_store, srv, _root, rc) = vault().await;
    put(&rc, "app", json!({"password": "pw-CANARY-1", "user": "app-user"})).await;
    let home = tempfile::tempdir().unwrap();
    let (rp, sp) = approle(&rc, home.path(), 3600, 7200).await;
    let dest = home.path().join("out/app.env");
    std::fs::create_dir(home.path().join("out")).unwrap();
    let tmpl = home.path().join("app.tmpl");
    std::fs::write(&tmpl, "{% set s = secret(\"secret/app\") %}DSN=postgres://{{ s.user }}:{{ s.password }}@db/app\n")
        .unwrap();
    let dsn = home.path().join("out/dsn");
    let cfg = home.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[template]]\ncontents = {APP_TEMPLATE}\ndestination = \"{}\"\n\n\
             [[template]]\nsource = \"{}\"\ndestination = \"{}\"\nmode = \"0440\"\n",
            approle_auth(&rp, &sp),
            dest.display(),
            tmpl.display(),
            dsn.display()
        ),
    )
    .unwrap();
    // No VAULT_TOKEN: the agent logs in with AppRole.
    let mut c = vaultctl(home.path(), &srv, None);
    c.args(["agent", "--config", cfg.to_str().unwrap(), "--once"]);
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(read(&dest).unwrap(), "user=app-user\npassword=pw-CANARY-1\n");
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o400, "mode 0400 by default");
    assert_eq!(read(&dsn).unwrap(), "DSN=postgres://app-user:pw-CANARY-1@db/app\n");
    assert_eq!(std::fs::metadata(&dsn).unwrap().permissions().mode() & 0o7777, 0o440);
    let names: Vec<_> = std::fs::read_dir(home.path().join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    assert!(!text(&o.stdout).contains("CANARY") && !text(&o.stderr).contains("CANARY"));

    // A wrong secret ID: the login error, nothing rewritten.
    std::fs::write(&sp, "not-the-secret-id\n").unwrap();
    std::fs::remove_file(&dest).unwrap();
    let mut c = vaultctl(home.path(), &srv, None);
    c.args(["agent", "--config", cfg.to_str().unwrap(), "--once"]);
    let o = run_for(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("AppRole login"), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("not-the-secret-id"), "{}", text(&o.stderr));
    assert!(!dest.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_missing_secret_writes_nothing() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "pw-CANARY", "user": "u"})).await;
    let home = tempfile::tempdir().unwrap();
    let (first, second) = (home.path().join("first"), home.path().join("second"));
    std::fs::write(&second, "old contents\n").unwrap();
    let cfg = home.path().join("agent.toml");
    let write_cfg = |tmpl: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[[template]]\ncontents = {APP_TEMPLATE}\ndestination = \"{}\"\n\n\
                 [[template]]\ncontents = \"{tmpl}\"\ndestination = \"{}\"\n",
                first.display(),
                second.display()
            ),
        )
        .unwrap();
    };
    for (tmpl, want) in [
        ("x={{ secret(\\\"secret/missing\\\").password }}", "secret secret/missing not found"),
        ("x={{ secret(\\\"secret/app\\\").nofield }}", "template"),
        ("x={{ secret(\\\"secret/app\\\").password", "syntax error"),
    ] {
        write_cfg(tmpl);
        let mut c = vaultctl(home.path(), &srv, Some(&root));
        c.args(["agent", "--config", cfg.to_str().unwrap(), "--once"]);
        let o = run_for(c, Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(1), "{tmpl}");
        let err = text(&o.stderr);
        assert!(err.contains(want), "{tmpl}: {err}");
        assert!(!err.contains("CANARY"), "{err}");
        assert!(!first.exists(), "{tmpl}: no file written when any template fails");
        assert_eq!(read(&second).unwrap(), "old contents\n", "{tmpl}: the old file is kept");
        let names: Vec<_> = std::fs::read_dir(home.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().starts_with(".vaultctl-")), "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_daemon_rerenders_and_signals_the_pid_file_process() {
    let (_store, srv, _root, rc) = vault().await;
    put(&rc, "app", json!({"password": "v1-CANARY", "user": "u"})).await;
    let home = tempfile::tempdir().unwrap();
    // Tokens live 4 s (at most 6 s): the agent must renew and log in again
    // to see the later writes.
    let (rp, sp) = approle(&rc, home.path(), 4, 6).await;
    let (pid_file, hups) = (home.path().join("app.pid"), home.path().join("hups"));

    // The "application": writes its pid, counts SIGHUPs. A shell cannot
    // trap a signal that was ignored when it started (POSIX), as SIGHUP is
    // under `nohup`: `env --default-signal` gives it the default first.
    let app = Command::new("env")
        .args(["--default-signal=HUP", "sh", "-c"])
        .arg("echo $$ > \"$PIDFILE\"; trap 'echo hup >> \"$HUPS\"' HUP; while true; do sleep 0.1; done")
        .env("PIDFILE", &pid_file)
        .env("HUPS", &hups)
        .spawn()
        .unwrap();
    let _app = Guard(Some(app));
    wait_for("the app's pid file", Duration::from_secs(10), || read(&pid_file).filter(|p| p.ends_with('\n'))).await;

    let dest = home.path().join("app.env");
    let cfg = home.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[template]]\ncontents = {APP_TEMPLATE}\ndestination = \"{}\"\n\
             on_change = {{ signal = \"SIGHUP\", pid_file = \"{}\" }}\n",
            approle_auth(&rp, &sp),
            dest.display(),
            pid_file.display()
        ),
    )
    .unwrap();
    let mut c = vaultctl(home.path(), &srv, None);
    c.stderr(Stdio::piped()).args(["agent", "--config", cfg.to_str().unwrap()]);
    let mut agent = Guard(Some(c.spawn().unwrap()));
    wait_for("the first render", Duration::from_secs(20), || read(&dest).filter(|t| t.contains("v1-CANARY"))).await;
    assert!(!hups.exists(), "no signal for the first render");

    // SIGHUP to the agent writes the files again (here: a removed one).
    std::fs::remove_file(&dest).unwrap();
    signal(agent.pid(), "HUP");
    wait_for("the file rewritten on SIGHUP", Duration::from_secs(20), || {
        read(&dest).filter(|t| t.contains("v1-CANARY"))
    })
    .await;

    put(&rc, "app", json!({"password": "v2-CANARY", "user": "u"})).await;
    let t =
        wait_for("the re-render", Duration::from_secs(20), || read(&dest).filter(|t| t.contains("v2-CANARY"))).await;
    assert_eq!(t, "user=u\npassword=v2-CANARY\n");
    // Says what the app got on failure (none, or more than one signal).
    let start = Instant::now();
    while read(&hups).as_deref() != Some("hup\n") && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if read(&hups).as_deref() != Some("hup\n") {
        signal(agent.pid(), "TERM");
        let (_, err) = exit_of(agent.take(), Duration::from_secs(20)).await;
        panic!("one SIGHUP to the app after the re-render; the app got {:?}; agent stderr:\n{err}", read(&hups));
    }

    // A version that changes nothing rendered: no rewrite, no signal.
    put(&rc, "app", json!({"password": "v2-CANARY", "user": "u", "unused": "x"})).await;

    // Past the tokens' max TTL: the agent logged in again and still follows.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(read(&hups).unwrap(), "hup\n", "an unchanged file is not signalled");
    put(&rc, "app", json!({"password": "v3-CANARY", "user": "u"})).await;
    wait_for("the re-render after re-login", Duration::from_secs(20), || {
        read(&dest).filter(|t| t.contains("v3-CANARY"))
    })
    .await;
    wait_for("the second SIGHUP", Duration::from_secs(10), || read(&hups).filter(|h| h == "hup\nhup\n")).await;

    signal(agent.pid(), "TERM");
    let (code, err) = exit_of(agent.take(), Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("logged in again"), "{err}");
    assert!(!err.contains("CANARY"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_supervises_and_restarts_its_child() {
    let (_store, srv, root, rc) = vault().await;
    put(&rc, "app", json!({"password": "v1-CANARY", "user": "u"})).await;
    let home = tempfile::tempdir().unwrap();
    let dest = home.path().join("app.env");
    let log = home.path().join("starts.log");
    let cfg = home.path().join("agent.toml");
    // The child reads the rendered file at each start.
    std::fs::write(
        &cfg,
        format!(
            "[[template]]\ncontents = {APP_TEMPLATE}\ndestination = \"{d}\"\non_change = {{ restart = true }}\n\n\
             [exec]\ncommand = [\"sh\", \"-c\", \"grep password {d} >> {l}; trap 'exit 0' TERM; while true; do sleep 0.1; done\"]\n\
             grace_period = \"5s\"\n",
            d = dest.display(),
            l = log.display()
        ),
    )
    .unwrap();
    let mut c = vaultctl(home.path(), &srv, Some(&root));
    c.stderr(Stdio::piped()).args(["agent", "--config", cfg.to_str().unwrap()]);
    let mut agent = Guard(Some(c.spawn().unwrap()));
    wait_for("the child's first start", Duration::from_secs(20), || read(&log).filter(|l| l == "password=v1-CANARY\n"))
        .await;
    put(&rc, "app", json!({"password": "v2-CANARY", "user": "u"})).await;
    wait_for("the restart with the new file", Duration::from_secs(20), || {
        read(&log).filter(|l| l == "password=v1-CANARY\npassword=v2-CANARY\n")
    })
    .await;
    // SIGTERM goes to the child; its exit is the agent's.
    signal(agent.pid(), "TERM");
    let (code, err) = exit_of(agent.take(), Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{err}");
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).stderr(Stdio::piped()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
    out.stdout
}

/// A projected service-account token for `apps/web`, signed with the
/// Ed25519 key at `key` (the cluster's signing key, as the server is told).
fn service_account_token(dir: &Path, key: &Path) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:apps:web",
                        "iat": now, "nbf": now, "exp": now + 3600,
                        "kubernetes.io/serviceaccount/namespace": "apps",
                        "kubernetes.io/serviceaccount/service-account.name": "web",
                        "kubernetes.io/serviceaccount/service-account.uid": "5d3f6a2e-0001"});
    let message = format!("{}.{}", b64(br#"{"alg":"EdDSA","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let msg = dir.join("jwt-message");
    std::fs::write(&msg, &message).unwrap();
    let sig = openssl(&["pkeyutl", "-sign", "-rawin", "-inkey", key.to_str().unwrap(), "-in", msg.to_str().unwrap()]);
    format!("{message}.{}", b64(&sig))
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_logs_in_with_a_kubernetes_service_account() {
    let (_store, srv, _root, rc) = vault().await;
    put(&rc, "app", json!({"password": "k8s-CANARY"})).await;
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("sa.pem");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", key.to_str().unwrap()]);
    let public_pem = text(&openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]));

    assert_eq!(rc.post("sys/auth/k8s", json!({"type": "kubernetes"})).await.0, 204);
    let (s, v) =
        rc.post("auth/k8s/config", json!({"kubernetes_host": "https://10.96.0.1:443", "pem_keys": [public_pem]})).await;
    assert_eq!(s, 204, "config: {v}");
    let policy = "path \"secret/data/app\" { capabilities = [\"read\"] }";
    assert_eq!(rc.put("sys/policies/acl/app", json!({"policy": policy})).await.0, 204);
    let role = json!({"bound_service_account_names": ["web"], "bound_service_account_namespaces": ["apps"],
                      "token_policies": ["app"]});
    let (s, v) = rc.post("auth/k8s/role/web", role).await;
    assert_eq!(s, 204, "role: {v}");
    let jwt = home.path().join("token");
    std::fs::write(&jwt, service_account_token(home.path(), &key)).unwrap();

    let out = home.path().join("env.out");
    let mut c = vaultctl(home.path(), &srv, None);
    c.env("OUT", &out).args([
        "exec",
        "--auth-method",
        "kubernetes",
        "--auth-mount",
        "k8s",
        "--role",
        "web",
        "--jwt-file",
        jwt.to_str().unwrap(),
        "--env",
        "DB_PASSWORD=secret/app#password",
        "--",
        "sh",
        "-c",
        "echo \"$DB_PASSWORD\" > \"$OUT\"",
    ]);
    let o = run_for(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(read(&out).unwrap(), "k8s-CANARY\n");

    // The wrong role: the login's error, named.
    let mut c = vaultctl(home.path(), &srv, None);
    c.args(["exec", "--auth-method", "kubernetes", "--auth-mount", "k8s", "--role", "nope", "--jwt-file"])
        .arg(&jwt)
        .args(["--env", "X=secret/app#password", "--", "true"]);
    let o = run_for(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("Kubernetes login at auth/k8s as role nope failed"), "{}", text(&o.stderr));
}
