//! Async client for the vault server's HTTP API (HashiCorp Vault's shapes),
//! and the library behind the `vaultctl` CLI.
//!
//! # Layout
//!
//! * [`Client`] / [`ClientBuilder`]: address, token, TLS, timeouts and the
//!   request plumbing. Clones share one connection pool and one token, so a
//!   login or a renewal is seen by every clone. `client.rs`; retries with
//!   backoff and jitter in `retry.rs` (what is retried, and why); TLS
//!   settings and pinned self-signed certificates in `tls.rs`.
//! * [`auth`]: logging in (token, AppRole, Kubernetes, JWT, userpass + TOTP),
//!   a replayable [`Login`], and [`Client::keep_alive`] (renewal before
//!   expiry, login again when renewal is impossible).
//! * [`config`]: typed configuration at boot ([`Client::load`]: several KV
//!   paths merged, per-field fallbacks to `FIELD` / `FIELD_FILE` environment
//!   variables) and `vault:MOUNT/PATH#KEY` [`Reference`]s.
//! * [`watch`]: a `tokio::sync::watch::Receiver` of a secret's latest
//!   version, fed by the server's blocking reads ([`Client::watch`]).
//! * [`transit`]: encryption as a service: single and batch, document
//!   fields, blind indexes, subject keys (crypto-shredding), data keys, and
//!   [`Encrypted<T>`] for typed ciphertext in structs.
//! * [`stream`]: files and streams of any size in the `vault-stream`
//!   format, through the server or locally under a transit data key
//!   (`client.transit(mount).stream(key)`), with atomic output files.
//! * [`sys`]: the system backend (init, seal/unseal, health, rotate,
//!   rekey, generate-root, mounts), via [`Client::sys`].
//! * [`logical`]: generic read/write/delete/list of any path, via
//!   [`Client::logical`].
//! * [`kv2`]: KV v2 secrets (read, write, and following new versions with
//!   blocking reads), via [`Client::kv2`].
//! * [`Error`] (transport and API) and [`ConfigError`] (configuration
//!   loading: names fields and places, never values).
//!
//! Each API area is one module exposing a small borrowed handle
//! (`client.sys()`, `client.auth()`, `client.kv2(mount)`,
//! `client.transit(mount)`). Wire types come from [`vault_api`], shared with
//! the server, and are re-exported as [`api`]. The guide is docs/client.md.
//!
//! # Secrets
//!
//! The token lives in a [`zeroize::Zeroizing`] string, is sent in a header
//! marked sensitive (and never to another origin on a redirect), and never
//! appears in `Debug` output or error messages; so do login credentials,
//! plaintexts and data keys. Response bodies are wiped when dropped.
//! Responses that carry secrets (`InitResponse`, `RekeyComplete`, ...)
//! redact them in their `Debug` impls.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), vault_client::Error> {
//! use vault_client::Client;
//!
//! // VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT
//! let client = Client::from_env()?;
//! let status = client.sys().seal_status().await?;
//! if !status.sealed {
//!     client.logical().write("secret/app", &serde_json::json!({"password": "hunter2"})).await?;
//!     let secret = client.logical().read("secret/app").await?;
//!     assert!(secret.is_some());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! TLS uses rustls with the `ring` provider, installed as the process
//! default the first time a client is built (unless the application
//! installed a provider already).

#![forbid(unsafe_code)]

// One module per API area or concern. Each `pub use` block below belongs
// to the module named above it.
pub mod auth;
mod client;
pub mod config;
mod error;
pub mod kv2;
pub mod logical;
mod retry;
pub mod stream;
pub mod sys;
mod tls;
pub mod transit;
pub mod watch;

pub use auth::{Auth, AuthInfo, KeepAlive, KeepAliveStatus, Login, TokenInfo};
pub use client::{Client, ClientBuilder, DEFAULT_ADDRESS, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT};
pub use config::{ConfigError, Reference};
pub use error::{Error, Result};
pub use kv2::{Follow, Kv2, Secret};
pub use logical::Logical;
pub use retry::{DEFAULT_MAX_RETRIES, DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN};
pub use stream::{AtomicFile, StreamKey, StreamMode, StreamOptions, StreamStats};
pub use sys::{HealthResponse, RekeyUpdate, SnapshotFile, Sys};
pub use transit::{Encrypted, Plaintext, Transit};
/// The shared wire types.
pub use vault_api as api;

/// The guide (docs/client.md), included so that its examples are compiled
/// by `cargo test` and stay true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/client.md")]
pub struct ClientGuide;
