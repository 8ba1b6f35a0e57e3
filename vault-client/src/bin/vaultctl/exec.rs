//! `vaultctl exec`: start a command with secrets in its environment.
//!
//! Secrets come from `--env NAME=MOUNT/PATH#KEY` flags, from `--env-file`
//! files (`.env` syntax, values of the form `vault:MOUNT/PATH#KEY` are
//! references, others are passed as they are), and from references already
//! in vaultctl's own environment (`DB_PASSWORD=vault:secret/app#password`);
//! later sources win (own environment, then env files, then flags). They are
//! put in the child's environment only, never on its command line (which
//! any local user can read in /proc). The child does not inherit
//! `VAULT_TOKEN`, and cannot read vaultctl's (non-dumpable once it starts a
//! child: `child::protect_from_children`).
//!
//! vaultctl stays the parent: it forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT,
//! SIGUSR1 and SIGUSR2 to the child and exits with the child's status
//! (128 + N if signal N killed it). With `--restart-on-rotate` it follows the
//! secrets (the library's watch: KV v2 blocking reads) and, when a new
//! version changes a value the child got, restarts it: SIGTERM, `--grace-period` to exit,
//! SIGKILL, then a new start with the new values.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;
use vault_client::{Client, Reference};
use zeroize::Zeroizing;

use crate::agent::auth::{self, AuthFlags, AutoAuth};
use crate::agent::child::{self, Child};
use crate::agent::secrets::{self, Changed};

/// Arguments of `vaultctl exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  vaultctl exec --env DB_PASSWORD=secret/myapp#password -- ./server --port 8080\n\n\
                        The command's exit status is vaultctl's (128+N when killed by signal N).")]
pub(crate) struct Args {
    /// Set NAME to field KEY of the KV v2 secret at MOUNT/PATH (repeatable).
    #[arg(long = "env", value_name = "NAME=MOUNT/PATH#KEY")]
    env: Vec<String>,
    /// Read a .env file (NAME=VALUE lines); `vault:MOUNT/PATH#KEY` values are resolved (repeatable).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Restart the command when a secret it got changes (new version, rotation).
    #[arg(long)]
    restart_on_rotate: bool,
    /// Time the command has to exit after SIGTERM on a restart before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    grace_period: Duration,
    #[command(flatten)]
    auth: AuthFlags,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    child::parse_duration(s).map_err(|e| e.to_string())
}

/// One variable of the child's environment, before resolution. `Debug`
/// shows references, never values.
#[derive(Clone)]
enum Source {
    /// A plain value (from an env file).
    Literal(Zeroizing<String>),
    /// A secret's field.
    Ref(Reference),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Literal(_) => f.write_str("Literal(<redacted>)"),
            Source::Ref(r) => write!(f, "Ref({r})"),
        }
    }
}

/// Whether `name` can be an environment variable name.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `NAME=MOUNT/PATH#KEY` of an `--env` flag.
fn parse_env_flag(s: &str) -> anyhow::Result<(String, Reference)> {
    // The flag is not quoted: a value given by mistake must not be echoed.
    let (name, reference) = s.split_once('=').context("invalid --env: expected NAME=MOUNT/PATH#KEY")?;
    if !valid_name(name) {
        bail!("invalid --env: {name:?} is not a valid variable name");
    }
    let r = Reference::parse(reference).with_context(|| format!("invalid --env {name}"))?;
    Ok((name.to_string(), r))
}

