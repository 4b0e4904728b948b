//! The callback outbox's contract over both backends, and the plan of the Postgres
//! claim.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sms_core::CallbackOutbox;
use sms_core::testing::callback_contract::ContractOutbox;
use sms_store::sqlite::SqliteStore;

use crate::support::pg_store;

async fn sqlite_outbox() -> Option<ContractOutbox> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("gateway.db"))
        .await
        .unwrap();
    Some(ContractOutbox::new(Arc::new(store)).keeping(dir))
}

async fn postgres_outbox() -> Option<ContractOutbox> {
    let (store, guard) = pg_store().await?;
    Some(ContractOutbox::new(Arc::new(store)).keeping(guard))
}

mod over_sqlite {
    use super::*;
    sms_core::callback_contract_tests!(sqlite_outbox);
}

mod over_postgres {
    use super::*;
    sms_core::callback_contract_tests!(postgres_outbox);
}

/// With thousands of settled events and a few pending ones, the claim's pick walks the
/// partial index from the oldest due event and stops after `limit`: no scan of the
/// settled rows, no sort.
#[tokio::test]
async fn callback_claim_walks_the_partial_index_without_sorting() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    // A realistic outbox: thousands of settled events the claim must not wade through
    // and a backlog of pending ones larger than one claim, with statistics as
    // autovacuum would have gathered them.
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO callbacks (id, message_id, status, url, body, created_at, state, \
                                    attempts, due_at, last_error, settled_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), 'delivered', \
                    'https://app.example/sms-events', '{}', \
                    now() - i * interval '1 second', \
                    CASE WHEN i % 10 = 0 THEN 'pending' \
                         WHEN i % 7 = 0 THEN 'failed' ELSE 'delivered' END, \
                    1, now() - i * interval '1 second', NULL, \
                    CASE WHEN i % 10 = 0 THEN NULL ELSE now() END \
             FROM generate_series(1, 6000) AS i; \
             ANALYZE callbacks;",
        )
        .await
        .unwrap();
    drop(client);
    let plan = store
        .explain_callback_claim(Utc::now(), 100)
        .await
        .unwrap()
        .join("\n");
    assert!(
        plan.contains("Index Scan using callbacks_claim"),
        "plan does not walk the claim index:\n{plan}"
    );
    assert!(
        !plan.contains("Sort"),
        "plan sorts instead of walking the index:\n{plan}"
    );
    assert!(
        plan.contains("LockRows"),
        "plan does not lock the picked rows:\n{plan}"
    );
    // The claim itself takes the oldest due of the pending events, in order.
    let claimed = store
        .claim("a", Utc::now(), Duration::from_secs(30), 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 100);
    let created: Vec<_> = claimed.iter().map(|c| c.event.created_at).collect();
    assert!(created.is_sorted(), "claimed out of order");
}

