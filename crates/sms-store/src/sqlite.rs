//! The embedded SQLite store: the default for a single gateway instance, with no
//! server to run.
//!
//! One connection in WAL mode behind a mutex; every call runs on tokio's blocking pool,
//! never on the async workers. Claims, inserts and batches run in `BEGIN IMMEDIATE`
//! transactions, which take the write lock up front, so another process sharing the
//! file waits (up to the busy timeout) instead of failing half-way. A batch
//! (`enqueue_many`, `complete_many`) is one blocking call and one transaction: one
//! commit, one sync of the log.
//!
//! Arguments and recipients are stored as JSON arrays, so any text survives; times as
//! integer microseconds since the epoch, the precision the Postgres store keeps too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use serde::Deserialize;
use sms_core::{
    AttemptFailure, BillingPeriod, Completion, DeferredQueue, Enqueued, IdempotencyKey, Lease,
    LeaseToken, MessageId, MessageStatus, NewMessage, QueueStats, StoreError, StoredMessage,
    UsageLedger, VendorId,
};

use crate::Error;
use crate::codec;

/// Largest batch `purge_sent` deletes in one transaction, so a big purge does not hold
/// the write lock (and stall claims and inserts) for long.
const PURGE_BATCH: u32 = 500;

/// Embedded migrations, oldest first; each is applied once and recorded in
/// `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "lighter_inserts",
        include_str!("../migrations/sqlite/0002_lighter_inserts.sql"),
    ),
    (
        3,
        "checks_without_lists",
        include_str!("../migrations/sqlite/0003_checks_without_lists.sql"),
    ),
];

/// Where the database file lives and how long to wait for another process' lock.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; its directory is created if missing. `:memory:` keeps
    /// everything in memory (tests). Default `./data/sms-gateway.db`.
    pub path: PathBuf,
    /// How long a write waits for a lock held by another connection, in milliseconds.
    /// Default 5000.
    pub busy_timeout_ms: u64,
    /// Sync the log to disk at every commit (`synchronous = FULL`), so a message
    /// reported stored survives a power cut. Off (`NORMAL`), a process crash still
    /// loses nothing but a power cut may lose the last commits. Default `true`.
    pub sync_every_commit: bool,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data/sms-gateway.db"),
            busy_timeout_ms: 5_000,
            sync_every_commit: true,
        }
    }
}

impl SqliteConfig {
    /// The defaults with `path`.
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    fn is_in_memory(&self) -> bool {
        self.path.as_os_str() == ":memory:"
    }
}

/// The deferred queue and usage ledger in one SQLite file. Share it behind an `Arc`.
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

    /// SQLite's plan for the claim's pick (`EXPLAIN QUERY PLAN` details), for operators
    /// and tests. A healthy plan searches `messages_claim` and builds no temporary
    /// B-tree for the order.
    pub async fn explain_claim(&self) -> Result<Vec<String>, StoreError> {
        self.call(|conn| {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {CLAIM_PICK}"))
                .and_then(|mut s| {
                    s.query_map(params![0_i64, 1_i64], |r| r.get::<_, String>("detail"))?
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
            // A panic while holding the lock leaves no half-done work behind: an open
            // transaction is rolled back when its guard unwinds.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut conn)
        })
        .await
        .map_err(StoreError::backend)?
    }

    /// Applies a guarded change of a leased message; no row changed means the message
    /// is gone or held under another token.
    async fn update_leased(
        &self,
        id: MessageId,
        token: LeaseToken,
        work: impl FnOnce(&Connection, &str, &str) -> rusqlite::Result<usize> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.call(move |conn| {
            let id_text = id.to_string();
            let changed = work(conn, &id_text, &token.0.to_string()).map_err(sqlite_error)?;
            if changed == 1 {
                return Ok(());
            }
            match current_status(conn, &id_text)? {
                None => Err(StoreError::NotFound(id)),
                Some(_) => Err(StoreError::LeaseLost(id)),
            }
        })
        .await
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
    migrate(&mut conn)?;
    Ok(SqliteStore {
        conn: Arc::new(Mutex::new(conn)),
    })
}

fn migrate(conn: &mut Connection) -> Result<Vec<i64>, Error> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             applied_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .map_err(sqlite_error)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    let supported = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > supported {
        return Err(Error::SchemaTooNew {
            found: current,
            supported,
        });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql).map_err(sqlite_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            params![version, name],
        )
        .map_err(sqlite_error)?;
        applied.push(*version);
    }
    tx.commit().map_err(sqlite_error)?;
    Ok(applied)
}

