//! The deferred queue in Postgres: [`DeferredQueue`] for [`PgStore`].
//!
//! A claim never holds a transaction open while a message is sent: it is one statement
//! that moves due rows to `leased` with a lease expiry and a fresh token (the
//! `FOR UPDATE SKIP LOCKED` pattern of River, graphile-worker and pgmq). Claimers that
//! run at the same moment skip each other's rows instead of waiting for them.
//!
//! A claim, a renewal and an enqueue of a leased message time the lease by the store's
//! [`LeaseClock`](super::LeaseClock) (`lease`): the database's clock, or the caller's
//! `now`. The lease handed back is in the caller's clock either way.
//!
//! A batch (`enqueue_many`, `complete_many`) is one transaction on one connection: one
//! set-based statement over arrays of the batch's values (`unnest`), a look-up of the
//! messages it did not write to answer for them, and one commit, so one flush of the
//! write-ahead log for the whole batch.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use sms_core::{
    AttemptFailure, ClientId, Completion, DeferredQueue, Enqueued, IdempotencyKey, Lease,
    LeaseToken, MessageId, MessageStatus, NewMessage, PhoneNumber, QueueStats, StoreError,
    StoredMessage, VendorId,
};
use tokio_postgres::types::ToSql;

use super::error::pg_error;
use super::lease::LeaseTiming;
use super::row::{BatchColumns, InsertParams, message_from_row};
use super::statements::{
    COMPLETE, COMPLETE_MANY, DEAD, DEFER, EXISTING_IDS, EXPIRE, FAIL, HELD_UNDER_TOKEN,
    INSERT_MANY, INSERT_MESSAGE, LIST, NARROW, PURGE_SENT, RENEW, RETRY, SELECT_BY_ID,
    SELECT_BY_KEY, SELECT_BY_KEYS, STATS,
};
use super::status::{change_status, current_status};
use super::{PgStore, by_client, claim};
use crate::codec;

/// Largest batch `purge_sent` deletes in one statement: small enough that each delete
/// holds its row locks only briefly and does not bloat one transaction.
const PURGE_BATCH: u32 = 500;

#[async_trait]
impl DeferredQueue for PgStore {
    async fn enqueue(&self, new: NewMessage) -> Result<Enqueued, StoreError> {
        let message = codec::stored_from_new(new);
        let insert_params = InsertParams::new(&message, self.lease_clock);
        let params = insert_params.params();
        let existing = self
            .timed(async {
                let client = self.client().await?;
                let insert = client
                    .prepare_cached(INSERT_MESSAGE)
                    .await
                    .map_err(pg_error)?;
                let by_key = client
                    .prepare_cached(SELECT_BY_KEY)
                    .await
                    .map_err(pg_error)?;
                // Insert-or-find is retried once: the existing row can be purged between
                // the conflicting insert and the look-up, and then the insert will succeed.
                for _ in 0..2 {
                    if client
                        .query_opt(&insert, &params)
                        .await
                        .map_err(pg_error)?
                        .is_some()
                    {
                        return Ok(None);
                    }
                    // Nothing inserted: only the idempotency key can have conflicted (an
                    // id conflict is an error, not a skip).
                    if let Some(row) = client
                        .query_opt(&by_key, &[&insert_params.key])
                        .await
                        .map_err(pg_error)?
                    {
                        return Ok(Some(message_from_row(&row)?));
                    }
                }
                Err(StoreError::backend(format!(
                    "message {} was neither inserted nor found by its idempotency key",
                    message.id
                )))
            })
            .await?;
        Ok(match existing {
            None => Enqueued::Created(message),
            Some(existing) => Enqueued::Existing(existing),
        })
    }

