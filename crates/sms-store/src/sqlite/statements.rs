//! The SQL of the SQLite store, one constant per statement, so the queries can be read
//! together and checked against the indexes of `migrations/sqlite/`.
//!
//! Parameters are numbered (`?1`); times are integer microseconds since the epoch and
//! lists JSON arrays (see [`super::row`]).

/// The columns of a message row, in the order [`MessageRow::read`] reads them.
///
/// [`MessageRow::read`]: super::row::MessageRow::read
macro_rules! message_columns {
    () => {
        "id, idempotency_key, template, args, recipients, expires_at, \
         status, reason, attempts, max_attempts, next_attempt_at, lease_owner, lease_token, \
         lease_expires_at, last_vendor, last_error, may_duplicate, pinned_vendor, created_at, \
         updated_at, callback_url, resend_of, avoid_vendor, client, priority, send_at"
    };
}

/// The guard every change of a leased message carries: the row must still be leased
/// under the caller's token.
macro_rules! leased_under_token {
    () => {
        " WHERE id = ?1 AND status = 'leased' AND lease_token = ?2"
    };
}

/// Clears the lease columns; the check constraint insists on it outside `leased`.
macro_rules! drop_lease {
    () => {
        "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
    };
}

/// The insert of a message; a conflicting idempotency key inserts nothing. Nothing is
/// returned: the answer is built from the message itself ([`stored_from_new`]).
/// `pinned_vendor` is left NULL: only a failed attempt pins a message.
///
/// [`stored_from_new`]: crate::codec::stored_from_new
pub(super) const INSERT: &str = "INSERT INTO messages (id, idempotency_key, template, args, recipients, \
     expires_at, status, reason, attempts, max_attempts, next_attempt_at, \
     lease_owner, lease_token, lease_expires_at, last_vendor, last_error, \
     may_duplicate, created_at, updated_at, callback_url, resend_of, avoid_vendor, \
     client, priority, send_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24) \
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING";

/// The columns of a message row, as [`MessageRow::read`] reads them.
///
/// [`MessageRow::read`]: super::row::MessageRow::read
#[cfg(test)]
pub(super) const MESSAGE_COLUMNS: &str = message_columns!();

pub(super) const SELECT_BY_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id = ?1"
);

pub(super) const SELECT_BY_KEY: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE idempotency_key = ?1"
);

/// The due messages of lane `?1` (`high` or `normal`) a claim takes at `?2`, oldest
/// due first, at most `?3`: the filter of the partial index `messages_claim_by_lane`
/// and its order after the lane, so SQLite searches the lane's range of the index from
/// its start and stops after `?3` entries. The index is named because without table
/// statistics SQLite may prefer `messages_status_created` for the `status IN (…)` term
/// and then sort every due row; the claim must not depend on whether `ANALYZE` ever ran.
pub(super) const CLAIM_PICK: &str = "SELECT id FROM messages INDEXED BY messages_claim_by_lane \
     WHERE status IN ('queued', 'leased') AND priority = ?1 AND due_at <= ?2 \
     ORDER BY due_at, id LIMIT ?3";

/// The first due time of one lane: the first entry of its range of
/// `messages_claim_by_lane`.
macro_rules! lane_first_due {
    ($priority:literal) => {
        concat!(
            "(SELECT due_at FROM messages INDEXED BY messages_claim_by_lane \
              WHERE status IN ('queued', 'leased') AND priority = '",
            $priority,
            "' ORDER BY due_at LIMIT 1)"
        )
    };
}

/// The earliest time a queued message falls due or a lease lapses: the earlier of the
/// two lanes' first due times, NULL when both are empty. The aggregate `min` skips a
/// lane with none (the two-argument `min` would answer NULL).
pub(super) const NEXT_DUE: &str = concat!(
    "SELECT min(first_due) FROM (SELECT ",
    lane_first_due!("high"),
    " AS first_due UNION ALL SELECT ",
    lane_first_due!("normal"),
    ")"
);

/// Cancels a queued message at `?2`. Only a queued message changes: a leased one is a
/// sender's, a final one is settled. As it leaves 'queued', its `due_at` becomes NULL
/// and it drops out of the claim's index.
pub(super) const CANCEL: &str = concat!(
    "UPDATE messages SET status = 'cancelled', updated_at = ?2 \
     WHERE id = ?1 AND status = 'queued' RETURNING ",
    message_columns!()
);

