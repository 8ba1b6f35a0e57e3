//! `vaultctl`: command-line client of the vault server, with HashiCorp
//! Vault's CLI verbs and syntax (`vaultctl kv get -field=password
//! secret/app`, `vaultctl write auth/approle/login role_id=...`).
//!
//! Configured like Vault's CLI: `VAULT_ADDR` (default
//! `http://127.0.0.1:8200`), `VAULT_TOKEN`, else the token stored by
//! `vaultctl login` in `~/.vault-token`, `VAULT_CACERT`. Secrets (key
//! shares, tokens, values) may be given on stdin (`-`) to keep them out of
//! shell history and process listings.
//!
//! Output: tables by default, `-format=json|yaml` for programs. Exit codes:
//! 0 success, 1 error, 2 "nothing there" (not found, empty list) or sealed.
//!
//! One module per verb group; this file holds the command tree, Vault's
//! single-dash flag syntax and the exit-code policy.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod agent;
mod audit;
mod auth;
mod backup;
mod common;
mod exec;
mod generic;
mod import;
mod input;
mod kv;
mod log;
mod login;
mod operator;
mod output;
mod policy;
mod scan;
mod secrets;
mod token;
mod transit;

use common::{Format, TokenSource};
use output::{EXIT_NO_DATA, Outcome};

const AFTER_HELP: &str = "\
Flags take one dash or two (-format=json, --format json), as in Vault's CLI.

Environment: VAULT_ADDR (default http://127.0.0.1:8200), VAULT_TOKEN (else the
token `vaultctl login` stored in ~/.vault-token), VAULT_CACERT, VAULT_FORMAT.

Exit codes: 0 success, 1 error, 2 nothing there (read/list/kv get found nothing)
or the vault is sealed (status, health, any request refused as sealed).";

/// Command-line client of the vault server: Vault's CLI commands and syntax.
#[derive(Debug, Parser)]
#[command(name = "vaultctl", version, long_about = None, after_help = AFTER_HELP)]
#[command(about = "Command-line client of the vault server: Vault's CLI commands and syntax")]
struct Cli {
    /// Server address; overrides VAULT_ADDR.
    #[arg(long, global = true, value_name = "URL")]
    address: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, env = "VAULT_FORMAT", default_value_t = Format::Human)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Vault lifecycle: init, unseal, seal, status, rekey, rotate, key-status, generate-root.
    Operator {
        #[command(subcommand)]
        cmd: operator::OperatorCmd,
    },
    /// Seal status (exit code 2 when sealed); same as `operator status`.
    Status,
    /// sys/health (exit code 2 when sealed or not initialized).
    Health,
    /// Same as `operator init`.
    Init(operator::InitArgs),
    /// Same as `operator unseal`.
    Unseal(operator::UnsealArgs),
    /// Same as `operator seal`.
    Seal,
    /// Same as `operator rotate`.
    Rotate,
    /// Same as `operator key-status`.
    KeyStatus,
    /// Same as `operator rekey`.
    Rekey(operator::RekeyArgs),
    /// Same as `operator generate-root`.
    GenerateRoot(operator::GenerateRootArgs),
    /// Secrets engines: enable, disable, list, tune.
    Secrets {
        #[command(subcommand)]
        cmd: secrets::SecretsCmd,
    },
    /// Older form of `secrets`: `mounts list|enable PATH --type T|disable PATH`.
    Mounts {
        #[command(subcommand)]
        cmd: secrets::MountsCmd,
    },
    /// Auth methods: enable, disable, list.
    Auth {
        #[command(subcommand)]
        cmd: auth::AuthCmd,
    },
    /// Log in and store the token in ~/.vault-token (mode 0600).
    Login(login::LoginArgs),
    /// KV secrets: get, put, patch, list, delete, undelete, destroy, metadata, rollback, rotation.
    Kv {
        #[command(subcommand)]
        cmd: kv::KvCmd,
    },
    /// ACL policies: read, write, list, delete, fmt.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Tokens: create, lookup, renew, revoke, capabilities.
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    /// Transit: keys, encrypt, decrypt, rewrap, encrypt-file, decrypt-file.
    Transit(transit::TransitArgs),
    /// Read any API path (exit code 2 if there is nothing).
    Read(generic::ReadArgs),
    /// Write KEY=VALUE data to any API path; shows the answer (a login's token too).
    Write(generic::WriteArgs),
    /// List the keys under any API path (exit code 2 if there are none).
    List(generic::ListArgs),
    /// Delete any API path.
    Delete(generic::DeleteArgs),
    /// Print a shell completion script: `vaultctl completion bash > /etc/bash_completion.d/vaultctl`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run a command with secrets in its environment.
    Exec(exec::Args),
    /// Keep secrets rendered into files (init container or sidecar).
    Agent(agent::Args),
    /// Find hard-coded secrets in files (exit code 1 when any are found).
    Scan(scan::Args),
    /// Move the secrets of a file into KV v2 and leave references.
    Import(import::Args),
    /// Audit devices: list, enable, disable; verify a log (exit 1 tampered, 2 could not check).
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
}

