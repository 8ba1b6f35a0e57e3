//! Running the server: storage, core, listener, background jobs and a
//! graceful shutdown that seals (wipes keys) before exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::core::Core;
use crate::http;
use crate::storage::Storage;

/// How long in-flight requests get after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The core could not start.
    #[error("core: {0}")]
    Core(#[from] crate::core::CoreError),
    /// Binding or serving failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
}

/// A started server (listening, not yet serving until [`Server::serve`]).
#[derive(Debug)]
pub struct Server {
    core: Arc<Core>,
    listener: TcpListener,
    config: Config,
}

impl Server {
    /// Open storage, build the core, bind the listener.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let storage = Storage::open_with(&config.storage_url, config.cache_max_bytes).await?;
        let core = Core::new(storage, crate::catalog::builtin()).await?;
        core.lockout().configure(config.lockout);
        core.configure_rotation(config.rotation.clone());
        core.configure_unauthed_ceremonies(config.unauthed_ceremonies);
        if config.access_log {
            core.hooks().add(Arc::new(crate::core::hooks::AccessLog));
        }
        let listener = TcpListener::bind(config.listen_addr).await?;
        Ok(Self { core, listener, config })
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
        let Server { core, listener, config } = self;
        let addr = listener.local_addr()?;
        let limits = config.listener;
        // Unusable TLS files fail before anything runs.
        let tls = match &config.tls {
            Some(tls) => Some(http::tls::server_config(&tls.cert_file, &tls.key_file)?),
            None => {
                tracing::warn!(%addr, "listening over plain HTTP without TLS: tokens and secrets cross the network in the clear; configure [tls] outside local development");
                None
            }
        };
        let app = http::router(
            core.clone(),
            config.max_request_bytes,
            limits.read_timeout,
            limits.max_request_bytes_in_flight,
            limits.max_connections,
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let jobs = tokio::spawn(background(core.clone(), stop_rx.clone()));
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
        http::serve::serve(listener, tls, app, limits, graceful, SHUTDOWN_GRACE).await;
        let _ = stop_tx.send(true);
        let _ = jobs.await;
        core.seal().await;
        core.storage().close().await;
        tracing::info!("shut down cleanly");
        Ok(())
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