/// The migrations of `backend` (`postgres` or `sqlite`) up to `version`, in order, as
/// one script: a database as an earlier build left it.
fn migrations_up_to(backend: &str, version: u32) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let number: u32 = name.split('_').next()?.parse().ok()?;
            (number <= version).then_some((number, p))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), version as usize, "{files:?}");
    files
        .iter()
        .map(|(_, p)| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The events of an outbox from before cancels and spend warnings: one pending, one
/// delivered. Each is `(id, message id, status, state)`.
fn events_before() -> [(uuid::Uuid, uuid::Uuid, &'static str, &'static str); 2] {
    [
        (
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            "queued",
            "pending",
        ),
        (
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            "delivered",
            "delivered",
        ),
    ]
}

/// A cancel and a spend warning, to be stored once the outbox is migrated.
fn new_kinds() -> Vec<sms_core::CallbackEvent> {
    let url = sms_core::CallbackUrl::new("https://ops.example/sms-events").unwrap();
    let now = Utc::now();
    vec![
        sms_core::StatusEvent::new(
            sms_core::MessageId::new(),
            sms_core::CallbackStatus::Cancelled,
            now,
        )
        .to_callback(&url, now),
        sms_core::SpendWarning::new("shop", "2026-05", "4.00".into(), "5.00".into(), 0.8, now)
            .to_callback(&url, now),
    ]
}

/// A SQLite outbox at version 11 keeps its events through the rebuild, pending and
/// settled, takes cancels and spend warnings after it, and still refuses an event of a
/// message without its message.
#[tokio::test]
async fn a_version_11_sqlite_outbox_keeps_its_events_and_takes_the_new_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let before = events_before();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, \
                 name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP); \
             {migrations} \
             INSERT INTO schema_migrations (version, name) VALUES (11, 'blocklist_spend');",
            migrations = migrations_up_to("sqlite", 11)
        ))
        .unwrap();
        for (id, message, status, state) in before {
            let settled = (state != "pending").then_some(1_i64);
            conn.execute(
                "INSERT INTO callbacks (id, message_id, status, url, body, created_at, \
                     state, attempts, due_at, settled_at) \
                 VALUES (?1, ?2, ?3, 'https://app.example/e', '{}', 1, ?4, 1, 1, ?5)",
                rusqlite::params![id.to_string(), message.to_string(), status, state, settled],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.pending, counts.delivered), (1, 1));
    let claimed = store
        .claim("a", Utc::now(), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event.id, before[0].0);
    assert_eq!(
        claimed[0].event.message_id.map(|m| *m.as_uuid()),
        Some(before[0].1)
    );
    store.enqueue(&new_kinds()).await.unwrap();
    assert_eq!(store.counts().await.unwrap().pending, 3);
    // Only a spend warning goes without a message.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let refused = conn.execute(
        "INSERT INTO callbacks (id, message_id, status, url, body, created_at, due_at) \
         VALUES ('x', NULL, 'sent', 'https://app.example/e', '{}', 1, 1)",
        [],
    );
    assert!(
        refused.is_err(),
        "a sent event without its message was stored"
    );
    let indexes: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'index' \
             AND tbl_name = 'callbacks' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(indexes, ["callbacks_claim", "callbacks_settled"]);
}

/// A Postgres outbox at version 10 keeps its events, takes cancels and spend warnings
/// after migrating, and still refuses an event of a message without its message.
#[tokio::test]
async fn a_version_10_postgres_outbox_keeps_its_events_and_takes_the_new_kinds() {
    let guard = crate::support::SchemaGuard::fresh();
    if !crate::support::postgres_reachable().await {
        return;
    }
    let before = events_before();
    let rows = before
        .iter()
        .map(|(id, message, status, state)| {
            let settled = if *state == "pending" { "NULL" } else { "now()" };
            format!(
                "('{id}', '{message}', '{status}', 'https://app.example/e', '{{}}', now(), \
                  '{state}', 1, now() - interval '1 minute', {settled})"
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    crate::support::run_sql_blocking(&format!(
        "CREATE SCHEMA {schema}; SET search_path TO {schema}; \
         CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
         {migrations} \
         INSERT INTO schema_migrations (version, name) \
             SELECT v, 'earlier' FROM generate_series(1, 10) AS v; \
         INSERT INTO callbacks (id, message_id, status, url, body, created_at, state, \
             attempts, due_at, settled_at) VALUES {rows};",
        schema = guard.schema(),
        migrations = migrations_up_to("postgres", 10),
    ))
    .unwrap();
    let store = sms_store::postgres::PgStore::connect(crate::support::pg_config(&guard))
        .await
        .unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.pending, counts.delivered), (1, 1));
    let claimed = store
        .claim("a", Utc::now(), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].event.message_id.map(|m| *m.as_uuid()),
        Some(before[0].1)
    );
    store.enqueue(&new_kinds()).await.unwrap();
    assert_eq!(store.counts().await.unwrap().pending, 3);
    let client = store.pool().get().await.unwrap();
    let e = client
        .execute(
            "INSERT INTO callbacks (id, message_id, status, url, body, created_at, due_at) \
             VALUES (gen_random_uuid(), NULL, 'sent', 'https://app.example/e', '{}', now(), \
                     now())",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
        "{e}"
    );
}