/// Parse a `.env` file: `NAME=VALUE` lines, optionally `export NAME=VALUE`;
/// blank lines and `#` comments skipped; values may be single-quoted
/// (literal), double-quoted (`\n`, `\"`, `\\` escapes) or bare (an ` #`
/// starts a comment). Values that are references (`vault:MOUNT/PATH#KEY`,
/// [`Reference::from_value`]) are resolved; others, a transit ciphertext
/// `vault:v1:...` included, are passed as they are. Errors give the line
/// number, never the line.
fn parse_env_file(path: &Path, text: &str) -> anyhow::Result<Vec<(String, Source)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((name, raw)) = line.split_once('=') else {
            bail!("{}: expected NAME=VALUE", at());
        };
        let name = name.trim();
        if !valid_name(name) {
            bail!("{}: {name:?} is not a valid variable name", at());
        }
        let raw = raw.trim();
        let value = if let Some(rest) = raw.strip_prefix('\'') {
            rest.split_once('\'').with_context(|| format!("{}: unterminated single quote", at()))?.0.to_string()
        } else if let Some(rest) = raw.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = rest.chars();
            loop {
                match chars.next() {
                    None => bail!("{}: unterminated double quote", at()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(c) => v.push(c),
                        None => bail!("{}: unterminated double quote", at()),
                    },
                    Some(c) => v.push(c),
                }
            }
            v
        } else {
            // A comment starts at " #" (a `#` inside a reference is not one).
            let end = raw.find(" #").or_else(|| raw.find("\t#")).unwrap_or(raw.len());
            raw[..end].trim_end().to_string()
        };
        let value = Zeroizing::new(value);
        let source = match Reference::from_value(&value) {
            Some(r) => Source::Ref(r),
            None => Source::Literal(value),
        };
        out.push((name.to_string(), source));
    }
    Ok(out)
}

/// The variables to set in the child, later sources overriding earlier:
/// references in our own environment, env files, `--env` flags.
fn sources(args: &Args) -> anyhow::Result<BTreeMap<String, Source>> {
    let mut all = BTreeMap::new();
    for (k, v) in std::env::vars_os() {
        let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else { continue };
        if let Some(r) = Reference::from_value(v) {
            all.insert(k.to_string(), Source::Ref(r));
        }
    }
    for path in &args.env_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("cannot read env file {}", path.display()))?,
        );
        all.extend(parse_env_file(path, &text)?);
    }
    for flag in &args.env {
        let (name, r) = parse_env_flag(flag)?;
        all.insert(name, Source::Ref(r));
    }
    Ok(all)
}

/// Resolve every reference ([`Client::resolve`]): the variables with their
/// values.
async fn resolve(
    client: &Client,
    sources: &BTreeMap<String, Source>,
) -> anyhow::Result<Vec<(String, Zeroizing<String>)>> {
    let mut vars = Vec::with_capacity(sources.len());
    for (name, s) in sources {
        let v = match s {
            Source::Literal(v) => v.clone(),
            Source::Ref(r) => client.resolve(r).await.with_context(|| format!("cannot set {name}"))?,
        };
        vars.push((name.clone(), v));
    }
    Ok(vars)
}

