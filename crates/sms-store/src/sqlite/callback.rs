//! The callback outbox in SQLite: [`CallbackOutbox`] for [`SqliteStore`].
//!
//! Each call is one transaction on the store's one connection. A claim picks and leases
//! under one `BEGIN IMMEDIATE` write lock, as the queue's claim does, so another process
//! sharing the file cannot claim the same events in between. Times are the caller's:
//! a claim's `now` decides what is due and when its leases end.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{TransactionBehavior, params};
use sms_core::{
    CallbackCounts, CallbackEvent, CallbackOutbox, CallbackOutcome, ClaimedCallback, LeaseToken,
    MessageId, StoreError,
};

use super::SqliteStore;
use super::error::sqlite_error;
use super::row::{micros, time, uuid};
use super::statements::{
    CALLBACK_COUNTS, CALLBACK_DELIVERED, CALLBACK_FAILED, CALLBACK_INSERT, CALLBACK_LEASE,
    CALLBACK_PICK, CALLBACK_PURGE, CALLBACK_RETRY,
};
use crate::codec;

#[async_trait]
impl CallbackOutbox for SqliteStore {
    async fn enqueue(&self, events: &[CallbackEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<EventRow> = events
            .iter()
            .map(|e| {
                (
                    e.id.to_string(),
                    e.message_id.map(|m| m.to_string()),
                    e.status.as_str(),
                    e.url.as_str().to_owned(),
                    e.body.clone(),
                    micros(e.created_at),
                )
            })
            .collect();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            {
                let mut insert = tx.prepare_cached(CALLBACK_INSERT).map_err(sqlite_error)?;
                for row in &rows {
                    insert
                        .execute(params![row.0, row.1, row.2, row.3, row.4, row.5])
                        .map_err(sqlite_error)?;
                }
            }
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedCallback>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease_end = micros(now + codec::lease_duration(lease)?);
        let now = micros(now);
        let owner = owner.to_owned();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let mut claimed = Vec::new();
            {
                let mut pick = tx.prepare_cached(CALLBACK_PICK).map_err(sqlite_error)?;
                let ids = pick
                    .query_map(params![now, i64::from(limit)], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(sqlite_error)?;
                let mut lease = tx.prepare_cached(CALLBACK_LEASE).map_err(sqlite_error)?;
                // Picked oldest due first, leased in that order: the answer keeps it.
                for id in ids {
                    // Every claimed event gets a token of its own, so settling one
                    // never touches another.
                    let token = LeaseToken::new();
                    let row = lease
                        .query_row(
                            params![id, lease_end, owner, token.0.to_string()],
                            claimed_columns,
                        )
                        .map_err(sqlite_error)?;
                    claimed.push(claimed_callback(row, token)?);
                }
            }
            tx.commit().map_err(sqlite_error)?;
            Ok(claimed)
        })
        .await
    }

    async fn settle(
        &self,
        id: uuid::Uuid,
        token: LeaseToken,
        outcome: CallbackOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (id, token, now) = (id.to_string(), token.0.to_string(), micros(now));
        self.call(move |conn| {
            let changed = match outcome {
                CallbackOutcome::Delivered => conn
                    .prepare_cached(CALLBACK_DELIVERED)
                    .and_then(|mut s| s.execute(params![id, token, now])),
                CallbackOutcome::Retry { at, error } => conn
                    .prepare_cached(CALLBACK_RETRY)
                    .and_then(|mut s| s.execute(params![id, token, micros(at), error])),
                CallbackOutcome::Failed { error } => conn
                    .prepare_cached(CALLBACK_FAILED)
                    .and_then(|mut s| s.execute(params![id, token, now, error])),
            }
            .map_err(sqlite_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn counts(&self) -> Result<CallbackCounts, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(CALLBACK_COUNTS).map_err(sqlite_error)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sqlite_error)?;
            codec::callback_counts(rows)
        })
        .await
    }

    async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let before = micros(before);
        self.call(move |conn| {
            let purged = conn
                .prepare_cached(CALLBACK_PURGE)
                .and_then(|mut s| s.execute(params![before, i64::from(limit)]))
                .map_err(sqlite_error)?;
            Ok(purged as u64)
        })
        .await
    }
}

/// An event's columns as [`CALLBACK_INSERT`] binds them: id, message, status, URL, body
/// and creation time.
type EventRow = (String, Option<String>, &'static str, String, String, i64);

/// The columns [`CALLBACK_LEASE`] returns, as stored.
type ClaimedColumns = (String, Option<String>, String, String, String, i64, i64);

fn claimed_columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedColumns> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

/// A claimed event from its stored columns, validated as the domain types require.
fn claimed_callback(r: ClaimedColumns, token: LeaseToken) -> Result<ClaimedCallback, StoreError> {
    let (id, message_id, status, url, body, created_at, attempts) = r;
    Ok(ClaimedCallback {
        event: CallbackEvent {
            id: uuid("callbacks.id", &id)?,
            message_id: message_id
                .map(|m| uuid("callbacks.message_id", &m).map(MessageId::from_uuid))
                .transpose()?,
            status: codec::callback_status(&status)?,
            url: codec::callback_url("callbacks.url", &url)?,
            body,
            created_at: time("created_at", created_at)?,
        },
        attempts: codec::count("attempts", attempts)?,
        token,
    })
}