/// Leases one picked message under the claim's owner, token and expiry.
pub(super) const CLAIM_LEASE: &str = concat!(
    "UPDATE messages SET status = 'leased', attempts = attempts + 1, \
     lease_owner = ?2, lease_token = ?3, lease_expires_at = ?4, updated_at = ?5, \
     may_duplicate = (may_duplicate OR status = 'leased') \
     WHERE id = ?1 RETURNING ",
    message_columns!()
);

/// Marks a leased message sent, guarded by its lease token.
pub(super) const COMPLETE: &str = concat!(
    "UPDATE messages SET status = 'sent', last_vendor = ?3, updated_at = ?4, ",
    drop_lease!(),
    leased_under_token!()
);

/// Requeues a leased message after a failed attempt. `?8` is the failure's pin
/// ([`codec::pinned_vendor`]): NULL clears an earlier one.
///
/// [`codec::pinned_vendor`]: crate::codec::pinned_vendor
pub(super) const FAIL: &str = concat!(
    "UPDATE messages SET status = 'queued', last_vendor = COALESCE(?3, last_vendor), \
     last_error = ?4, may_duplicate = (may_duplicate OR ?5), next_attempt_at = ?6, \
     updated_at = ?7, pinned_vendor = ?8, ",
    drop_lease!(),
    leased_under_token!()
);

/// Marks a leased message dead; `?7` is the failure's pin, as in [`FAIL`].
pub(super) const DEAD: &str = concat!(
    "UPDATE messages SET status = 'dead', last_vendor = COALESCE(?3, last_vendor), \
     last_error = ?4, may_duplicate = (may_duplicate OR ?5), updated_at = ?6, \
     pinned_vendor = ?7, ",
    drop_lease!(),
    leased_under_token!()
);

pub(super) const EXPIRE: &str = concat!(
    "UPDATE messages SET status = 'expired', updated_at = ?3, ",
    drop_lease!(),
    leased_under_token!()
);

/// Requeues a leased message unattempted, due at `?3`, dated `?4`: the claim's attempt
/// is given back, the message was never tried. A release is this with `?3` = `?4`.
pub(super) const DEFER: &str = concat!(
    "UPDATE messages SET status = 'queued', attempts = max(attempts - 1, 0), \
     next_attempt_at = ?3, updated_at = ?4, ",
    drop_lease!(),
    leased_under_token!()
);

/// Moves a leased message's lease end to `?3`, guarded by its lease token; answers the
/// owner, so the caller can hand back the whole lease.
pub(super) const RENEW: &str = concat!(
    "UPDATE messages SET lease_expires_at = ?3, updated_at = ?4",
    leased_under_token!(),
    " RETURNING lease_owner"
);

/// The recipients (a JSON list) of a message leased under the caller's token: what
/// [`NARROW`] narrows, read in the same transaction.
pub(super) const LEASED_RECIPIENTS: &str =
    concat!("SELECT recipients FROM messages", leased_under_token!());

/// Writes a leased message's narrowed recipients `?3` (a JSON list), dated `?4`,
/// guarded by its lease token; nothing else about the message changes.
pub(super) const NARROW: &str = concat!(
    "UPDATE messages SET recipients = ?3, updated_at = ?4",
    leased_under_token!()
);

/// An operator's retry starts afresh: new attempts and no pin (the refusal that pinned
/// the message belongs to the attempts it ran out of).
pub(super) const RETRY: &str = concat!(
    "UPDATE messages SET status = 'queued', attempts = 0, reason = 'manual_retry', \
     pinned_vendor = NULL, next_attempt_at = ?2, updated_at = ?2 \
     WHERE id = ?1 AND status IN ('dead', 'expired') RETURNING ",
    message_columns!()
);

pub(super) const STATUS_OF: &str = "SELECT status FROM messages WHERE id = ?1";

pub(super) const LIST: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE status = ?1 ORDER BY created_at, id LIMIT ?2"
);

/// The messages of client `?1` in status `?2`, oldest first, at most `?3`: one range
/// of the partial index `messages_client_status_created`, in its order.
pub(super) const LIST_FOR_CLIENT: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE client = ?1 AND status = ?2 ORDER BY created_at, id LIMIT ?3"
);

pub(super) const STATS: &str = "SELECT status, count(*) FROM messages GROUP BY status";

pub(super) const PURGE_SENT: &str = "DELETE FROM messages WHERE id IN ( \
     SELECT id FROM messages WHERE status = 'sent' AND updated_at < ?1 \
     ORDER BY updated_at, id LIMIT ?2)";