/// Lock contention and I/O trouble may pass; anything else is a bug or bad data.
fn sqlite_error(e: rusqlite::Error) -> StoreError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
        )
    );
    if transient {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

/// The due messages a claim takes, oldest due first: the filter and order of the
/// partial index `messages_claim`, so SQLite reads the index from its start and stops
/// after `limit` entries. The index is named because without table statistics SQLite
/// prefers `messages_status_created` for the `status IN (…)` term and then sorts every
/// due row; the claim must not depend on whether `ANALYZE` ever ran.
const CLAIM_PICK: &str = "SELECT id FROM messages INDEXED BY messages_claim \
     WHERE status IN ('queued', 'leased') AND due_at <= ?1 \
     ORDER BY due_at, id LIMIT ?2";

const MESSAGE_COLUMNS: &str = "id, idempotency_key, template, args, recipients, expires_at, \
     status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token, \
     lease_expires_at, last_vendor, last_error, may_duplicate, created_at, updated_at";

/// Marks a leased message sent, guarded by its lease token.
const COMPLETE: &str = "UPDATE messages SET status = 'sent', last_vendor = ?3, updated_at = ?4, \
     lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'leased' AND lease_token = ?2";

/// The insert of a message; a conflicting idempotency key inserts nothing. Nothing is
/// returned: the answer is built from the message itself ([`stored`]).
const INSERT: &str = "INSERT INTO messages (id, idempotency_key, template, args, recipients, \
     expires_at, status, reason, attempts, max_attempts, next_attempt_at, \
     lease_owner, lease_token, lease_expires_at, last_vendor, last_error, \
     may_duplicate, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?18) \
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING";

/// Inserts `message` (built by [`stored`]) inside the caller's transaction and answers
/// it, or finds the message holding its idempotency key.
fn insert_or_find(conn: &Connection, message: StoredMessage) -> Result<Enqueued, StoreError> {
    let changed = {
        let row = InsertRow::new(&message)?;
        conn.prepare_cached(INSERT)
            .and_then(|mut s| row.execute(&mut s))
            .map_err(sqlite_error)?
    };
    if changed == 1 {
        return Ok(Enqueued::Created(message));
    }
    // Nothing inserted: only the idempotency key can have conflicted (an id conflict is
    // an error); inside the caller's transaction the existing row cannot vanish.
    let key = codec::key_column(&message.request).unwrap_or_default();
    let existing = select_one(conn, "idempotency_key", key)?.ok_or_else(|| {
        StoreError::backend(format!(
            "message {} was neither inserted nor found by its idempotency key",
            message.id
        ))
    })?;
    Ok(Enqueued::Existing(existing))
}

/// The message `new` stores, exactly as [`select_one`] reads it back.
fn stored(new: NewMessage) -> StoredMessage {
    codec::stored_from_new(new)
}

/// A message row as SQLite hands it over, before domain validation (which needs
/// [`StoreError`], not the driver's error type the row callback must return).
struct MessageRow {
    id: String,
    idempotency_key: Option<String>,
    template: String,
    args: String,
    recipients: String,
    expires_at: Option<i64>,
    status: String,
    reason: String,
    attempts: i64,
    max_attempts: i64,
    next_attempt_at: i64,
    lease_owner: Option<String>,
    lease_token: Option<String>,
    lease_expires_at: Option<i64>,
    last_vendor: Option<String>,
    last_error: Option<String>,
    may_duplicate: bool,
    created_at: i64,
    updated_at: i64,
}

impl MessageRow {
    /// Reads a row selected as [`MESSAGE_COLUMNS`], by position (a look-up by name
    /// compares column names for every value).
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            idempotency_key: row.get(1)?,
            template: row.get(2)?,
            args: row.get(3)?,
            recipients: row.get(4)?,
            expires_at: row.get(5)?,
            status: row.get(6)?,
            reason: row.get(7)?,
            attempts: row.get(8)?,
            max_attempts: row.get(9)?,
            next_attempt_at: row.get(10)?,
            lease_owner: row.get(11)?,
            lease_token: row.get(12)?,
            lease_expires_at: row.get(13)?,
            last_vendor: row.get(14)?,
            last_error: row.get(15)?,
            may_duplicate: row.get(16)?,
            created_at: row.get(17)?,
            updated_at: row.get(18)?,
        })
    }

    fn into_message(self) -> Result<StoredMessage, StoreError> {
        let request = codec::request_from_columns(
            self.template,
            json_list("args", &self.args)?,
            json_list("recipients", &self.recipients)?,
            self.idempotency_key,
            self.expires_at.map(|t| time("expires_at", t)).transpose()?,
        )?;
        let lease = match (self.lease_owner, self.lease_token, self.lease_expires_at) {
            (Some(owner), Some(token), Some(expires_at)) => Some(Lease {
                owner,
                token: LeaseToken(uuid("lease_token", &token)?),
                expires_at: time("lease_expires_at", expires_at)?,
            }),
            _ => None,
        };
        Ok(StoredMessage {
            id: MessageId::from_uuid(uuid("id", &self.id)?),
            request,
            status: codec::status(&self.status)?,
            reason: codec::reason(&self.reason)?,
            attempts: codec::count("attempts", self.attempts)?,
            max_attempts: codec::count("max_attempts", self.max_attempts)?,
            next_attempt_at: time("next_attempt_at", self.next_attempt_at)?,
            lease,
            last_vendor: codec::vendor(self.last_vendor)?,
            last_error: self.last_error,
            may_duplicate: self.may_duplicate,
            created_at: time("created_at", self.created_at)?,
            updated_at: time("updated_at", self.updated_at)?,
        })
    }
}

