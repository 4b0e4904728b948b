//! The Postgres store: the deferred queue and the usage ledger shared by every gateway
//! instance.
//!
//! Connections come from a deadpool pool whose connections all start with
//! `search_path` set to the configured schema, so the statements below name no schema
//! and tests can each work in a schema of their own. Statements are prepared once per
//! connection (`prepare_cached`).
//!
//! A claim never holds a transaction open while a message is sent: it is one statement
//! that moves due rows to `leased` with a lease expiry and a fresh token (the
//! `FOR UPDATE SKIP LOCKED` pattern of River, graphile-worker and pgmq). Claimers that
//! run at the same moment skip each other's rows instead of waiting for them.
//!
//! A batch (`enqueue_many`, `complete_many`) is one transaction on one connection: one
//! set-based statement over arrays of the batch's values (`unnest`), a look-up of the
//! messages it did not write to answer for them, and one commit, so one flush of the
//! write-ahead log for the whole batch.

mod config;
mod migrate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use sms_core::{
    AttemptFailure, BillingPeriod, Completion, DeferredQueue, Enqueued, IdempotencyKey, Lease,
    LeaseToken, MessageId, MessageStatus, NewMessage, QueueStats, StoreError, StoredMessage,
    UsageLedger, VendorId,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::Error;
use crate::codec;

pub use config::PgConfig;

/// Largest batch `purge_sent` deletes in one statement: small enough that each delete
/// holds its row locks only briefly and does not bloat one transaction.
const PURGE_BATCH: u32 = 500;

/// The columns of a message row, in the order [`message_from_row`] reads them by name;
/// `$p` qualifies them when a statement joins another relation.
macro_rules! message_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "idempotency_key, ",
            $p,
            "template, ",
            $p,
            "args, ",
            $p,
            "recipients, ",
            $p,
            "expires_at, ",
            $p,
            "status, ",
            $p,
            "reason, ",
            $p,
            "attempts, ",
            $p,
            "max_attempts, ",
            $p,
            "next_attempt_at, ",
            $p,
            "lease_owner, ",
            $p,
            "lease_token, ",
            $p,
            "lease_expires_at, ",
            $p,
            "last_vendor, ",
            $p,
            "last_error, ",
            $p,
            "may_duplicate, ",
            $p,
            "created_at, ",
            $p,
            "updated_at"
        )
    };
}

/// The insert of one message: it returns only the id (a row means it was inserted), the
/// answer is built from the message itself ([`stored`]).
const INSERT_MESSAGE: &str = "INSERT INTO messages (id, idempotency_key, template, args, recipients, expires_at, \
     status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token, \
     lease_expires_at, last_vendor, last_error, may_duplicate, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18) \
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
     RETURNING id";

/// The insert of a whole batch, one statement: the parameters are one array per column
/// (`args` and `recipients` as one JSON array text per message, since Postgres arrays
/// cannot be ragged). Rows go in ordered by idempotency key, and messages with the same
/// key in batch order: two batches sharing keys take the key locks in the same order
/// (so they cannot deadlock), and the first message of a repeated key is the one
/// stored, as one-by-one enqueues would store it. Only the ids of the inserted rows come
/// back: the answers are built from the messages themselves ([`stored`]).
const INSERT_MANY: &str = "INSERT INTO messages (id, idempotency_key, template, args, recipients, expires_at, \
     status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token, \
     lease_expires_at, last_vendor, last_error, may_duplicate, created_at, updated_at) \
     SELECT b.id, b.idempotency_key, b.template, \
         ARRAY(SELECT a.v FROM jsonb_array_elements_text(b.args::jsonb) WITH ORDINALITY \
               AS a(v, n) ORDER BY a.n), \
         ARRAY(SELECT r.v FROM jsonb_array_elements_text(b.recipients::jsonb) WITH ORDINALITY \
               AS r(v, n) ORDER BY r.n), \
         b.expires_at, b.status, b.reason, b.attempts, b.max_attempts, b.next_attempt_at, \
         b.lease_owner, b.lease_token, b.lease_expires_at, b.last_vendor, b.last_error, \
         b.may_duplicate, b.created_at, b.created_at \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::timestamptz[], $7::text[], $8::text[], $9::int8[], $10::int8[], \
                 $11::timestamptz[], $12::text[], $13::uuid[], $14::timestamptz[], $15::text[], \
                 $16::text[], $17::bool[], $18::timestamptz[]) WITH ORDINALITY \
         AS b(id, idempotency_key, template, args, recipients, expires_at, status, reason, \
              attempts, max_attempts, next_attempt_at, lease_owner, lease_token, \
              lease_expires_at, last_vendor, last_error, may_duplicate, created_at, ord) \
     ORDER BY b.idempotency_key, b.ord \
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
     RETURNING id";

