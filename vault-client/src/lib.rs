//! Async client for the vault server's HTTP API (HashiCorp Vault's shapes),
//! and the library behind the `vaultctl` CLI.
//!
//! # Layout
//!
//! * [`Client`] / [`ClientBuilder`]: address, token, TLS, request plumbing.
//! * [`sys`]: the system backend (init, seal/unseal, health, rotate,
//!   rekey, generate-root, mounts), via [`Client::sys`].
//! * [`logical`]: generic read/write/delete/list of any path, via
//!   [`Client::logical`].
//! * [`kv2`]: KV v2 secrets (read, write, and following new versions with
//!   blocking reads), via [`Client::kv2`].
//! * [`Error`]: the one error type.
//!
//! Each API area is one module exposing a small borrowed handle
//! (`client.sys()`, `client.logical()`, `client.kv2(mount)`); later areas
//! (transit, auth methods) follow the same pattern. Wire types come from
//! [`vault_api`], shared with the server, and are re-exported as [`api`].
//!
//! # Secrets
//!
//! The token lives in a [`zeroize::Zeroizing`] string, is sent in a header
//! marked sensitive, and never appears in `Debug` output or error messages.
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
pub mod sys;
mod tls;
pub mod transit;
pub mod watch;

pub use auth::{Auth, AuthInfo, KeepAlive, KeepAliveStatus, Login, TokenInfo};
pub use client::{Client, ClientBuilder, DEFAULT_ADDRESS, DEFAULT_TIMEOUT};
pub use config::{ConfigError, Reference};
pub use error::{Error, Result};
pub use kv2::{Follow, Kv2, Secret};
pub use logical::Logical;
pub use retry::{DEFAULT_MAX_RETRIES, DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN};
pub use sys::{HealthResponse, RekeyUpdate, Sys};
pub use transit::{Encrypted, Plaintext, Transit};
/// The shared wire types.
pub use vault_api as api;