fn json_list(column: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::backend(format!(
            "stored {column} is invalid: expected a JSON array of strings: {e}"
        ))
    })
}

fn to_json(list: &[impl serde::Serialize]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(StoreError::backend)
}

fn uuid(column: &str, text: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(text).map_err(|e| {
        StoreError::backend(format!(
            "stored {column} is invalid: expected a UUID, found {text:?}: {e}"
        ))
    })
}

/// Times are stored as microseconds, Postgres' precision, so both backends agree.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(column: &str, micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        StoreError::backend(format!(
            "stored {column} is invalid: {micros} µs is out of range"
        ))
    })
}

fn current_status(conn: &Connection, id: &str) -> Result<Option<MessageStatus>, StoreError> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM messages WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(sqlite_error)?;
    status.as_deref().map(codec::status).transpose()
}

fn select_one(
    conn: &Connection,
    filter: &str,
    value: &str,
) -> Result<Option<StoredMessage>, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE {filter} = ?1");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_row([value], MessageRow::read).optional())
        .map_err(sqlite_error)?;
    row.map(MessageRow::into_message).transpose()
}

/// The columns of a message to insert: the converted ones, and the rest borrowed.
struct InsertRow<'a> {
    id: String,
    key: Option<&'a str>,
    template: &'a str,
    args: String,
    recipients: String,
    expires_at: Option<i64>,
    status: &'static str,
    reason: &'static str,
    attempts: i64,
    max_attempts: i64,
    next_attempt_at: i64,
    lease_owner: Option<&'a str>,
    lease_token: Option<String>,
    lease_expires_at: Option<i64>,
    last_vendor: Option<&'a str>,
    last_error: Option<&'a str>,
    may_duplicate: bool,
    created_at: i64,
}

impl<'a> InsertRow<'a> {
    /// Runs `statement` (an insert with the parameters of [`INSERT`]) for this row.
    fn execute(&self, statement: &mut rusqlite::Statement<'_>) -> rusqlite::Result<usize> {
        statement.execute(params![
            self.id,
            self.key,
            self.template,
            self.args,
            self.recipients,
            self.expires_at,
            self.status,
            self.reason,
            self.attempts,
            self.max_attempts,
            self.next_attempt_at,
            self.lease_owner,
            self.lease_token,
            self.lease_expires_at,
            self.last_vendor,
            self.last_error,
            self.may_duplicate,
            self.created_at,
        ])
    }

    /// The row of a message built by [`stored`] (status, lease and vendor already
    /// resolved from its initial state).
    fn new(m: &'a StoredMessage) -> Result<Self, StoreError> {
        let request = &m.request;
        let lease = m.lease.as_ref();
        Ok(Self {
            id: m.id.to_string(),
            key: codec::key_column(request),
            template: request.template().as_str(),
            args: to_json(request.args())?,
            recipients: to_json(request.recipients())?,
            expires_at: request.expires_at().map(micros),
            status: m.status.as_str(),
            reason: m.reason.as_str(),
            attempts: i64::from(m.attempts),
            max_attempts: i64::from(m.max_attempts),
            next_attempt_at: micros(m.next_attempt_at),
            lease_owner: lease.map(|l| l.owner.as_str()),
            lease_token: lease.map(|l| l.token.0.to_string()),
            lease_expires_at: lease.map(|l| micros(l.expires_at)),
            last_vendor: m.last_vendor.as_ref().map(VendorId::as_str),
            last_error: m.last_error.as_deref(),
            may_duplicate: m.may_duplicate,
            created_at: micros(m.created_at),
        })
    }
}