fn main() -> ExitCode {
    log::init();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `scan` is a CI gate where 1 means "secrets found": its usage errors
    // are 2 ("scan incomplete"), like an unreadable path.
    let gate = args.get(1).is_some_and(|a| a == "scan");
    let cli = match Cli::try_parse_from(vault_style_args(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are successes; a usage error is an error (1),
            // not clap's 2, which means "nothing there" here.
            let usage = if gate { 2 } else { 1 };
            return ExitCode::from(if e.use_stderr() { usage } else { 0 });
        }
    };
    let Cli { address, format, command } = cli;
    let env = common::Env { address, format };
    if let Command::Completion { shell } = command {
        let mut out = std::io::stdout().lock();
        clap_complete::generate(shell, &mut Cli::command(), "vaultctl", &mut out);
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), 1),
    };
    // Commands with their own modules run to their own exit code.
    let result = match command {
        Command::Exec(args) => return finish_wrapper(rt.block_on(exec::run(args, &env)), &env),
        Command::Agent(args) => return finish_wrapper(rt.block_on(agent::run(args, &env)), &env),
        Command::Scan(args) => return finish(rt.block_on(scan::run(args, &env)), &env),
        Command::Import(args) => return finish(rt.block_on(import::run(args, &env)), &env),
        Command::Audit { cmd } => return finish(rt.block_on(audit::run(cmd, &env)), &env),
        // Streams of files: any failure is exit code 1 (the output is gone).
        Command::Transit(args) if args.is_file_command() => {
            return rt.block_on(transit::run_file(args, &env)).unwrap_or_else(|e| fail(&explain(&e, &env).0, 1));
        }
        other => rt.block_on(run(other, &env)),
    };
    match result {
        Ok(o) => emit(o),
        Err(e) => report(&e, &env),
    }
}

/// Vault's CLI takes long flags with one dash (`-field=x`, `-format json`);
/// clap wants two. Rewrite `-name[=value]` (a name of two or more
/// characters starting with a letter) to `--name[=value]`, up to a `--`
/// (after which everything belongs to someone else, e.g. `exec`'s command).
/// Single-letter flags (`-f`, `-h`) and values such as `-` are left alone.
fn vault_style_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut done = false;
    for (i, a) in args.into_iter().enumerate() {
        if i == 0 || done {
            out.push(a);
            continue;
        }
        if a == "--" {
            done = true;
            out.push(a);
            continue;
        }
        match a.to_str() {
            Some(s) if is_single_dash_long(s) => out.push(OsString::from(format!("-{s}"))),
            _ => out.push(a),
        }
    }
    out
}

