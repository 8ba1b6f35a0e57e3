//! Example 1: an HTTP service (axum) that takes its database credentials from
//! the vault at boot and follows their rotation, with no secret in its image,
//! repository or environment.
//!
//! At boot it logs in (AppRole from `VAULT_ROLE_ID_FILE` /
//! `VAULT_SECRET_ID_FILE`, else `VAULT_TOKEN`), loads its typed configuration
//! from `secret/myapp/config` and `secret/shared` (the first wins; any field
//! may also come from the environment or a `*_FILE`), then watches
//! `secret/myapp/db`: when the vault rotates that password, the new one is in
//! use for the next request, with no restart and no polling.
//!
//! `GET /status` says which credentials are in use without showing them: the
//! user name and the first 8 hex digits of the password's SHA-256 (what a
//! health page may show). A real service would open its database pool with
//! them instead.
//!
//! Prints `listening on ADDR` once it serves (`LISTEN`, default
//! 127.0.0.1:8080; port 0 picks a free one).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use vault_client::KeepAlive;

/// Settings that do not rotate.
#[derive(Deserialize)]
struct AppConfig {
    db_host: String,
    #[serde(default = "default_pool_size")]
    pool_size: u32,
}

fn default_pool_size() -> u32 {
    10
}

/// The rotating database login (a KV v2 rotation policy rewrites `password`).
#[derive(Deserialize)]
struct DbLogin {
    username: String,
    password: String,
}

struct App {
    config: AppConfig,
    db: watch::Receiver<DbLogin>,
    /// Keeps the token renewed while the service runs.
    _renewal: Option<KeepAlive>,
}

async fn status(State(app): State<Arc<App>>) -> Json<Value> {
    let db = app.db.borrow();
    let fingerprint = hex::encode(&Sha256::digest(db.password.as_bytes())[..4]);
    Json(json!({
        "db_host": app.config.db_host,
        "pool_size": app.config.pool_size,
        "db_user": db.username,
        "db_password_sha256_prefix": fingerprint,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (client, renewal) = vault_examples::connect().await?;
    let config: AppConfig = client.load(&["secret/myapp/config", "secret/shared"]).await?;
    let db = client.watch::<DbLogin>("secret/myapp/db").await?;
    let app = Arc::new(App { config, db, _renewal: renewal });

    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    #[allow(clippy::print_stdout)] // the line a supervisor (or the test) waits for
    {
        println!("listening on {}", listener.local_addr()?);
    }
    let router = Router::new().route("/status", get(status)).with_state(app);
    axum::serve(listener, router).await?;
    Ok(())
}
