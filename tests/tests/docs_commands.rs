//! Every shell block of README.md and docs/*.md runs, in order, against a
//! real development server, and must succeed.
//!
//! The rules (ARCHITECTURE.md, "Documentation", points writers here):
//!
//! * A fenced block whose info string starts with `sh`, `shell` or `bash` is
//!   run. All runnable blocks of one file run in one `bash -euo pipefail`
//!   session, in order, so an `export` in one block holds in the next.
//! * A block marked `sh norun` is not run (a command that needs Docker,
//!   Kubernetes, a terminal, or starts the very server the test provides);
//!   the test lists them, and every one must give its reason in a first
//!   comment line.
//! * Each file gets a fresh `vault-server dev` started with the root token
//!   `dev-only-token` (what the README starts it with), `VAULT_ADDR` and
//!   `VAULT_TOKEN` set, the built binaries (`vault-server`, `vaultctl`) first
//!   on `PATH`, and an empty temporary `HOME` and working directory (with
//!   `examples/` and `deploy/` of the repository beside it).
//! * Addresses `127.0.0.1:PORT` in a file are mapped to free ports: 8200 to
//!   the dev server, any other port to a fresh free port (the same one for
//!   the whole file), so the documents can show the usual ports.
//! * Processes a block leaves in the background are killed at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vault_e2e::ServerProc;

/// The dev server's root token, as the README starts it.
const DEV_TOKEN: &str = "dev-only-token";

/// One file's script may run this long.
const FILE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    info: String,
    text: String,
}

/// The fenced blocks of a Markdown text.
fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String, String, String)> = None; // line, fence, info, text
    for (i, l) in md.lines().enumerate() {
        let t = l.trim_start();
        match &mut cur {
            None => {
                if let Some(rest) = t.strip_prefix("```") {
                    cur = Some((i + 1, "```".into(), rest.trim().to_string(), String::new()));
                } else if let Some(rest) = t.strip_prefix("~~~") {
                    cur = Some((i + 1, "~~~".into(), rest.trim().to_string(), String::new()));
                }
            }
            Some((line, fence, info, text)) => {
                if t.starts_with(fence.as_str()) && t.trim_start_matches(['`', '~']).trim().is_empty() {
                    out.push(Block { line: *line, info: std::mem::take(info), text: std::mem::take(text) });
                    cur = None;
                } else {
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
    }
    out
}

fn is_shell(info: &str) -> bool {
    matches!(info.split_whitespace().next(), Some("sh" | "shell" | "bash"))
}

fn is_norun(info: &str) -> bool {
    info.split_whitespace().any(|w| w == "norun")
}

/// `127.0.0.1:PORT` → the dev server for 8200, a fresh free port otherwise.
fn map_ports(script: &str, dev: &str, ports: &mut BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(i) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "127.0.0.1:".len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            out.push_str("127.0.0.1:");
        } else if digits == "8200" {
            out.push_str(dev);
        } else {
            let mapped = ports.entry(digits.clone()).or_insert_with(|| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().to_string()
            });
            out.push_str(mapped);
        }
        rest = &after[digits.len()..];
    }
    out.push_str(rest);
    out
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The Markdown files whose commands must run.
fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Run one file's blocks; `Err` describes the failure.
fn run_file(path: &Path, bin_dir: &Path) -> Result<(usize, Vec<String>), String> {
    let md = std::fs::read_to_string(path).unwrap();
    let name = path.strip_prefix(repo_root()).unwrap_or(path).display().to_string();
    let mut skipped = Vec::new();
    let runnable: Vec<Block> = blocks(&md)
        .into_iter()
        .filter(|b| is_shell(&b.info))
        .filter(|b| {
            if is_norun(&b.info) {
                let reason = b.text.lines().next().unwrap_or("").trim().to_string();
                skipped.push(format!("{name}:{}: {reason}", b.line));
                false
            } else {
                true
            }
        })
        .collect();
    for s in &skipped {
        let reason = s.split_once(": ").map(|(_, r)| r).unwrap_or("");
        if !reason.starts_with('#') || reason.len() < 8 {
            return Err(format!("{s}: a `norun` block must start with a comment giving its reason"));
        }
    }
    if runnable.is_empty() {
        return Ok((0, skipped));
    }

    let mut cmd = Command::new(vault_e2e::server_bin());
    cmd.args(["dev", "--listen", "127.0.0.1:0", "--root-token", DEV_TOKEN]);
    let srv = ServerProc::spawn(cmd);
    let dev = srv.addr.to_string();

    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let cwd = work.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    for d in ["examples", "deploy"] {
        let src = repo_root().join(d);
        if src.exists() {
            std::os::unix::fs::symlink(&src, cwd.join(d)).unwrap();
        }
    }

    let mut ports = BTreeMap::new();
    // curl reports HTTP errors as failures (a doc that shows one on
    // purpose writes `! curl ...`).
    let mut script = String::from("set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n");
    for (i, b) in runnable.iter().enumerate() {
        script.push_str(&format!("echo '>>> block {i} ({name}:{})' >&2\n", b.line));
        script.push_str(&map_ports(&b.text, &dev, &mut ports));
        script.push('\n');
    }
    script.push_str("echo '>>> all blocks done' >&2\n");

    let path_var = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&cwd)
        .env("PATH", path_var)
        .env("HOME", &home)
        .env("VAULT_ADDR", format!("http://{dev}"))
        .env("VAULT_TOKEN", DEV_TOKEN)
        .env_remove("VAULT_CACERT")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > FILE_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the blocks left running (servers, watchers) goes now.
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
    let _ = child.wait();
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    drop(srv);
    match status {
        Some(st) if st.success() => Ok((runnable.len(), skipped)),
        other => {
            let last = stderr.lines().filter(|l| l.starts_with(">>> block")).last().unwrap_or("before any block");
            let block_text = last
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .and_then(|(loc, _)| loc.rsplit_once(':'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .and_then(|line| runnable.iter().find(|b| b.line == line))
                .map(|b| b.text.clone())
                .unwrap_or_default();
            Err(format!(
                "{name}: {} in {last}\n--- block ---\n{block_text}--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                match other {
                    Some(st) => format!("exit status {st}"),
                    None => format!("timed out after {FILE_TIMEOUT:?}"),
                }
            ))
        }
    }
}

