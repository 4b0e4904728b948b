//! The delivery-log contract over both backends, and the plan of the Postgres query for
//! a vendor's unsettled sends.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sms_core::testing::delivery_contract::ContractLog;
use sms_core::{DeliveryLog, VendorId};
use sms_store::postgres::{PgConfig, PgStore};
use sms_store::sqlite::SqliteStore;

use crate::support::{SchemaGuard, pg_config, pg_store};

async fn sqlite_log() -> Option<ContractLog> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("gateway.db"))
        .await
        .unwrap();
    Some(ContractLog::new(Arc::new(store)).keeping(dir))
}

async fn postgres_log() -> Option<ContractLog> {
    let (store, guard) = pg_store().await?;
    Some(ContractLog::new(Arc::new(store)).keeping(guard))
}

mod over_sqlite {
    use super::*;
    sms_core::delivery_contract_tests!(sqlite_log);
}

mod over_postgres {
    use super::*;
    sms_core::delivery_contract_tests!(postgres_log);
}

/// With thousands of settled sends and a few hundred unsettled ones, the query for a
/// vendor's unsettled sends walks the partial index `deliveries_unsettled` from the
/// oldest in range and stops after `limit`: no scan of the settled rows, no sort. So
/// does the generic plan a connection's cached statement may settle on, which knows no
/// vendor or times.
#[tokio::test]
async fn unsettled_walks_the_partial_index_without_sorting() {
    let Some((store, guard)) = pg_store().await else {
        return;
    };
    // Three vendors; one send in ten without a receipt (a backlog of two hundred per
    // vendor, more than a batch), the rest settled; a few hundred receipts kept without
    // their send. Statistics as autovacuum would have gathered them.
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO deliveries (vendor, vendor_message_id, recipient, message_id, \
                                     sent_at, state, receipt_at) \
             SELECT (ARRAY['aliyun', 'tencent', 'cloopen'])[i % 3 + 1], 'biz-' || i, \
                    '+86138' || lpad(i::text, 8, '0'), gen_random_uuid(), \
                    now() - i * interval '1 second', \
                    CASE WHEN i % 10 = 0 THEN 'sent' \
                         WHEN i % 7 = 0 THEN 'undelivered' ELSE 'delivered' END, \
                    CASE WHEN i % 10 = 0 THEN NULL ELSE now() END \
             FROM generate_series(1, 6000) AS i; \
             INSERT INTO deliveries (vendor, vendor_message_id, recipient, state, receipt_at) \
             SELECT 'aliyun', 'kept-' || i, '+86139' || lpad(i::text, 8, '0'), 'delivered', \
                    now() \
             FROM generate_series(1, 300) AS i; \
             ANALYZE deliveries;",
        )
        .await
        .unwrap();
    drop(client);
    let aliyun = VendorId::new("aliyun").unwrap();
    let (after, before) = (Utc::now() - TimeDelta::hours(3), Utc::now());
    let custom = store
        .explain_unsettled(&aliyun, after, before, 50)
        .await
        .unwrap()
        .join("\n");
    let generic = generic_unsettled_plan(&guard, &aliyun, after, before).await;
    for (kind, plan) in [("custom", custom), ("generic", generic)] {
        assert!(
            plan.contains("Index Only Scan using deliveries_unsettled")
                || plan.contains("Index Scan using deliveries_unsettled"),
            "{kind} plan does not walk the unsettled index:\n{plan}"
        );
        assert!(
            !plan.contains("Sort"),
            "{kind} plan sorts instead of walking the index:\n{plan}"
        );
        // A generic plan leaves the parameters in: proof the setting took.
        assert_eq!(
            plan.contains("$1"),
            kind == "generic",
            "not a {kind} plan:\n{plan}"
        );
    }
    // The query itself: aliyun's unsettled sends are every thirtieth, the one furthest
    // back sent first, so the oldest fifty are the thirtieths from 200 down to 151.
    let pending = store.unsettled(&aliyun, after, before, 50).await.unwrap();
    let ids: Vec<&str> = pending
        .iter()
        .map(|p| p.vendor_message_id.as_str())
        .collect();
    let oldest: Vec<String> = (151..=200)
        .rev()
        .map(|k| format!("biz-{}", k * 30))
        .collect();
    assert_eq!(ids, oldest);
}

/// The generic plan of the statement `unsettled` runs, as each connection caches it:
/// a store of one connection that always plans generically runs the query, then the
/// statement it prepared on that connection is explained there.
async fn generic_unsettled_plan(
    guard: &SchemaGuard,
    vendor: &VendorId,
    after: DateTime<Utc>,
    before: DateTime<Utc>,
) -> String {
    // `pg_config` has put the application name in the URL's query already.
    let config = pg_config(guard);
    let url = if config.url.contains("://") {
        format!(
            "{}&options=-c%20plan_cache_mode%3Dforce_generic_plan",
            config.url
        )
    } else {
        format!(
            "{} options='-c plan_cache_mode=force_generic_plan'",
            config.url
        )
    };
    let store = PgStore::connect(PgConfig {
        url,
        pool_size: 1,
        migrate_on_connect: false,
        ..config
    })
    .await
    .unwrap();
    store.unsettled(vendor, after, before, 50).await.unwrap();
    let client = store.pool().get().await.unwrap();
    let name: String = client
        .query_one(
            "SELECT name FROM pg_prepared_statements \
             WHERE statement LIKE 'SELECT vendor_message_id, recipient, sent_at%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The arguments do not shape a generic plan.
    client
        .query(
            &format!("EXPLAIN EXECUTE {name}('aliyun', now(), now(), 50)"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}