pub(super) const USAGE_ADD: &str = "INSERT INTO usage (vendor, period, billed) VALUES (?1, ?2, ?3) \
     ON CONFLICT (vendor, period) DO UPDATE SET billed = billed + excluded.billed \
     RETURNING billed";

pub(super) const USAGE_TOTALS: &str = "SELECT vendor, billed FROM usage WHERE period = ?1";

/// Records a send for one recipient; fills in a row a receipt made first, and leaves a
/// recorded send as it is. Returns the row it wrote: with a receipt (`receipt_at` set)
/// when a kept receipt was waiting for this send.
pub(super) const DELIVERY_SENT: &str = "INSERT INTO deliveries \
     (vendor, vendor_message_id, recipient, message_id, sent_at, callback_url, \
      billed_segments) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (vendor, vendor_message_id, recipient) DO UPDATE \
     SET message_id = excluded.message_id, sent_at = excluded.sent_at, \
         callback_url = excluded.callback_url, billed_segments = excluded.billed_segments \
     WHERE deliveries.message_id IS NULL \
     RETURNING receipt_at, state, code, description, reported_at, segments";

/// Applies a receipt to a row no receipt has settled, making the row if there is none.
/// Returns the recorded send it settled: when it was accepted (NULL: not recorded yet),
/// its message and its callback URL; no row back means the row was settled already.
pub(super) const DELIVERY_RECEIPT: &str = "INSERT INTO deliveries \
     (vendor, vendor_message_id, recipient, state, code, description, reported_at, \
      receipt_at, segments) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (vendor, vendor_message_id, recipient) DO UPDATE \
     SET state = excluded.state, code = excluded.code, description = excluded.description, \
         reported_at = excluded.reported_at, receipt_at = excluded.receipt_at, \
         segments = excluded.segments \
     WHERE deliveries.receipt_at IS NULL \
     RETURNING sent_at, message_id, callback_url, billed_segments";

/// A message's recipients, oldest send first.
pub(super) const DELIVERIES_OF: &str = "SELECT recipient, vendor, vendor_message_id, state, \
     code, description, sent_at, reported_at, receipt_at, segments FROM deliveries \
     WHERE message_id = ?1 ORDER BY sent_at, recipient";

/// The sends to one number since a time, newest first: the columns of
/// [`DELIVERIES_OF`], then the message.
pub(super) const DELIVERIES_TO: &str = "SELECT recipient, vendor, vendor_message_id, state, \
     code, description, sent_at, reported_at, receipt_at, segments, message_id \
     FROM deliveries WHERE recipient = ?1 AND message_id IS NOT NULL AND sent_at >= ?2 \
     ORDER BY sent_at DESC LIMIT ?3";

/// The sends to vendor `?1` still without a receipt, accepted after `?2` and before
/// `?3`, oldest first, at most `?4`. Its filter is the predicate of the partial index
/// `deliveries_unsettled` and its order the index's key after the vendor, so SQLite
/// searches the vendor's range of the index and stops after `?4` entries, reading no
/// settled row and sorting nothing.
pub(super) const UNSETTLED: &str = "SELECT vendor_message_id, recipient, sent_at \
     FROM deliveries \
     WHERE vendor = ?1 AND state = 'sent' AND message_id IS NOT NULL \
       AND sent_at > ?2 AND sent_at < ?3 \
     ORDER BY sent_at, vendor_message_id, recipient LIMIT ?4";

/// Deletes up to a number of recorded sends older than a time.
pub(super) const PURGE_DELIVERIES_SENT: &str = "DELETE FROM deliveries \
     WHERE (vendor, vendor_message_id, recipient) IN (SELECT vendor, vendor_message_id, \
     recipient FROM deliveries WHERE message_id IS NOT NULL AND sent_at < ?1 LIMIT ?2)";

/// Deletes up to a number of kept receipts, received before a time, that never found
/// their send.
pub(super) const PURGE_DELIVERIES_UNMATCHED: &str = "DELETE FROM deliveries \
     WHERE (vendor, vendor_message_id, recipient) IN (SELECT vendor, vendor_message_id, \
     recipient FROM deliveries WHERE message_id IS NULL AND receipt_at < ?1 LIMIT ?2)";

/// Stores a callback event, due at its creation; an id stored already keeps its row.
pub(super) const CALLBACK_INSERT: &str = "INSERT INTO callbacks \
     (id, message_id, status, url, body, created_at, due_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
     ON CONFLICT (id) DO NOTHING";

