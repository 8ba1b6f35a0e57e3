//! `vaultctl agent`: auto-auth and render secret templates into files.
//!
//! Configured by a TOML file (docs/injection.md has the reference):
//! `[vault]` (address, CA certificate), `[auto_auth]` (token, AppRole from
//! files, Kubernetes service-account token), `[[template]]` (source file
//! or inline contents, destination, mode, what to do on change), and an
//! optional `[exec]` child to supervise.
//!
//! With `--once` it logs in, renders every template and exits (an init
//! container). Otherwise it then keeps the files current (a sidecar):
//! it follows every secret the templates read (the library's watch: KV v2
//! blocking reads), re-renders the templates that read a secret when it
//! changes, writes the files whose text changed, and then signals a process
//! (a pid file, or the supervised child) or restarts the child. The token is
//! kept alive by the library (renewal, a new login when it cannot be). Without an `[exec]` child, SIGHUP renders
//! and writes every file again.
//!
//! All templates are rendered before any file is written: a missing secret
//! or a template error leaves every file as it was.

pub(crate) mod auth;
pub(crate) mod child;
pub(crate) mod secrets;
mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustix::process::Signal;
use serde::Deserialize;
use tokio::sync::mpsc;

use auth::{AutoAuth, Method};
use child::Child;
use secrets::Changed;
use vault_client::Client;

/// Arguments of `vaultctl agent`.
#[derive(Debug, clap::Args)]
#[command(after_help = "The configuration format is described in docs/injection.md.")]
pub(crate) struct Args {
    /// The agent configuration (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Render the templates once and exit (e.g. in an init container).
    #[arg(long)]
    once: bool,
}

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    vault: VaultConfig,
    #[serde(default)]
    auto_auth: AutoAuthConfig,
    #[serde(default, rename = "template")]
    templates: Vec<TemplateConfig>,
    exec: Option<ExecConfig>,
}

/// `[vault]`: overrides of VAULT_ADDR / VAULT_CACERT.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultConfig {
    address: Option<String>,
    ca_cert: Option<PathBuf>,
}

/// `[auto_auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoAuthConfig {
    #[serde(default)]
    method: Method,
    mount: Option<String>,
    role_id_file: Option<PathBuf>,
    secret_id_file: Option<PathBuf>,
    role: Option<String>,
    token_file: Option<PathBuf>,
}

/// A file mode, as octal text (`"0400"`) or a TOML integer (`0o400`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Mode {
    Text(String),
    Number(u32),
}

/// `[[template]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateConfig {
    source: Option<PathBuf>,
    contents: Option<String>,
    destination: PathBuf,
    mode: Option<Mode>,
    on_change: Option<OnChangeConfig>,
}

/// `on_change = { signal = "SIGHUP", pid_file = "..." }` or `{ restart = true }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnChangeConfig {
    signal: Option<String>,
    pid_file: Option<PathBuf>,
    #[serde(default)]
    restart: bool,
}

/// `[exec]`: a child to supervise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecConfig {
    command: Vec<String>,
    /// Seconds (or `10s`, `500ms`) the child has after SIGTERM on a restart.
    grace_period: Option<String>,
}

/// What to do after a template's file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OnChange {
    Nothing,
    /// Signal the process whose pid is in this file.
    SignalPidFile(Signal, PathBuf),
    /// Signal the supervised child.
    SignalChild(Signal),
    /// Restart the supervised child.
    Restart,
}

/// A checked template.
#[derive(Debug)]
struct Template {
    /// For errors and logs.
    name: String,
    source: String,
    destination: PathBuf,
    mode: u32,
    on_change: OnChange,
}

/// The checked configuration.
#[derive(Debug)]
struct Agent {
    vault: VaultConfig,
    auth: AutoAuth,
    templates: Vec<Template>,
    exec: Option<(Vec<OsString>, Duration)>,
}

