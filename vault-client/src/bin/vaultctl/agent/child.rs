//! A supervised child process (for `exec` and `agent`'s `[exec]`): started
//! with a given environment, signals forwarded to it, stopped with a grace
//! period, and its exit turned into ours (128 + N when signal N killed it,
//! as shells report it).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustix::process::{Pid, Signal, kill_process};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// Signals passed on to the child (the ones a supervisor is sent to
/// stop, reload or poke its application).
pub(crate) const FORWARDED: [Signal; 6] =
    [Signal::INT, Signal::TERM, Signal::HUP, Signal::QUIT, Signal::USR1, Signal::USR2];

/// The environment variable the child never inherits: it gets its secrets,
/// not the means to read others.
const TOKEN_VAR: &str = "VAULT_TOKEN";

/// Catch the [`FORWARDED`] signals (so they no longer kill vaultctl) and
/// deliver them on a channel.
pub(crate) fn catch_signals() -> anyhow::Result<mpsc::UnboundedReceiver<Signal>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for sig in FORWARDED {
        let mut stream = signal(SignalKind::from_raw(sig.as_raw()))
            .with_context(|| format!("cannot handle {}", signal_name(sig)))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
    }
    Ok(rx)
}

/// Parse a signal name: `SIGHUP`, `HUP` or `hup`.
pub(crate) fn parse_signal(name: &str) -> anyhow::Result<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match bare {
        "HUP" => Signal::HUP,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "TERM" => Signal::TERM,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "KILL" => Signal::KILL,
        "CONT" => Signal::CONT,
        "ALRM" => Signal::ALARM,
        "WINCH" => Signal::WINCH,
        _ => bail!("unknown signal {name:?}: expected e.g. SIGHUP, SIGTERM, SIGUSR1"),
    })
}

/// `SIGTERM` for [`Signal::TERM`], ...
pub(crate) fn signal_name(sig: Signal) -> String {
    format!("{sig:?}").replace("Signal::", "SIG")
}

/// Send `sig` to process `pid`.
pub(crate) fn send_signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).with_context(|| format!("invalid process id {pid}"))?;
    kill_process(pid, sig)
        .with_context(|| format!("cannot send {} to process {}", signal_name(sig), pid.as_raw_nonzero()))
}

/// The environment of a child: ours without `VAULT_TOKEN`, then `set`
/// (later entries win).
pub(crate) fn child_env(set: &[(String, Zeroizing<String>)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().filter(|(k, _)| k != TOKEN_VAR).collect();
    for (k, v) in set {
        env.retain(|(name, _)| name != k.as_str());
        env.push((k.into(), v.as_str().into()));
    }
    env
}

/// A running child.
#[derive(Debug)]
pub(crate) struct Child {
    proc: tokio::process::Child,
    pid: u32,
    program: String,
}

/// Make vaultctl non-dumpable (`PR_SET_DUMPABLE` 0) before it starts a
/// child. The child runs as the same user and vaultctl stays its parent:
/// without this it could read `VAULT_TOKEN` from `/proc/$PPID/environ`, or
/// ptrace vaultctl and read a token obtained by login from its memory.
/// Non-dumpable, vaultctl's `/proc` files belong to root and ptrace needs
/// CAP_SYS_PTRACE. The child gets the default back at its `execve`.
/// Refusing to start is better than starting unprotected.
pub(crate) fn protect_from_children() -> anyhow::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("cannot make vaultctl non-dumpable (prctl PR_SET_DUMPABLE)")?;
    Ok(())
}

impl Child {
    /// Start `command` (program and arguments) with exactly `env` as its
    /// environment; stdin, stdout and stderr are ours. Killed if vaultctl
    /// drops it (an error path must not leave it orphaned).
    pub(crate) fn spawn(command: &[OsString], env: &[(OsString, OsString)]) -> anyhow::Result<Child> {
        let (program, args) = command.split_first().context("no command to run")?;
        protect_from_children()?;
        let name = program.to_string_lossy().into_owned();
        let proc = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = proc.id().with_context(|| format!("{name} exited at once"))?;
        Ok(Child { proc, pid, program: name })
    }

    /// Pass `sig` on (a child that already exited is not an error).
    pub(crate) fn signal(&self, sig: Signal) {
        if let Err(e) = send_signal(self.pid, sig) {
            eprintln!("vaultctl: {}: {e:#}", self.program);
        }
    }

    /// Wait for it to exit.
    pub(crate) async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        self.proc.wait().await.with_context(|| format!("cannot wait for {}", self.program))
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`; its exit.
    pub(crate) async fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Ok(Some(status)) = self.proc.try_wait() {
            return Ok(status);
        }
        self.signal(Signal::TERM);
        match tokio::time::timeout(grace, self.proc.wait()).await {
            Ok(r) => r.with_context(|| format!("cannot wait for {}", self.program)),
            Err(_) => {
                eprintln!("vaultctl: {} did not exit within {}s of SIGTERM: killing it", self.program, grace.as_secs());
                self.proc.kill().await.with_context(|| format!("cannot kill {}", self.program))?;
                self.wait().await
            }
        }
    }
}

/// Our exit code for the child's exit: its code, or 128 + the signal that
/// killed it.
pub(crate) fn exit_code(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        // Exit codes are 0..=255 on Unix; the truncation is what the shell sees.
        return ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1));
    }
    match status.signal() {
        Some(sig) => ExitCode::from(u8::try_from(128 + (sig & 0x7f)).unwrap_or(1)),
        None => ExitCode::from(1),
    }
}

/// Parse a duration: whole seconds (`10`) or with a unit (`500ms`, `10s`, `2m`).
pub(crate) fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().with_context(|| format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 2m"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => bail!("invalid duration {s:?}: expected e.g. 10s, 500ms, 2m"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_durations() {
        assert_eq!(parse_signal("SIGHUP").unwrap(), Signal::HUP);
        assert_eq!(parse_signal("usr1").unwrap(), Signal::USR1);
        assert!(parse_signal("SIGFOO").is_err());
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("1h").is_err() && parse_duration("x").is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        assert_eq!(exit_code(ExitStatus::from_raw(15)), ExitCode::from(143));
    }

    #[test]
    fn child_env_drops_the_token_and_overrides() {
        let env = child_env(&[("PATH".into(), Zeroizing::new("/x".into()))]);
        assert!(env.iter().all(|(k, _)| k != "VAULT_TOKEN"));
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(env.iter().any(|(k, v)| k == "PATH" && v == "/x"));
    }
}
