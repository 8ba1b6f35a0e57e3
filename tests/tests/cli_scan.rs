//! `vaultctl scan` and `vaultctl import` as a user runs them: the real
//! binary on a fixture tree (a Python service configured by a .env file,
//! with a settings module, a docker-compose file, a Kubernetes Secret, a
//! JSON config and a README with placeholders), and `import` against a
//! real server, read back through the API. Every run's output is checked
//! for the fixture's secret values: none may ever be printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use vault_e2e::{Backend, ServerProc, Store, vaultctl_bin};

/// Every secret value in the fixture contains this; no output may.
const CANARY: &str = "CANARY";

const DOTENV: &str = "\
# Service configuration
APP_ENV=production
DB_HOST=db.internal
DB_USER=app
DB_PASSWORD=CANARY-db-pw
DATABASE_URL=postgres://app:CANARY-url@db.internal:5432/app
STRIPE_KEY=\"sk_live_CANARYabcdefghijklmnop\"
SECRET_KEY_BASE=${SECRET_KEY_BASE}
PASSWORD_FILE=/run/secrets/db
LOG_LEVEL=info
";

const SETTINGS_PY: &str = "\
import os
SECRET_KEY = 'django-insecure-CANARY-settings'
DEBUG = False
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.postgresql',
        'PASSWORD': os.environ['DB_PASSWORD'],
    }
}
FALLBACK = os.getenv('REDIS_PASSWORD', 'CANARY-redis')
";

const COMPOSE: &str = "\
services:
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: CANARY-compose
      POSTGRES_USER: app
  web:
    build: .
    environment:
      - DB_HOST=db
      - API_TOKEN=${API_TOKEN}
";

const K8S_SECRET: &str = "\
apiVersion: v1
kind: Secret
metadata:
  name: app
type: Opaque
data:
  db-password: Q0FOQVJZLWs4cw==
";

const CONFIG_JSON: &str = r#"{
  "smtp": {"host": "mail.internal", "port": 587, "password": "CANARY-smtp"},
  "labels": {"password": "Password"}
}
"#;

const README: &str = "\
# The service

Create a .env file:

    DB_PASSWORD=<your database password>
    DATABASE_URL=postgres://app:<password>@localhost/app
    STRIPE_KEY=your-stripe-key-here
    AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE
";

