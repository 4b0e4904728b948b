//! The Postgres store: the deferred queue, the usage and spend ledgers, the delivery log,
//! the callback outbox and the blocklist shared by every gateway instance.
//!
//! Connections come from a deadpool pool whose connections all start with
//! `search_path` set to the configured schema, so the statements name no schema and
//! tests can each work in a schema of their own. Statements are prepared once per
//! connection (`prepare_cached`).
//!
//! Message leases are timed by the database's clock unless `lease_clock` says otherwise
//! ([`LeaseClock`]): instances share the database, not a clock. Callback leases are
//! timed by the caller's `now`: an instance whose clock runs ahead may take an event
//! while another still holds it and post it twice, which its event id lets the client
//! drop.
//!
//! The store is split by concept: the pool and its settings here and in `config`, the
//! SQL in `statements`, the row codec in `row`, the lease parameters in `lease`, the
//! driver's errors in `error`, the migrations in `migrate`, and the traits in `queue`
//! (with the claim in `claim`, a client's own operations in `by_client`, and the status
//! that tells why a guarded update changed nothing in `status`), `ledger`, `delivery`
//! and `callback`, and in `blocklist` and `spend`, which keep their few statements
//! beside their code.

mod blocklist;
mod by_client;
mod callback;
mod claim;
mod config;
mod delivery;
mod error;
mod lease;
mod ledger;
mod migrate;
mod queue;
mod row;
mod spend;
mod statements;
mod status;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use sms_core::{StoreError, VendorId};
use tokio_postgres::NoTls;

use self::error::{pg_error, pool_error};
use self::lease::LeaseTiming;
use self::statements::{CALLBACK_PICK, CLAIM, UNSETTLED};
use crate::Error;

pub use config::{LeaseClock, PgConfig};

/// The deferred queue, usage and spend ledgers, delivery log, callback outbox and
/// blocklist in Postgres.
/// Cheap to share behind an `Arc`; all methods take `&self`.
pub struct PgStore {
    pool: Pool,
    schema: String,
    operation_timeout: Duration,
    lease_clock: LeaseClock,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .field("lease_clock", &self.lease_clock)
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
            lease_clock: config.lease_clock,
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

    /// Whose clock times leases.
    pub fn lease_clock(&self) -> LeaseClock {
        self.lease_clock
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

    /// The plan Postgres chooses for a claim of up to `limit` messages, at most
    /// `limit - normal_min` of them high-priority, at `now` (or at the database's time,
    /// as the store's [`LeaseClock`] has it), one line per `EXPLAIN` row, for operators
    /// and tests. A healthy plan walks the lanes' ranges of the partial index
    /// `messages_claim_by_lane` (`Index Scan using messages_claim_by_lane`, once per
    /// lane) with no sort: each lane's filter and order are the index's predicate and
    /// key after the lane.
    pub async fn explain_claim(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        normal_min: u32,
    ) -> Result<Vec<String>, StoreError> {
        let lease = LeaseTiming::new(self.lease_clock, now, Duration::from_secs(30))?;
        self.explain(
            CLAIM,
            &[
                &lease.start,
                &i64::from(limit.saturating_sub(normal_min)),
                &"explain",
                &uuid::Uuid::nil(),
                &lease.micros,
                &now,
                &i64::from(limit),
            ],
        )
        .await
    }

    /// The plan Postgres chooses for the pick of a callback claim at `now` (the query
    /// that selects and locks the events the claim leases), one line per `EXPLAIN`
    /// row, for operators and tests. A healthy plan walks the partial index
    /// `callbacks_claim` with no sort: the pick's filter and order are the index's
    /// predicate and key.
    pub async fn explain_callback_claim(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.explain(CALLBACK_PICK, &[&now, &i64::from(limit)])
            .await
    }

    /// The plan Postgres chooses for [`DeliveryLog::unsettled`] of `vendor` between
    /// `after` and `before`, one line per `EXPLAIN` row, for operators and tests. A
    /// healthy plan walks the partial index `deliveries_unsettled` with no sort: the
    /// query's filter and order are the index's predicate and key. When the range holds
    /// few more sends than `limit`, Postgres may instead fetch them all through the same
    /// index and sort that handful, which costs as little.
    ///
    /// [`DeliveryLog::unsettled`]: sms_core::DeliveryLog::unsettled
    pub async fn explain_unsettled(
        &self,
        vendor: &VendorId,
        after: DateTime<Utc>,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.explain(
            UNSETTLED,
            &[&vendor.as_str(), &after, &before, &i64::from(limit)],
        )
        .await
    }

    /// `EXPLAIN` of `statement` (one of the store's constant statements) with `params`,
    /// one line per row of the plan.
    async fn explain(
        &self,
        statement: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<String>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let rows = client
                .query(["EXPLAIN ", statement].concat().as_str(), params)
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
}
