//! Packaging checked offline (no Docker engine, no cluster): the compose
//! file against the compose-spec schema (`check-jsonschema`), the Kubernetes
//! manifests against the API schemas (`kubernetes-validate --strict`), the
//! properties the deployment relies on (no published database port,
//! secrets from files, probes, in-memory secret volumes), the Dockerfile's
//! non-root user and health check, and the image's behaviour re-enacted:
//! the server binary run as an unprivileged user, its files read-only, only
//! a data directory writable.
//!
//! The validators are PyPI packages in a venv that `scripts/test` creates;
//! its path comes in `VAULT_TEST_DEPLOY_VENV`. Without it these tests fail
//! (they never skip).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use vault_e2e::{ServerProc, server_bin, vaultctl_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A program of the validators' venv.
fn venv_bin(name: &str) -> PathBuf {
    let Ok(venv) = std::env::var("VAULT_TEST_DEPLOY_VENV") else {
        panic!(
            "VAULT_TEST_DEPLOY_VENV is not set. These tests need check-jsonschema and kubernetes-validate \
             from PyPI: run scripts/test (it installs them into target/pyenv-deploy and sets the variable), \
             or: python3 -m venv target/pyenv-deploy && target/pyenv-deploy/bin/pip install \
             check-jsonschema==0.39.0 kubernetes-validate==1.37.0 && \
             export VAULT_TEST_DEPLOY_VENV=$PWD/target/pyenv-deploy"
        );
    };
    let bin = Path::new(&venv).join("bin").join(name);
    assert!(bin.exists(), "{} missing: VAULT_TEST_DEPLOY_VENV={venv} lacks {name}; rerun scripts/test", bin.display());
    bin
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// YAML documents as JSON values (PyYAML from the venv: the test crate has no YAML parser).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let script = "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let o = run(Command::new(venv_bin("python")).args(["-c", script]).arg(path));
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap()
}

