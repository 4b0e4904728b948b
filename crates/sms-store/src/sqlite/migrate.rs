//! Versioned schema migrations, embedded in the binary.
//!
//! Each migration is a SQL file under `migrations/sqlite/`, applied once, in version
//! order, and recorded in `schema_migrations`. A released migration is never edited:
//! changes go into a new file.

use rusqlite::{Connection, TransactionBehavior, params};

use super::error::sqlite_error;
use crate::Error;

/// Embedded migrations, oldest first; each is applied once and recorded in
/// `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "lighter_inserts",
        include_str!("../../migrations/sqlite/0002_lighter_inserts.sql"),
    ),
    (
        3,
        "checks_without_lists",
        include_str!("../../migrations/sqlite/0003_checks_without_lists.sql"),
    ),
    (
        4,
        "pinned_vendor",
        include_str!("../../migrations/sqlite/0004_pinned_vendor.sql"),
    ),
    (
        5,
        "deliveries",
        include_str!("../../migrations/sqlite/0005_deliveries.sql"),
    ),
    (
        6,
        "callbacks",
        include_str!("../../migrations/sqlite/0006_callbacks.sql"),
    ),
    (
        7,
        "resends",
        include_str!("../../migrations/sqlite/0007_resends.sql"),
    ),
    (
        8,
        "unsettled",
        include_str!("../../migrations/sqlite/0008_unsettled.sql"),
    ),
    (
        9,
        "billed_segments",
        include_str!("../../migrations/sqlite/0009_billed_segments.sql"),
    ),
    (
        10,
        "clients_lanes_schedules",
        include_str!("../../migrations/sqlite/0010_clients_lanes_schedules.sql"),
    ),
    (
        11,
        "blocklist_spend",
        include_str!("../../migrations/sqlite/0011_blocklist_spend.sql"),
    ),
    (
        12,
        "callback_kinds",
        include_str!("../../migrations/sqlite/0012_callback_kinds.sql"),
    ),
];

