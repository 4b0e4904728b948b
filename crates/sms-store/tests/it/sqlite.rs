//! The contract and the drain against SQLite files, plus what only SQLite has: the
//! JSON columns, the claim's plan, a second connection holding the write lock.

use std::sync::Arc;

use std::time::Duration;

use sms_core::testing::store_contract::ContractStore;
use sms_core::{
    BillingPeriod, Completion, DeferredQueue, MessageStatus, Priority, SmsRequest, StoreError,
    UsageLedger, VendorId,
};
use sms_store::sqlite::{SqliteConfig, SqliteStore};

use crate::support::{at, queued, queued_request};

async fn sqlite_store() -> Option<ContractStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("gateway.db"))
        .await
        .unwrap();
    Some(ContractStore::new(Arc::new(store)).keeping(dir))
}

sms_core::store_contract_tests!(sqlite_store);
sms_core::store_contract_atomic_batch_tests!(sqlite_store);

/// The in-memory database used by other crates' tests keeps the same contract.
mod in_memory {
    use super::*;

    async fn memory_sqlite_store() -> Option<ContractStore> {
        Some(ContractStore::new(Arc::new(
            SqliteStore::in_memory().await.unwrap(),
        )))
    }

    sms_core::store_contract_tests!(memory_sqlite_store);
    sms_core::store_contract_atomic_batch_tests!(memory_sqlite_store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_on_two_connections_drain_10_000_messages_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Two handles are two connections to one file, as two gateway processes would be.
    let config = SqliteConfig {
        sync_every_commit: false,
        ..SqliteConfig::with_path(dir.path().join("gateway.db"))
    };
    let first: Arc<dyn DeferredQueue> =
        Arc::new(SqliteStore::open_with(config.clone()).await.unwrap());
    let second: Arc<dyn DeferredQueue> = Arc::new(SqliteStore::open_with(config).await.unwrap());
    crate::drain::drain_exactly_once(&[first, second], 10_000).await;
}

/// Each lane's pick searches its range of `messages_claim_by_lane`, bounded by the
/// lane and the time, in the index's order: no temporary B-tree sorts it.
#[tokio::test]
async fn each_lane_of_the_claim_searches_the_lane_index_without_sorting() {
    let store = SqliteStore::in_memory().await.unwrap();
    for lane in Priority::ALL {
        let plan = store.explain_claim(lane).await.unwrap().join("\n");
        assert!(
            plan.contains(
                "SEARCH messages USING INDEX messages_claim_by_lane (priority=? AND due_at<?)"
            ),
            "plan does not search the claim index:\n{plan}"
        );
        assert!(
            !plan.contains("USE TEMP B-TREE FOR ORDER BY"),
            "plan sorts instead of walking the index:\n{plan}"
        );
    }
}

#[tokio::test]
async fn arguments_are_stored_as_json_arrays_not_joined_strings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let args = ["a###b", "x;y", ""];
    let request =
        SmsRequest::new("login_code", args, ["+8613800138000", "+8613900139000"]).unwrap();
    let m = queued_request(request, at(0), at(0));
    store.enqueue(m.clone()).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (stored_args, stored_recipients): (String, String) = conn
        .query_row(
            "SELECT args, recipients FROM messages WHERE id = ?1",
            [m.id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(stored_args, r#"["a###b","x;y",""]"#);
    assert_eq!(stored_recipients, r#"["+8613800138000","+8613900139000"]"#);
}

#[tokio::test]
async fn a_write_lock_held_too_long_is_unavailable_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let store = SqliteStore::open_with(SqliteConfig {
        busy_timeout_ms: 100,
        ..SqliteConfig::with_path(&path)
    })
    .await
    .unwrap();
    // Another process holds the write lock and does not let go.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    match store.enqueue(queued(at(0), at(0))).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while the file is locked, found {other:?}"),
    }
    other.execute_batch("ROLLBACK").unwrap();
    // Once the lock is gone the same store works again.
    store.enqueue(queued(at(0), at(0))).await.unwrap();
    assert_eq!(store.stats().await.unwrap().get(MessageStatus::Queued), 1);
}

/// Messages and billed volumes are durable: volumes kept only in memory would reset
/// every vendor to its most expensive fee tier at each restart.
#[tokio::test]
async fn messages_and_usage_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let m = queued(at(0), at(0));
    let aliyun = VendorId::new("aliyun").unwrap();
    let march = BillingPeriod::from_label("2026-03");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.enqueue(m.clone()).await.unwrap();
        store.add(&aliyun, &march, 120_000).await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let stored = store
        .get(m.id)
        .await
        .unwrap()
        .expect("kept across restarts");
    assert_eq!(stored.request, m.request);
    assert_eq!(store.totals(&march).await.unwrap()[&aliyun], 120_000);
    assert_eq!(store.add(&aliyun, &march, 1).await.unwrap(), 120_001);
}

/// A batch of completions is one transaction: when one of its updates fails, the others
/// are rolled back and the whole call fails.
#[tokio::test]
async fn complete_many_writes_nothing_when_one_update_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let store = SqliteStore::open(&path).await.unwrap();
    for _ in 0..3 {
        store.enqueue(queued(at(0), at(0))).await.unwrap();
    }
    let claimed = store
        .claim("a", at(1), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    // An update the database refuses: a trigger stands in for a disk or constraint error.
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER refuse_vendor BEFORE UPDATE ON messages \
             WHEN NEW.last_vendor = 'refused' BEGIN SELECT RAISE(ABORT, 'refused vendor'); END;",
        )
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
    other.execute_batch("DROP TRIGGER refuse_vendor").unwrap();
    let results = store.complete_many(&completions).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(store.stats().await.unwrap().sent, 3);
}

/// Empty batches answer at once without touching the database: here another process
/// holds the write lock, which any batch that began a transaction would wait for.
#[tokio::test]
async fn empty_batches_do_not_touch_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let store = SqliteStore::open_with(SqliteConfig {
        busy_timeout_ms: 100,
        ..SqliteConfig::with_path(&path)
    })
    .await
    .unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(store.enqueue_many(Vec::new()).await.unwrap().is_empty());
    assert!(store.complete_many(&[]).await.unwrap().is_empty());
    // A non-empty batch does wait for the lock, and says so.
    match store.enqueue_many(vec![queued(at(0), at(0))]).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while the file is locked, found {other:?}"),
    }
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(store.stats().await.unwrap(), Default::default());
}
