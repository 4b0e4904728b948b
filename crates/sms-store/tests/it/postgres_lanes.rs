//! Lanes, schedules and clients on Postgres: the plans of the claim, of `next_due` and
//! of listing by client over a realistic table, and the migration that adds the
//! columns to a schema holding messages.

use sms_core::{ClientId, DeferredQueue, MessageId, MessageStatus, Priority};
use sms_store::postgres::PgStore;

use crate::support::{SchemaGuard, at, pg_config, pg_store};

/// A realistic table, analyzed: 100 000 messages at `at(0)` … `at(86_399)`, of which
/// 80 000 sent, 10 000 queued and 10 000 leased (a third of those high-priority), with
/// named and unnamed clients. Half the unsent ones are due at `at(43_200)`, thousands in
/// each lane.
async fn fill_a_realistic_table(store: &PgStore) {
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO messages (id, template, args, recipients, status, reason, attempts, \
                 max_attempts, next_attempt_at, lease_owner, lease_token, lease_expires_at, \
                 created_at, updated_at, client, priority) \
             SELECT gen_random_uuid(), 'login_code', ARRAY['1'], ARRAY['+8613800138000'], \
                 CASE i % 10 WHEN 0 THEN 'queued' WHEN 1 THEN 'leased' ELSE 'sent' END, \
                 'rate_limited', 1, 5, t, \
                 CASE WHEN i % 10 = 1 THEN 'drainer' END, \
                 CASE WHEN i % 10 = 1 THEN gen_random_uuid() END, \
                 CASE WHEN i % 10 = 1 THEN t END, \
                 t, t, \
                 CASE i % 7 WHEN 0 THEN 'shop' WHEN 1 THEN 'auth' END, \
                 CASE WHEN i % 3 = 0 THEN 'high' ELSE 'normal' END \
             FROM generate_series(1, 100000) AS i, \
                 LATERAL (SELECT '{t0}'::timestamptz + (i % 86400) * interval '1 second' AS t) \
                     AS times; \
             ANALYZE messages;",
            t0 = at(0).to_rfc3339(),
        ))
        .await
        .unwrap();
    let due: Vec<(String, i64)> = client
        .query(
            "SELECT priority, count(*) FROM messages \
             WHERE status IN ('queued', 'leased') AND due_at <= $1 GROUP BY priority \
             ORDER BY priority",
            &[&at(43_200)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        due.len() == 2 && due.iter().all(|(_, count)| *count > 2_000),
        "{due:?}"
    );
}

/// Each lane's pick of the claim walks its range of `messages_claim_by_lane` from the
/// oldest due row and stops at its limit: an index scan bounded by the lane and the
/// time, no sort, and the picked rows locked; the leasing update finds them by primary
/// key. With or without room kept for normal messages.
#[tokio::test]
async fn each_lane_of_the_claim_walks_the_lane_index_without_sorting() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    fill_a_realistic_table(&store).await;
    for normal_min in [0, 20] {
        let plan = store
            .explain_claim(at(43_200), 100, normal_min)
            .await
            .unwrap()
            .join("\n");
        assert_eq!(
            plan.matches("Index Scan using messages_claim_by_lane")
                .count(),
            2,
            "each lane walks the claim index:\n{plan}"
        );
        for lane in ["high", "normal"] {
            assert!(
                plan.contains(&format!(
                    "Index Cond: ((priority = '{lane}'::text) AND (due_at <="
                )),
                "the {lane} lane does not bound its index scan:\n{plan}"
            );
        }
        assert!(!plan.contains("Sort"), "plan sorts:\n{plan}");
        assert!(!plan.contains("Seq Scan"), "plan reads the table:\n{plan}");
        assert_eq!(
            plan.matches("LockRows").count(),
            2,
            "plan does not lock each lane's picked rows:\n{plan}"
        );
        assert!(
            plan.contains("Index Scan using messages_pkey"),
            "the update does not find the picked rows by key:\n{plan}"
        );
    }
}

/// `next_due` reads the first entry of each lane's range of `messages_claim_by_lane`.
#[tokio::test]
async fn next_due_reads_one_entry_of_each_lane() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    fill_a_realistic_table(&store).await;
    let plan = store.explain_next_due().await.unwrap().join("\n");
    assert_eq!(
        plan.matches("using messages_claim_by_lane").count(),
        2,
        "each lane reads the claim index:\n{plan}"
    );
    assert_eq!(plan.matches("Limit").count(), 2, "{plan}");
    assert!(!plan.contains("Sort"), "plan sorts:\n{plan}");
    assert!(!plan.contains("Seq Scan"), "plan reads the table:\n{plan}");
    let client = store.pool().get().await.unwrap();
    let earliest: Option<chrono::DateTime<chrono::Utc>> = client
        .query_one(
            "SELECT min(due_at) FROM messages WHERE status IN ('queued', 'leased')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(store.next_due().await.unwrap(), earliest);
    assert!(earliest.is_some());
}