pub(crate) async fn run(args: Args, env: &crate::common::Env) -> anyhow::Result<ExitCode> {
    let sources = sources(&args)?;
    let auth = AutoAuth::from_flags(&args.auth)?;
    if !sources.values().any(|s| matches!(s, Source::Ref(_))) {
        // Nothing to read: no login needed (an env file of plain values).
        let vars: Vec<_> = sources
            .into_iter()
            .filter_map(|(k, s)| match s {
                Source::Literal(v) => Some((k, v)),
                Source::Ref(_) => None,
            })
            .collect();
        let mut signals = child::catch_signals()?;
        let mut child = Child::spawn(&args.command, &child::child_env(&vars))?;
        loop {
            tokio::select! {
                status = child.wait() => return Ok(child::exit_code(status?)),
                Some(sig) = signals.recv() => child.signal(sig),
            }
        }
    }
    // One client: its clones (the watchers') share the token that the
    // keep-alive renews or replaces.
    let client = env.client()?;
    let login = auth::login(&client, &auth).await?;
    let _keep_alive = auth::keep_alive(&client, &auth, login);

    // Watchers start before the secrets are read: a version written in
    // between is seen (and changes nothing if the read already had it).
    let (tx, mut changes) = mpsc::channel::<Changed>(16);
    let mut _watchers = Vec::new();
    if args.restart_on_rotate {
        let paths: BTreeSet<&str> = sources
            .values()
            .filter_map(|s| match s {
                Source::Ref(r) => Some(r.path()),
                Source::Literal(_) => None,
            })
            .collect();
        for path in paths {
            _watchers.push(secrets::follow(&client, path, None, tx.clone()).await?);
        }
    }
    // Keep `tx` alive: without watchers, `changes` must stay pending, not closed.
    let _tx = tx;
    let mut vars = resolve(&client, &sources).await?;

    // Signals are caught before the child starts so none is lost.
    let mut signals = child::catch_signals()?;
    let mut child = Child::spawn(&args.command, &child::child_env(&vars))?;

    loop {
        tokio::select! {
            status = child.wait() => return Ok(child::exit_code(status?)),
            Some(sig) = signals.recv() => child.signal(sig),
            Some(change) = changes.recv() => {
                let new_vars = match resolve(&client, &sources).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!(
                            "vaultctl: secret {} changed but cannot be read: {}; keeping the command running",
                            change.path,
                            crate::describe(&e)
                        );
                        continue;
                    }
                };
                if new_vars == vars {
                    continue; // a new version, but nothing the command got changed
                }
                eprintln!("vaultctl: secret {} changed (version {}): restarting the command", change.path, change.version);
                let status = child.stop(args.grace_period).await?;
                if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status)
                    && sig != rustix::process::Signal::TERM.as_raw()
                    && sig != rustix::process::Signal::KILL.as_raw()
                {
                    eprintln!("vaultctl: the command ended with signal {sig} while stopping");
                }
                vars = new_vars;
                child = Child::spawn(&args.command, &child::child_env(&vars))?;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn env_flags() {
        let (n, r) = parse_env_flag("DB_PASSWORD=secret/myapp#password").unwrap();
        assert_eq!((n.as_str(), r.path(), r.key()), ("DB_PASSWORD", "secret/myapp", "password"));
        assert!(parse_env_flag("DB=vault:secret/myapp#password").is_ok());
        assert!(parse_env_flag("1DB=secret/a#b").is_err());
        assert!(parse_env_flag("DB").is_err());
        assert!(parse_env_flag("DB=secret/a").is_err());
        let e = format!("{:#}", parse_env_flag("DB=hunter2-SECRET").unwrap_err());
        assert!(e.contains("invalid --env DB") && !e.contains("SECRET"), "{e}");
    }

    #[test]
    fn env_files() {
        let text = "# comment\n\nexport A=plain # trailing\nB='single #x'\nC=\"dq \\\"x\\\" \\n\"\n\
                    D=vault:secret/app#password\nE=\"vault:secret/app#user\"\nF=\n";
        let got = parse_env_file(Path::new(".env"), text).unwrap();
        let show: Vec<(String, String)> = got
            .into_iter()
            .map(|(k, s)| match s {
                Source::Literal(v) => (k, v.to_string()),
                Source::Ref(r) => (k, format!("ref {r}")),
            })
            .collect();
        let want = [
            ("A", "plain"),
            ("B", "single #x"),
            ("C", "dq \"x\" \n"),
            ("D", "ref vault:secret/app#password"),
            ("E", "ref vault:secret/app#user"),
            ("F", ""),
        ];
        assert_eq!(show, want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>());
        let e = parse_env_file(Path::new(".env"), "A=1\nB-SECRET-VALUE\n").unwrap_err().to_string();
        assert!(e.contains(".env:2") && !e.contains("SECRET"), "{e}");
        assert!(parse_env_file(Path::new(".env"), "A=\"open\n").is_err());
        // Not references (Reference::from_value): passed as they are.
        for plain in ["vault:v1:AAAAbase64==", "vault:nomount"] {
            let got = parse_env_file(Path::new(".env"), &format!("A={plain}\n")).unwrap();
            assert!(matches!(&got[0].1, Source::Literal(v) if v.as_str() == plain), "{plain}");
        }
        let got = parse_env_file(Path::new(".env"), "A=SECRET-VALUE\n").unwrap();
        assert!(!format!("{got:?}").contains("SECRET"), "{got:?}");
    }
}
