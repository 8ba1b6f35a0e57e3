//! The `vault-server` binary: `server` (durable) and `dev` (ephemeral).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vault_server::config::{Config, LogFormat, Overrides};
use vault_server::server::{Server, shutdown_signal};
use vault_server::{hardening, http};

/// mimalloc instead of glibc's malloc: audit entries are built on runtime
/// workers and freed by a device's writer thread, a cross-thread pattern
/// that cost glibc ~16% of the audited hot path in frees and consolidation
/// (docs/performance.md, docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "vault-server",
    version,
    about = "Secrets vault and encryption-as-a-service (HashiCorp Vault HTTP API)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a durable server. Starts uninitialized or sealed.
    Server {
        /// TOML configuration file.
        #[arg(long, env = "VAULT_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address (overrides the file), e.g. 127.0.0.1:8200.
        #[arg(long)]
        listen: Option<String>,
        /// Storage URL (overrides the file): sqlite://path or postgres://...
        #[arg(long, env = "VAULT_STORAGE_URL", hide_env_values = true)]
        storage: Option<String>,
        /// File holding the storage URL (Docker/Kubernetes secrets), instead of --storage.
        #[arg(long, env = "VAULT_STORAGE_URL_FILE", value_name = "FILE")]
        storage_file: Option<PathBuf>,
        /// File holding the PostgreSQL password, for a storage URL without one.
        #[arg(long, env = "VAULT_STORAGE_PASSWORD_FILE", value_name = "FILE")]
        storage_password_file: Option<PathBuf>,
        /// Log level (overrides the file).
        #[arg(long)]
        log_level: Option<String>,
    },
    /// Run an ephemeral, already unsealed development server. Never in production.
    Dev {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8200")]
        listen: String,
        /// Use this root token instead of a random one.
        #[arg(long, env = "VAULT_DEV_ROOT_TOKEN_ID")]
        root_token: Option<String>,
        /// Log level.
        #[arg(long, default_value = "info")]
        log_level: String,
        /// Log one line per request (request id, operation, path, status, duration, accessor).
        #[arg(long)]
        access_log: bool,
    },
    /// Restore drill of a snapshot file, offline (no server): integrity,
    /// then every entry opened with the snapshot's unseal key shares, in a
    /// throwaway SQLite store. Prints the report as JSON; exits non-zero on
    /// any failure (docs/backup.md).
    BackupVerify {
        /// The snapshot file (`vaultctl operator backup`).
        file: PathBuf,
        /// A file of unseal key shares of the snapshot's vault, one per line (repeatable).
        #[arg(long, value_name = "FILE", required = true)]
        unseal_key_file: Vec<PathBuf>,
    },
}

fn init_logging(level: &str, format: LogFormat, access_log: bool) {
    // One access line per request (target `vault::access`) only when asked:
    // it costs a write per request.
    let access = if access_log { "vault::access=info" } else { "vault::access=off" };
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{level},{access}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{access}")));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    http::tls::install_provider();
    match cli.command {
        Command::BackupVerify { file, unseal_key_file } => {
            let report = vault_server::backup::verify_offline(&file, &unseal_key_file).await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            if !report.verified {
                anyhow::bail!("the restore drill failed: {} of {} entries did not open", report.failed, report.entries);
            }
        }
        Command::Server { config, listen, storage, storage_file, storage_password_file, log_level } => {
            let overrides = Overrides {
                listen_addr: listen,
                storage_url: storage,
                storage_url_file: storage_file,
                storage_password_file,
                log_level,
            };
            let cfg = Config::load(config.as_deref(), overrides)?;
            init_logging(&cfg.log_level, cfg.log_format, cfg.access_log);
            let h = hardening::apply(!cfg.disable_mlock);
            hardening::report(h, !cfg.disable_mlock);
            let server = Server::start(cfg).await?;
            server.serve(shutdown_signal()).await?;
        }
        Command::Dev { listen, root_token, log_level, access_log } => {
            init_logging(&log_level, LogFormat::Text, access_log);
            let h = hardening::apply(false);
            hardening::report(h, false);
            let dir = tempfile::Builder::new().prefix("vault-dev-").tempdir()?;
            let url = format!("sqlite://{}/vault.db", dir.path().display());
            let overrides = Overrides { listen_addr: Some(listen), storage_url: Some(url), ..Overrides::default() };
            let mut cfg = Config::load(None, overrides)?;
            // Dev only: PostgreSQL rotations may reach loopback (a server allows nothing by default).
            cfg.rotation.postgres_allowed_hosts =
                std::sync::Arc::new(vault_server::engines::pg_role::HostAllowList::loopback().clone());
            cfg.access_log = access_log;
            // Dev only: audit files anywhere the user can write.
            cfg.audit_file_dirs = vault_server::audit::FileDirs::Anywhere;
            let server = Server::start(cfg).await?;
            let addr = server.local_addr()?;
            let (unseal_key, token) = server.core().dev_init(root_token.as_deref()).await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "\nWARNING! dev mode is enabled! In this mode the vault runs entirely unsealed,\n\
                 keeps its data in a temporary directory that is deleted on exit, and prints\n\
                 its unseal key and root token below. Do not run dev mode in production.\n\n\
                 You may need to set the following environment variables:\n\n    \
                 export VAULT_ADDR='http://{addr}'\n    export VAULT_TOKEN='{}'\n\n\
                 Unseal Key: {unseal_key}\nRoot Token: {}\n",
                token.as_str(),
                token.as_str()
            )?;
            out.flush()?;
            drop(out);
            server.serve(shutdown_signal()).await?;
            drop(dir);
        }
    }
    Ok(())
}