/// TOML as JSON (Python's tomllib).
fn toml_doc(toml: &str) -> Value {
    let script = "import json,sys,tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))";
    let mut child = Command::new(venv_bin("python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), toml.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "invalid TOML: {}\n{toml}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn check_compose(path: &Path) -> Output {
    run(Command::new(venv_bin("check-jsonschema")).args(["--builtin-schema", "vendor.compose-spec"]).arg(path))
}

#[test]
fn compose_file_is_valid_compose_spec() {
    let file = repo().join("docker-compose.yml");
    let o = check_compose(&file);
    assert!(o.status.success(), "docker-compose.yml: {}", text(&o));
    // The validator does reject a mistake (a misspelt key), so the pass above means something.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("docker-compose.yml");
    let original = std::fs::read_to_string(&file).unwrap();
    assert!(original.contains("    read_only: true\n"));
    std::fs::write(&bad, original.replacen("    read_only: true\n", "    read_onyl: true\n", 1)).unwrap();
    let o = check_compose(&bad);
    assert!(!o.status.success() && text(&o).contains("read_onyl"), "{}", text(&o));
}

#[test]
fn compose_keeps_databases_internal_and_secrets_in_files() {
    let c = yaml_docs(&repo().join("docker-compose.yml")).remove(0);
    let svc = &c["services"];
    for db in ["db", "appdb"] {
        assert!(svc[db].get("ports").is_none(), "{db} must not publish a port");
        assert!(svc[db]["environment"]["POSTGRES_PASSWORD_FILE"].as_str().unwrap().starts_with("/run/secrets/"));
        for net in svc[db]["networks"].as_array().unwrap() {
            assert_eq!(c["networks"][net.as_str().unwrap()]["internal"], true, "{db} on an internal network only");
        }
    }
    let vault = &svc["vault"];
    let url = vault["environment"]["VAULT_STORAGE_URL"].as_str().unwrap();
    let userinfo = url.trim_start_matches("postgres://").split('@').next().unwrap();
    assert!(!userinfo.contains(':'), "no password in the URL: {url}");
    assert_eq!(vault["environment"]["VAULT_STORAGE_PASSWORD_FILE"], "/run/secrets/pg_password");
    assert!(vault["secrets"].as_array().unwrap().contains(&Value::from("pg_password")));
    assert_eq!(vault["read_only"], true);
    assert_eq!(vault["ports"][0], "127.0.0.1:8200:8200", "published on loopback only");
    // The operator helper: never started by `up`, no volume (shares are not stored).
    let op = &svc["operator"];
    assert_eq!(op["profiles"][0], "operator");
    assert!(op.get("volumes").is_none() && op["read_only"] == true);
    assert_eq!(op["entrypoint"][0], "/usr/local/bin/vaultctl");
    // The app gets its AppRole credentials from Docker secrets and its password through vaultctl exec.
    let app = &svc["app"];
    let args: Vec<&str> = app["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(args[0], "exec");
    assert!(args.contains(&"--role-id-file=/run/secrets/app_role_id"), "{args:?}");
    assert!(args.contains(&"--secret-id-file=/run/secrets/app_secret_id"), "{args:?}");
    assert!(args.iter().any(|a| a.starts_with("--env=PGPASSWORD=secret/myapp#")), "{args:?}");
    assert!(app["environment"].get("PGPASSWORD").is_none());
    for (name, s) in c["secrets"].as_object().unwrap() {
        assert!(s["file"].as_str().unwrap().starts_with("./secrets/"), "secret {name}");
    }
    // ... and ./secrets/ never goes into an image.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "secrets/"), ".dockerignore must exclude secrets/");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let files = manifests();
    let o = run(Command::new(venv_bin("kubernetes-validate")).arg("--strict").args(&files));
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for kind in ["statefulset/vault", "service/vault", "networkpolicy/", "deployment/myapp", "configmap/"] {
        assert!(out.contains(kind), "{kind} not validated: {out}");
    }
    // A wrong field is caught.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let vault = std::fs::read_to_string(repo().join("deploy/kubernetes/20-vault.yaml")).unwrap();
    std::fs::write(&bad, vault.replacen("readOnlyRootFilesystem: true", "readOnlyRootFS: true", 1)).unwrap();
    let o = run(Command::new(venv_bin("kubernetes-validate")).arg("--strict").arg(&bad));
    assert!(!o.status.success(), "{}", text(&o));
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn kubernetes_probes_security_and_injection() {
    let docs: Vec<Value> = manifests().iter().flat_map(|f| yaml_docs(f)).collect();
    let vault = &find(&docs, "StatefulSet", "vault")["spec"]["template"]["spec"];
    let c = &vault["containers"][0];
    let live = c["livenessProbe"]["httpGet"]["path"].as_str().unwrap();
    let ready = c["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    assert!(live.starts_with("/v1/sys/health?"), "{live}");
    assert!(live.contains("sealedcode=200") && live.contains("uninitcode=200"), "alive while sealed: {live}");
    assert!(ready.starts_with("/v1/sys/health") && !ready.contains("sealedcode"), "ready when unsealed: {ready}");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(vault["securityContext"]["runAsNonRoot"], true);
    let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"VAULT_STORAGE_PASSWORD_FILE"), "{env:?}");
    let url = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "VAULT_STORAGE_URL").unwrap()["value"]
        .as_str()
        .unwrap();
    assert!(!url.trim_start_matches("postgres://").split('@').next().unwrap().contains(':'), "{url}");
    // The server's own config (ConfigMap) is a valid server configuration.
    let toml = find(&docs, "ConfigMap", "vault-config")["data"]["vault.toml"].as_str().unwrap();
    toml_doc(toml);
    check_server_config(toml);

    // The app: agent --once as init container, agent as sidecar, Kubernetes auth, tmpfs volume.
    let app = &find(&docs, "Deployment", "myapp")["spec"]["template"]["spec"];
    let init = &app["initContainers"][0];
    let cmd = |c: &Value| -> Vec<String> {
        c["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    let init_cmd = cmd(init);
    assert!(init_cmd[0].ends_with("vaultctl") && init_cmd[1] == "agent" && init_cmd.contains(&"--once".into()));
    let sidecar = app["containers"].as_array().unwrap().iter().find(|c| c["name"] == "vault-agent").unwrap();
    let side_cmd = cmd(sidecar);
    assert!(side_cmd[1] == "agent" && !side_cmd.contains(&"--once".into()), "{side_cmd:?}");
    let vol = app["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "vault-secrets").unwrap();
    assert_eq!(vol["emptyDir"]["medium"], "Memory");
    for c in app["initContainers"].as_array().unwrap().iter().chain(app["containers"].as_array().unwrap()) {
        let mounts = c["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["name"] == "vault-secrets"), "{} mounts the secrets", c["name"]);
    }
    let agent = toml_doc(find(&docs, "ConfigMap", "myapp-vault-agent")["data"]["agent.toml"].as_str().unwrap());
    assert_eq!(agent["auto_auth"]["method"], "kubernetes");
    assert_eq!(agent["auto_auth"]["role"], "myapp");
    assert_eq!(agent["template"][0]["mode"], "0400");
    assert!(agent["template"][0]["contents"].as_str().unwrap().contains("secret(\"secret/myapp\")"));
    // The database is reachable from the vault pods only.
    let np = &find(&docs, "NetworkPolicy", "postgres-from-vault-only")["spec"];
    assert_eq!(np["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "vault");
}

/// `vault-server` accepts this configuration (a start that fails only on
/// the storage, never on the file).
fn check_server_config(toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vault.toml");
    std::fs::write(&cfg, toml).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = run(Command::new(server_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .env("VAULT_STORAGE_URL", format!("postgres://vault@127.0.0.1:{port}/vault")));
    let out = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("cannot connect to PostgreSQL") && out.contains("refused"), "{out}");
}

/// Instructions of the Dockerfile's last stage (the image `docker build .` makes).
fn last_stage(dockerfile: &str) -> Vec<String> {
    // Join continuation lines, drop comments.
    let joined = dockerfile.replace("\\\n", " ");
    let lines: Vec<String> =
        joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    let start = lines.iter().rposition(|l| l.to_uppercase().starts_with("FROM ")).unwrap();
    lines[start..].to_vec()
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_health_check() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let froms = text.lines().filter(|l| l.trim_start().to_uppercase().starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage build");
    assert!(text.contains("cargo build --release --locked"), "built by cargo from the lock file");
    let stage = last_stage(&text);
    let user = stage.iter().rfind(|l| l.starts_with("USER ")).expect("USER in the runtime stage");
    let uid = user["USER ".len()..].split(':').next().unwrap().trim();
    assert!(!["0", "root", ""].contains(&uid), "non-root user: {user}");
    let health = stage.iter().find(|l| l.starts_with("HEALTHCHECK ")).expect("HEALTHCHECK in the runtime stage");
    assert!(health.contains("CMD [\"/usr/local/bin/vaultctl\", \"health\"]"), "exec form, no shell/curl: {health}");
    assert!(!stage.iter().any(|l| l.contains("curl")), "no curl in the image");
    assert!(stage.iter().any(|l| l.starts_with("ENTRYPOINT [\"/usr/local/bin/vault-server\"]")));
    assert!(stage.iter().any(|l| l.starts_with("VOLUME [\"/data\"]")), "the one writable path is a volume");
    // Every file the Dockerfile copies from the context exists.
    for l in text.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let src = l.split_whitespace().nth(1).unwrap();
        if src != "." {
            assert!(repo().join(src).exists(), "{src} missing");
        }
    }
    // The image's configuration is valid and points at /data.
    let cfg = std::fs::read_to_string(repo().join("deploy/docker/vault.toml")).unwrap();
    assert_eq!(toml_doc(&cfg)["storage_url"], "sqlite:///data/vault.db");
    check_server_config(&cfg);
}

fn sh(cmd: &str) {
    let o = run(Command::new("sh").args(["-c", cmd]));
    assert!(o.status.success(), "{cmd}: {}", text(&o));
}

/// Every path under `root` with its mode, size and modification time.
fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        out.push(format!("{} {:o} {} {}", p.display(), m.mode(), m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000));
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

/// The container re-enacted: the binaries and config in a root-owned,
/// read-only tree, the server run as `nobody` (as the image's user 65532
/// is: no privileges, owning nothing but its data directory).
#[tokio::test(flavor = "multi_thread")]
async fn runs_unprivileged_with_read_only_files_and_a_writable_data_dir() {
    let uid = String::from_utf8(run(Command::new("id").arg("-u")).stdout).unwrap();
    assert_eq!(uid.trim(), "0", "this test plays the container runtime and needs root (to switch user)");
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("image");
    let data = top.path().join("data");
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.join("etc/vault")).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(server_bin(), bin.join("vault-server")).unwrap();
    std::fs::copy(vaultctl_bin(), bin.join("vaultctl")).unwrap();
    std::fs::copy(repo().join("deploy/docker/vault.toml"), root.join("etc/vault/vault.toml")).unwrap();
    let (t, r, d) = (top.path().display(), root.display(), data.display());
    sh(&format!(
        "chmod 0755 {t} && chown -R root:root {r} && chmod -R a-w {r} && chmod 0555 {r}/usr/local/bin/* \
         && chown nobody:nogroup {d} && chmod 0700 {d}"
    ));
    let before = snapshot(&root);
    let as_nobody = |program: &Path| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]).arg(program);
        c.current_dir(&root).env("HOME", "/nonexistent");
        c
    };

    let mut cmd = as_nobody(&bin.join("vault-server"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--config"]).arg(root.join("etc/vault/vault.toml"));
    cmd.env("VAULT_STORAGE_URL", format!("sqlite://{d}/vault.db"));
    let srv = ServerProc::spawn(cmd);
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uids.split_whitespace().skip(1).all(|u| u == "65534"), "runs as nobody: {uids}");

    // It serves: uninitialized, then initialized, unsealed and storing.
    let c = srv.client();
    assert_eq!(c.get("sys/health").await.0, 501);
    let (keys, root_token) = c.init(1, 1).await;
    c.unseal(&keys).await;
    assert_eq!(c.get("sys/health").await.0, 200);
    let rc = c.with_token(&root_token);
    let (s, v) = rc.post("sys/mounts/secret", serde_json::json!({"type": "kv", "options": {"version": "2"}})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = rc.post("secret/data/app", serde_json::json!({"data": {"k": "v"}})).await;
    assert_eq!(s, 200, "{v}");

    // The image's health check, run as the same user.
    let o = run(as_nobody(&bin.join("vaultctl")).arg("health").env("VAULT_ADDR", srv.url()));
    assert!(o.status.success(), "vaultctl health on an unsealed server: {}", text(&o));

    // Only the data directory was written; the read-only tree is untouched.
    let files: Vec<String> =
        std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(files.contains(&"vault.db".to_string()), "{files:?}");
    assert!(srv.log_text().contains("vaultctl operator init"), "the first start says what to do");
    assert!(srv.terminate().success());
    assert_eq!(snapshot(&root), before, "nothing changed in the read-only files");
    use std::os::unix::fs::MetadataExt as _;
    for e in std::fs::read_dir(&data).unwrap() {
        assert_eq!(e.unwrap().metadata().unwrap().uid(), 65534, "data files belong to the unprivileged user");
    }

    // Storage pointed anywhere else: refused by the filesystem, with the cause, and nothing created.
    let mut cmd = as_nobody(&bin.join("vault-server"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--config"]).arg(root.join("etc/vault/vault.toml"));
    cmd.env("VAULT_STORAGE_URL", format!("sqlite://{r}/etc/vault/vault.db"));
    let started = Instant::now();
    let o = run(&mut cmd);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!o.status.success(), "{}", text(&o));
    let out = text(&o).to_lowercase();
    assert!(out.contains("permission denied") || out.contains("readonly") || out.contains("unable to open"), "{out}");
    assert_eq!(snapshot(&root), before, "nothing created outside the data directory");
}