const DEFAULT_MODE: u32 = 0o400;
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Read and check the configuration at `path` (template sources read too).
fn load(path: &Path) -> anyhow::Result<Agent> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cfg: Config =
        toml::from_str(&text).with_context(|| format!("invalid agent configuration {}", path.display()))?;
    check(cfg).with_context(|| format!("invalid agent configuration {}", path.display()))
}

fn check(cfg: Config) -> anyhow::Result<Agent> {
    let a = cfg.auto_auth;
    let auth = AutoAuth::new(a.method, a.mount, a.role_id_file, a.secret_id_file, a.role, a.token_file)
        .context("[auto_auth]")?;
    let exec = match cfg.exec {
        None => None,
        Some(e) => {
            if e.command.is_empty() || e.command[0].is_empty() {
                bail!("[exec] command must name a program: command = [\"program\", \"arg\", ...]");
            }
            let grace = match &e.grace_period {
                Some(g) => child::parse_duration(g).context("[exec] grace_period")?,
                None => DEFAULT_GRACE,
            };
            Some((e.command.into_iter().map(OsString::from).collect(), grace))
        }
    };
    if cfg.templates.is_empty() {
        bail!("no [[template]]: nothing to render");
    }
    let mut templates = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, t) in cfg.templates.into_iter().enumerate() {
        let at = format!("[[template]] #{} ({})", i + 1, t.destination.display());
        if !seen.insert(t.destination.clone()) {
            bail!("{at}: another template has the same destination");
        }
        let (name, source) = match (t.source, t.contents) {
            (Some(p), None) => {
                let s = std::fs::read_to_string(&p)
                    .with_context(|| format!("{at}: cannot read the template source {}", p.display()))?;
                (p.display().to_string(), s)
            }
            (None, Some(s)) => (t.destination.display().to_string(), s),
            _ => bail!("{at}: give exactly one of source (a file) or contents (inline)"),
        };
        let mode = match t.mode {
            None => DEFAULT_MODE,
            Some(Mode::Text(s)) => template::parse_mode(&s).with_context(|| at.clone())?,
            Some(Mode::Number(n)) if n <= 0o7777 => n,
            Some(Mode::Number(n)) => bail!("{at}: invalid mode {n:#o}"),
        };
        let on_change = match t.on_change {
            None => OnChange::Nothing,
            Some(OnChangeConfig { restart: true, signal: None, pid_file: None }) => {
                if exec.is_none() {
                    bail!("{at}: on_change restart needs an [exec] command to restart");
                }
                OnChange::Restart
            }
            Some(OnChangeConfig { restart: true, .. }) => {
                bail!("{at}: on_change: restart excludes signal and pid_file")
            }
            Some(OnChangeConfig { signal, pid_file, restart: false }) => {
                let sig = signal.as_deref().map(child::parse_signal).transpose().with_context(|| at.clone())?;
                match (sig, pid_file) {
                    (sig, Some(p)) => OnChange::SignalPidFile(sig.unwrap_or(Signal::HUP), p),
                    (Some(sig), None) if exec.is_some() => OnChange::SignalChild(sig),
                    (Some(_), None) => bail!("{at}: on_change signal needs a pid_file (or an [exec] child)"),
                    (None, None) => OnChange::Nothing,
                }
            }
        };
        templates.push(Template { name, source, destination: t.destination, mode, on_change });
    }
    Ok(Agent { vault: cfg.vault, auth, templates, exec })
}

/// A template's last render: its text and the secret versions it read.
type Last = template::Rendered;

/// Render all templates (no file written yet).
async fn render_all(client: &Client, templates: &[Template]) -> anyhow::Result<Vec<Last>> {
    let mut out = Vec::with_capacity(templates.len());
    for t in templates {
        out.push(template::render(client, &t.name, &t.source).await?);
    }
    Ok(out)
}