/// The stored messages holding any of the given idempotency keys.
const SELECT_BY_KEYS: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE idempotency_key = ANY($1)"
);

const SELECT_BY_ID: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE id = $1"
);

const SELECT_BY_KEY: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE idempotency_key = $1"
);

/// The claim, one statement. The CTE picks and locks the due rows in claim order,
/// skipping rows another claimer has locked; the UPDATE leases exactly those rows.
/// A CTE with `FOR UPDATE` is never inlined by the planner, so its `LIMIT` is applied
/// once (an `id IN (subquery)` form may be re-planned as a join); it also hands back each
/// row's previous due time, so the claimed rows are returned oldest due first.
///
/// The pick is `status IN (…) AND due_at <= $1 ORDER BY due_at, id`, exactly the
/// predicate and key of the partial index `messages_claim`, so Postgres walks the index
/// from the oldest due row and stops after `limit` rows, however many final rows the
/// table holds. `tests/it/postgres.rs` checks the plan with EXPLAIN.
const CLAIM: &str = concat!(
    "WITH due AS ( \
         SELECT id, due_at FROM messages \
         WHERE status IN ('queued', 'leased') AND due_at <= $1 \
         ORDER BY due_at, id \
         LIMIT $2 \
         FOR UPDATE SKIP LOCKED \
     ) \
     UPDATE messages AS m \
     SET status = 'leased', attempts = m.attempts + 1, lease_owner = $3, lease_token = $4, \
         lease_expires_at = $5, updated_at = $1 \
     FROM due WHERE m.id = due.id \
     RETURNING due.due_at AS claimed_due_at, ",
    message_columns!("m.")
);

/// The guard every change of a leased message carries: the row must still be leased
/// under the caller's token.
macro_rules! leased_under_token {
    () => {
        " WHERE id = $1 AND status = 'leased' AND lease_token = $2"
    };
}

/// Clears the lease columns; the check constraint insists on it outside `leased`.
macro_rules! drop_lease {
    () => {
        "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
    };
}

const COMPLETE: &str = concat!(
    "UPDATE messages SET status = 'sent', last_vendor = $3, updated_at = $4, ",
    drop_lease!(),
    leased_under_token!()
);

/// [`COMPLETE`] for a batch, one statement: `$1` … `$4` are the ids, tokens, vendors and
/// times; answers the ids it marked sent. An id may appear once per statement.
const COMPLETE_MANY: &str = "UPDATE messages AS m \
     SET status = 'sent', last_vendor = b.vendor, updated_at = b.at, \
         lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) AS b(id, token, vendor, at) \
     WHERE m.id = b.id AND m.status = 'leased' AND m.lease_token = b.token \
     RETURNING m.id";

const FAIL: &str = concat!(
    "UPDATE messages SET status = 'queued', last_vendor = COALESCE($3, last_vendor), \
     last_error = $4, may_duplicate = may_duplicate OR $5, next_attempt_at = $6, updated_at = $7, ",
    drop_lease!(),
    leased_under_token!()
);

const DEAD: &str = concat!(
    "UPDATE messages SET status = 'dead', last_vendor = COALESCE($3, last_vendor), \
     last_error = $4, may_duplicate = may_duplicate OR $5, updated_at = $6, ",
    drop_lease!(),
    leased_under_token!()
);

const EXPIRE: &str = concat!(
    "UPDATE messages SET status = 'expired', updated_at = $3, ",
    drop_lease!(),
    leased_under_token!()
);

/// A release gives back the claim's attempt: the message was never tried.
const RELEASE: &str = concat!(
    "UPDATE messages SET status = 'queued', attempts = GREATEST(attempts - 1, 0), \
     next_attempt_at = $3, updated_at = $3, ",
    drop_lease!(),
    leased_under_token!()
);

const RETRY: &str = concat!(
    "UPDATE messages SET status = 'queued', attempts = 0, reason = 'manual_retry', \
     next_attempt_at = $2, updated_at = $2 \
     WHERE id = $1 AND status IN ('dead', 'expired') RETURNING ",
    message_columns!("")
);

const STATUS_OF: &str = "SELECT status FROM messages WHERE id = $1";

/// Which of the given ids are stored (tells `NotFound` from `LeaseLost` for a batch).
const EXISTING_IDS: &str = "SELECT id FROM messages WHERE id = ANY($1)";

const LIST: &str = concat!(
    "SELECT ",
    message_columns!(""),
    " FROM messages WHERE status = $1 ORDER BY created_at, id LIMIT $2"
);

const STATS: &str = "SELECT status, count(*) FROM messages GROUP BY status";

const PURGE_SENT: &str = "DELETE FROM messages WHERE id IN ( \
         SELECT id FROM messages WHERE status = 'sent' AND updated_at < $1 \
         ORDER BY updated_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)";