/// Applies the migrations the database lacks, in order, in one `BEGIN IMMEDIATE`
/// transaction (processes opening the file together migrate once). Returns the
/// versions applied now; refuses a database migrated by a newer build with
/// [`Error::SchemaTooNew`].
pub(super) fn apply(conn: &mut Connection) -> Result<Vec<i64>, Error> {
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use sms_core::{
        AttemptFailure, DeferredQueue, Enqueued, IdempotencyKey, MessageId, MessageStatus,
        NewMessage, Priority, QueueReason, Resend, SmsRequest, StoredMessage, VendorId,
    };

    use super::*;
    use crate::codec::stored_from_new;
    use crate::sqlite::SqliteStore;
    use crate::sqlite::queue::insert_or_find;
    use crate::sqlite::row::InsertRow;
    use crate::sqlite::statements::INSERT;

    /// The columns today's [`INSERT`] writes that the builds before migration 6 did not
    /// have: `callback_url` (migration 6), `resend_of` and `avoid_vendor` (migration 7),
    /// and [`LANE_COLUMNS`].
    const LATER_COLUMNS: usize = 3 + LANE_COLUMNS;

    /// The columns today's [`INSERT`] writes that the builds before migration 10 did
    /// not have: `client`, `priority` and `send_at`.
    const LANE_COLUMNS: usize = 3;

    /// [`INSERT`] without its last `later` columns and their parameters, as the builds
    /// before those columns ran it.
    fn insert_without_last(later: usize) -> String {
        let (head, rest) = INSERT.split_once(" VALUES (").unwrap();
        let (values, tail) = rest.split_once(')').unwrap();
        let (into, columns) = head.split_once('(').unwrap();
        let columns: Vec<&str> = columns.trim_end_matches(')').split(", ").collect();
        let values: Vec<&str> = values.split(", ").collect();
        assert_eq!(columns.len(), values.len(), "{INSERT}");
        let old = format!(
            "{into}({}) VALUES ({}){tail}",
            columns[..columns.len() - later].join(", "),
            values[..values.len() - later].join(", ")
        );
        for dropped in &columns[columns.len() - later..] {
            assert!(!old.contains(dropped), "{old}");
        }
        old
    }

    /// [`INSERT`] as the builds before migration 6 ran it, without the
    /// [`LATER_COLUMNS`].
    fn insert_before_callbacks() -> String {
        let old = insert_without_last(LATER_COLUMNS);
        assert!(
            ["callback_url", "resend_of", "avoid_vendor", "?19"]
                .iter()
                .all(|later| !old.contains(later)),
            "{old}"
        );
        old
    }

    /// Inserts `message` through `insert` (an [`insert_without_last`] of `later`),
    /// binding every parameter of today's insert but the last `later`.
    fn insert_as_before(insert: &mut rusqlite::Statement<'_>, message: &NewMessage, later: usize) {
        let stored = stored_from_new(message.clone());
        let row = InsertRow::new(&stored).unwrap();
        let params = row.params();
        insert.execute(&params[..params.len() - later]).unwrap();
    }

    /// Inserts `message` through [`insert_before_callbacks`].
    fn insert_as_before_callbacks(insert: &mut rusqlite::Statement<'_>, message: &NewMessage) {
        insert_as_before(insert, message, LATER_COLUMNS);
    }

    /// A database at `version`, as the build that migrated it that far left it.
    fn database_at(path: &std::path::Path, version: usize) -> Connection {
        let mut conn = Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, \
             name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        )
        .unwrap();
        for (version, name, sql) in &MIGRATIONS[..version] {
            tx.execute_batch(sql).unwrap();
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
                params![version, name],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        conn
    }

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
        assert!(apply(&mut conn).unwrap().is_empty());
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
                .prepare(
                    &insert_before_callbacks().replace(" WHERE idempotency_key IS NOT NULL", ""),
                )
                .unwrap();
            for message in [&keyed, &keyless] {
                insert_as_before_callbacks(&mut insert, message);
            }
        }
        let store = SqliteStore::open(&path).await.unwrap();
        for message in [&keyed, &keyless] {
            let found = store.get(message.id).await.unwrap().unwrap();
            assert_eq!(found.request, message.request);
            assert_eq!(found.status, MessageStatus::Queued);
            assert_eq!(
                found.next_attempt_at,
                stored_from_new(message.clone()).next_attempt_at
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

    /// A database migrated to version 3 by the previous build: migration 4 rebuilds the
    /// table with its rows, which carry no pin, and failures can pin them afterwards.
    #[tokio::test]
    async fn a_version_3_database_keeps_its_rows_and_gains_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.db");
        let messages: Vec<NewMessage> = [QueueReason::VendorFailed, QueueReason::TimedOut]
            .into_iter()
            .enumerate()
            .map(|(i, reason)| {
                let mut m = NewMessage::queued(
                    MessageId::new(),
                    SmsRequest::new("login", [i.to_string()], ["+8613800138000"]).unwrap(),
                    reason,
                    5,
                    Utc::now(),
                );
                m.last_vendor = Some(VendorId::new("aliyun").unwrap());
                m.last_error = Some("503".to_owned());
                m
            })
            .collect();
        {
            let conn = database_at(&path, 3);
            // Rows as the previous build wrote them: the insert names no pin, so it fits
            // the version 3 table.
            let mut insert = conn.prepare(&insert_before_callbacks()).unwrap();
            for message in &messages {
                insert_as_before_callbacks(&mut insert, message);
            }
        }
        let store = SqliteStore::open(&path).await.unwrap();
        for message in &messages {
            let found = store.get(message.id).await.unwrap().unwrap();
            assert_eq!(found, stored_from_new(message.clone()));
            assert_eq!(found.pinned_vendor, None);
        }
        let claimed = store
            .claim("a", Utc::now(), std::time::Duration::from_secs(30), 1)
            .await
            .unwrap();
        let failure = AttemptFailure {
            vendor: Some(VendorId::new("tencent").unwrap()),
            error: "per-number limit".to_owned(),
            may_duplicate: false,
            pinned: true,
        };
        let token = claimed[0].lease.as_ref().unwrap().token;
        store
            .fail(claimed[0].id, token, failure, Utc::now(), Utc::now())
            .await
            .unwrap();
        let pinned = store.get(claimed[0].id).await.unwrap().unwrap();
        assert_eq!(
            pinned.pinned_vendor,
            Some(VendorId::new("tencent").unwrap())
        );
        let versions: Vec<i64> = store
            .call(|c| {
                let mut s = c
                    .prepare("SELECT version FROM schema_migrations ORDER BY version")
                    .map_err(sqlite_error)?;
                s.query_map([], |r| r.get(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(sqlite_error)
            })
            .await
            .unwrap();
        let every_version: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).collect();
        assert_eq!(versions, every_version);
    }

    /// A database migrated to version 9 by the previous build: migration 10 rebuilds the
    /// table with every row and column it had (keys, callback URLs, re-sends, pins,
    /// leases), the rows read back as an unnamed client's, in the normal lane and
    /// unscheduled, and the indexes are the ones the table has today.
    #[tokio::test]
    async fn a_version_9_database_keeps_its_rows_and_gains_lanes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.db");
        let now = Utc::now();
        let keyed = NewMessage::queued(
            MessageId::new(),
            SmsRequest::new("login", ["1"], ["+8613800138000"])
                .unwrap()
                .with_idempotency_key(IdempotencyKey::new("order-7").unwrap())
                .with_callback_url(sms_core::CallbackUrl::new("https://example.com/cb").unwrap())
                .with_expiry(now + chrono::Duration::hours(1)),
            QueueReason::VendorFailed,
            5,
            now,
        );
        let resend = NewMessage::queued(
            MessageId::new(),
            SmsRequest::new("login", ["2"], ["+8613800138001"])
                .unwrap()
                .with_resend(Resend {
                    of: keyed.id,
                    avoid: VendorId::new("aliyun").unwrap(),
                }),
            QueueReason::Accepted,
            5,
            now,
        );
        let mut leased = NewMessage::queued(
            MessageId::new(),
            SmsRequest::new("login", ["3"], ["+8613800138002"]).unwrap(),
            QueueReason::Accepted,
            5,
            now,
        );
        leased.attempts = 1;
        leased.initial = sms_core::InitialState::Leased(sms_core::Lease {
            owner: "api-1".to_owned(),
            token: sms_core::LeaseToken::new(),
            expires_at: now + chrono::Duration::seconds(30),
        });
        let messages = [keyed, resend, leased];
        {
            let conn = database_at(&path, 9);
            let mut insert = conn.prepare(&insert_without_last(LANE_COLUMNS)).unwrap();
            for message in &messages {
                insert_as_before(&mut insert, message, LANE_COLUMNS);
            }
            conn.execute(
                "UPDATE messages SET pinned_vendor = 'tencent' WHERE id = ?1",
                [messages[0].id.to_string()],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        for message in &messages {
            let found = store.get(message.id).await.unwrap().unwrap();
            let pinned = (message.id == messages[0].id).then(|| VendorId::new("tencent").unwrap());
            assert_eq!(
                found,
                StoredMessage {
                    pinned_vendor: pinned,
                    ..stored_from_new(message.clone())
                }
            );
            assert_eq!(
                (
                    found.request.client(),
                    found.request.priority(),
                    found.request.send_at()
                ),
                (None, Priority::Normal, None)
            );
        }
        let again = NewMessage::queued(
            MessageId::new(),
            messages[0].request.clone(),
            QueueReason::Accepted,
            5,
            now,
        );
        assert!(matches!(
            store.enqueue(again).await.unwrap(),
            Enqueued::Existing(m) if m.id == messages[0].id
        ));
        assert_eq!(
            store.next_due().await.unwrap(),
            Some(stored_from_new(messages[0].clone()).next_attempt_at)
        );
        let (indexes, columns) = store
            .call(|c| {
                let names = |sql: &str| {
                    c.prepare(sql)
                        .and_then(|mut s| {
                            s.query_map([], |r| r.get::<_, String>(0))?
                                .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .map_err(sqlite_error)
                };
                Ok((
                    names(
                        "SELECT name FROM sqlite_schema WHERE type = 'index' \
                         AND tbl_name = 'messages' AND name NOT LIKE 'sqlite_%' ORDER BY name",
                    )?,
                    names("SELECT name FROM pragma_table_xinfo('messages') ORDER BY name")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(
            indexes,
            [
                "messages_claim_by_lane",
                "messages_client_status_created",
                "messages_idempotency_key",
                "messages_sent_updated",
                "messages_status_created",
            ]
        );
        let mut expected: Vec<&str> = crate::sqlite::statements::MESSAGE_COLUMNS
            .split(", ")
            .chain(["due_at"])
            .collect();
        expected.sort_unstable();
        assert_eq!(columns, expected);
    }

    /// Migration 7's columns are set together or not at all, and a row the CHECK lets
    /// through but the domain refuses (a bad vendor) reads back as an error naming the
    /// column.
    #[tokio::test]
    async fn resend_columns_are_set_together_and_read_back() {
        let store = SqliteStore::in_memory().await.unwrap();
        let message = stored_from_new(NewMessage::queued(
            MessageId::new(),
            SmsRequest::new("login", ["1"], ["+8613800138000"]).unwrap(),
            QueueReason::Accepted,
            5,
            Utc::now(),
        ));
        let (id, of) = (message.id, MessageId::new());
        let (id_text, of_text) = (id.to_string(), of.to_string());
        let refused = store
            .call(move |c| {
                insert_or_find(c, message)?;
                let set = |of: Option<&str>, avoid: Option<&str>| {
                    c.execute(
                        "UPDATE messages SET resend_of = ?2, avoid_vendor = ?3 WHERE id = ?1",
                        params![id_text, of, avoid],
                    )
                    .is_err()
                };
                let refused = [
                    set(Some(&of_text), None),
                    set(None, Some("aliyun")),
                    set(Some(&of_text), Some("aliyun")),
                ];
                Ok(refused)
            })
            .await
            .unwrap();
        assert_eq!(refused, [true, true, false]);
        let found = store.get(id).await.unwrap().unwrap();
        assert_eq!(
            found.request.resend(),
            Some(&Resend {
                of,
                avoid: VendorId::new("aliyun").unwrap()
            })
        );
        let id_text = id.to_string();
        store
            .call(move |c| {
                c.execute(
                    "UPDATE messages SET avoid_vendor = 'Aliyun' WHERE id = ?1",
                    params![id_text],
                )
                .map_err(sqlite_error)
            })
            .await
            .unwrap();
        let e = store.get(id).await.unwrap_err();
        assert!(e.to_string().contains("stored avoid_vendor"), "{e}");
    }

    /// Migrations 3 and 4 rewrote the CHECK constraints on `status` and `reason`: they
    /// still refuse what is not one of their values, and accept each that is.
    #[tokio::test]
    async fn status_and_reason_accept_their_values_only() {
        let store = SqliteStore::in_memory().await.unwrap();
        let message = stored_from_new(NewMessage::queued(
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
}
