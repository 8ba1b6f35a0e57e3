//! SQLite backend: the embedded default. WAL journal with `synchronous=FULL`,
//! so a commit is on disk before it is acknowledged; one writer connection
//! (SQLite serialises writers anyway) and a small pool of readers, which WAL
//! lets run concurrently with the writer.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::Mutex;

use super::{Ciphertext, Entry, StorageError, WriteBatch, sql};

pub(super) struct Sqlite {
    readers: SqlitePool,
    writer: Mutex<SqliteConnection>,
    instance: String,
}

impl Sqlite {
    pub(super) async fn open(url: &str) -> Result<Self, StorageError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StorageError::InvalidUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = opts.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError::InvalidUrl(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut writer = SqliteConnection::connect_with(&opts).await?;
        sqlx::migrate!("../migrations/sqlite").run(&mut writer).await?;
        let readers = SqlitePoolOptions::new().max_connections(4).min_connections(1).connect_with(opts).await?;
        Ok(Self { readers, writer: Mutex::new(writer), instance: crate::crypto::random::uuid() })
    }

    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    pub(super) async fn get(&self, path: &str) -> Result<Option<Entry>, StorageError> {
        let row = sqlx::query(sql::GET).bind(path).fetch_optional(&self.readers).await?;
        Ok(row.map(|r| Entry { value: Ciphertext::from_storage(r.get(0)), rev: r.get(1) }))
    }

    pub(super) async fn scan(&self, from: &str, to: Option<&str>) -> Result<Vec<String>, StorageError> {
        let rows = match to {
            Some(to) => sqlx::query(sql::SCAN_RANGE).bind(from).bind(to),
            None => sqlx::query(sql::SCAN_ALL).bind(from),
        }
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn seal_config(&self) -> Result<Option<String>, StorageError> {
        let row = sqlx::query(sql::SEAL_CONFIG_GET).fetch_optional(&self.readers).await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(super) async fn commit_group(
        &self,
        batches: &[&WriteBatch],
    ) -> Result<Vec<Result<(), StorageError>>, StorageError> {
        let mut conn = self.writer.lock().await;
        // IMMEDIATE takes the write lock up front instead of upgrading later.
        // One process owns a SQLite file: nobody else to notify.
        let r = commit_group!(conn, |_p| "BEGIN IMMEDIATE".to_string(), batches, |_c, _p| Ok::<(), sqlx::Error>(()));
        if r.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        Ok(r?)
    }

    pub(super) async fn close(&self) {
        self.readers.close().await;
    }
}