const USAGE_ADD: &str = "INSERT INTO usage (vendor, period, billed) VALUES ($1, $2, $3) \
     ON CONFLICT (vendor, period) DO UPDATE SET billed = usage.billed + EXCLUDED.billed \
     RETURNING billed";

const USAGE_TOTALS: &str = "SELECT vendor, billed FROM usage WHERE period = $1";

/// The deferred queue and usage ledger in Postgres. Cheap to share behind an `Arc`; all
/// methods take `&self`.
pub struct PgStore {
    pool: Pool,
    schema: String,
    operation_timeout: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgStore {
    /// Builds the pool and, unless `migrate_on_connect` is off, applies pending
    /// migrations (which needs the server: an unreachable one is
    /// [`StoreError::Unavailable`] inside [`Error::Store`]). With migrations off no
    /// connection is opened until the first operation.
    pub async fn connect(config: PgConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut pg: tokio_postgres::Config =
            config.url.parse().map_err(|e| Error::InvalidConfig {
                field: "url",
                problem: format!("{e} in {}", config.redacted_url()),
            })?;
        // Every connection of the pool starts in the configured schema. Options from
        // the URL are kept; the schema is appended so it wins.
        let search_path = format!("-c search_path={}", config.schema);
        let options = match pg.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {search_path}"),
            _ => search_path,
        };
        pg.options(&options);
        pg.connect_timeout(config.connect_timeout());
        if pg.get_application_name().is_none() {
            pg.application_name("sms-gateway");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // A closed connection (server restarted, proxy dropped it) is noticed and
                // replaced on checkout; a broken but open one fails its first query with
                // `Unavailable` and is then closed too.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.wait_timeout()))
            .create_timeout(Some(config.connect_timeout()))
            .recycle_timeout(Some(config.connect_timeout()))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::InvalidConfig {
                field: "pool_size",
                problem: e.to_string(),
            })?;
        let store = Self {
            pool,
            schema: config.schema.clone(),
            operation_timeout: config.operation_timeout(),
        };
        if config.migrate_on_connect {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Applies the migrations the database lacks, in order, in one transaction under an
    /// advisory lock (instances starting together migrate once). Returns the versions
    /// applied now; empty when the schema was current. Refuses a database migrated by a
    /// newer build with [`Error::SchemaTooNew`].
    pub async fn migrate(&self) -> Result<Vec<i64>, Error> {
        let mut client = self.client().await?;
        migrate::apply(&mut client, &self.schema).await
    }

    /// The newest migration this build carries.
    pub fn schema_version() -> i64 {
        migrate::latest_version()
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The connection pool, for health checks and tools that need raw SQL.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Checks that the database answers (readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    /// The plan Postgres chooses for the claim at `now`, one line per `EXPLAIN` row, for
    /// operators and tests. A healthy plan walks the partial index `messages_claim`
    /// (`Index Scan using messages_claim`) with no sort: the claim's filter and order are
    /// the index's predicate and key.
    pub async fn explain_claim(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let explain = format!("EXPLAIN {CLAIM}");
            let rows = client
                .query(
                    explain.as_str(),
                    &[
                        &now,
                        &i64::from(limit),
                        &"explain",
                        &uuid::Uuid::nil(),
                        &now,
                    ],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| row.try_get::<_, String>(0).map_err(pg_error))
                .collect()
        })
        .await
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Bounds a whole operation, so a server that stops answering without closing its
    /// connections cannot hang a drainer or a request forever.
    async fn timed<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.operation_timeout, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::unavailable(format!(
                    "postgres did not answer within {} ms",
                    self.operation_timeout.as_millis()
                )))
            })
    }

    /// Runs a guarded update of a leased message; no row changed means the message is
    /// gone or held under another token.
    async fn update_leased(
        &self,
        id: MessageId,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(statement).await.map_err(pg_error)?;
            let changed = client.execute(&stmt, params).await.map_err(pg_error)?;
            if changed == 1 {
                return Ok(());
            }
            match current_status(&client, id).await? {
                None => Err(StoreError::NotFound(id)),
                Some(_) => Err(StoreError::LeaseLost(id)),
            }
        })
        .await
    }
}

async fn current_status(
    client: &Object,
    id: MessageId,
) -> Result<Option<MessageStatus>, StoreError> {
    let stmt = client.prepare_cached(STATUS_OF).await.map_err(pg_error)?;
    let row = client
        .query_opt(&stmt, &[id.as_uuid()])
        .await
        .map_err(pg_error)?;
    row.map(|r| codec::status(r.try_get::<_, &str>(0).map_err(pg_error)?))
        .transpose()
}