    /// One transaction on one connection: one set-based insert of the whole batch
    /// (`INSERT_MANY`), one look-up of the keys that conflicted, one commit.
    async fn enqueue_many(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let messages: Vec<StoredMessage> =
            messages.into_iter().map(codec::stored_from_new).collect();
        let inserts: Vec<InsertParams<'_>> = messages
            .iter()
            .map(|m| InsertParams::new(m, self.lease_clock))
            .collect();
        let columns = BatchColumns::new(&inserts)?;
        let position: HashMap<uuid::Uuid, usize> = inserts
            .iter()
            .enumerate()
            .map(|(i, m)| (*m.id, i))
            .collect();
        // For each message, the stored one holding its key if it was not inserted.
        let existing: Vec<Option<StoredMessage>> = self
            .timed(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(pg_error)?;
                let insert_many = tx.prepare_cached(INSERT_MANY).await.map_err(pg_error)?;
                let mut inserted = vec![false; inserts.len()];
                for row in tx
                    .query(&insert_many, &columns.params())
                    .await
                    .map_err(pg_error)?
                {
                    let id: uuid::Uuid = row.try_get(0).map_err(pg_error)?;
                    let i = *position.get(&id).ok_or_else(|| {
                        StoreError::backend(format!("inserted message {id} is not in the batch"))
                    })?;
                    inserted[i] = true;
                }
                let mut existing: Vec<Option<StoredMessage>> =
                    inserts.iter().map(|_| None).collect();

                // Nothing inserted: only the idempotency key can have conflicted (an id
                // conflict is an error, not a skip), with a stored row or an earlier
                // message of this batch.
                let conflicted: Vec<usize> = (0..inserts.len()).filter(|&i| !inserted[i]).collect();
                if conflicted.is_empty() {
                    tx.commit().await.map_err(pg_error)?;
                    return Ok(existing);
                }
                let keys: Vec<Option<&str>> = conflicted.iter().map(|&i| inserts[i].key).collect();
                let by_keys = tx.prepare_cached(SELECT_BY_KEYS).await.map_err(pg_error)?;
                let mut found = HashMap::new();
                for row in tx.query(&by_keys, &[&keys]).await.map_err(pg_error)? {
                    let stored = message_from_row(&row)?;
                    if let Some(key) = stored.request.idempotency_key() {
                        found.insert(key.as_str().to_owned(), stored);
                    }
                }
                let mut vanished = Vec::new();
                for i in conflicted {
                    match inserts[i].key.and_then(|k| found.get(k)) {
                        Some(stored) => existing[i] = Some(stored.clone()),
                        None => vanished.push(i),
                    }
                }
                // The conflicting row was purged between the insert and the look-up
                // (rare): once more, one at a time, as `enqueue` does.
                if !vanished.is_empty() {
                    let insert = tx.prepare_cached(INSERT_MESSAGE).await.map_err(pg_error)?;
                    let by_key = tx.prepare_cached(SELECT_BY_KEY).await.map_err(pg_error)?;
                    for i in vanished {
                        if tx
                            .query_opt(&insert, &inserts[i].params())
                            .await
                            .map_err(pg_error)?
                            .is_some()
                        {
                            continue;
                        }
                        let Some(row) = tx
                            .query_opt(&by_key, &[&inserts[i].key])
                            .await
                            .map_err(pg_error)?
                        else {
                            return Err(StoreError::backend(format!(
                                "message {} was neither inserted nor found by its idempotency key",
                                messages[i].id
                            )));
                        };
                        existing[i] = Some(message_from_row(&row)?);
                    }
                }
                tx.commit().await.map_err(pg_error)?;
                Ok(existing)
            })
            .await?;
        drop(columns);
        drop(inserts);
        Ok(messages
            .into_iter()
            .zip(existing)
            .map(|(message, existing)| match existing {
                None => Enqueued::Created(message),
                Some(existing) => Enqueued::Existing(existing),
            })
            .collect())
    }

    /// A claim with no room kept for normal messages.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        claim::claim_lanes(self, owner, now, lease_for, limit, 0).await
    }

    async fn claim_lanes(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
        normal_min: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        claim::claim_lanes(self, owner, now, lease_for, limit, normal_min).await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        claim::next_due(self).await
    }

    async fn cancel(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        by_client::cancel(self, id, now).await
    }

    async fn complete(
        &self,
        id: MessageId,
        token: LeaseToken,
        vendor: &VendorId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(
            id,
            COMPLETE,
            &[id.as_uuid(), &token.0, &vendor.as_str(), &now],
        )
        .await
    }

    /// One transaction on one connection: one set-based guarded update
    /// (`COMPLETE_MANY`), one look-up of the refused ids to tell `NotFound` from
    /// `LeaseLost`, one commit. An id repeated in the batch is applied in a later
    /// statement of the same transaction, in batch order, as one-by-one completions would
    /// apply it.
    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        // Round r holds the r-th completion of each id; each round is ordered by id, so
        // batches touching the same rows lock them in the same order.
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut seen: HashMap<MessageId, usize> = HashMap::new();
        for (i, c) in completions.iter().enumerate() {
            let round = seen.entry(c.id).or_insert(0);
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(i);
            *round += 1;
        }
        for round in &mut rounds {
            round.sort_by_key(|&i| completions[i].id);
        }
        self.timed(async {
            let mut client = self.client().await?;
            if rounds.len() == 1 {
                // One statement commits on its own: no BEGIN and COMMIT round trips.
                return complete_rounds(&**client, completions, &rounds).await;
            }
            let tx = client.transaction().await.map_err(pg_error)?;
            let results = complete_rounds(&*tx, completions, &rounds).await?;
            tx.commit().await.map_err(pg_error)?;
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
        let vendor = failure.vendor.as_ref().map(VendorId::as_str);
        let pinned_vendor = codec::pinned_vendor(&failure);
        self.update_leased(
            id,
            FAIL,
            &[
                id.as_uuid(),
                &token.0,
                &vendor,
                &failure.error,
                &failure.may_duplicate,
                &next_attempt_at,
                &now,
                &pinned_vendor,
            ],
        )
        .await
    }

    async fn dead(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let vendor = failure.vendor.as_ref().map(VendorId::as_str);
        let pinned_vendor = codec::pinned_vendor(&failure);
        self.update_leased(
            id,
            DEAD,
            &[
                id.as_uuid(),
                &token.0,
                &vendor,
                &failure.error,
                &failure.may_duplicate,
                &now,
                &pinned_vendor,
            ],
        )
        .await
    }

    async fn expire(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, EXPIRE, &[id.as_uuid(), &token.0, &now])
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

    /// `due_at` is stored as given under either `LeaseClock`: only leases are timed by
    /// the database's clock.
    async fn defer(
        &self,
        id: MessageId,
        token: LeaseToken,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.update_leased(id, DEFER, &[id.as_uuid(), &token.0, &due_at, &now])
            .await
    }

    /// One guarded statement, `NARROW`; when it changes nothing, `HELD_UNDER_TOKEN` tells
    /// why. A lost lease is never held again (every claim takes a fresh token), so a
    /// message still held under `token` was held during the update too: what stopped it
    /// was that nobody would be left.
    async fn narrow(
        &self,
        id: MessageId,
        token: LeaseToken,
        sent: &[PhoneNumber],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sent: Vec<&str> = sent.iter().map(PhoneNumber::as_str).collect();
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(NARROW).await.map_err(pg_error)?;
            let changed = client
                .execute(&stmt, &[id.as_uuid(), &token.0, &sent, &now])
                .await
                .map_err(pg_error)?;
            if changed == 1 {
                return Ok(());
            }
            let stmt = client
                .prepare_cached(HELD_UNDER_TOKEN)
                .await
                .map_err(pg_error)?;
            let held = client
                .query_opt(&stmt, &[id.as_uuid(), &token.0])
                .await
                .map_err(pg_error)?
                .map(|row| row.try_get::<_, bool>(0))
                .transpose()
                .map_err(pg_error)?;
            match held {
                None => Err(StoreError::NotFound(id)),
                Some(false) => Err(StoreError::LeaseLost(id)),
                Some(true) => Err(codec::nobody_left(id)),
            }
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
        let lease = LeaseTiming::new(self.lease_clock, now, lease_for)?;
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(RENEW).await.map_err(pg_error)?;
            let row = client
                .query_opt(
                    &stmt,
                    &[id.as_uuid(), &token.0, &lease.start, &lease.micros, &now],
                )
                .await
                .map_err(pg_error)?;
            match row {
                Some(row) => Ok(Lease {
                    owner: row.try_get("lease_owner").map_err(pg_error)?,
                    token,
                    expires_at: lease
                        .end_for_caller(row.try_get("lease_expires_at").map_err(pg_error)?),
                }),
                None => match current_status(&client, id).await? {
                    None => Err(StoreError::NotFound(id)),
                    Some(_) => Err(StoreError::LeaseLost(id)),
                },
            }
        })
        .await
    }

    async fn retry(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        change_status(self, RETRY, id, now, "dead or expired").await
    }

    async fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(SELECT_BY_ID)
                .await
                .map_err(pg_error)?;
            let row = client
                .query_opt(&stmt, &[id.as_uuid()])
                .await
                .map_err(pg_error)?;
            row.as_ref().map(message_from_row).transpose()
        })
        .await
    }

    async fn find_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(SELECT_BY_KEY)
                .await
                .map_err(pg_error)?;
            let row = client
                .query_opt(&stmt, &[&key.as_str()])
                .await
                .map_err(pg_error)?;
            row.as_ref().map(message_from_row).transpose()
        })
        .await
    }

    async fn list(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(LIST).await.map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&status.as_str(), &i64::from(limit)])
                .await
                .map_err(pg_error)?;
            rows.iter().map(message_from_row).collect()
        })
        .await
    }

    async fn list_for_client(
        &self,
        client: &ClientId,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        by_client::list_for_client(self, client, status, limit).await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(STATS).await.map_err(pg_error)?;
            let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
            let counts = rows
                .iter()
                .map(|row| {
                    let status: &str = row.try_get(0).map_err(pg_error)?;
                    let count: i64 = row.try_get(1).map_err(pg_error)?;
                    Ok((status, count))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            codec::queue_stats(counts)
        })
        .await
    }

    async fn purge_sent(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let mut purged = 0_u64;
        let mut left = limit;
        // Each batch is its own statement and transaction: a large purge never holds
        // many row locks at once or blocks claimers for long.
        while left > 0 {
            let batch = left.min(PURGE_BATCH);
            let deleted = self
                .timed(async {
                    let client = self.client().await?;
                    let stmt = client.prepare_cached(PURGE_SENT).await.map_err(pg_error)?;
                    client
                        .execute(&stmt, &[&before, &i64::from(batch)])
                        .await
                        .map_err(pg_error)
                })
                .await?;
            purged += deleted;
            left -= batch;
            if deleted < u64::from(batch) {
                break;
            }
        }
        Ok(purged)
    }
}