#[async_trait]
impl DeferredQueue for SqliteStore {
    async fn enqueue(&self, new: NewMessage) -> Result<Enqueued, StoreError> {
        let message = stored(new);
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let outcome = insert_or_find(&tx, message)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(outcome)
        })
        .await
    }

    /// One blocking call and one `BEGIN IMMEDIATE` transaction: each message is inserted
    /// (or found by its key) in order, so a repeated key finds the row its first
    /// message inserted; any error rolls the whole batch back.
    async fn enqueue_many(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let messages: Vec<StoredMessage> = messages.into_iter().map(stored).collect();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let outcomes = messages
                .into_iter()
                .map(|message| insert_or_find(&tx, message))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().map_err(sqlite_error)?;
            Ok(outcomes)
        })
        .await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease_for = chrono::Duration::from_std(lease_for).map_err(|_| {
            StoreError::backend(format!("lease duration {lease_for:?} is out of range"))
        })?;
        let expires_at = micros(now + lease_for);
        let now = micros(now);
        let owner = owner.to_owned();
        let token = LeaseToken::new().0.to_string();
        self.call(move |conn| {
            // The pick and the leasing happen under one write lock, so no other
            // connection can claim the same rows in between.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let mut claimed = Vec::new();
            {
                let mut pick = tx.prepare_cached(CLAIM_PICK).map_err(sqlite_error)?;
                let ids = pick
                    .query_map(params![now, i64::from(limit)], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(sqlite_error)?;
                let mut lease = tx
                    .prepare_cached(&format!(
                        "UPDATE messages SET status = 'leased', attempts = attempts + 1, \
                         lease_owner = ?2, lease_token = ?3, lease_expires_at = ?4, updated_at = ?5 \
                         WHERE id = ?1 RETURNING {MESSAGE_COLUMNS}"
                    ))
                    .map_err(sqlite_error)?;
                for id in ids {
                    let row = lease
                        .query_row(params![id, owner, token, expires_at, now], MessageRow::read)
                        .map_err(sqlite_error)?;
                    claimed.push(row.into_message()?);
                }
            }
            tx.commit().map_err(sqlite_error)?;
            Ok(claimed)
        })
        .await
    }

    async fn complete(
        &self,
        id: MessageId,
        token: LeaseToken,
        vendor: &VendorId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let vendor = vendor.as_str().to_owned();
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(COMPLETE)?
                .execute(params![id, token, vendor, micros(now)])
        })
        .await
    }

    /// One blocking call and one `BEGIN IMMEDIATE` transaction: each guarded update runs
    /// in order, a refused one is told `NotFound` or `LeaseLost` as `complete` tells it,
    /// and a database error rolls the whole batch back.
    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<(MessageId, String, String, String, i64)> = completions
            .iter()
            .map(|c| {
                (
                    c.id,
                    c.id.to_string(),
                    c.token.0.to_string(),
                    c.vendor.as_str().to_owned(),
                    micros(c.at),
                )
            })
            .collect();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let mut results = Vec::with_capacity(items.len());
            {
                let mut complete = tx.prepare_cached(COMPLETE).map_err(sqlite_error)?;
                for (id, id_text, token, vendor, at) in &items {
                    let changed = complete
                        .execute(params![id_text, token, vendor, at])
                        .map_err(sqlite_error)?;
                    results.push(if changed == 1 {
                        Ok(())
                    } else if current_status(&tx, id_text)?.is_none() {
                        Err(StoreError::NotFound(*id))
                    } else {
                        Err(StoreError::LeaseLost(*id))
                    });
                }
            }
            tx.commit().map_err(sqlite_error)?;
            Ok(results)
        })
        .await
    }

    async fn fail(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(
                "UPDATE messages SET status = 'queued', last_vendor = COALESCE(?3, last_vendor), \
                 last_error = ?4, may_duplicate = (may_duplicate OR ?5), next_attempt_at = ?6, \
                 updated_at = ?7, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
                 WHERE id = ?1 AND status = 'leased' AND lease_token = ?2",
            )?
            .execute(params![
                id,
                token,
                failure.vendor.as_ref().map(VendorId::as_str),
                failure.error,
                failure.may_duplicate,
                micros(next_attempt_at),
                micros(now)
            ])
        })
        .await
    }

    async fn dead(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(
                "UPDATE messages SET status = 'dead', last_vendor = COALESCE(?3, last_vendor), \
                 last_error = ?4, may_duplicate = (may_duplicate OR ?5), updated_at = ?6, \
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
                 WHERE id = ?1 AND status = 'leased' AND lease_token = ?2",
            )?
            .execute(params![
                id,
                token,
                failure.vendor.as_ref().map(VendorId::as_str),
                failure.error,
                failure.may_duplicate,
                micros(now)
            ])
        })
        .await
    }

    async fn expire(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(
                "UPDATE messages SET status = 'expired', updated_at = ?3, \
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
                 WHERE id = ?1 AND status = 'leased' AND lease_token = ?2",
            )?
            .execute(params![id, token, micros(now)])
        })
        .await
    }

    async fn release(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, token, move |conn, id, token| {
            // The claim's attempt is given back: the message was never tried.
            conn.prepare_cached(
                "UPDATE messages SET status = 'queued', attempts = max(attempts - 1, 0), \
                 next_attempt_at = ?3, updated_at = ?3, \
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
                 WHERE id = ?1 AND status = 'leased' AND lease_token = ?2",
            )?
            .execute(params![id, token, micros(now)])
        })
        .await
    }

    async fn retry(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        self.call(move |conn| {
            let id_text = id.to_string();
            let row = conn
                .prepare_cached(&format!(
                    "UPDATE messages SET status = 'queued', attempts = 0, reason = 'manual_retry', \
                     next_attempt_at = ?2, updated_at = ?2 \
                     WHERE id = ?1 AND status IN ('dead', 'expired') RETURNING {MESSAGE_COLUMNS}"
                ))
                .and_then(|mut s| {
                    s.query_row(params![id_text, micros(now)], MessageRow::read)
                        .optional()
                })
                .map_err(sqlite_error)?;
            if let Some(row) = row {
                return row.into_message();
            }
            match current_status(conn, &id_text)? {
                None => Err(StoreError::NotFound(id)),
                Some(status) => Err(StoreError::WrongStatus {
                    id,
                    status,
                    expected: "dead or expired",
                }),
            }
        })
        .await
    }

    async fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.call(move |conn| select_one(conn, "id", &id.to_string()))
            .await
    }

    async fn find_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let key = key.as_str().to_owned();
        self.call(move |conn| select_one(conn, "idempotency_key", &key))
            .await
    }

    async fn list(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.call(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = ?1 \
                     ORDER BY created_at, id LIMIT ?2"
                ))
                .and_then(|mut s| {
                    s.query_map(params![status.as_str(), i64::from(limit)], MessageRow::read)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            rows.into_iter().map(MessageRow::into_message).collect()
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.call(|conn| {
            let counts = conn
                .prepare_cached("SELECT status, count(*) FROM messages GROUP BY status")
                .and_then(|mut s| {
                    s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            let mut stats = QueueStats::default();
            for (status, count) in counts {
                let count = u64::try_from(count).unwrap_or_default();
                match codec::status(&status)? {
                    MessageStatus::Queued => stats.queued = count,
                    MessageStatus::Leased => stats.leased = count,
                    MessageStatus::Sent => stats.sent = count,
                    MessageStatus::Dead => stats.dead = count,
                    MessageStatus::Expired => stats.expired = count,
                }
            }
            Ok(stats)
        })
        .await
    }

    async fn purge_sent(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let before = micros(before);
        let mut purged = 0_u64;
        let mut left = limit;
        // One batch per call to the blocking pool, so claims and inserts get the
        // connection between batches.
        while left > 0 {
            let batch = left.min(PURGE_BATCH);
            let deleted = self
                .call(move |conn| {
                    conn.prepare_cached(
                        "DELETE FROM messages WHERE id IN ( \
                         SELECT id FROM messages WHERE status = 'sent' AND updated_at < ?1 \
                         ORDER BY updated_at, id LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![before, i64::from(batch)]))
                    .map_err(sqlite_error)
                })
                .await?;
            purged += deleted as u64;
            left -= batch;
            if (deleted as u64) < u64::from(batch) {
                break;
            }
        }
        Ok(purged)
    }
}

#[async_trait]
impl UsageLedger for SqliteStore {
    async fn add(
        &self,
        vendor: &VendorId,
        period: &BillingPeriod,
        messages: u64,
    ) -> Result<u64, StoreError> {
        let increment = codec::billed_increment(messages)?;
        let vendor = vendor.as_str().to_owned();
        let period = period.as_str().to_owned();
        self.call(move |conn| {
            let total: i64 = conn
                .prepare_cached(
                    "INSERT INTO usage (vendor, period, billed) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (vendor, period) DO UPDATE SET billed = billed + excluded.billed \
                     RETURNING billed",
                )
                .and_then(|mut s| s.query_row(params![vendor, period, increment], |r| r.get(0)))
                .map_err(sqlite_error)?;
            codec::billed_total(total)
        })
        .await
    }

    async fn totals(&self, period: &BillingPeriod) -> Result<BTreeMap<VendorId, u64>, StoreError> {
        let period = period.as_str().to_owned();
        self.call(move |conn| {
            let rows = conn
                .prepare_cached("SELECT vendor, billed FROM usage WHERE period = ?1")
                .and_then(|mut s| {
                    s.query_map([period], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            let mut totals = BTreeMap::new();
            for (vendor, billed) in rows {
                let vendor = codec::vendor(Some(vendor))?
                    .ok_or_else(|| StoreError::backend("stored vendor is missing"))?;
                totals.insert(vendor, codec::billed_total(billed)?);
            }
            Ok(totals)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sms_core::{QueueReason, SmsRequest};

    #[tokio::test]
    async fn opening_creates_the_directory_and_reopening_migrates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("gateway.db");
        let store = SqliteStore::open(&path).await.unwrap();
        assert!(path.exists());
        let mode: String = store
            .call(|c| {
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                    .map_err(sqlite_error)
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        let mut conn = Connection::open(&path).unwrap();
        assert!(migrate(&mut conn).unwrap().is_empty());
    }

    /// A database written by the first schema: its rows survive the rebuild of
    /// migration 2, keys stay unique, and keyless rows no longer enter the key index.
    #[tokio::test]
    async fn a_version_1_database_is_rebuilt_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, \
                 name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP); \
                 INSERT INTO schema_migrations (version, name) VALUES (1, 'init');",
            )
            .unwrap();
            tx.execute_batch(MIGRATIONS[0].2).unwrap();
            tx.commit().unwrap();
        }
        let keyed = NewMessage::queued(
            MessageId::new(),
            SmsRequest::new("login", ["1"], ["+8613800138000"])
                .unwrap()
                .with_idempotency_key(IdempotencyKey::new("order-7").unwrap()),
            QueueReason::VendorFailed,
            5,
            Utc::now(),
        );
        let keyless = NewMessage::queued(
            MessageId::new(),
            SmsRequest::new("login", ["2"], ["+8613800138001"]).unwrap(),
            QueueReason::RateLimited,
            5,
            Utc::now(),
        );
        {
            // Written through the version-1 statement, as the previous build did.
            let conn = Connection::open(&path).unwrap();
            let mut insert = conn
                .prepare(&INSERT.replace(" WHERE idempotency_key IS NOT NULL", ""))
                .unwrap();
            for message in [&keyed, &keyless] {
                let stored = stored(message.clone());
                InsertRow::new(&stored)
                    .unwrap()
                    .execute(&mut insert)
                    .unwrap();
            }
        }
        let store = SqliteStore::open(&path).await.unwrap();
        for message in [&keyed, &keyless] {
            let found = store.get(message.id).await.unwrap().unwrap();
            assert_eq!(found.request, message.request);
            assert_eq!(found.status, MessageStatus::Queued);
            assert_eq!(
                found.next_attempt_at,
                stored(message.clone()).next_attempt_at
            );
        }
        let key = keyed.request.idempotency_key().unwrap().clone();
        assert_eq!(
            store
                .find_by_idempotency_key(&key)
                .await
                .unwrap()
                .unwrap()
                .id,
            keyed.id
        );
        // The key is still unique: a second message with it finds the first.
        let again = NewMessage::queued(
            MessageId::new(),
            keyed.request.clone(),
            QueueReason::Accepted,
            5,
            Utc::now(),
        );
        assert!(matches!(
            store.enqueue(again).await.unwrap(),
            Enqueued::Existing(m) if m.id == keyed.id
        ));
        let (indexed, plan): (i64, String) = store
            .call(|c| {
                let indexed = c
                    .query_row(
                        "SELECT count(*) FROM messages INDEXED BY messages_idempotency_key \
                         WHERE idempotency_key IS NOT NULL",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(sqlite_error)?;
                let plan = c
                    .query_row(
                        "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE idempotency_key = 'x'",
                        [],
                        |r| r.get(3),
                    )
                    .map_err(sqlite_error)?;
                Ok((indexed, plan))
            })
            .await
            .unwrap();
        assert_eq!(indexed, 1);
        assert!(plan.contains("messages_idempotency_key"), "{plan}");
    }

    /// Statements that write a message: an `IN` list of more than two constants in a
    /// CHECK constraint made SQLite build a temporary B-tree at every execution.
    #[tokio::test]
    async fn writing_a_message_builds_no_temporary_b_tree() {
        let store = SqliteStore::in_memory().await.unwrap();
        let statements = [
            INSERT,
            COMPLETE,
            "UPDATE messages SET status = 'queued', reason = 'manual_retry', attempts = 0 \
             WHERE id = ?1",
        ];
        let temporary = store
            .call(move |c| {
                let mut found = Vec::new();
                for sql in statements {
                    // Built from the statement constants above only.
                    let mut explain = c
                        .prepare(&["EXPLAIN ", sql].concat())
                        .map_err(sqlite_error)?;
                    // Unbound parameters are NULL: the program is the same.
                    let mut rows = explain.raw_query();
                    while let Some(row) = rows.next().map_err(sqlite_error)? {
                        let opcode: String = row.get(1).map_err(sqlite_error)?;
                        if opcode == "OpenEphemeral" {
                            found.push(sql);
                        }
                    }
                }
                Ok(found)
            })
            .await
            .unwrap();
        assert!(temporary.is_empty(), "{temporary:#?}");
    }

    /// Migration 3 rewrote the CHECK constraints on `status` and `reason`: they still
    /// refuse what is not one of their values, and accept each that is.
    #[tokio::test]
    async fn status_and_reason_accept_their_values_only() {
        let store = SqliteStore::in_memory().await.unwrap();
        let message = stored(NewMessage::queued(
            MessageId::new(),
            SmsRequest::new("login", ["1"], ["+8613800138000"]).unwrap(),
            QueueReason::RateLimited,
            5,
            Utc::now(),
        ));
        let id = message.id.to_string();
        let refused = store
            .call(move |c| {
                insert_or_find(c, message)?;
                let set = |statement: &str, value: &str| c.execute(statement, params![id, value]);
                let (status_to, reason_to) = (
                    "UPDATE messages SET status = ?2 WHERE id = ?1",
                    "UPDATE messages SET reason = ?2 WHERE id = ?1",
                );
                // Every status the domain has ('leased' needs a lease, so it is left
                // out), then values it does not have.
                let statuses = MessageStatus::ALL
                    .into_iter()
                    .filter(|s| *s != MessageStatus::Leased)
                    .map(MessageStatus::as_str)
                    .chain(["Sent", "lost", ""]);
                let reasons = QueueReason::ALL
                    .into_iter()
                    .map(QueueReason::as_str)
                    .chain(["throttled"]);
                let mut refused = Vec::new();
                for status in statuses {
                    if set(status_to, status).is_err() {
                        refused.push(status);
                    }
                }
                for reason in reasons {
                    if set(reason_to, reason).is_err() {
                        refused.push(reason);
                    }
                }
                Ok(refused)
            })
            .await
            .unwrap();
        assert_eq!(refused, ["Sent", "lost", "", "throttled"]);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.db");
        drop(SqliteStore::open(&path).await.unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (99, 'future')",
            [],
        )
        .unwrap();
        drop(conn);
        let e = SqliteStore::open(&path).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::SchemaTooNew {
                    found: 99,
                    supported
                } if supported == MIGRATIONS.last().unwrap().0
            ),
            "{e}"
        );
    }

    #[test]
    fn busy_and_io_errors_are_unavailable_others_backend() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(matches!(sqlite_error(busy), StoreError::Unavailable(_)));
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(matches!(sqlite_error(constraint), StoreError::Backend(_)));
    }
}
