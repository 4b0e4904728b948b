//! The contract and the drain against Postgres, plus what only Postgres has: schemas,
//! migrations, the claim's plan, real arrays, and outages of the server.

use std::sync::Arc;
use std::time::Duration;

use sms_core::{
    BillingPeriod, Completion, DeferredQueue, Enqueued, LeaseToken, MessageId, MessageStatus,
    SmsRequest, StoreError, UsageLedger, VendorId,
};
use sms_store::Error;
use sms_store::postgres::{PgConfig, PgStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{
    HANG, SchemaGuard, at, connect_or_skip, keyed_request, pg_config, pg_store, pg_test_store,
    queued, queued_request,
};

sms_core::store_contract_tests!(pg_test_store);
sms_core::store_contract_atomic_batch_tests!(pg_test_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_drain_10_000_messages_exactly_once() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    let store: Arc<dyn DeferredQueue> = Arc::new(store);
    crate::drain::drain_exactly_once(&[store], 10_000).await;
}

/// Several gateway instances share one database: billed volumes are not per instance
/// (fee tiers follow the whole volume), a key stored by one is seen by the other, and
/// their drains never overlap (no message is sent twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_usage_keys_and_the_backlog() {
    let Some((first, guard)) = pg_store().await else {
        return;
    };
    let second = PgStore::connect(pg_config(&guard)).await.unwrap();
    let tencent = VendorId::new("tencent").unwrap();
    let march = BillingPeriod::from_label("2026-03");
    first.add(&tencent, &march, 7).await.unwrap();
    assert_eq!(second.add(&tencent, &march, 5).await.unwrap(), 12);
    assert_eq!(first.totals(&march).await.unwrap()[&tencent], 12);

    let keyed = queued_request(keyed_request("shared-1"), at(0), at(0));
    let stored = first.enqueue(keyed).await.unwrap().message().clone();
    let retry = queued_request(keyed_request("shared-1"), at(1), at(1));
    assert!(matches!(
        second.enqueue(retry).await.unwrap(),
        Enqueued::Existing(m) if m.id == stored.id
    ));
    for _ in 0..9 {
        first.enqueue(queued(at(0), at(0))).await.unwrap();
    }
    let lease = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        first.claim("instance-1", at(2), lease, 6),
        second.claim("instance-2", at(2), lease, 6)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<_> = a.iter().chain(&b).map(|m| m.id).collect();
    assert_eq!(all.len(), 10);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 10, "no message went to both instances");
}

#[tokio::test]
async fn arguments_are_stored_as_real_arrays() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    let request = SmsRequest::new("login_code", ["a###b", "x;y", ""], ["+8613800138000"]).unwrap();
    let m = queued_request(request, at(0), at(0));
    store.enqueue(m.clone()).await.unwrap();
    let client = store.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT cardinality(args), args[1], args[2], args[3], pg_typeof(args)::text \
             FROM messages WHERE id = $1",
            &[m.id.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, String>(1), "a###b");
    assert_eq!(row.get::<_, String>(2), "x;y");
    assert_eq!(row.get::<_, String>(3), "");
    assert_eq!(row.get::<_, String>(4), "text[]");
}

#[tokio::test]
async fn the_database_refuses_rows_that_break_the_lease_invariant() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    let client = store.pool().get().await.unwrap();
    let insert = "INSERT INTO messages (id, template, args, recipients, status, reason, attempts, \
                  max_attempts, next_attempt_at, created_at, updated_at) \
                  VALUES (gen_random_uuid(), 't', '{}', '{+8613800138000}', $1, 'accepted', 0, 5, \
                  now(), now(), now())";
    // Leased without a lease, and an unknown status: both refused by CHECKs.
    for status in ["leased", "delivered"] {
        let e = client.execute(insert, &[&status]).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{status}: {e}"
        );
    }
}

