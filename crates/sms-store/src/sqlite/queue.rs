//! The deferred queue in SQLite: [`DeferredQueue`] for [`SqliteStore`].
//!
//! Claims, inserts and batches run in `BEGIN IMMEDIATE` transactions, which take the
//! write lock up front, so another process sharing the file waits (up to the busy
//! timeout) instead of failing half-way. A batch (`enqueue_many`, `complete_many`) is
//! one blocking call and one transaction: one commit, one sync of the log.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sms_core::{
    AttemptFailure, ClientId, Completion, DeferredQueue, Enqueued, IdempotencyKey, Lease,
    LeaseToken, MessageId, MessageStatus, NewMessage, PhoneNumber, Priority, QueueStats,
    StoreError, StoredMessage, VendorId,
};

use super::SqliteStore;
use super::error::sqlite_error;
use super::row::{InsertRow, MessageRow, json_list, micros, time, to_json};
use super::statements::{
    CANCEL, CLAIM_LEASE, CLAIM_PICK, COMPLETE, DEAD, DEFER, EXPIRE, FAIL, INSERT,
    LEASED_RECIPIENTS, LIST, LIST_FOR_CLIENT, NARROW, NEXT_DUE, PURGE_SENT, RENEW, RETRY,
    SELECT_BY_ID, SELECT_BY_KEY, STATS, STATUS_OF,
};
use crate::codec;

/// Largest batch `purge_sent` deletes in one transaction, so a big purge does not hold
/// the write lock (and stall claims and inserts) for long.
const PURGE_BATCH: u32 = 500;