/// The fixture tree: returns its directory.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (".env", DOTENV),
        ("settings.py", SETTINGS_PY),
        ("docker-compose.yml", COMPOSE),
        ("k8s/secret.yaml", K8S_SECRET),
        ("config.json", CONFIG_JSON),
        ("README.md", README),
        ("app.py", "import os\nprint(os.environ['DB_PASSWORD'] != '')\n"),
        // Never entered.
        (".git/config", "[remote]\ntoken = \"CANARY-git\"\n"),
        ("node_modules/x/.env", "DB_PASSWORD=CANARY-deps\n"),
    ];
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Run vaultctl in `dir` with HOME there too (no token helper file of the user's).
fn vaultctl(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(vaultctl_bin());
    cmd.args(args).current_dir(dir).env("HOME", dir).env_remove("VAULT_TOKEN").env_remove("VAULT_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!so.contains(CANARY) && !se.contains(CANARY), "a secret value was printed:\n{so}\n{se}");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn scan_reports_names_and_places_never_values() {
    let dir = fixture();
    let out = vaultctl(dir.path(), &[], &["scan", "."]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let expected = [
        "./.env:5: DB_PASSWORD (password)",
        "./.env:6: DATABASE_URL (url-credentials)",
        "./.env:7: STRIPE_KEY (stripe-secret-key)",
        "./config.json:2: password (password)",
        "./docker-compose.yml:5: POSTGRES_PASSWORD (password)",
        "./k8s/secret.yaml:7: db-password (kubernetes-secret)",
        "./settings.py:2: SECRET_KEY (secret)",
        "./settings.py:10: REDIS_PASSWORD (password)",
    ];
    assert_eq!(lines, expected, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("8 hard-coded secrets in 5 files"), "{out:?}");

    // JSON output: the same findings, as data.
    let out = vaultctl(dir.path(), &[], &["scan", "--format", "json", "."]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), expected.len(), "{v}");
    assert_eq!(v["findings"][0], json!({"file": "./.env", "line": 5, "key": "DB_PASSWORD", "rule": "password"}));
    assert_eq!(v["errors"], json!([]));

    // The README alone (placeholders only): nothing, exit 0.
    let out = vaultctl(dir.path(), &[], &["scan", "README.md", "app.py"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn scan_ignores_and_exit_codes() {
    let dir = fixture();
    // An ignore comment and an ignore file silence findings.
    std::fs::write(dir.path().join("settings.py"), SETTINGS_PY.replace("-settings'", "-settings'  # vaultctl:ignore"))
        .unwrap();
    std::fs::write(dir.path().join(".vaultctl-scan-ignore"), "# fixtures\nk8s/\n*.json\n").unwrap();
    let out = vaultctl(dir.path(), &[], &["scan", "--exclude", "docker-compose.yml", "."]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(!text.contains("settings.py:2:") && text.contains("settings.py:10:"), "{text}");
    assert!(!text.contains("k8s") && !text.contains("config.json") && !text.contains("docker-compose"), "{text}");

    // A path that does not exist: exit 2, said on stderr; findings elsewhere still printed.
    let out = vaultctl(dir.path(), &[], &["scan", ".env", "no-such-file"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read no-such-file"), "{out:?}");
    assert!(stdout(&out).contains(".env:5: DB_PASSWORD"));

    // A usage error: 2 (clap's).
    let out = vaultctl(dir.path(), &[], &["scan", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Binary and huge files are skipped.
    std::fs::write(dir.path().join("blob.bin"), b"DB_PASSWORD=CANARY-bin\0\x01").unwrap();
    std::fs::write(dir.path().join("big.env"), format!("DB_PASSWORD=CANARY-big\n{}", "#\n".repeat(2000))).unwrap();
    let out = vaultctl(dir.path(), &[], &["scan", "--max-size", "1000", "blob.bin", "big.env"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// A fresh server with `secret/` (KV v2): the server, its root token, a harness client.
async fn vault() -> (Store, ServerProc, String, vault_e2e::Client) {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, rc) = srv.kv2_ready().await;
    (store, srv, root, rc)
}

#[tokio::test(flavor = "multi_thread")]
async fn import_moves_dotenv_secrets_and_leaves_references() {
    let (_store, srv, root, rc) = vault().await;
    let dir = fixture();
    let addr = srv.url();
    let env = [("VAULT_ADDR", addr.as_str()), ("VAULT_TOKEN", root.as_str())];
    let dotenv = dir.path().join(".env");
    std::fs::set_permissions(&dotenv, std::fs::Permissions::from_mode(0o640)).unwrap();

    // --dry-run: shows the plan, changes nothing.
    let out = vaultctl(dir.path(), &env, &["import", ".env", "--to", "secret/myapp", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("Would write 3 secret(s) to secret/myapp"), "{text}");
    assert!(text.contains("DB_PASSWORD (new") && text.contains("STRIPE_KEY (new"), "{text}");
    assert_eq!(std::fs::read_to_string(&dotenv).unwrap(), DOTENV, "dry run left the file");
    assert_eq!(rc.get("secret/data/myapp").await.0, 404, "dry run wrote nothing");

    // Another writer's field is already there: the import merges with it.
    let (st, b) = rc.post("secret/data/myapp", json!({"data": {"OTHER": "kept"}})).await;
    assert_eq!(st, 200, "{b}");

    let out = vaultctl(dir.path(), &env, &["import", ".env", "--to", "secret/myapp"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("Wrote 3 secret(s) to secret/myapp (version 2)"), "{text}");
    assert!(text.contains("vaultctl exec --env-file .env"), "{text}");

    let (st, b) = rc.get("secret/data/myapp").await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["data"]["data"],
        json!({
            "OTHER": "kept",
            "DB_PASSWORD": "CANARY-db-pw",
            "DATABASE_URL": "postgres://app:CANARY-url@db.internal:5432/app",
            "STRIPE_KEY": "sk_live_CANARYabcdefghijklmnop",
        })
    );
    assert_eq!(b["data"]["metadata"]["version"], 2, "one write");

    // The file: values replaced by references, the rest as it was, same mode.
    let rewritten = std::fs::read_to_string(&dotenv).unwrap();
    let expected = DOTENV
        .replace("CANARY-db-pw", "vault:secret/myapp#DB_PASSWORD")
        .replace("postgres://app:CANARY-url@db.internal:5432/app", "vault:secret/myapp#DATABASE_URL")
        .replace("sk_live_CANARYabcdefghijklmnop", "vault:secret/myapp#STRIPE_KEY");
    assert_eq!(rewritten, expected);
    assert_eq!(std::fs::metadata(&dotenv).unwrap().permissions().mode() & 0o777, 0o640);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".vaultctl-import"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The rewritten file is clean for scan.
    let out = vaultctl(dir.path(), &[], &["scan", ".env"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Again: nothing left to move.
    let out = vaultctl(dir.path(), &env, &["import", ".env", "--to", "secret/myapp"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("No secrets to import"), "{out:?}");

    // A second file into the same secret: merged, a new version; a changed value replaces.
    // The secret now requires check-and-set: import sends it.
    let (st, b) = rc.post("secret/metadata/myapp", json!({"cas_required": true})).await;
    assert!(st == 204 || st == 200, "{st} {b}");
    std::fs::write(dir.path().join("worker.env"), "DB_PASSWORD=CANARY-db-pw-2\nQUEUE_TOKEN=CANARY-queue\n").unwrap();
    let out = vaultctl(dir.path(), &env, &["import", "worker.env", "--to", "secret/myapp", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 3, "{v}");
    assert_eq!(v["fields"][0]["name"], "DB_PASSWORD");
    assert_eq!(v["fields"][0]["status"], "replaces the current value");
    assert_eq!(v["fields"][1]["status"], "new");
    let (_, b) = rc.get("secret/data/myapp").await;
    let data = &b["data"]["data"];
    assert_eq!(
        (data["DB_PASSWORD"].as_str(), data["QUEUE_TOKEN"].as_str()),
        (Some("CANARY-db-pw-2"), Some("CANARY-queue"))
    );
    assert_eq!(
        (data["OTHER"].as_str(), data["STRIPE_KEY"].as_str()),
        (Some("kept"), Some("sk_live_CANARYabcdefghijklmnop"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_structured_files_template_and_refusals() {
    let (_store, srv, root, rc) = vault().await;
    let dir = fixture();
    let addr = srv.url();
    let env = [("VAULT_ADDR", addr.as_str()), ("VAULT_TOKEN", root.as_str())];

    // JSON, rewritten in place, still valid JSON.
    let out = vaultctl(dir.path(), &env, &["import", "config.json", "--to", "secret/cfg"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(v["smtp"]["password"], "vault:secret/cfg#password");
    assert_eq!(v["labels"]["password"], "Password", "a label is not a secret");
    assert_eq!(rc.get("secret/data/cfg").await.1["data"]["data"], json!({"password": "CANARY-smtp"}));

    // YAML with --env-template: the file stays, the template holds references.
    let out =
        vaultctl(dir.path(), &env, &["import", "docker-compose.yml", "--to", "secret/db", "--env-template", "db.env"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("docker-compose.yml")).unwrap(), COMPOSE);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("db.env")).unwrap(),
        "POSTGRES_PASSWORD=vault:secret/db#POSTGRES_PASSWORD\n"
    );
    assert_eq!(rc.get("secret/data/db").await.1["data"]["data"], json!({"POSTGRES_PASSWORD": "CANARY-compose"}));

    // --keep: written to the vault, file untouched.
    std::fs::write(dir.path().join("app.toml"), "[db]\npassword = \"CANARY-toml\"\npool = 5\n").unwrap();
    let out = vaultctl(dir.path(), &env, &["import", "app.toml", "--to", "secret/toml", "--keep"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(std::fs::read_to_string(dir.path().join("app.toml")).unwrap().contains("CANARY-toml"));
    assert_eq!(rc.get("secret/data/toml").await.1["data"]["data"], json!({"password": "CANARY-toml"}));
    // Without --keep: a TOML string replaced in place.
    let out = vaultctl(dir.path(), &env, &["import", "app.toml", "--to", "secret/toml"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("already in secret/toml (version 1), nothing written"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("app.toml")).unwrap(),
        "[db]\npassword = \"vault:secret/toml#password\"\npool = 5\n"
    );

    // Source code: refused with a reason; nothing written.
    let out = vaultctl(dir.path(), &env, &["import", "settings.py", "--to", "secret/py"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported"), "{out:?}");
    assert_eq!(rc.get("secret/data/py").await.0, 404);

    // A Kubernetes Secret's base64 data is left, with a warning.
    let out = vaultctl(dir.path(), &env, &["import", "k8s/secret.yaml", "--to", "secret/k8s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("left in place"), "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("k8s/secret.yaml")).unwrap(), K8S_SECRET);

    // Bad --to, a mount that is not KV v2, no token: clear errors, exit 1.
    let out = vaultctl(dir.path(), &env, &["import", ".env", "--to", "secret"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("MOUNT/PATH"), "{out:?}");
    let (st, b) = rc.post("sys/mounts/kv1", json!({"type": "kv", "options": {"version": "1"}})).await;
    assert_eq!(st, 204, "{b}");
    let out = vaultctl(dir.path(), &env, &["import", ".env", "--to", "kv1/app"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a KV version 2 mount"), "{out:?}");
    let out = vaultctl(dir.path(), &[("VAULT_ADDR", addr.as_str())], &["import", ".env", "--to", "secret/x"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join(".env")).unwrap(), DOTENV, "untouched after failures");
}

/// The fenced blocks of a Markdown file: (info string, content).
fn fenced_blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in md.lines() {
        match (&mut cur, line.strip_prefix("```")) {
            (None, Some(info)) => cur = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.extend(cur.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// docs/migrating.md's walkthrough, run as written: its app.py and .env,
/// each `$ vaultctl scan` / `$ vaultctl import` command with the output the
/// document shows, the rewritten .env it shows. (Its `vaultctl exec` step
/// is the injection guide's, tested with exec in cli_inject.rs.)
#[tokio::test(flavor = "multi_thread")]
async fn the_migrating_walkthrough_runs_as_documented() {
    let (_store, srv, root, rc) = vault().await;
    let addr = srv.url();
    let env = [("VAULT_ADDR", addr.as_str()), ("VAULT_TOKEN", root.as_str())];
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/migrating.md")).unwrap();
    let blocks = fenced_blocks(&md);
    let dir = tempfile::tempdir().unwrap();
    let file_block = |first: &str, nth: usize| {
        blocks.iter().filter(|(_, b)| b.lines().next() == Some(first)).nth(nth).map(|(_, b)| b.clone()).unwrap()
    };
    std::fs::write(dir.path().join("app.py"), file_block("# app.py", 0)).unwrap();
    let original = file_block("# .env", 0);
    std::fs::write(dir.path().join(".env"), &original).unwrap();

    let mut ran = Vec::new();
    for (_, body) in &blocks {
        let lines: Vec<&str> = body.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(cmd) = line.strip_prefix("$ ") else { continue };
            let args: Vec<&str> = cmd.split_whitespace().collect();
            if args[0] != "vaultctl" || !matches!(args[1], "scan" | "import") {
                continue;
            }
            let expected: String =
                lines[i + 1..].iter().take_while(|l| !l.starts_with("$ ")).map(|l| format!("{l}\n")).collect();
            let out = vaultctl(dir.path(), &env, &args[1..]);
            assert_eq!(stdout(&out), expected, "`{cmd}` as documented ({})", String::from_utf8_lossy(&out.stderr));
            ran.push(cmd.to_string());
        }
    }
    assert_eq!(
        ran,
        [
            "vaultctl scan .",
            "vaultctl import .env --to secret/myapp --dry-run",
            "vaultctl import .env --to secret/myapp"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".env")).unwrap(),
        file_block("# .env", 1),
        "the rewritten .env"
    );
    let (_, b) = rc.get("secret/data/myapp").await;
    assert_eq!(b["data"]["data"]["STRIPE_KEY"], "sk_live_51Habcdefghijklmnopqrstuv");
    assert_eq!(b["data"]["data"].as_object().unwrap().len(), 3);
    let out = vaultctl(dir.path(), &[], &["scan", "."]);
    assert_eq!(out.status.code(), Some(0), "the document says scan then exits 0: {out:?}");
}

/// Imports racing into one secret: each merges with the version it read and
/// writes with check-and-set, redoing the merge when another won, so every
/// field of every import ends up in the latest version.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_imports_lose_nothing() {
    let (_store, srv, root, rc) = vault().await;
    let dir = tempfile::tempdir().unwrap();
    let n = 4;
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("s{i}.env")),
            format!("S{i}_PASSWORD=CANARY-{i}\nS{i}_TOKEN=CANARY-t{i}\n"),
        )
        .unwrap();
    }
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(vaultctl_bin())
                .args(["import", &format!("s{i}.env"), "--to", "secret/race", "--keep"])
                .current_dir(dir.path())
                .env("HOME", dir.path())
                .env("VAULT_ADDR", srv.url())
                .env("VAULT_TOKEN", &root)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(CANARY));
    }
    let (_, b) = rc.get("secret/data/race").await;
    let data = b["data"]["data"].as_object().unwrap();
    assert_eq!(data.len(), 2 * n, "{:?}", data.keys().collect::<Vec<_>>());
    assert_eq!(b["data"]["metadata"]["version"], n, "one version per import");
}