fn message_from_row(row: &Row) -> Result<StoredMessage, StoreError> {
    let get_err = pg_error;
    let request = codec::request_from_columns(
        row.try_get("template").map_err(get_err)?,
        row.try_get("args").map_err(get_err)?,
        row.try_get("recipients").map_err(get_err)?,
        row.try_get("idempotency_key").map_err(get_err)?,
        row.try_get("expires_at").map_err(get_err)?,
    )?;
    let lease_owner: Option<String> = row.try_get("lease_owner").map_err(get_err)?;
    let lease_token: Option<uuid::Uuid> = row.try_get("lease_token").map_err(get_err)?;
    let lease_expires_at: Option<DateTime<Utc>> =
        row.try_get("lease_expires_at").map_err(get_err)?;
    let lease = match (lease_owner, lease_token, lease_expires_at) {
        (Some(owner), Some(token), Some(expires_at)) => Some(Lease {
            owner,
            token: LeaseToken(token),
            expires_at,
        }),
        _ => None,
    };
    Ok(StoredMessage {
        id: MessageId::from_uuid(row.try_get("id").map_err(get_err)?),
        request,
        status: codec::status(row.try_get("status").map_err(get_err)?)?,
        reason: codec::reason(row.try_get("reason").map_err(get_err)?)?,
        attempts: codec::count("attempts", row.try_get("attempts").map_err(get_err)?)?,
        max_attempts: codec::count(
            "max_attempts",
            row.try_get("max_attempts").map_err(get_err)?,
        )?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(get_err)?,
        lease,
        last_vendor: codec::vendor(row.try_get("last_vendor").map_err(get_err)?)?,
        last_error: row.try_get("last_error").map_err(get_err)?,
        may_duplicate: row.try_get("may_duplicate").map_err(get_err)?,
        created_at: row.try_get("created_at").map_err(get_err)?,
        updated_at: row.try_get("updated_at").map_err(get_err)?,
    })
}

/// The parameters of [`INSERT_MESSAGE`] for one message, borrowed from it.
struct InsertParams<'a> {
    id: &'a uuid::Uuid,
    key: Option<&'a str>,
    template: &'a str,
    args: &'a [String],
    recipients: Vec<&'a str>,
    expires_at: Option<DateTime<Utc>>,
    status: &'static str,
    reason: &'static str,
    attempts: i64,
    max_attempts: i64,
    next_attempt_at: DateTime<Utc>,
    lease_owner: Option<&'a str>,
    lease_token: Option<uuid::Uuid>,
    lease_expires_at: Option<DateTime<Utc>>,
    last_vendor: Option<&'a str>,
    last_error: Option<&'a str>,
    may_duplicate: bool,
    created_at: DateTime<Utc>,
}

impl<'a> InsertParams<'a> {
    /// The parameters of a message built by [`stored`] (status, lease and vendor
    /// already resolved from its initial state).
    fn new(m: &'a StoredMessage) -> Self {
        let request = &m.request;
        let lease = m.lease.as_ref();
        Self {
            id: m.id.as_uuid(),
            key: codec::key_column(request),
            template: request.template().as_str(),
            args: request.args(),
            recipients: request.recipients().iter().map(|r| r.as_str()).collect(),
            expires_at: request.expires_at(),
            status: m.status.as_str(),
            reason: m.reason.as_str(),
            attempts: i64::from(m.attempts),
            max_attempts: i64::from(m.max_attempts),
            next_attempt_at: m.next_attempt_at,
            lease_owner: lease.map(|l| l.owner.as_str()),
            lease_token: lease.map(|l| l.token.0),
            lease_expires_at: lease.map(|l| l.expires_at),
            last_vendor: m.last_vendor.as_ref().map(VendorId::as_str),
            last_error: m.last_error.as_deref(),
            may_duplicate: m.may_duplicate,
            created_at: m.created_at,
        }
    }

    /// `$1` … `$18` of [`INSERT_MESSAGE`].
    fn params(&self) -> [&(dyn ToSql + Sync); 18] {
        [
            self.id,
            &self.key,
            &self.template,
            &self.args,
            &self.recipients,
            &self.expires_at,
            &self.status,
            &self.reason,
            &self.attempts,
            &self.max_attempts,
            &self.next_attempt_at,
            &self.lease_owner,
            &self.lease_token,
            &self.lease_expires_at,
            &self.last_vendor,
            &self.last_error,
            &self.may_duplicate,
            &self.created_at,
        ]
    }
}

