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
