//! Running the server: storage, core, listener, background jobs and a
//! graceful shutdown that seals (wipes keys) before exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, redact_url};
use crate::core::Core;
use crate::http;
use crate::storage::{Storage, StorageError};

/// How long in-flight requests get after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One connection attempt to PostgreSQL at start (a host that drops packets
/// gives no "refused": this bounds the wait for an answer).
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a PostgreSQL that answers "the database system is starting up"
/// (SQLSTATE 57P03) is waited for. Other failures (refused, unreachable, bad
/// credentials) fail at once: waiting would only hide the cause, and
/// orchestrators restart the process anyway.
const PG_STARTING_WAIT: Duration = Duration::from_secs(30);

/// Errors starting the server. Database errors are shown by their message
/// (and SQLSTATE): the source location sqlx appends ("at line 334": a line
/// of PostgreSQL's own source) says nothing to an operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Storage could not be opened.
    #[error("storage: {}", describe_storage(.0))]
    Storage(#[from] StorageError),
    /// PostgreSQL refused or failed the first connection.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// `user@host:port/database` (never the password).
        target: String,
        /// The cause, e.g. "Connection refused (os error 111)".
        reason: String,
    },
    /// The core could not start.
    #[error("core: {0}")]
    Core(#[from] crate::core::CoreError),
    /// The listen address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
}

/// A storage error for an operator: database errors by message and code.
fn describe_storage(e: &StorageError) -> String {
    match e {
        StorageError::Database(e) => format!("database error: {}", describe_sqlx(e)),
        StorageError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => {
            format!("migration failed: {}", describe_sqlx(e))
        }
        other => other.to_string(),
    }
}

/// A sqlx error without the server's source location, with the SQLSTATE.
fn describe_sqlx(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".into(),
        other => other.to_string(),
    }
}

/// Connect once to PostgreSQL before the pool does, so that a database
/// that is down, unreachable or refusing the credentials fails the start
/// at once with the cause, rather than as the pool's "timed out" after its
/// acquire timeout. A database still starting up is waited for briefly.
async fn probe_postgres(url: &str) -> Result<(), ServerError> {
    use sqlx::Connection as _;
    use std::str::FromStr as _;
    let opts = sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|e| StorageError::InvalidUrl(e.to_string()))?
        .application_name("vault-server-start");
    let target = format!(
        "{}@{}:{}/{}",
        opts.get_username(),
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or(opts.get_username())
    );
    let started = tokio::time::Instant::now();
    loop {
        let reason = match tokio::time::timeout(PG_CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&opts)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Ok(Err(sqlx::Error::Database(db)))
                if db.code().as_deref() == Some("57P03") && started.elapsed() < PG_STARTING_WAIT =>
            {
                tracing::info!(%target, "PostgreSQL is starting up; waiting for it");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Ok(Err(e)) => describe_sqlx(&e),
            Err(_) => format!("no answer within {}s", PG_CONNECT_TIMEOUT.as_secs()),
        };
        return Err(ServerError::Connect { target, reason });
    }
}

/// A started server (listening, not yet serving until [`Server::serve`]).
#[derive(Debug)]
pub struct Server {
    core: Arc<Core>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Reloads the TLS certificate on SIGHUP.
    tls_reloader: Option<http::tls::CertReloader>,
    config: Config,
}