/// Follow each secret of `last` not followed yet, from the version the
/// render read. One that cannot be followed now (a KV v1 secret, the server
/// unreachable) is reported and tried again after the next change or SIGHUP.
async fn follow_new(
    client: &Client,
    watched: &mut BTreeMap<String, AbortOnDrop>,
    last: &[Last],
    tx: &mpsc::Sender<Changed>,
) {
    for r in last {
        for (path, version) in &r.secrets {
            if watched.contains_key(path) {
                continue;
            }
            match secrets::follow(client, path, Some(*version), tx.clone()).await {
                Ok(h) => {
                    watched.insert(path.clone(), h);
                }
                Err(e) => eprintln!("vaultctl: {}", crate::describe(&e)),
            }
        }
    }
}

/// Read a pid file and send `sig` to that process.
fn signal_pid_file(path: &Path, sig: Signal) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read pid file {}", path.display()))?;
    let pid: u32 = text.trim().parse().with_context(|| format!("pid file {} holds no process id", path.display()))?;
    child::send_signal(pid, sig)
}

/// Aborts a background task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn run(args: Args, env: &crate::common::Env) -> anyhow::Result<ExitCode> {
    let agent = load(&args.config)?;
    let mut builder = env.builder()?;
    // Precedence: --address, then [vault] address, then VAULT_ADDR.
    if let (None, Some(a)) = (&env.address, &agent.vault.address) {
        builder = builder.address(a.as_str());
    }
    if let Some(ca) = &agent.vault.ca_cert {
        builder = builder.ca_cert_file(ca)?;
    }
    // One client: its clones (the watchers') share the token that the
    // keep-alive renews or replaces.
    let client = builder.build()?;
    let login = auth::login(&client, &agent.auth).await?;

    let mut last = render_all(&client, &agent.templates).await?;
    for (t, r) in agent.templates.iter().zip(&last) {
        template::write_atomic(&t.destination, r.text.as_bytes(), t.mode)?;
        eprintln!("vaultctl: rendered {}", t.destination.display());
    }
    if args.once {
        return Ok(ExitCode::SUCCESS);
    }

    let _keep_alive = auth::keep_alive(&client, &agent.auth, login);
    let mut signals = child::catch_signals()?;
    let mut child = match &agent.exec {
        Some((command, _)) => Some(Child::spawn(command, &child::child_env(&[]))?),
        None => None,
    };

    // Follow every secret any template read.
    let (tx, mut changes) = mpsc::channel::<Changed>(64);
    let mut watched: BTreeMap<String, AbortOnDrop> = BTreeMap::new();
    follow_new(&client, &mut watched, &last, &tx).await;

    loop {
        let change = tokio::select! {
            status = async { match child.as_mut() { Some(c) => c.wait().await, None => std::future::pending().await } } => {
                return Ok(child::exit_code(status?));
            }
            Some(sig) = signals.recv() => {
                match &child {
                    Some(c) => {
                        c.signal(sig);
                        continue;
                    }
                    // No child: INT/TERM stop the agent, HUP re-renders
                    // every template; others are ignored.
                    None if sig == Signal::INT || sig == Signal::TERM => return Ok(ExitCode::SUCCESS),
                    None if sig == Signal::HUP => {
                        eprintln!("vaultctl: SIGHUP: rendering every template again");
                        None
                    }
                    None => continue,
                }
            }
            Some(change) = changes.recv() => Some(change),
        };
        let mut restart = false;
        for (i, t) in agent.templates.iter().enumerate() {
            let Some(prev) = last.get(i) else { continue };
            // A change: the templates that read an older version of that secret.
            if let Some(change) = &change
                && prev.secrets.get(&change.path).is_none_or(|v| *v >= change.version)
            {
                continue;
            }
            let r = match template::render(&client, &t.name, &t.source).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("vaultctl: {}: not updated: {}", t.destination.display(), crate::describe(&e));
                    continue;
                }
            };
            let changed = r.text != prev.text;
            // SIGHUP rewrites every file (one may have been removed or edited).
            if changed || change.is_none() {
                if let Err(e) = template::write_atomic(&t.destination, r.text.as_bytes(), t.mode) {
                    eprintln!("vaultctl: {}", crate::describe(&e));
                    continue;
                }
                match &change {
                    Some(c) => eprintln!(
                        "vaultctl: rendered {} (secret {} version {})",
                        t.destination.display(),
                        c.path,
                        c.version
                    ),
                    None => eprintln!("vaultctl: rendered {}", t.destination.display()),
                }
            }
            if let Some(slot) = last.get_mut(i) {
                *slot = r;
            }
            if !changed {
                continue;
            }
            match &t.on_change {
                OnChange::Nothing => {}
                OnChange::SignalPidFile(sig, p) => {
                    if let Err(e) = signal_pid_file(p, *sig) {
                        eprintln!("vaultctl: {}", crate::describe(&e));
                    }
                }
                OnChange::SignalChild(sig) => {
                    if let Some(c) = &child {
                        c.signal(*sig);
                    }
                }
                OnChange::Restart => restart = true,
            }
        }
        follow_new(&client, &mut watched, &last, &tx).await;
        if restart && let (Some(c), Some((command, grace))) = (child.as_mut(), &agent.exec) {
            eprintln!("vaultctl: restarting {}", command[0].to_string_lossy());
            c.stop(*grace).await?;
            child = Some(Child::spawn(command, &child::child_env(&[]))?);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> anyhow::Result<Agent> {
        check(toml::from_str(toml_text)?)
    }

    #[test]
    fn config() {
        let a = parse(
            r#"
            [auto_auth]
            method = "approle"
            role_id_file = "/etc/vault/role-id"
            secret_id_file = "/etc/vault/secret-id"

            [[template]]
            contents = "PASSWORD={{ secret('secret/app').password }}"
            destination = "/run/secrets/app.env"
            on_change = { signal = "SIGHUP", pid_file = "/run/app.pid" }

            [[template]]
            contents = "x"
            destination = "/run/secrets/b"
            mode = "0440"
            on_change = { restart = true }

            [exec]
            command = ["python", "app.py"]
            grace_period = "5s"
            "#,
        )
        .unwrap();
        assert!(matches!(a.auth, AutoAuth::AppRole { .. }));
        assert_eq!(a.templates[0].mode, 0o400);
        assert_eq!(a.templates[0].on_change, OnChange::SignalPidFile(Signal::HUP, "/run/app.pid".into()));
        assert_eq!(a.templates[1].mode, 0o440);
        assert_eq!(a.templates[1].on_change, OnChange::Restart);
        assert_eq!(a.exec.unwrap().1, Duration::from_secs(5));

        let minimal = "[[template]]\ncontents = \"x\"\ndestination = \"out\"\nmode = 0o600\n";
        let a = parse(minimal).unwrap();
        assert_eq!(a.auth, AutoAuth::Token { file: None });
        assert_eq!(a.templates[0].mode, 0o600);

        for (bad, why) in [
            ("", "no [[template]]"),
            ("[[template]]\ndestination = \"out\"\n", "exactly one of source"),
            (
                "[[template]]\ncontents = \"x\"\ndestination = \"o\"\non_change = { restart = true }\n",
                "needs an [exec]",
            ),
            ("[[template]]\ncontents = \"x\"\ndestination = \"o\"\non_change = { signal = \"HUP\" }\n", "pid_file"),
            ("[[template]]\ncontents = \"x\"\ndestination = \"o\"\nmode = \"9\"\n", "invalid file mode"),
            (
                "[auto_auth]\nmethod = \"approle\"\n[[template]]\ncontents = \"x\"\ndestination = \"o\"\n",
                "role ID file",
            ),
        ] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(toml::from_str::<Config>("[[template]]\ndestinaton = \"o\"\n").is_err(), "unknown keys refused");
    }
}