/// The pending events due at `?1` a claim takes, oldest due first: the filter and order
/// of the partial index `callbacks_claim`, so SQLite reads the index from its start and
/// stops after `?2` entries. The index is named, as the message claim's is, so the plan
/// does not depend on whether `ANALYZE` ever ran.
pub(super) const CALLBACK_PICK: &str = "SELECT id FROM callbacks INDEXED BY callbacks_claim \
     WHERE state = 'pending' AND due_at <= ?1 \
     ORDER BY due_at, id LIMIT ?2";

/// Claims one picked event: one more attempt, due again when the lease `?2` ends, held
/// by owner `?3` under token `?4`. Answers the event and its attempts.
pub(super) const CALLBACK_LEASE: &str = "UPDATE callbacks \
     SET attempts = attempts + 1, due_at = ?2, lease_owner = ?3, lease_token = ?4 \
     WHERE id = ?1 \
     RETURNING id, message_id, status, url, body, created_at, attempts";

/// The guard of every settle: the event is pending and still claimed under the
/// caller's token (a lapsed lease claimed again has another).
macro_rules! claimed_under_token {
    () => {
        " WHERE id = ?1 AND state = 'pending' AND lease_token = ?2"
    };
}

/// The endpoint took the event: settled at `?3`, never claimed again.
pub(super) const CALLBACK_DELIVERED: &str = concat!(
    "UPDATE callbacks SET state = 'delivered', settled_at = ?3, \
     lease_owner = NULL, lease_token = NULL",
    claimed_under_token!()
);

/// The attempt failed: pending again, due at `?3`, with the error `?4`.
pub(super) const CALLBACK_RETRY: &str = concat!(
    "UPDATE callbacks SET due_at = ?3, last_error = ?4, lease_owner = NULL, lease_token = NULL",
    claimed_under_token!()
);

/// The attempt failed for good: settled at `?3` with the error `?4`.
pub(super) const CALLBACK_FAILED: &str = concat!(
    "UPDATE callbacks SET state = 'failed', settled_at = ?3, last_error = ?4, \
     lease_owner = NULL, lease_token = NULL",
    claimed_under_token!()
);

pub(super) const CALLBACK_COUNTS: &str = "SELECT state, count(*) FROM callbacks GROUP BY state";