/// The parameters of [`INSERT_MANY`]: one array per column, in batch order.
struct BatchColumns<'a> {
    id: Vec<uuid::Uuid>,
    key: Vec<Option<&'a str>>,
    template: Vec<&'a str>,
    args: Vec<String>,
    recipients: Vec<String>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    status: Vec<&'static str>,
    reason: Vec<&'static str>,
    attempts: Vec<i64>,
    max_attempts: Vec<i64>,
    next_attempt_at: Vec<DateTime<Utc>>,
    lease_owner: Vec<Option<&'a str>>,
    lease_token: Vec<Option<uuid::Uuid>>,
    lease_expires_at: Vec<Option<DateTime<Utc>>>,
    last_vendor: Vec<Option<&'a str>>,
    last_error: Vec<Option<&'a str>>,
    may_duplicate: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
}

impl<'a> BatchColumns<'a> {
    fn new(rows: &[InsertParams<'a>]) -> Result<Self, StoreError> {
        fn json<T: serde::Serialize>(list: &[T]) -> Result<String, StoreError> {
            serde_json::to_string(list).map_err(StoreError::backend)
        }
        Ok(Self {
            id: rows.iter().map(|r| *r.id).collect(),
            key: rows.iter().map(|r| r.key).collect(),
            template: rows.iter().map(|r| r.template).collect(),
            args: rows
                .iter()
                .map(|r| json(r.args))
                .collect::<Result<_, _>>()?,
            recipients: rows
                .iter()
                .map(|r| json(&r.recipients))
                .collect::<Result<_, _>>()?,
            expires_at: rows.iter().map(|r| r.expires_at).collect(),
            status: rows.iter().map(|r| r.status).collect(),
            reason: rows.iter().map(|r| r.reason).collect(),
            attempts: rows.iter().map(|r| r.attempts).collect(),
            max_attempts: rows.iter().map(|r| r.max_attempts).collect(),
            next_attempt_at: rows.iter().map(|r| r.next_attempt_at).collect(),
            lease_owner: rows.iter().map(|r| r.lease_owner).collect(),
            lease_token: rows.iter().map(|r| r.lease_token).collect(),
            lease_expires_at: rows.iter().map(|r| r.lease_expires_at).collect(),
            last_vendor: rows.iter().map(|r| r.last_vendor).collect(),
            last_error: rows.iter().map(|r| r.last_error).collect(),
            may_duplicate: rows.iter().map(|r| r.may_duplicate).collect(),
            created_at: rows.iter().map(|r| r.created_at).collect(),
        })
    }

    /// `$1` … `$18` of [`INSERT_MANY`].
    fn params(&self) -> [&(dyn ToSql + Sync); 18] {
        [
            &self.id,
            &self.key,
            &self.template,
            &self.args,
            &self.recipients,
            &self.expires_at,
            &self.status,
            &self.reason,
            &self.attempts,
            &self.max_attempts,
            &self.next_attempt_at,
            &self.lease_owner,
            &self.lease_token,
            &self.lease_expires_at,
            &self.last_vendor,
            &self.last_error,
            &self.may_duplicate,
            &self.created_at,
        ]
    }
}

/// The message `new` stores, exactly as [`message_from_row`] reads it back.
fn stored(new: NewMessage) -> StoredMessage {
    codec::stored_from_new(new)
}

fn chrono_duration(d: Duration) -> Result<chrono::Duration, StoreError> {
    chrono::Duration::from_std(d)
        .map_err(|_| StoreError::backend(format!("lease duration {d:?} is out of range")))
}

/// Whether a driver error says the server could not be reached or dropped the
/// connection (worth retrying later) rather than that the statement or data was bad.
fn is_connection_problem(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(state) = e.code() {
        // 08: connection exception; 57: operator intervention (shutdown, cancelled by
        // timeout); 53: insufficient resources (too many connections); 40: serialization
        // failure or deadlock, which pass on retry.
        return ["08", "57", "53", "40"]
            .iter()
            .any(|class| state.code().starts_with(class));
    }
    // Without a SQLSTATE the error is either the transport (an I/O error below it) or a
    // local conversion. The driver does not expose its error kind, so I/O is looked for
    // in the source chain, and connect and timeout failures, which carry no source, are
    // recognised by their fixed wording.
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    let text = e.to_string();
    [
        "error connecting",
        "timeout",
        "error communicating",
        "connection closed",
    ]
    .iter()
    .any(|prefix| text.starts_with(prefix))
}

/// Maps a driver error onto the store's kinds. The driver's own message is often only
/// "db error" or "error connecting to server" with the substance in its source chain,
/// which `StoreError`'s message does not show, so the whole chain goes into the text:
/// `postgres: db error: ERROR: relation "messages" does not exist`.
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let mut text = format!("postgres: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if is_connection_problem(&e) {
        StoreError::unavailable(text)
    } else {
        StoreError::backend(text)
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(kind) => StoreError::unavailable(format!(
            "no postgres connection in time ({kind:?} timed out)"
        )),
        PoolError::Closed => StoreError::unavailable("postgres connection pool is closed"),
        PoolError::PostCreateHook(e) => StoreError::unavailable(e.to_string()),
        other => StoreError::backend(other.to_string()),
    }
}

