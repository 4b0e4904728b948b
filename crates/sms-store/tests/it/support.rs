//! Fixtures: the contract suite's fixed times and messages, and Postgres stores that
//! each live in a schema of their own and drop it afterwards.

use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sms_core::testing::store_contract::ContractStore;
pub use sms_core::testing::store_contract::fixtures::{
    at, keyed_request, queued, queued_request, request,
};
use sms_store::postgres::{LeaseClock, PgConfig, PgStore};

/// The Postgres server the tests use.
pub fn postgres_url() -> String {
    std::env::var("SMS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Under `CI=true` a missing service fails the test; elsewhere the test is skipped with
/// the reason printed.
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but {reason}; start Postgres or set SMS_TEST_POSTGRES_URL");
    }
    eprintln!("skipped: {reason} (set CI=true to make this a failure)");
}

/// Schemas made by these tests start with this prefix, then the creation time in Unix
/// seconds, then a random suffix.
const SCHEMA_PREFIX: &str = "sms_store_test_";

/// Drops its schema when dropped, also when the test panicked.
pub struct SchemaGuard {
    schema: String,
}

impl SchemaGuard {
    /// A fresh, unused schema name (nothing is created yet).
    pub fn fresh() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            schema: format!("{SCHEMA_PREFIX}{secs}_{}", &suffix[..12]),
        }
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        // The test is over, so its sessions can go: one left idle in a transaction (a
        // test that panicked mid-way, a runtime blocked in this very `drop`) would
        // otherwise hold locks the DROP waits for forever. The sessions are found by
        // the application name `pg_config` gives them.
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{schema}' AND pid <> pg_backend_pid(); \
             DROP SCHEMA IF EXISTS {schema} CASCADE",
            schema = self.schema
        );
        if let Err(e) = run_sql_blocking(&sql) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// Runs `sql` on its own connection from a thread of its own, so it works from `Drop`
/// and from inside or outside any runtime.
pub fn run_sql_blocking(sql: &str) -> Result<(), String> {
    let sql = sql.to_owned();
    let url = postgres_url();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let outcome = client.batch_execute(&sql).await.map_err(|e| e.to_string());
            drop(client);
            let _ = driver.await;
            outcome
        })
    })
    .join()
    .map_err(|_| "cleanup thread panicked".to_owned())?
}

/// Drops schemas left behind by earlier runs that were killed before their guards ran
/// (older than an hour, so parallel runs keep theirs).
fn drop_stale_schemas() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let sql = format!(
            "DO $$ DECLARE s text; BEGIN \
               FOR s IN SELECT nspname FROM pg_namespace \
                        WHERE nspname LIKE '{SCHEMA_PREFIX}%' \
                          AND split_part(substr(nspname, {start}), '_', 1) ~ '^[0-9]+$' \
                          AND split_part(substr(nspname, {start}), '_', 1)::bigint \
                              < extract(epoch FROM now()) - 3600 \
               LOOP \
                 BEGIN EXECUTE format('DROP SCHEMA %I CASCADE', s); \
                 EXCEPTION WHEN others THEN NULL; END; \
               END LOOP; END $$",
            start = SCHEMA_PREFIX.len() + 1
        );
        let _ = run_sql_blocking(&sql);
    });
}

/// The test settings: a small pool and short timeouts, in `guard`'s schema, with
/// sessions named after the schema so the guard can end them. Leases are timed by the
/// caller's `now`: the contract suite and most tests drive time with fixed instants
/// (`postgres_lease_clock` tests the database's clock).
pub fn pg_config(guard: &SchemaGuard) -> PgConfig {
    let url = postgres_url();
    let url = if url.contains("://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}application_name={}", guard.schema())
    } else {
        format!("{url} application_name={}", guard.schema())
    };
    PgConfig {
        pool_size: 12,
        connect_timeout_ms: 3_000,
        wait_timeout_ms: 10_000,
        operation_timeout_ms: 30_000,
        lease_clock: LeaseClock::Caller,
        ..PgConfig::with_url(url).schema(guard.schema())
    }
}

/// A migrated Postgres store in a fresh schema, or `None` (after printing why) when the
/// server is unreachable outside CI.
pub async fn pg_store() -> Option<(PgStore, SchemaGuard)> {
    let guard = SchemaGuard::fresh();
    let store = connect_or_skip(pg_config(&guard)).await?;
    Some((store, guard))
}

/// Connects with `config`; an unreachable server skips (or fails under CI).
pub async fn connect_or_skip(config: PgConfig) -> Option<PgStore> {
    match PgStore::connect(config).await {
        Ok(store) => {
            drop_stale_schemas();
            Some(store)
        }
        Err(e) if e.is_unavailable() => {
            skip_or_fail(&format!("postgres at {} is unreachable: {e}", redacted()));
            None
        }
        Err(e) => panic!("connecting to postgres at {} failed: {e}", redacted()),
    }
}

/// Whether the test server answers; when it does not, skips (or fails under CI).
pub async fn postgres_reachable() -> bool {
    let config = PgConfig {
        migrate_on_connect: false,
        ..PgConfig::with_url(postgres_url())
    };
    let store = PgStore::connect(config).await.expect("a valid test URL");
    match store.ping().await {
        Ok(()) => true,
        Err(e) => {
            skip_or_fail(&format!("postgres at {} is unreachable: {e}", redacted()));
            false
        }
    }
}

fn redacted() -> String {
    PgConfig::with_url(postgres_url()).redacted_url()
}

/// Postgres as a contract-suite store, in a schema dropped after it.
pub async fn pg_test_store() -> Option<ContractStore> {
    let (store, guard) = pg_store().await?;
    Some(ContractStore::new(Arc::new(store)).keeping(guard))
}

/// How long a test waits for something that should be immediate before calling it hung.
pub const HANG: Duration = Duration::from_secs(60);
