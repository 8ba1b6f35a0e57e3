//! PostgreSQL backend: production storage and the way to run several servers
//! (PostgreSQL's own replication provides HA; no consensus here). Commits are
//! durable under the server's `synchronous_commit` (on by default).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{Ciphertext, Entry, StorageError, WriteBatch, sql};

pub(super) struct Postgres {
    pool: PgPool,
}

impl Postgres {
    pub(super) async fn open(url: &str) -> Result<Self, StorageError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StorageError::InvalidUrl(e.to_string()))?
            .application_name("vault-server");
        let pool = PgPoolOptions::new()
            .max_connections(24)
            .min_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        // Several servers may start at once; sqlx's migrator takes an
        // advisory lock so only one applies each migration.
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    pub(super) async fn get(&self, path: &str) -> Result<Option<Entry>, StorageError> {
        let row = sqlx::query(sql::GET).bind(path).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| Entry { value: Ciphertext::from_storage(r.get(0)), rev: r.get(1) }))
    }

    pub(super) async fn scan(
        &self,
        from: &str,
        to: Option<&str>,
    ) -> Result<Vec<String>, StorageError> {
        let rows = match to {
            Some(to) => sqlx::query(sql::SCAN_RANGE).bind(from).bind(to),
            None => sqlx::query(sql::SCAN_ALL).bind(from),
        }
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn seal_config(&self) -> Result<Option<String>, StorageError> {
        let row = sqlx::query(sql::SEAL_CONFIG_GET).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(super) async fn commit_group(
        &self,
        batches: &[&WriteBatch],
    ) -> Result<Vec<Result<(), StorageError>>, StorageError> {
        let mut conn = self.pool.acquire().await?;
        let r = commit_group!(conn, "BEGIN", batches);
        if r.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        Ok(r?)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}
