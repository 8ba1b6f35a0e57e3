//! The engine kit: what every secrets engine and auth method is built
//! from, and the catalog that maps a mount type to its factory (so the core
//! knows engines only as [`Backend`]s).
//!
//! Lifecycle of a backend (see ARCHITECTURE.md):
//! - built by its [`Factory`] from an [`EngineContext`] when its mount
//!   appears (at unseal, on `sys/mounts`/`sys/auth` writes, or when another
//!   server changes the tables); a change to one mount rebuilds only that
//!   mount, so the others keep their in-memory state (caches, JWKS);
//! - told of storage changes made by other servers under its prefix by
//!   [`Backend::invalidate`] (the change feed);
//! - [`Backend::periodic`] on every scheduler tick while unsealed;
//! - [`Backend::shutdown`] once when its mount is removed or the vault seals.
//!
//! A factory must not start background work: a backend built by a router
//! build that loses a race to a newer one is dropped without `shutdown`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::{Backend, LogicalError};
use crate::auth::lockout::Lockout;
use crate::barrier::Barrier;
use crate::barrier::view::View;
use crate::core::MountEntry;
use crate::core::mounts::Table;

/// Server-wide settings engines read (from the config file).
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// KV v2 secret rotation scheduling (`[rotation]`).
    pub rotation: crate::engines::RotationSettings,
    /// Transit stream limits (`[transit]`), shared by every transit mount.
    pub streams: crate::engines::transit::StreamSettings,
    /// Where engines report what happens outside a request (scheduled
    /// rotations); the core's registry (a default one counts for nobody).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The time engines see. Production reads the system clock; tests move it
/// forward to exercise expiry and scheduled rotation without sleeping.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    skew: Arc<AtomicI64>,
}

impl Clock {
    /// Unix seconds now.
    pub fn now_unix(&self) -> i64 {
        crate::barrier::now_unix().saturating_add(self.skew.load(Ordering::Relaxed))
    }

    /// Move this clock (and every clone of it) forward by `secs` (tests).
    pub fn advance(&self, secs: i64) {
        self.skew.fetch_add(secs, Ordering::Relaxed);
    }
}

/// What a backend is built from.
#[derive(Debug, Clone)]
pub struct EngineContext {
    /// The barrier, limited to the mount's own data prefix.
    pub view: View,
    /// The mount-table row: path, type, accessor, uuid, options, lease config.
    pub mount: MountEntry,
    /// Server-wide engine settings.
    pub settings: EngineSettings,
    /// The time source.
    pub clock: Clock,
    /// The whole barrier (auth methods keep lockout records under `sys/lockout/`).
    pub barrier: Arc<Barrier>,
    /// Shared login failure counters (auth methods).
    pub lockout: Arc<Lockout>,
}

impl EngineContext {
    /// An option of the mount (`options.<name>` as text).
    pub fn option(&self, name: &str) -> Option<&str> {
        self.mount.options.as_ref().and_then(|o| o.get(name)).and_then(|v| v.as_str())
    }

    /// Refuse a `version` option: only versioned engines (KV) take one.
    pub fn refuse_version(&self) -> Result<(), LogicalError> {
        if self.mount.options.as_ref().is_some_and(|o| o.contains_key("version")) {
            return Err(LogicalError::InvalidRequest(format!(
                "secrets engine \"{}\" does not allow setting a version",
                self.mount.kind
            )));
        }
        Ok(())
    }
}

/// Builds a backend for a mount.
pub type Factory = fn(EngineContext) -> Result<Arc<dyn Backend>, LogicalError>;

/// Mount types and their factories, per table (Vault's plugin catalog).
#[derive(Clone, Default)]
pub struct Catalog {
    secrets: BTreeMap<&'static str, Factory>,
    auth: BTreeMap<&'static str, Factory>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("auth", &self.auth.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Catalog {
    /// Register a secrets engine type (replacing any of that name).
    #[must_use]
    pub fn with_secrets(mut self, kind: &'static str, factory: Factory) -> Self {
        self.secrets.insert(kind, factory);
        self
    }

    /// Register an auth method type.
    #[must_use]
    pub fn with_auth(mut self, kind: &'static str, factory: Factory) -> Self {
        self.auth.insert(kind, factory);
        self
    }

    /// The registered types of `table`.
    pub fn kinds(&self, table: Table) -> Vec<&'static str> {
        self.table(table).keys().copied().collect()
    }

    fn table(&self, table: Table) -> &BTreeMap<&'static str, Factory> {
        match table {
            Table::Secrets => &self.secrets,
            Table::Auth => &self.auth,
        }
    }

    /// Build the backend of a mount of `table`.
    pub fn build(&self, table: Table, ctx: EngineContext) -> Result<Arc<dyn Backend>, LogicalError> {
        match self.table(table).get(ctx.mount.kind.as_str()) {
            Some(factory) => factory(ctx),
            None => Err(LogicalError::InvalidRequest(match table {
                Table::Secrets => format!("plugin not found in the catalog: {}", ctx.mount.kind),
                Table::Auth => format!("auth method not found in the catalog: {}", ctx.mount.kind),
            })),
        }
    }
}