impl Server {
    /// Bind the listener, load TLS, open storage, build the core.
    ///
    /// The order matters to an operator: what can fail without side effects
    /// (a port in use, unusable TLS files, a database that is down) fails
    /// before a SQLite file or a schema is created.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen_addr, source })?;
        let (tls, tls_reloader) = match &config.tls {
            Some(t) => {
                let clients = http::tls::ClientCerts {
                    ca_file: t.tls_client_ca_file.clone(),
                    required: t.tls_require_and_verify_client_cert,
                    disabled: t.tls_disable_client_certs,
                };
                let (cfg, reloader) = http::tls::listener(&t.cert_file, &t.key_file, &clients)?;
                (Some(cfg), Some(reloader))
            }
            None => (None, None),
        };
        let url = config.storage_url.as_str();
        tracing::info!(storage = %redact_url(url), "opening storage");
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            probe_postgres(url).await?;
        }
        let storage = Storage::open_with(url, config.cache_max_bytes).await?;
        let core = Core::new(storage, crate::catalog::builtin()).await?;
        core.lockout().configure(config.lockout);
        core.configure_rotation(config.rotation.clone());
        core.configure_streams(config.streams.clone());
        core.configure_unauthed_ceremonies(config.unauthed_ceremonies);
        core.metrics().set_unauthenticated_access(config.telemetry.unauthenticated_metrics_access);
        core.quotas().configure(config.quotas);
        core.backup().configure(config.backup.clone());
        core.audit().configure_files(config.audit_file_dirs.clone());
        if config.access_log {
            core.hooks().add(Arc::new(crate::core::hooks::AccessLog));
        }
        Ok(Self { core, listener, tls, tls_reloader, config })
    }

    /// The core (for dev-mode set-up before serving).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves; then stop accepting, let in-flight
    /// requests finish, seal (wiping keys) and close storage.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server { core, listener, tls, tls_reloader, config } = self;
        let addr = listener.local_addr()?;
        let limits = config.listener;
        if tls.is_none() {
            tracing::warn!(%addr, "listening over plain HTTP without TLS: tokens and secrets cross the network in the clear; configure [tls] outside local development");
        }
        let app = http::router_with_hsts(
            core.clone(),
            config.max_request_bytes,
            limits.read_timeout,
            limits.max_request_bytes_in_flight,
            limits.max_connections,
            config.tls.as_ref().filter(|_| tls.is_some()).map(|t| t.hsts_max_age),
        );
        // Registered before serving: SIGHUP's default action ends the process.
        if let Ok(hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tokio::spawn(on_sighup(hup, tls_reloader, core.clone()));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let jobs = tokio::spawn(background(core.clone(), stop_rx.clone()));
        let backups = config.backup.schedule.clone().map(|s| {
            tracing::info!(dir = %s.dir.display(), interval_secs = s.interval.as_secs(), "scheduled backups enabled");
            tokio::spawn(crate::backup::schedule::run(core.clone(), s, stop_rx.clone()))
        });
        // The signal flips `stop`; serving stops accepting at once and gets a
        // bounded grace period for in-flight requests (a client that never
        // closes its connection must not keep the process, and its keys, alive).
        let signal_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = signal_tx.send(true);
        });
        let graceful = {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        tracing::info!(
            %addr,
            tls = tls.is_some(),
            max_connections = limits.max_connections,
            header_timeout_secs = limits.read_header_timeout.as_secs(),
            read_timeout_secs = limits.read_timeout.as_secs(),
            idle_timeout_secs = limits.idle_timeout.as_secs(),
            "listening"
        );
        operator_hint(&core, addr, tls.is_some()).await;
        http::serve::serve(listener, tls, app, limits, graceful, SHUTDOWN_GRACE).await;
        let _ = stop_tx.send(true);
        let _ = jobs.await;
        if let Some(b) = backups {
            let _ = b.await;
        }
        core.seal().await;
        core.storage().close().await;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// One line telling the operator what a fresh or sealed server waits for
/// (dev mode is unsealed by then and says nothing).
async fn operator_hint(core: &Core, addr: SocketAddr, tls: bool) {
    let status = match core.seal_status().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the seal status");
            return;
        }
    };
    // A wildcard address is not one to connect to: suggest loopback.
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let vault_addr = format!("{}://{host}", if tls { "https" } else { "http" });
    if !status.initialized {
        tracing::warn!(
            vault_addr = %vault_addr,
            "vault is not initialized: run `vaultctl operator init` once (VAULT_ADDR={vault_addr}), keep the unseal keys apart, then `vaultctl operator unseal`"
        );
    } else if status.sealed {
        tracing::warn!(
            vault_addr = %vault_addr,
            threshold = status.t,
            shares = status.n,
            "vault is sealed: unseal it with `vaultctl operator unseal` ({} of {} key shares; VAULT_ADDR={vault_addr})",
            status.t,
            status.n
        );
    }
}

/// Periodic jobs: barrier usage check (auto-rotation) and token tidy every
/// minute; due secret rotations every `[rotation] interval`, in their own loop
/// so a slow database cannot delay the barrier's checks (or the reverse).
async fn background(core: Arc<Core>, stop: watch::Receiver<bool>) {
    let rotations = {
        let core = core.clone();
        let mut stop = stop.clone();
        async move {
            let mut tick = tokio::time::interval(core.rotation_settings().interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => core.run_periodic().await,
                    _ = stop.changed() => return,
                }
            }
        }
    };
    let housekeeping = async move {
        let mut stop = stop;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => core.maintain().await,
                _ = stop.changed() => return,
            }
        }
    };
    tokio::join!(rotations, housekeeping);
}

/// SIGHUP: reload what can change without a restart: the TLS certificate
/// and key (a failed reload keeps the pair in use), and the audit files
/// (log rotation: each device signs off the old file and continues its
/// chain in the new one).
async fn on_sighup(mut hup: tokio::signal::unix::Signal, tls: Option<http::tls::CertReloader>, core: Arc<Core>) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the TLS certificate, reopening audit files");
        if let Some(r) = &tls {
            r.reload_logged();
        }
        core.audit().rotate();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
    }
}