/// Runs [`COMPLETE_MANY`] once per round (see `complete_many`) on `client`, then tells
/// the refused completions apart: `NotFound` for a missing message, `LeaseLost` for one
/// no longer leased under the completion's token.
async fn complete_rounds<C: GenericClient>(
    client: &C,
    completions: &[Completion],
    rounds: &[Vec<usize>],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let complete_many = client
        .prepare_cached(COMPLETE_MANY)
        .await
        .map_err(pg_error)?;
    let mut results: Vec<Option<Result<(), StoreError>>> =
        completions.iter().map(|_| None).collect();
    for round in rounds {
        let ids: Vec<uuid::Uuid> = round
            .iter()
            .map(|&i| *completions[i].id.as_uuid())
            .collect();
        let tokens: Vec<uuid::Uuid> = round.iter().map(|&i| completions[i].token.0).collect();
        let vendors: Vec<&str> = round
            .iter()
            .map(|&i| completions[i].vendor.as_str())
            .collect();
        let times: Vec<DateTime<Utc>> = round.iter().map(|&i| completions[i].at).collect();
        let sent = client
            .query(&complete_many, &[&ids, &tokens, &vendors, &times])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| row.try_get::<_, uuid::Uuid>(0).map_err(pg_error))
            .collect::<Result<HashSet<_>, _>>()?;
        for &i in round {
            if sent.contains(completions[i].id.as_uuid()) {
                results[i] = Some(Ok(()));
            }
        }
    }
    let refused: Vec<usize> = (0..completions.len())
        .filter(|&i| results[i].is_none())
        .collect();
    if !refused.is_empty() {
        let ids: Vec<uuid::Uuid> = refused
            .iter()
            .map(|&i| *completions[i].id.as_uuid())
            .collect();
        let existing = client
            .prepare_cached(EXISTING_IDS)
            .await
            .map_err(pg_error)?;
        let stored = client
            .query(&existing, &[&ids])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| row.try_get::<_, uuid::Uuid>(0).map_err(pg_error))
            .collect::<Result<HashSet<_>, _>>()?;
        for i in refused {
            let id = completions[i].id;
            results[i] = Some(if stored.contains(id.as_uuid()) {
                Err(StoreError::LeaseLost(id))
            } else {
                Err(StoreError::NotFound(id))
            });
        }
    }
    Ok(results.into_iter().flatten().collect())
}

#[async_trait]
impl DeferredQueue for PgStore {
    async fn enqueue(&self, new: NewMessage) -> Result<Enqueued, StoreError> {
        let message = stored(new);
        let insert_params = InsertParams::new(&message);
        let params = insert_params.params();
        let existing = self
            .timed(async {
                let client = self.client().await?;
                let insert = client
                    .prepare_cached(INSERT_MESSAGE)
                    .await
                    .map_err(pg_error)?;
                let by_key = client
                    .prepare_cached(SELECT_BY_KEY)
                    .await
                    .map_err(pg_error)?;
                // Insert-or-find is retried once: the existing row can be purged between
                // the conflicting insert and the look-up, and then the insert will succeed.
                for _ in 0..2 {
                    if client
                        .query_opt(&insert, &params)
                        .await
                        .map_err(pg_error)?
                        .is_some()
                    {
                        return Ok(None);
                    }
                    // Nothing inserted: only the idempotency key can have conflicted (an
                    // id conflict is an error, not a skip).
                    if let Some(row) = client
                        .query_opt(&by_key, &[&insert_params.key])
                        .await
                        .map_err(pg_error)?
                    {
                        return Ok(Some(message_from_row(&row)?));
                    }
                }
                Err(StoreError::backend(format!(
                    "message {} was neither inserted nor found by its idempotency key",
                    message.id
                )))
            })
            .await?;
        Ok(match existing {
            None => Enqueued::Created(message),
            Some(existing) => Enqueued::Existing(existing),
        })
    }

