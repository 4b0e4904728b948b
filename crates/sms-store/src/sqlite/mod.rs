//! The embedded SQLite store: the default for a single gateway instance, with no
//! server to run.
//!
//! One connection in WAL mode behind a mutex; every call runs on tokio's blocking pool,
//! never on the async workers. Arguments and recipients are stored as JSON arrays, so
//! any text survives; times as integer microseconds since the epoch, the precision the
//! Postgres store keeps too.
//!
//! The store is split by concept: opening the file here and its settings in `config`,
//! the SQL in `statements`, the row codec in `row`, the driver's errors in `error`, the
//! migrations in `migrate`, and the traits in `queue`, `ledger`, `delivery` and
//! `callback`, and in `blocklist` and `spend`, which keep their few statements beside
//! their code.

mod blocklist;
mod callback;
mod config;
mod delivery;
mod error;
mod ledger;
mod migrate;
mod queue;
mod row;
mod spend;
mod statements;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};
use sms_core::sync::lock;
use sms_core::{Priority, StoreError};

use self::error::sqlite_error;
use self::statements::CLAIM_PICK;
use crate::Error;

pub use config::SqliteConfig;

/// The deferred queue, usage and spend ledgers, delivery log, callback outbox and
/// blocklist in one SQLite file. Share it behind an `Arc`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default settings and
    /// applies pending migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(SqliteConfig::with_path(path.as_ref())).await
    }

    /// An empty store in memory, gone when dropped.
    pub async fn in_memory() -> Result<Self, Error> {
        Self::open_with(SqliteConfig::with_path(":memory:")).await
    }

    /// Opens the store `config` describes and applies pending migrations.
    pub async fn open_with(config: SqliteConfig) -> Result<Self, Error> {
        tokio::task::spawn_blocking(move || open_blocking(&config))
            .await
            .map_err(|e| Error::Store(StoreError::backend(e)))?
    }

    /// SQLite's plan for the claim's pick of one lane (`EXPLAIN QUERY PLAN` details),
    /// for operators and tests. A healthy plan searches the lane's range of
    /// `messages_claim_by_lane` and builds no temporary B-tree for the order.
    pub async fn explain_claim(&self, lane: Priority) -> Result<Vec<String>, StoreError> {
        self.call(move |conn| {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {CLAIM_PICK}"))
                .and_then(|mut s| {
                    s.query_map(params![lane.as_str(), 0_i64, 1_i64], |r| {
                        r.get::<_, String>("detail")
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)
        })
        .await
    }

    /// Runs `work` on the blocking pool with the connection.
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves no half-done work behind (an open
            // transaction is rolled back when its guard unwinds), so a poisoned lock
            // is taken as it is.
            work(&mut lock(&conn))
        })
        .await
        .map_err(StoreError::backend)?
    }
}

fn open_blocking(config: &SqliteConfig) -> Result<SqliteStore, Error> {
    let conn = if config.is_in_memory() {
        Connection::open_in_memory().map_err(sqlite_error)?
    } else {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable(format!(
                    "cannot create the directory {} for the database: {e}",
                    dir.display()
                ))
            })?;
        }
        Connection::open(&config.path).map_err(sqlite_error)?
    };
    conn.busy_timeout(Duration::from_millis(config.busy_timeout_ms))
        .map_err(sqlite_error)?;
    // WAL lets readers run while a write is in progress; an in-memory database keeps
    // its own journal mode and ignores this.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sqlite_error)?;
    let synchronous = if config.sync_every_commit {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(sqlite_error)?;
    let mut conn = conn;
    migrate::apply(&mut conn)?;
    Ok(SqliteStore {
        conn: Arc::new(Mutex::new(conn)),
    })
}