#[tokio::test]
async fn tables_live_in_the_configured_schema_with_their_migration_recorded() {
    let Some((store, guard)) = pg_store().await else {
        return;
    };
    assert_eq!(store.schema(), guard.schema());
    let client = store.pool().get().await.unwrap();
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY table_name",
            &[&guard.schema()],
        )
        .await
        .unwrap();
    let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        tables,
        [
            "blocklist",
            "callbacks",
            "client_spend",
            "deliveries",
            "messages",
            "schema_migrations",
            "usage"
        ]
    );
    assert_eq!(recorded_versions(&client).await, every_version());
    // Migrating again changes nothing.
    assert!(store.migrate().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_migrate_once() {
    let guard = SchemaGuard::fresh();
    let config = PgConfig {
        migrate_on_connect: false,
        ..pg_config(&guard)
    };
    if !crate::support::postgres_reachable().await {
        return;
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let store = PgStore::connect(config).await.unwrap();
            store.migrate().await.unwrap()
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap());
    }
    assert_eq!(
        applied,
        every_version(),
        "exactly one instance applied them"
    );
}

/// The versions of every migration, oldest first.
fn every_version() -> Vec<i64> {
    (1..=PgStore::schema_version()).collect()
}

/// The versions `schema_migrations` records, oldest first.
async fn recorded_versions(client: &tokio_postgres::Client) -> Vec<i64> {
    client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_version_1_schema_is_migrated_with_its_rows() {
    let guard = SchemaGuard::fresh();
    if !crate::support::postgres_reachable().await {
        return;
    }
    // Version 1 as the previous build left it, with a keyed and a keyless message.
    let keyed = MessageId::new();
    let keyless = MessageId::new();
    crate::support::run_sql_blocking(&format!(
        "CREATE SCHEMA {schema}; SET search_path TO {schema}; \
         CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO schema_migrations (version, name) VALUES (1, 'init'); \
         {init} \
         INSERT INTO messages (id, idempotency_key, template, args, recipients, status, \
             reason, attempts, max_attempts, next_attempt_at, created_at, updated_at) \
         VALUES ('{keyed}', 'order-7', 'login_code', ARRAY['1'], ARRAY['+8613800138000'], \
                 'queued', 'vendor_failed', 1, 5, now(), now(), now()), \
                ('{keyless}', NULL, 'login_code', ARRAY['2'], ARRAY['+8613800138001'], \
                 'queued', 'rate_limited', 1, 5, now(), now(), now());",
        schema = guard.schema(),
        init = include_str!("../../migrations/postgres/0001_init.sql"),
    ))
    .unwrap();
    let store = PgStore::connect(pg_config(&guard)).await.unwrap();
    let client = store.pool().get().await.unwrap();
    assert_eq!(recorded_versions(&client).await, every_version());
    for (id, args) in [(keyed, ["1"]), (keyless, ["2"])] {
        let found = store.get(id).await.unwrap().unwrap();
        assert_eq!(found.request.args(), args);
        assert_eq!(found.status, MessageStatus::Queued);
    }
    // Keyless rows are out of the key's index, which is partial now.
    let definition: String = client
        .query_one(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index \
             WHERE indrelid = 'messages'::regclass AND indisunique \
             AND pg_get_indexdef(indexrelid) LIKE '%(idempotency_key)%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        definition.ends_with("WHERE (idempotency_key IS NOT NULL)"),
        "{definition}"
    );
    // The key is still unique, one by one and in batches: a message with it finds the
    // first. Keyless messages are all stored.
    let again = queued_request(keyed_request("order-7"), at(0), at(0));
    assert!(matches!(
        store.enqueue(again.clone()).await.unwrap(),
        Enqueued::Existing(m) if m.id == keyed
    ));
    let results = store
        .enqueue_many(vec![again, queued(at(0), at(0)), queued(at(0), at(0))])
        .await
        .unwrap();
    assert!(matches!(&results[0], Enqueued::Existing(m) if m.id == keyed));
    assert!(matches!(results[1], Enqueued::Created(_)));
    assert!(matches!(results[2], Enqueued::Created(_)));
    let key = sms_core::IdempotencyKey::new("order-7").unwrap();
    assert_eq!(
        store
            .find_by_idempotency_key(&key)
            .await
            .unwrap()
            .unwrap()
            .id,
        keyed
    );
}

/// A schema at version 2, as the previous build left it: its rows carry no pin, the
/// reason's CHECK accepts `recipient_refused` and still refuses unknown reasons, and a
/// failure can pin a message that was stored before.
#[tokio::test]
async fn a_version_2_schema_gains_the_pin_and_the_new_reason() {
    let guard = SchemaGuard::fresh();
    if !crate::support::postgres_reachable().await {
        return;
    }
    let (queued_id, dead_id) = (MessageId::new(), MessageId::new());
    crate::support::run_sql_blocking(&format!(
        "CREATE SCHEMA {schema}; SET search_path TO {schema}; \
         CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO schema_migrations (version, name) \
             VALUES (1, 'init'), (2, 'keyed_messages_index'); \
         {init} {keyed_index} \
         INSERT INTO messages (id, template, args, recipients, status, reason, attempts, \
             max_attempts, next_attempt_at, last_vendor, created_at, updated_at) \
         VALUES ('{queued_id}', 'login_code', ARRAY['1'], ARRAY['+8613800138000'], 'queued', \
                 'vendor_failed', 1, 5, now(), 'aliyun', now(), now()), \
                ('{dead_id}', 'login_code', ARRAY['2'], ARRAY['+8613800138001'], 'dead', \
                 'timed_out', 5, 5, now(), 'tencent', now(), now());",
        schema = guard.schema(),
        init = include_str!("../../migrations/postgres/0001_init.sql"),
        keyed_index = include_str!("../../migrations/postgres/0002_keyed_messages_index.sql"),
    ))
    .unwrap();
    let store = PgStore::connect(pg_config(&guard)).await.unwrap();
    let client = store.pool().get().await.unwrap();
    assert_eq!(recorded_versions(&client).await, every_version());
    for (id, reason) in [(queued_id, "vendor_failed"), (dead_id, "timed_out")] {
        let found = store.get(id).await.unwrap().unwrap();
        assert_eq!((found.reason.as_str(), found.pinned_vendor), (reason, None));
    }
    let set_reason = "UPDATE messages SET reason = $2 WHERE id = $1";
    client
        .execute(set_reason, &[dead_id.as_uuid(), &"recipient_refused"])
        .await
        .unwrap();
    let e = client
        .execute(set_reason, &[dead_id.as_uuid(), &"throttled"])
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
        "{e}"
    );
    let claimed = store.claim("a", chrono::Utc::now(), HANG, 1).await.unwrap();
    assert_eq!(claimed[0].id, queued_id);
    let token = claimed[0].lease.as_ref().unwrap().token;
    let failure = sms_core::AttemptFailure {
        vendor: Some(VendorId::new("aliyun").unwrap()),
        error: "per-number limit".to_owned(),
        may_duplicate: false,
        pinned: true,
    };
    let now = chrono::Utc::now();
    store
        .fail(queued_id, token, failure, now, now)
        .await
        .unwrap();
    let pinned = store.get(queued_id).await.unwrap().unwrap().pinned_vendor;
    assert_eq!(pinned, Some(VendorId::new("aliyun").unwrap()));
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused() {
    let Some((store, guard)) = pg_store().await else {
        return;
    };
    let client = store.pool().get().await.unwrap();
    client
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    match PgStore::connect(pg_config(&guard)).await {
        Err(Error::SchemaTooNew { found: 9999, .. }) => {}
        other => panic!("expected SchemaTooNew, found {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_url_is_a_configuration_error() {
    match PgStore::connect(PgConfig::with_url("postgres://h:notaport/db")).await {
        Err(Error::InvalidConfig { field: "url", .. }) => {}
        other => panic!("expected InvalidConfig for the url, found {other:?}"),
    }
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_not_a_panic() {
    let port = closed_port().await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let e = PgStore::connect(PgConfig::with_url(&url))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "expected unavailable, found {e}");

    // Without migrating on connect the store opens, and each operation says why it failed.
    let store = PgStore::connect(PgConfig {
        migrate_on_connect: false,
        ..PgConfig::with_url(&url)
    })
    .await
    .unwrap();
    match tokio::time::timeout(HANG, store.enqueue(queued(at(0), at(0)))).await {
        Ok(Err(StoreError::Unavailable(e))) => {
            // The message names the failure and its cause, not just "error connecting".
            let text = e.to_string();
            assert!(
                text.contains("connect") && text.contains("refused"),
                "{text}"
            );
        }
        other => panic!("expected Unavailable, found {other:?}"),
    }
    assert!(matches!(
        store.stats().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// A TCP proxy in front of the real server that a test can cut and restore: stopping it
/// closes its port and every connection through it, as a server crash does.
struct Proxy {
    port: u16,
    upstream: String,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let mut proxy = Self {
            port: 0,
            upstream,
            task: None,
        };
        proxy.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
        proxy
    }

    fn listen(&mut self, listener: TcpListener) {
        self.port = listener.local_addr().unwrap().port();
        let upstream = self.upstream.clone();
        self.task = Some(tokio::spawn(async move {
            // Owned by this task: aborting the task drops the set, which aborts every
            // forwarded connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restart(&mut self) {
        // Tokio listeners set SO_REUSEADDR, so the port is free again at once.
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.listen(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_the_server_comes_back() {
    let guard = SchemaGuard::fresh();
    let direct = pg_config(&guard);
    let pg: tokio_postgres::Config = direct.url.parse().unwrap();
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => {
            crate::support::skip_or_fail("the test server is not reached over TCP");
            return;
        }
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    // Skips (or fails under CI) when the real server is down.
    let Some(probe) = connect_or_skip(direct.clone()).await else {
        return;
    };
    drop(probe);

    let mut proxy = Proxy::start(format!("{host}:{port}")).await;
    let store = PgStore::connect(PgConfig {
        url: via_proxy(&pg, proxy.port),
        connect_timeout_ms: 1_000,
        wait_timeout_ms: 2_000,
        operation_timeout_ms: 5_000,
        ..direct.clone()
    })
    .await
    .unwrap();
    let before = queued(at(0), at(0));
    store.enqueue(before.clone()).await.unwrap();

    proxy.stop().await;
    for _ in 0..3 {
        match tokio::time::timeout(HANG, store.stats()).await {
            Ok(Err(StoreError::Unavailable(_))) => {}
            other => panic!("expected Unavailable while the server is down, found {other:?}"),
        }
    }

    proxy.restart().await;
    // The same pool, no restart: the first operation after the outage succeeds.
    let stats = tokio::time::timeout(HANG, store.stats())
        .await
        .expect("no hang after recovery")
        .expect("the pool reconnects by itself");
    assert_eq!(stats.get(MessageStatus::Queued), 1);
    assert!(store.get(before.id).await.unwrap().is_some());
}

/// Connection settings of `pg` with the proxy's address, as a key=value string.
fn via_proxy(pg: &tokio_postgres::Config, port: u16) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut settings = format!("host=127.0.0.1 port={port}");
    if let Some(user) = pg.get_user() {
        settings += &format!(" user={}", quote(user));
    }
    if let Some(password) = pg.get_password() {
        settings += &format!(" password={}", quote(&String::from_utf8_lossy(password)));
    }
    if let Some(dbname) = pg.get_dbname() {
        settings += &format!(" dbname={}", quote(dbname));
    }
    if let Some(name) = pg.get_application_name() {
        settings += &format!(" application_name={}", quote(name));
    }
    settings
}

#[tokio::test]
async fn backend_errors_carry_the_servers_message() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    let m = queued(at(0), at(0));
    store.enqueue(m.clone()).await.unwrap();
    match store.enqueue(m).await {
        Err(StoreError::Backend(e)) => {
            let text = e.to_string();
            assert!(text.contains("duplicate key"), "{text}");
            assert!(text.contains("messages_pkey"), "{text}");
        }
        other => panic!("expected a backend error, found {other:?}"),
    }
}

/// A failed batch says why, with the server's own message.
#[tokio::test]
async fn a_failed_batch_reports_the_servers_reason() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    let m = queued(at(0), at(0));
    store.enqueue(m.clone()).await.unwrap();
    let batch = vec![queued(at(1), at(1)), m, queued(at(1), at(1))];
    match store.enqueue_many(batch).await {
        Err(StoreError::Backend(e)) => {
            let text = e.to_string();
            assert!(text.contains("messages_pkey"), "{text}");
        }
        other => panic!("expected a backend error, found {other:?}"),
    }
    assert_eq!(store.stats().await.unwrap().queued, 1);
}

/// A batch of completions is one transaction: when one of its updates fails, the others
/// are rolled back and the whole call fails.
#[tokio::test]
async fn complete_many_writes_nothing_when_one_update_fails() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    for _ in 0..3 {
        store.enqueue(queued(at(0), at(0))).await.unwrap();
    }
    let claimed = store
        .claim("a", at(1), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    // An update the database refuses: a trigger stands in for any server-side error.
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(
            "CREATE FUNCTION refuse_vendor() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'refused vendor'; END $$; \
             CREATE TRIGGER refuse_vendor BEFORE UPDATE ON messages FOR EACH ROW \
             WHEN (NEW.last_vendor = 'refused') EXECUTE FUNCTION refuse_vendor();",
        )
        .await
        .unwrap();
    let completions: Vec<Completion> = claimed
        .iter()
        .zip(["aliyun", "refused", "tencent"])
        .map(|(m, v)| Completion {
            id: m.id,
            token: m.lease.as_ref().unwrap().token,
            vendor: VendorId::new(v).unwrap(),
            at: at(2),
        })
        .collect();
    match store.complete_many(&completions).await {
        Err(StoreError::Backend(e)) => assert!(e.to_string().contains("refused vendor"), "{e}"),
        other => panic!("expected a backend error, found {other:?}"),
    }
    for m in &claimed {
        assert_eq!(&store.get(m.id).await.unwrap().unwrap(), m, "rolled back");
    }
    client
        .batch_execute("DROP TRIGGER refuse_vendor ON messages")
        .await
        .unwrap();
    let results = store.complete_many(&completions).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(store.stats().await.unwrap().sent, 3);
}

/// Empty batches answer without a connection; others say the server is unreachable.
#[tokio::test]
async fn batches_on_an_unreachable_server() {
    let port = closed_port().await;
    let store = PgStore::connect(PgConfig {
        migrate_on_connect: false,
        ..PgConfig::with_url(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
    })
    .await
    .unwrap();
    assert!(store.enqueue_many(Vec::new()).await.unwrap().is_empty());
    assert!(store.complete_many(&[]).await.unwrap().is_empty());
    match tokio::time::timeout(HANG, store.enqueue_many(vec![queued(at(0), at(0))])).await {
        Ok(Err(StoreError::Unavailable(_))) => {}
        other => panic!("expected Unavailable, found {other:?}"),
    }
    let completion = Completion {
        id: MessageId::new(),
        token: LeaseToken::new(),
        vendor: VendorId::new("aliyun").unwrap(),
        at: at(0),
    };
    match tokio::time::timeout(HANG, store.complete_many(&[completion])).await {
        Ok(Err(StoreError::Unavailable(_))) => {}
        other => panic!("expected Unavailable, found {other:?}"),
    }
}