impl PgStore {
    /// Runs a guarded update of a leased message; no row changed means the message is
    /// gone or held under another token.
    async fn update_leased(
        &self,
        id: MessageId,
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(), StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(statement).await.map_err(pg_error)?;
            let changed = client.execute(&stmt, params).await.map_err(pg_error)?;
            if changed == 1 {
                return Ok(());
            }
            match current_status(&client, id).await? {
                None => Err(StoreError::NotFound(id)),
                Some(_) => Err(StoreError::LeaseLost(id)),
            }
        })
        .await
    }
}

/// Runs [`COMPLETE_MANY`] once per round (see `complete_many`) on `client`, then tells
/// the refused completions apart: `NotFound` for a missing message, `LeaseLost` for one
/// no longer leased under the completion's token.
///
/// Both statements is planned at each run instead of prepared once per connection. A plan
/// cached while the table was empty (a fresh deployment's first completions) scans the
/// whole table to join the batch, and stays until statistics change: at each run, the
/// planner sees the batch's size and the table's, and probes the primary key.
async fn complete_rounds<C: tokio_postgres::GenericClient>(
    client: &C,
    completions: &[Completion],
    rounds: &[Vec<usize>],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    use tokio_postgres::types::Type;
    let mut results: Vec<Option<Result<(), StoreError>>> =
        completions.iter().map(|_| None).collect();
    for round in rounds {
        let ids: Vec<uuid::Uuid> = round
            .iter()
            .map(|&i| *completions[i].id.as_uuid())
            .collect();
        let tokens: Vec<uuid::Uuid> = round.iter().map(|&i| completions[i].token.0).collect();
        let vendors: Vec<&str> = round
            .iter()
            .map(|&i| completions[i].vendor.as_str())
            .collect();
        let times: Vec<DateTime<Utc>> = round.iter().map(|&i| completions[i].at).collect();
        let sent = client
            .query_typed(
                COMPLETE_MANY,
                &[
                    (&ids, Type::UUID_ARRAY),
                    (&tokens, Type::UUID_ARRAY),
                    (&vendors, Type::TEXT_ARRAY),
                    (&times, Type::TIMESTAMPTZ_ARRAY),
                ],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| row.try_get::<_, uuid::Uuid>(0).map_err(pg_error))
            .collect::<Result<HashSet<_>, _>>()?;
        for &i in round {
            if sent.contains(completions[i].id.as_uuid()) {
                results[i] = Some(Ok(()));
            }
        }
    }
    let refused: Vec<usize> = (0..completions.len())
        .filter(|&i| results[i].is_none())
        .collect();
    if !refused.is_empty() {
        let ids: Vec<uuid::Uuid> = refused
            .iter()
            .map(|&i| *completions[i].id.as_uuid())
            .collect();
        let stored = client
            .query_typed(EXISTING_IDS, &[(&ids, Type::UUID_ARRAY)])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| row.try_get::<_, uuid::Uuid>(0).map_err(pg_error))
            .collect::<Result<HashSet<_>, _>>()?;
        for i in refused {
            let id = completions[i].id;
            results[i] = Some(if stored.contains(id.as_uuid()) {
                Err(StoreError::LeaseLost(id))
            } else {
                Err(StoreError::NotFound(id))
            });
        }
    }
    Ok(results.into_iter().flatten().collect())
}