/// Deletes up to `?2` settled events made before `?1`, oldest first, along the partial
/// index `callbacks_settled`.
pub(super) const CALLBACK_PURGE: &str = "DELETE FROM callbacks WHERE id IN ( \
     SELECT id FROM callbacks WHERE state <> 'pending' AND created_at < ?1 \
     ORDER BY created_at LIMIT ?2)";

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::sqlite::error::sqlite_error;

    /// Statements that write a message or a callback event build no temporary B-tree:
    /// SQLite builds one at every execution for an `IN` list of more than two constants
    /// in a CHECK constraint, so the schema's checks avoid such lists.
    #[tokio::test]
    async fn writing_a_message_builds_no_temporary_b_tree() {
        let store = SqliteStore::in_memory().await.unwrap();
        let statements = [
            INSERT,
            COMPLETE,
            NARROW,
            CALLBACK_INSERT,
            CALLBACK_DELIVERED,
            CALLBACK_FAILED,
            "UPDATE messages SET status = 'queued', reason = 'manual_retry', attempts = 0 \
             WHERE id = ?1",
            // [`CANCEL`]'s change without its RETURNING, which SQLite buffers in a
            // temporary table of its own.
            "UPDATE messages SET status = 'cancelled', updated_at = ?2 \
             WHERE id = ?1 AND status = 'queued'",
        ];
        let temporary = store
            .call(move |c| {
                let mut found = Vec::new();
                for sql in statements {
                    // Built from the statement constants above only.
                    let mut explain = c
                        .prepare(&["EXPLAIN ", sql].concat())
                        .map_err(sqlite_error)?;
                    // Unbound parameters are NULL: the program is the same.
                    let mut rows = explain.raw_query();
                    while let Some(row) = rows.next().map_err(sqlite_error)? {
                        let opcode: String = row.get(1).map_err(sqlite_error)?;
                        if opcode == "OpenEphemeral" {
                            found.push(sql);
                        }
                    }
                }
                Ok(found)
            })
            .await
            .unwrap();
        assert!(temporary.is_empty(), "{temporary:#?}");
    }

    /// [`UNSETTLED`] searches the vendor's range of `deliveries_unsettled`, which holds
    /// no settled row, in the index's order: no temporary B-tree sorts it.
    #[tokio::test]
    async fn unsettled_searches_its_partial_index_without_sorting() {
        let store = SqliteStore::in_memory().await.unwrap();
        let plan = store
            .call(|c| {
                c.prepare(&["EXPLAIN QUERY PLAN ", UNSETTLED].concat())
                    .and_then(|mut s| {
                        s.query_map(params!["aliyun", 0_i64, 1_i64, 50_i64], |r| {
                            r.get::<_, String>("detail")
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(sqlite_error)
            })
            .await
            .unwrap()
            .join("\n");
        assert!(
            plan.contains(
                "USING INDEX deliveries_unsettled (vendor=? AND sent_at>? AND sent_at<?)"
            ),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// The plan details of `sql` with `params`.
    async fn plan_of(
        store: &SqliteStore,
        sql: &'static str,
        params: Vec<rusqlite::types::Value>,
    ) -> String {
        store
            .call(move |c| {
                c.prepare(&["EXPLAIN QUERY PLAN ", sql].concat())
                    .and_then(|mut s| {
                        s.query_map(rusqlite::params_from_iter(params), |r| {
                            r.get::<_, String>("detail")
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(sqlite_error)
            })
            .await
            .unwrap()
            .join("\n")
    }

    /// Fills the table with 20 000 messages (a tenth queued, in both lanes, and some
    /// of named clients) and analyzes it, so the planner chooses by real statistics.
    async fn fill_and_analyze(store: &SqliteStore) {
        store
            .call(|c| {
                c.execute_batch(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
                     INSERT INTO messages (id, template, args, recipients, status, reason, \
                         attempts, max_attempts, next_attempt_at, created_at, updated_at, \
                         client, priority) \
                     SELECT printf('%036d', i), 'login_code', '[\"1\"]', '[\"+8613800138000\"]', \
                         CASE WHEN i % 10 = 0 THEN 'queued' ELSE 'sent' END, 'rate_limited', \
                         1, 5, i, i, i, \
                         CASE i % 7 WHEN 0 THEN 'shop' WHEN 1 THEN 'auth' END, \
                         CASE WHEN i % 3 = 0 THEN 'high' ELSE 'normal' END \
                     FROM n; \
                     ANALYZE;",
                )
                .map_err(sqlite_error)
            })
            .await
            .unwrap();
    }

    /// [`NEXT_DUE`] reads the first entry of each lane's range of
    /// `messages_claim_by_lane`, sorting nothing.
    #[tokio::test]
    async fn next_due_reads_the_first_entry_of_each_lane() {
        let store = SqliteStore::in_memory().await.unwrap();
        fill_and_analyze(&store).await;
        let plan = plan_of(&store, NEXT_DUE, vec![]).await;
        assert_eq!(
            plan.matches("USING INDEX messages_claim_by_lane (priority=?)")
                .count(),
            2,
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// [`LIST_FOR_CLIENT`] searches one range of `messages_client_status_created` in
    /// its order, with and without table statistics.
    #[tokio::test]
    async fn listing_by_client_searches_its_partial_index_without_sorting() {
        let store = SqliteStore::in_memory().await.unwrap();
        for analyzed in [false, true] {
            if analyzed {
                fill_and_analyze(&store).await;
            }
            let plan = plan_of(
                &store,
                LIST_FOR_CLIENT,
                vec![
                    "shop".to_owned().into(),
                    "queued".to_owned().into(),
                    50_i64.into(),
                ],
            )
            .await;
            assert!(
                plan.contains("USING INDEX messages_client_status_created (client=? AND status=?)"),
                "analyzed: {analyzed}\n{plan}"
            );
            assert!(
                !plan.contains("TEMP B-TREE"),
                "analyzed: {analyzed}\n{plan}"
            );
        }
    }

    /// Each lane's [`CLAIM_PICK`] searches its range of `messages_claim_by_lane` in the
    /// index's order, on a table with statistics too.
    #[tokio::test]
    async fn each_lane_of_the_claim_searches_its_range_without_sorting() {
        let store = SqliteStore::in_memory().await.unwrap();
        fill_and_analyze(&store).await;
        for lane in ["high", "normal"] {
            let plan = plan_of(
                &store,
                CLAIM_PICK,
                vec![lane.to_owned().into(), 10_000_i64.into(), 100_i64.into()],
            )
            .await;
            assert!(
                plan.contains(
                    "SEARCH messages USING INDEX messages_claim_by_lane (priority=? AND due_at<?)"
                ),
                "{lane}: {plan}"
            );
            assert!(
                !plan.contains("USE TEMP B-TREE FOR ORDER BY"),
                "{lane}: {plan}"
            );
        }
    }
}