    /// One transaction on one connection: one set-based insert of the whole batch
    /// (`INSERT_MANY`), one look-up of the keys that conflicted, one commit.
    async fn enqueue_many(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let messages: Vec<StoredMessage> = messages.into_iter().map(stored).collect();
        let inserts: Vec<InsertParams<'_>> = messages.iter().map(InsertParams::new).collect();
        let columns = BatchColumns::new(&inserts)?;
        let position: HashMap<uuid::Uuid, usize> = inserts
            .iter()
            .enumerate()
            .map(|(i, m)| (*m.id, i))
            .collect();
        // For each message, the stored one holding its key if it was not inserted.
        let existing: Vec<Option<StoredMessage>> = self
            .timed(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(pg_error)?;
                let insert_many = tx.prepare_cached(INSERT_MANY).await.map_err(pg_error)?;
                let mut inserted = vec![false; inserts.len()];
                for row in tx
                    .query(&insert_many, &columns.params())
                    .await
                    .map_err(pg_error)?
                {
                    let id: uuid::Uuid = row.try_get(0).map_err(pg_error)?;
                    let i = *position.get(&id).ok_or_else(|| {
                        StoreError::backend(format!("inserted message {id} is not in the batch"))
                    })?;
                    inserted[i] = true;
                }
                let mut existing: Vec<Option<StoredMessage>> =
                    inserts.iter().map(|_| None).collect();

                // Nothing inserted: only the idempotency key can have conflicted (an id
                // conflict is an error, not a skip), with a stored row or an earlier
                // message of this batch.
                let conflicted: Vec<usize> = (0..inserts.len()).filter(|&i| !inserted[i]).collect();
                if conflicted.is_empty() {
                    tx.commit().await.map_err(pg_error)?;
                    return Ok(existing);
                }
                let keys: Vec<Option<&str>> = conflicted.iter().map(|&i| inserts[i].key).collect();
                let by_keys = tx.prepare_cached(SELECT_BY_KEYS).await.map_err(pg_error)?;
                let mut found = HashMap::new();
                for row in tx.query(&by_keys, &[&keys]).await.map_err(pg_error)? {
                    let stored = message_from_row(&row)?;
                    if let Some(key) = stored.request.idempotency_key() {
                        found.insert(key.as_str().to_owned(), stored);
                    }
                }
                let mut vanished = Vec::new();
                for i in conflicted {
                    match inserts[i].key.and_then(|k| found.get(k)) {
                        Some(stored) => existing[i] = Some(stored.clone()),
                        None => vanished.push(i),
                    }
                }
                // The conflicting row was purged between the insert and the look-up
                // (rare): once more, one at a time, as `enqueue` does.
                if !vanished.is_empty() {
                    let insert = tx.prepare_cached(INSERT_MESSAGE).await.map_err(pg_error)?;
                    let by_key = tx.prepare_cached(SELECT_BY_KEY).await.map_err(pg_error)?;
                    for i in vanished {
                        if tx
                            .query_opt(&insert, &inserts[i].params())
                            .await
                            .map_err(pg_error)?
                            .is_some()
                        {
                            continue;
                        }
                        let Some(row) = tx
                            .query_opt(&by_key, &[&inserts[i].key])
                            .await
                            .map_err(pg_error)?
                        else {
                            return Err(StoreError::backend(format!(
                                "message {} was neither inserted nor found by its idempotency key",
                                messages[i].id
                            )));
                        };
                        existing[i] = Some(message_from_row(&row)?);
                    }
                }
                tx.commit().await.map_err(pg_error)?;
                Ok(existing)
            })
            .await?;
        drop(columns);
        drop(inserts);
        Ok(messages
            .into_iter()
            .zip(existing)
            .map(|(message, existing)| match existing {
                None => Enqueued::Created(message),
                Some(existing) => Enqueued::Existing(existing),
            })
            .collect())
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
        let expires_at = now + chrono_duration(lease_for)?;
        let token = LeaseToken::new();
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(CLAIM).await.map_err(pg_error)?;
            let rows = client
                .query(
                    &stmt,
                    &[&now, &i64::from(limit), &owner, &token.0, &expires_at],
                )
                .await
                .map_err(pg_error)?;
            let mut claimed = rows
                .iter()
                .map(|row| {
                    let was_due: DateTime<Utc> = row.try_get("claimed_due_at").map_err(pg_error)?;
                    Ok((was_due, message_from_row(row)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            // RETURNING has no order of its own.
            claimed.sort_by_key(|(was_due, m)| (*was_due, m.id));
            Ok(claimed.into_iter().map(|(_, m)| m).collect())
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
        self.update_leased(
            id,
            COMPLETE,
            &[id.as_uuid(), &token.0, &vendor.as_str(), &now],
        )
        .await
    }

    /// One transaction on one connection: one set-based guarded update
    /// (`COMPLETE_MANY`), one look-up of the refused ids to tell `NotFound` from
    /// `LeaseLost`, one commit. An id repeated in the batch is applied in a later
    /// statement of the same transaction, in batch order, as one-by-one completions would
    /// apply it.
    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        // Round r holds the r-th completion of each id; each round is ordered by id, so
        // batches touching the same rows lock them in the same order.
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut seen: HashMap<MessageId, usize> = HashMap::new();
        for (i, c) in completions.iter().enumerate() {
            let round = seen.entry(c.id).or_insert(0);
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(i);
            *round += 1;
        }
        for round in &mut rounds {
            round.sort_by_key(|&i| completions[i].id);
        }
        self.timed(async {
            let mut client = self.client().await?;
            if rounds.len() == 1 {
                // One statement commits on its own: no BEGIN and COMMIT round trips.
                return complete_rounds(&client, completions, &rounds).await;
            }
            let tx = client.transaction().await.map_err(pg_error)?;
            let results = complete_rounds(&tx, completions, &rounds).await?;
            tx.commit().await.map_err(pg_error)?;
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
        let vendor = failure.vendor.as_ref().map(VendorId::as_str);
        self.update_leased(
            id,
            FAIL,
            &[
                id.as_uuid(),
                &token.0,
                &vendor,
                &failure.error,
                &failure.may_duplicate,
                &next_attempt_at,
                &now,
            ],
        )
        .await
    }

    async fn dead(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let vendor = failure.vendor.as_ref().map(VendorId::as_str);
        self.update_leased(
            id,
            DEAD,
            &[
                id.as_uuid(),
                &token.0,
                &vendor,
                &failure.error,
                &failure.may_duplicate,
                &now,
            ],
        )
        .await
    }

    async fn expire(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, EXPIRE, &[id.as_uuid(), &token.0, &now])
            .await
    }

    async fn release(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, RELEASE, &[id.as_uuid(), &token.0, &now])
            .await
    }

    async fn retry(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(RETRY).await.map_err(pg_error)?;
            if let Some(row) = client
                .query_opt(&stmt, &[id.as_uuid(), &now])
                .await
                .map_err(pg_error)?
            {
                return message_from_row(&row);
            }
            match current_status(&client, id).await? {
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
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(SELECT_BY_ID)
                .await
                .map_err(pg_error)?;
            let row = client
                .query_opt(&stmt, &[id.as_uuid()])
                .await
                .map_err(pg_error)?;
            row.as_ref().map(message_from_row).transpose()
        })
        .await
    }

    async fn find_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(SELECT_BY_KEY)
                .await
                .map_err(pg_error)?;
            let row = client
                .query_opt(&stmt, &[&key.as_str()])
                .await
                .map_err(pg_error)?;
            row.as_ref().map(message_from_row).transpose()
        })
        .await
    }

    async fn list(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(LIST).await.map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&status.as_str(), &i64::from(limit)])
                .await
                .map_err(pg_error)?;
            rows.iter().map(message_from_row).collect()
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(STATS).await.map_err(pg_error)?;
            let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
            let mut stats = QueueStats::default();
            for row in rows {
                let status = codec::status(row.try_get(0).map_err(pg_error)?)?;
                let count: i64 = row.try_get(1).map_err(pg_error)?;
                let count = u64::try_from(count).unwrap_or_default();
                match status {
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
        let mut purged = 0_u64;
        let mut left = limit;
        // Each batch is its own statement and transaction: a large purge never holds
        // many row locks at once or blocks claimers for long.
        while left > 0 {
            let batch = left.min(PURGE_BATCH);
            let deleted = self
                .timed(async {
                    let client = self.client().await?;
                    let stmt = client.prepare_cached(PURGE_SENT).await.map_err(pg_error)?;
                    client
                        .execute(&stmt, &[&before, &i64::from(batch)])
                        .await
                        .map_err(pg_error)
                })
                .await?;
            purged += deleted;
            left -= batch;
            if deleted < u64::from(batch) {
                break;
            }
        }
        Ok(purged)
    }
}

#[async_trait]
impl UsageLedger for PgStore {
    async fn add(
        &self,
        vendor: &VendorId,
        period: &BillingPeriod,
        messages: u64,
    ) -> Result<u64, StoreError> {
        let increment = codec::billed_increment(messages)?;
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(USAGE_ADD).await.map_err(pg_error)?;
            let row = client
                .query_one(&stmt, &[&vendor.as_str(), &period.as_str(), &increment])
                .await
                .map_err(pg_error)?;
            codec::billed_total(row.try_get(0).map_err(pg_error)?)
        })
        .await
    }

    async fn totals(&self, period: &BillingPeriod) -> Result<BTreeMap<VendorId, u64>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(USAGE_TOTALS)
                .await
                .map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&period.as_str()])
                .await
                .map_err(pg_error)?;
            let mut totals = BTreeMap::new();
            for row in rows {
                let vendor = codec::vendor(Some(row.try_get(0).map_err(pg_error)?))?
                    .ok_or_else(|| StoreError::backend("stored vendor is missing"))?;
                totals.insert(
                    vendor,
                    codec::billed_total(row.try_get(1).map_err(pg_error)?)?,
                );
            }
            Ok(totals)
        })
        .await
    }
}