#[test]
fn every_shell_block_in_the_docs_runs() {
    let bin_dir = vault_e2e::server_bin().parent().unwrap().to_path_buf();
    assert!(bin_dir.join("vaultctl").exists(), "build vaultctl first: cargo build -p vault-client --bins");
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut all_skipped = Vec::new();
    for doc in documents() {
        match run_file(&doc, &bin_dir) {
            Ok((n, skipped)) => {
                ran += n;
                all_skipped.extend(skipped);
            }
            Err(e) => failures.push(e),
        }
    }
    println!("{ran} blocks ran; not run ({}):", all_skipped.len());
    for s in &all_skipped {
        println!("  {s}");
    }
    assert!(failures.is_empty(), "{} file(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
    assert!(ran > 0, "no block ran");
}

#[test]
fn block_parser() {
    let md = "text\n```sh\necho a\n```\n\n```sh norun\n# needs docker\ndocker compose up\n```\n```json\n{}\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 3);
    assert!(is_shell(&b[0].info) && !is_norun(&b[0].info));
    assert_eq!(b[0].text, "echo a\n");
    assert_eq!(b[0].line, 2);
    assert!(is_shell(&b[1].info) && is_norun(&b[1].info));
    assert!(!is_shell(&b[2].info));
    let mut ports = BTreeMap::new();
    let s = map_ports("curl http://127.0.0.1:8200/v1 http://127.0.0.1:8300 127.0.0.1:8300", "127.0.0.1:5", &mut ports);
    assert!(s.starts_with("curl http://127.0.0.1:5/v1 http://127.0.0.1:"), "{s}");
    let other = &ports["8300"];
    assert_eq!(s.matches(other.as_str()).count(), 2, "{s}");
}