/// Listing a client's messages of one status reads one range of
/// `messages_client_status_created` in its order.
#[tokio::test]
async fn listing_by_client_reads_one_range_of_its_index() {
    let Some((store, _guard)) = pg_store().await else {
        return;
    };
    fill_a_realistic_table(&store).await;
    let shop = ClientId::new("shop").unwrap();
    for status in [MessageStatus::Queued, MessageStatus::Sent] {
        let plan = store
            .explain_list_for_client(&shop, status, 50)
            .await
            .unwrap()
            .join("\n");
        assert!(
            plan.contains("Index Scan using messages_client_status_created"),
            "plan does not read the client index:\n{plan}"
        );
        assert!(!plan.contains("Sort"), "plan sorts:\n{plan}");
        let listed = store.list_for_client(&shop, status, 50).await.unwrap();
        assert_eq!(listed.len(), 50);
        assert!(
            listed
                .windows(2)
                .all(|w| (w[0].created_at, w[0].id) <= (w[1].created_at, w[1].id))
        );
    }
}

/// A schema at version 8, as the previous build left it, with messages in several
/// states: they read back as an unnamed client's, in the normal lane and unscheduled;
/// the claim index is replaced, the CHECKs accept `cancelled` and `scheduled` (and
/// still refuse what they do not know), and a stored message can be cancelled.
#[tokio::test]
async fn a_version_8_schema_gains_clients_lanes_and_schedules() {
    let guard = SchemaGuard::fresh();
    if !crate::support::postgres_reachable().await {
        return;
    }
    let (queued_id, leased_id, dead_id) = (MessageId::new(), MessageId::new(), MessageId::new());
    crate::support::run_sql_blocking(&format!(
        "CREATE SCHEMA {schema}; SET search_path TO {schema}; \
         CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO schema_migrations (version, name) VALUES (1, 'init'), \
             (2, 'keyed_messages_index'), (3, 'pinned_vendor'), (4, 'deliveries'), \
             (5, 'callbacks'), (6, 'resends'), (7, 'unsettled'), (8, 'billed_segments'); \
         {m1} {m2} {m3} {m4} {m5} {m6} {m7} {m8} \
         INSERT INTO messages (id, template, args, recipients, status, reason, attempts, \
             max_attempts, next_attempt_at, lease_owner, lease_token, lease_expires_at, \
             created_at, updated_at) \
         VALUES ('{queued_id}', 'login_code', ARRAY['1'], ARRAY['+8613800138000'], \
                 'queued', 'vendor_failed', 1, 5, '{t1}', NULL, NULL, NULL, '{t0}', '{t0}'), \
                ('{leased_id}', 'login_code', ARRAY['2'], ARRAY['+8613800138001'], \
                 'leased', 'accepted', 1, 5, '{t0}', 'api-1', gen_random_uuid(), '{t2}', \
                 '{t0}', '{t0}'), \
                ('{dead_id}', 'login_code', ARRAY['3'], ARRAY['+8613800138002'], \
                 'dead', 'timed_out', 5, 5, '{t0}', NULL, NULL, NULL, '{t0}', '{t0}');",
        schema = guard.schema(),
        t0 = at(0).to_rfc3339(),
        t1 = at(1).to_rfc3339(),
        t2 = at(2).to_rfc3339(),
        m1 = include_str!("../../migrations/postgres/0001_init.sql"),
        m2 = include_str!("../../migrations/postgres/0002_keyed_messages_index.sql"),
        m3 = include_str!("../../migrations/postgres/0003_pinned_vendor.sql"),
        m4 = include_str!("../../migrations/postgres/0004_deliveries.sql"),
        m5 = include_str!("../../migrations/postgres/0005_callbacks.sql"),
        m6 = include_str!("../../migrations/postgres/0006_resends.sql"),
        m7 = include_str!("../../migrations/postgres/0007_unsettled.sql"),
        m8 = include_str!("../../migrations/postgres/0008_billed_segments.sql"),
    ))
    .unwrap();
    let store = PgStore::connect(pg_config(&guard)).await.unwrap();
    for (id, status) in [
        (queued_id, MessageStatus::Queued),
        (leased_id, MessageStatus::Leased),
        (dead_id, MessageStatus::Dead),
    ] {
        let found = store.get(id).await.unwrap().unwrap();
        assert_eq!(found.status, status);
        let request = &found.request;
        assert_eq!(
            (request.client(), request.priority(), request.send_at()),
            (None, Priority::Normal, None)
        );
    }
    // The claim and `next_due` see the stored rows through the new index.
    assert_eq!(store.next_due().await.unwrap(), Some(at(1)));
    let cancelled = store.cancel(queued_id, at(3)).await.unwrap();
    assert_eq!(cancelled.status, MessageStatus::Cancelled);
    assert_eq!(store.next_due().await.unwrap(), Some(at(2)));
    let claimed = store
        .claim("a", at(10), std::time::Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|m| m.id).collect::<Vec<_>>(),
        [leased_id]
    );

    let client = store.pool().get().await.unwrap();
    let indexes: Vec<String> = client
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 \
             AND tablename = 'messages' ORDER BY indexname",
            &[&guard.schema()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        indexes,
        [
            "messages_claim_by_lane",
            "messages_client_status_created",
            "messages_idempotency_key",
            "messages_pkey",
            "messages_sent_updated",
            "messages_status_created",
        ]
    );
    let set = |column: &'static str| format!("UPDATE messages SET {column} = $2 WHERE id = $1");
    for (column, value, accepted) in [
        ("reason", "scheduled", true),
        ("reason", "later", false),
        ("priority", "high", true),
        ("priority", "urgent", false),
        ("status", "expired", true),
        ("status", "cancelled", true),
        ("status", "withdrawn", false),
    ] {
        let result = client
            .execute(set(column).as_str(), &[dead_id.as_uuid(), &value])
            .await;
        assert_eq!(result.is_ok(), accepted, "{column} = {value}: {result:?}");
    }
}