fn is_single_dash_long(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('-') else { return false };
    let name = rest.split_once('=').map_or(rest, |(n, _)| n);
    name.len() > 1
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn run(command: Command, env: &common::Env) -> anyhow::Result<Outcome> {
    use operator::OperatorCmd as Op;
    match command {
        Command::Operator { cmd } => operator::run(cmd, env).await,
        Command::Status => operator::run(Op::Status, env).await,
        Command::Health => operator::health(env).await,
        Command::Init(a) => operator::run(Op::Init(a), env).await,
        Command::Unseal(a) => operator::run(Op::Unseal(a), env).await,
        Command::Seal => operator::run(Op::Seal, env).await,
        Command::Rotate => operator::run(Op::Rotate, env).await,
        Command::KeyStatus => operator::run(Op::KeyStatus, env).await,
        Command::Rekey(a) => operator::run(Op::Rekey(a), env).await,
        Command::GenerateRoot(a) => operator::run(Op::GenerateRoot(a), env).await,
        Command::Secrets { cmd } => secrets::run(cmd, env).await,
        Command::Mounts { cmd } => secrets::run(cmd.into(), env).await,
        Command::Auth { cmd } => auth::run(cmd, env).await,
        Command::Login(a) => login::run(a, env).await,
        Command::Kv { cmd } => kv::run(cmd, env).await,
        Command::Policy { cmd } => policy::run(cmd, env).await,
        Command::Token { cmd } => token::run(cmd, env).await,
        Command::Transit(a) => transit::run(a, env).await,
        Command::Read(a) => generic::read(a, env).await,
        Command::Write(a) => generic::write(a, env).await,
        Command::List(a) => generic::list(a, env).await,
        Command::Delete(a) => generic::delete(a, env).await,
        Command::Completion { .. }
        | Command::Exec(_)
        | Command::Agent(_)
        | Command::Scan(_)
        | Command::Import(_)
        | Command::Audit { .. } => {
            anyhow::bail!("internal error: command dispatched twice")
        }
    }
}

/// Write a command's output and return its exit code.
fn emit(o: Outcome) -> ExitCode {
    if !o.stderr.is_empty() {
        let _ = std::io::stderr().write_all(o.stderr.as_bytes());
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(o.stdout.as_bytes())
        .and_then(|()| o.raw.as_ref().map_or(Ok(()), |r| stdout.write_all(r)))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => ExitCode::from(o.code),
        // The reader went away (`vaultctl list x | head`): nothing to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(1),
        Err(e) => fail(&format!("cannot write output: {e}"), 1),
    }
}

/// The exit of a command module: its own code, or its error.
fn finish(r: anyhow::Result<ExitCode>, env: &common::Env) -> ExitCode {
    r.unwrap_or_else(|e| report(&e, env))
}

/// For `exec` and `agent`, which exit with their command's status: their
/// own failures are always 1 (as documented), never the 2 of a 404/503,
/// which a caller could not tell from the command's own exit 2.
fn finish_wrapper(r: anyhow::Result<ExitCode>, env: &common::Env) -> ExitCode {
    r.unwrap_or_else(|e| {
        report(&e, env);
        ExitCode::FAILURE
    })
}

/// Report an error in one line: exit code 2 when the server said "not
/// found" or "sealed", else 1. A 403 without any token says how to get one.
fn report(e: &anyhow::Error, env: &common::Env) -> ExitCode {
    let (msg, status) = explain(e, env);
    let code = if matches!(status, Some(404 | 503)) { EXIT_NO_DATA } else { 1 };
    fail(&msg, code)
}

/// An error's one-line message (with a hint after a 403 when the token is
/// missing or came from the token file) and the server's status, if any.
fn explain(e: &anyhow::Error, env: &common::Env) -> (String, Option<u16>) {
    let status = e.chain().find_map(|c| c.downcast_ref::<vault_client::Error>()).and_then(vault_client::Error::status);
    let mut msg = describe(e);
    if status == Some(403) {
        match env.token_source() {
            TokenSource::None => msg.push_str(" (no token: set VAULT_TOKEN or run `vaultctl login`)"),
            TokenSource::File(p) => msg.push_str(&format!(" (token from {})", p.display())),
            TokenSource::EnvVar => {}
        }
    }
    (msg, status)
}

/// An error and its causes on one line, skipping causes already quoted by
/// their parent (reqwest's top-level message omits the useful part, such as
/// "connection refused", which is in its sources).
fn describe(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn fail(msg: &str, code: u8) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "Error: {msg}");
    ExitCode::from(code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let argv = std::iter::once("vaultctl").chain(args.iter().copied()).map(OsString::from);
        Cli::try_parse_from(vault_style_args(argv))
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_starts_with_a_real_description() {
        let help = Cli::command().render_help().to_string();
        let first = help.lines().next().unwrap();
        assert!(first.contains("Vault's CLI"), "{first}");
        assert!(!first.contains("Client library"), "{first}");
    }

    #[test]
    fn single_dash_flags_are_rewritten() {
        let v = |args: &[&str]| -> Vec<String> {
            vault_style_args(args.iter().map(OsString::from)).into_iter().map(|s| s.into_string().unwrap()).collect()
        };
        assert_eq!(
            v(&["vaultctl", "kv", "get", "-field=password", "-format", "json", "secret/app"]),
            ["vaultctl", "kv", "get", "--field=password", "--format", "json", "secret/app"]
        );
        assert_eq!(v(&["x", "write", "-f", "p", "k=-", "-"]), ["x", "write", "-f", "p", "k=-", "-"]);
        assert_eq!(v(&["x", "--already", "-h"]), ["x", "--already", "-h"]);
        assert_eq!(
            v(&["x", "exec", "-env=A=s/p#k", "--", "sh", "-c", "-echo"]),
            ["x", "exec", "--env=A=s/p#k", "--", "sh", "-c", "-echo"]
        );
        assert_eq!(v(&["x", "-5", "-1x", "-a.b"]), ["x", "-5", "-1x", "-a.b"]);
    }

    #[test]
    fn parses_vault_syntax() {
        let ok = [
            &["status"][..],
            &["health"],
            &["operator", "init", "-key-shares=5", "-key-threshold=3", "-format=json"],
            &["operator", "init", "-status"],
            &["init", "--key-shares", "5", "--key-threshold", "3", "--format", "json"],
            &["init", "--key-shares", "1"],
            &["operator", "unseal"],
            &["unseal", "abcd"],
            &["unseal", "-reset"],
            &["operator", "seal"],
            &["operator", "rotate"],
            &["rotate"],
            &["operator", "key-status"],
            &["key-status"],
            &["operator", "rekey", "-init", "-key-shares=3", "-key-threshold=2"],
            &["operator", "rekey", "-status"],
            &["operator", "rekey", "-nonce=N", "KEY"],
            &["operator", "rekey", "-cancel"],
            &["rekey", "init", "--key-shares", "3", "--key-threshold", "2"],
            &["rekey", "update", "KEY", "--nonce", "N"],
            &["rekey", "cancel"],
            &["operator", "generate-root", "-init"],
            &["operator", "generate-root", "-decode=X", "-otp=Y"],
            &["generate-root", "init"],
            &["generate-root", "update", "KEY", "--nonce", "N"],
            &["generate-root", "decode", "--encoded", "X", "--otp", "Y"],
            &["secrets", "enable", "-path=secret", "kv-v2"],
            &["secrets", "enable", "-path=kv1", "-version=1", "-description=d", "kv"],
            &["secrets", "list", "-detailed"],
            &["secrets", "tune", "-max-lease-ttl=24h", "secret"],
            &["secrets", "disable", "secret"],
            &["mounts", "list"],
            &["mounts", "enable", "kvx", "--type", "kv", "--description", "d", "--option", "version=1"],
            &["mounts", "disable", "kvx"],
            &["auth", "enable", "approle"],
            &["auth", "enable", "-path=people", "userpass"],
            &["auth", "list"],
            &["auth", "disable", "approle"],
            &["login", "-method=approle", "role_id=r", "secret_id=-"],
            &["login", "-method=userpass", "-path=people", "username=ann"],
            &["login", "-no-store", "-token-only", "hvs.x"],
            &["login"],
            &["kv", "get", "-field=password", "-version=2", "secret/app"],
            &["kv", "get", "-mount=secret", "app"],
            &["kv", "put", "secret/app", "a=b", "c=@file", "d=-"],
            &["kv", "put", "-json", "-cas=1", "secret/app", "port=5432"],
            &["kv", "put", "secret/app", "-"],
            &["kv", "patch", "secret/app", "a=b"],
            &["kv", "list", "secret/"],
            &["kv", "delete", "-versions=1,2", "secret/app"],
            &["kv", "undelete", "-versions=1", "secret/app"],
            &["kv", "destroy", "-versions=1", "secret/app"],
            &["kv", "metadata", "get", "secret/app"],
            &["kv", "metadata", "put", "-max-versions=5", "-custom-metadata=owner=ops", "secret/app"],
            &["kv", "metadata", "delete", "secret/app"],
            &["kv", "rollback", "-version=1", "secret/app"],
            &["kv", "rotation", "set", "-period=24h", "-generator=password", "-length=40", "secret/db"],
            &["kv", "rotation", "set", "secret/db", "-"],
            &["kv", "rotation", "get", "secret/db"],
            &["kv", "rotation", "delete", "secret/db"],
            &["kv", "rotation", "rotate", "secret/db"],
            &["policy", "write", "app", "app.hcl"],
            &["policy", "write", "app", "-"],
            &["policy", "read", "app"],
            &["policy", "list"],
            &["policy", "delete", "app"],
            &["policy", "fmt", "app.hcl"],
            &["token", "create", "-policy=app", "-policy=b,c", "-ttl=1h", "-renewable=false", "-field=token"],
            &["token", "create", "-orphan", "-renewable"],
            &["token", "lookup"],
            &["token", "lookup", "-accessor", "acc"],
            &["token", "renew", "-increment=1h"],
            &["token", "revoke", "-self"],
            &["token", "revoke", "-accessor", "acc"],
            &["token", "capabilities", "secret/data/app"],
            &["token", "capabilities", "-", "secret/data/app"],
            &["transit", "keys", "create", "-type=chacha20-poly1305", "orders"],
            &["transit", "keys", "list"],
            &["transit", "-mount=tr", "keys", "read", "orders"],
            &["transit", "keys", "rotate", "orders"],
            &["transit", "encrypt", "orders", "-"],
            &["transit", "encrypt", "-context=user1", "orders", "hello"],
            &["transit", "decrypt", "-base64", "orders", "vault:v1:x"],
            &["transit", "encrypt-file", "in.bin", "out.vlts", "-key=files"],
            &["transit", "encrypt-file", "-", "-", "--key", "files", "--local", "-segment-size=4096"],
            &[
                "transit",
                "encrypt-file",
                "a",
                "b",
                "-key=f",
                "-associated-data=id-7",
                "-subject=ada",
                "-algorithm=chacha20-poly1305",
            ],
            &["transit", "-mount=tr", "decrypt-file", "b", "a", "-key=f", "-local", "-associated-data=id-7"],
            &["read", "-field=token", "auth/token/lookup-self"],
            &["write", "-f", "auth/token/create"],
            &["write", "-field=token", "auth/approle/login", "role_id=r", "secret_id=s"],
            &["write", "secret/a", "-"],
            &["list", "secret/"],
            &["delete", "secret/a"],
            &["completion", "bash"],
            &["-format=yaml", "status"],
            &["status", "-format=table"],
            &["-address=http://127.0.0.1:1", "status"],
        ];
        for args in ok {
            assert!(parse(args).is_ok(), "{args:?}: {}", parse(args).unwrap_err());
        }
        let bad = [
            &["unseal", "--reset", "KEY"][..],
            &["rekey", "update", "KEY", "extra"],
            &["mounts", "enable", "kvx"],
            &["transit", "encrypt-file", "a", "b"],
            &["transit", "decrypt-file", "a", "-key=f", "-segment-size=4096"],
            &["mounts", "enable", "kvx", "--type", "kv", "--option", "novalue"],
            &["status", "--format", "xml"],
            &["kv", "undelete", "secret/app"],
            &["kv", "put", "secret/app"],
            &["token", "revoke"],
            &["operator", "rekey", "-init", "-cancel"],
            &["completion", "tcsh"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn errors_show_their_cause_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let c = vault_client::Client::new("http://127.0.0.1:1").unwrap();
        let e = anyhow::Error::from(rt.block_on(c.sys().seal_status()).unwrap_err());
        let msg = describe(&e);
        assert_eq!(msg.matches("error sending request").count(), 1, "{msg}");
    }
}