#[async_trait]
impl DeferredQueue for SqliteStore {
    async fn enqueue(&self, new: NewMessage) -> Result<Enqueued, StoreError> {
        let message = codec::stored_from_new(new);
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let outcome = insert_or_find(&tx, message)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(outcome)
        })
        .await
    }

    /// One blocking call and one `BEGIN IMMEDIATE` transaction: each message is inserted
    /// (or found by its key) in order, so a repeated key finds the row its first
    /// message inserted; any error rolls the whole batch back.
    async fn enqueue_many(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let messages: Vec<StoredMessage> =
            messages.into_iter().map(codec::stored_from_new).collect();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let outcomes = messages
                .into_iter()
                .map(|message| insert_or_find(&tx, message))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().map_err(sqlite_error)?;
            Ok(outcomes)
        })
        .await
    }

    /// A claim with no room kept for normal messages.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.claim_lanes(owner, now, lease_for, limit, 0).await
    }

    /// One `BEGIN IMMEDIATE` transaction: `CLAIM_PICK` of up to `limit - normal_min`
    /// high-priority messages, then of normal ones up to `limit`, and each picked
    /// message leased in that order.
    async fn claim_lanes(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
        normal_min: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let expires_at = micros(now + codec::lease_duration(lease_for)?);
        let now = micros(now);
        let owner = owner.to_owned();
        let token = LeaseToken::new().0.to_string();
        self.call(move |conn| {
            // The picks and the leasing happen under one write lock, so no other
            // connection can claim the same rows in between.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let mut claimed = Vec::new();
            {
                let mut pick = tx.prepare_cached(CLAIM_PICK).map_err(sqlite_error)?;
                let mut ids = Vec::new();
                // Each lane's limit counts what the high lane took: at most
                // `limit - normal_min` high-priority messages, normal ones up to `limit`.
                let high_limit = limit.saturating_sub(normal_min);
                for (priority, lane_limit) in
                    [(Priority::High, high_limit), (Priority::Normal, limit)]
                {
                    let left = i64::from(lane_limit) - ids.len() as i64;
                    if left <= 0 {
                        continue;
                    }
                    let lane = pick
                        .query_map(params![priority.as_str(), now, left], |r| {
                            r.get::<_, String>(0)
                        })
                        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                        .map_err(sqlite_error)?;
                    ids.extend(lane);
                }
                let mut lease = tx.prepare_cached(CLAIM_LEASE).map_err(sqlite_error)?;
                for id in ids {
                    let row = lease
                        .query_row(params![id, owner, token, expires_at, now], MessageRow::read)
                        .map_err(sqlite_error)?;
                    claimed.push(row.into_message()?);
                }
            }
            tx.commit().map_err(sqlite_error)?;
            Ok(claimed)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.call(|conn| {
            let first_due: Option<i64> = conn
                .prepare_cached(NEXT_DUE)
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(sqlite_error)?;
            first_due.map(|t| time("due_at", t)).transpose()
        })
        .await
    }

    /// One guarded statement, `CANCEL`; when it changes nothing, the message's
    /// status tells why.
    async fn cancel(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        self.call(move |conn| change_status(conn, CANCEL, id, now, "queued"))
            .await
    }

    async fn complete(
        &self,
        id: MessageId,
        token: LeaseToken,
        vendor: &VendorId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let vendor = vendor.as_str().to_owned();
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(COMPLETE)?
                .execute(params![id, token, vendor, micros(now)])
        })
        .await
    }

    /// One blocking call and one `BEGIN IMMEDIATE` transaction: each guarded update runs
    /// in order, a refused one is told `NotFound` or `LeaseLost` as `complete` tells it,
    /// and a database error rolls the whole batch back.
    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<(MessageId, String, String, String, i64)> = completions
            .iter()
            .map(|c| {
                (
                    c.id,
                    c.id.to_string(),
                    c.token.0.to_string(),
                    c.vendor.as_str().to_owned(),
                    micros(c.at),
                )
            })
            .collect();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let mut results = Vec::with_capacity(items.len());
            {
                let mut complete = tx.prepare_cached(COMPLETE).map_err(sqlite_error)?;
                for (id, id_text, token, vendor, at) in &items {
                    let changed = complete
                        .execute(params![id_text, token, vendor, at])
                        .map_err(sqlite_error)?;
                    results.push(if changed == 1 {
                        Ok(())
                    } else if current_status(&tx, id_text)?.is_none() {
                        Err(StoreError::NotFound(*id))
                    } else {
                        Err(StoreError::LeaseLost(*id))
                    });
                }
            }
            tx.commit().map_err(sqlite_error)?;
            Ok(results)
        })
        .await
    }

    async fn fail(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(FAIL)?.execute(params![
                id,
                token,
                failure.vendor.as_ref().map(VendorId::as_str),
                failure.error,
                failure.may_duplicate,
                micros(next_attempt_at),
                micros(now),
                codec::pinned_vendor(&failure),
            ])
        })
        .await
    }

    async fn dead(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(DEAD)?.execute(params![
                id,
                token,
                failure.vendor.as_ref().map(VendorId::as_str),
                failure.error,
                failure.may_duplicate,
                micros(now),
                codec::pinned_vendor(&failure),
            ])
        })
        .await
    }

    async fn expire(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(EXPIRE)?
                .execute(params![id, token, micros(now)])
        })
        .await
    }

    /// A release is a deferral due now: one statement, `DEFER`.
    async fn release(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.defer(id, token, now, now).await
    }

    async fn defer(
        &self,
        id: MessageId,
        token: LeaseToken,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, token, move |conn, id, token| {
            conn.prepare_cached(DEFER)?
                .execute(params![id, token, micros(due_at), micros(now)])
        })
        .await
    }

    /// One `BEGIN IMMEDIATE` transaction: the recipients are read under the token's
    /// guard, narrowed here (SQLite has no arrays; they are stored as a JSON list) and
    /// written back under the same guard, so nothing changes them in between. A
    /// narrowing that would leave nobody writes nothing.
    async fn narrow(
        &self,
        id: MessageId,
        token: LeaseToken,
        sent: &[PhoneNumber],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sent: Vec<String> = sent.iter().map(|r| r.as_str().to_owned()).collect();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let id_text = id.to_string();
            let token_text = token.0.to_string();
            let stored: Option<String> = tx
                .prepare_cached(LEASED_RECIPIENTS)
                .and_then(|mut s| {
                    s.query_row(params![id_text, token_text], |r| r.get(0))
                        .optional()
                })
                .map_err(sqlite_error)?;
            let Some(stored) = stored else {
                return match current_status(&tx, &id_text)? {
                    None => Err(StoreError::NotFound(id)),
                    Some(_) => Err(StoreError::LeaseLost(id)),
                };
            };
            let mut recipients = json_list("recipients", &stored)?;
            recipients.retain(|r| !sent.contains(r));
            if recipients.is_empty() {
                return Err(codec::nobody_left(id));
            }
            let recipients = to_json(&recipients)?;
            tx.prepare_cached(NARROW)
                .and_then(|mut s| s.execute(params![id_text, token_text, recipients, micros(now)]))
                .map_err(sqlite_error)?;
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn renew(
        &self,
        id: MessageId,
        token: LeaseToken,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        // The stored end, to the microsecond, is what the answer carries.
        let expires_at = codec::whole_micros(now + codec::lease_duration(lease_for)?);
        self.call(move |conn| {
            let id_text = id.to_string();
            let owner: Option<String> = conn
                .prepare_cached(RENEW)
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            id_text,
                            token.0.to_string(),
                            micros(expires_at),
                            micros(now)
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .map_err(sqlite_error)?;
            match owner {
                Some(owner) => Ok(Lease {
                    owner,
                    token,
                    expires_at,
                }),
                None => match current_status(conn, &id_text)? {
                    None => Err(StoreError::NotFound(id)),
                    Some(_) => Err(StoreError::LeaseLost(id)),
                },
            }
        })
        .await
    }

    async fn retry(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        self.call(move |conn| change_status(conn, RETRY, id, now, "dead or expired"))
            .await
    }

    async fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.call(move |conn| select_one(conn, SELECT_BY_ID, &id.to_string()))
            .await
    }

    async fn find_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let key = key.as_str().to_owned();
        self.call(move |conn| select_one(conn, SELECT_BY_KEY, &key))
            .await
    }

    async fn list(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.call(move |conn| {
            let rows = conn
                .prepare_cached(LIST)
                .and_then(|mut s| {
                    s.query_map(params![status.as_str(), i64::from(limit)], MessageRow::read)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            rows.into_iter().map(MessageRow::into_message).collect()
        })
        .await
    }

    async fn list_for_client(
        &self,
        client: &ClientId,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let client = client.as_str().to_owned();
        self.call(move |conn| {
            let rows = conn
                .prepare_cached(LIST_FOR_CLIENT)
                .and_then(|mut s| {
                    s.query_map(
                        params![client, status.as_str(), i64::from(limit)],
                        MessageRow::read,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            rows.into_iter().map(MessageRow::into_message).collect()
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.call(|conn| {
            let counts = conn
                .prepare_cached(STATS)
                .and_then(|mut s| {
                    s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            codec::queue_stats(counts)
        })
        .await
    }

    async fn purge_sent(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let before = micros(before);
        let mut purged = 0_u64;
        let mut left = limit;
        // One batch per call to the blocking pool, so claims and inserts get the
        // connection between batches.
        while left > 0 {
            let batch = left.min(PURGE_BATCH);
            let deleted = self
                .call(move |conn| {
                    conn.prepare_cached(PURGE_SENT)
                        .and_then(|mut s| s.execute(params![before, i64::from(batch)]))
                        .map_err(sqlite_error)
                })
                .await?;
            purged += deleted as u64;
            left -= batch;
            if (deleted as u64) < u64::from(batch) {
                break;
            }
        }
        Ok(purged)
    }
}

impl SqliteStore {
    /// Applies a guarded change of a leased message; no row changed means the message
    /// is gone or held under another token.
    async fn update_leased(
        &self,
        id: MessageId,
        token: LeaseToken,
        work: impl FnOnce(&Connection, &str, &str) -> rusqlite::Result<usize> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.call(move |conn| {
            let id_text = id.to_string();
            let changed = work(conn, &id_text, &token.0.to_string()).map_err(sqlite_error)?;
            if changed == 1 {
                return Ok(());
            }
            match current_status(conn, &id_text)? {
                None => Err(StoreError::NotFound(id)),
                Some(_) => Err(StoreError::LeaseLost(id)),
            }
        })
        .await
    }
}

/// Inserts `message` (built by [`codec::stored_from_new`]) inside the caller's
/// transaction and answers it, or finds the message holding its idempotency key.
pub(super) fn insert_or_find(
    conn: &Connection,
    message: StoredMessage,
) -> Result<Enqueued, StoreError> {
    let changed = {
        let row = InsertRow::new(&message)?;
        conn.prepare_cached(INSERT)
            .and_then(|mut s| row.execute(&mut s))
            .map_err(sqlite_error)?
    };
    if changed == 1 {
        return Ok(Enqueued::Created(message));
    }
    // Nothing inserted: only the idempotency key can have conflicted (an id conflict is
    // an error); inside the caller's transaction the existing row cannot vanish.
    let key = codec::key_column(&message.request).unwrap_or_default();
    let existing = select_one(conn, SELECT_BY_KEY, key)?.ok_or_else(|| {
        StoreError::backend(format!(
            "message {} was neither inserted nor found by its idempotency key",
            message.id
        ))
    })?;
    Ok(Enqueued::Existing(existing))
}

/// Runs `sql`, a status change guarded by the status it needs (`?1` the id, `?2` now,
/// returning the row); when it changes nothing, the message's status tells why:
/// missing, or not `expected`.
fn change_status(
    conn: &Connection,
    sql: &str,
    id: MessageId,
    now: DateTime<Utc>,
    expected: &'static str,
) -> Result<StoredMessage, StoreError> {
    let id_text = id.to_string();
    let row = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_row(params![id_text, micros(now)], MessageRow::read)
                .optional()
        })
        .map_err(sqlite_error)?;
    if let Some(row) = row {
        return row.into_message();
    }
    match current_status(conn, &id_text)? {
        None => Err(StoreError::NotFound(id)),
        Some(status) => Err(StoreError::WrongStatus {
            id,
            status,
            expected,
        }),
    }
}

/// The status of message `id`, or `None` when it is not stored.
fn current_status(conn: &Connection, id: &str) -> Result<Option<MessageStatus>, StoreError> {
    let status: Option<String> = conn
        .prepare_cached(STATUS_OF)
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(sqlite_error)?;
    status.as_deref().map(codec::status).transpose()
}

/// The message `select` (a select of the message columns by one `?1`) finds.
fn select_one(
    conn: &Connection,
    select: &str,
    value: &str,
) -> Result<Option<StoredMessage>, StoreError> {
    let row = conn
        .prepare_cached(select)
        .and_then(|mut s| s.query_row([value], MessageRow::read).optional())
        .map_err(sqlite_error)?;
    row.map(MessageRow::into_message).transpose()
}
