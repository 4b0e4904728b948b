//! The callback outbox in Postgres: [`CallbackOutbox`] for [`PgStore`].
//!
//! A batch of events is stored in one statement, and a claim is one statement that
//! picks, locks and leases the due events, skipping those another instance is claiming
//! at the same moment, so instances sharing the database never hand out one event
//! twice. Times are the caller's: a claim's `now` decides what is due and when its
//! leases end. An instance whose clock runs ahead may take an event while another still
//! holds it and post it twice; the event id lets the client drop the repeat, and the
//! stale holder's settle is refused.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sms_core::{
    CallbackCounts, CallbackEvent, CallbackOutbox, CallbackOutcome, ClaimedCallback, LeaseToken,
    MessageId, StoreError,
};

use super::PgStore;
use super::error::pg_error;
use super::statements::{
    CALLBACK_CLAIM, CALLBACK_COUNTS, CALLBACK_DELIVERED, CALLBACK_FAILED, CALLBACK_INSERT,
    CALLBACK_PURGE, CALLBACK_RETRY,
};
use crate::codec;

#[async_trait]
impl CallbackOutbox for PgStore {
    async fn enqueue(&self, events: &[CallbackEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let messages: Vec<Option<uuid::Uuid>> = events
            .iter()
            .map(|e| e.message_id.map(|m| *m.as_uuid()))
            .collect();
        let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
        let urls: Vec<&str> = events.iter().map(|e| e.url.as_str()).collect();
        let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
        let created: Vec<DateTime<Utc>> = events.iter().map(|e| e.created_at).collect();
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(CALLBACK_INSERT)
                .await
                .map_err(pg_error)?;
            client
                .execute(
                    &stmt,
                    &[&ids, &messages, &statuses, &urls, &bodies, &created],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
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
        let lease_end = now + codec::lease_duration(lease)?;
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(CALLBACK_CLAIM)
                .await
                .map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&now, &i64::from(limit), &lease_end, &owner])
                .await
                .map_err(pg_error)?;
            // RETURNING follows no order: put the events back in claim order, by their
            // due time before the claim, then id.
            let mut claimed = rows
                .iter()
                .map(|row| {
                    let due_before: DateTime<Utc> =
                        row.try_get("claimed_due_at").map_err(pg_error)?;
                    Ok((due_before, claimed_callback(row)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            claimed.sort_by_key(|(due_before, c)| (*due_before, c.event.id));
            Ok(claimed.into_iter().map(|(_, c)| c).collect())
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
        self.timed(async {
            let client = self.client().await?;
            let changed = match &outcome {
                CallbackOutcome::Delivered => {
                    let stmt = client
                        .prepare_cached(CALLBACK_DELIVERED)
                        .await
                        .map_err(pg_error)?;
                    client.execute(&stmt, &[&id, &token.0, &now]).await
                }
                CallbackOutcome::Retry { at, error } => {
                    let stmt = client
                        .prepare_cached(CALLBACK_RETRY)
                        .await
                        .map_err(pg_error)?;
                    client.execute(&stmt, &[&id, &token.0, at, error]).await
                }
                CallbackOutcome::Failed { error } => {
                    let stmt = client
                        .prepare_cached(CALLBACK_FAILED)
                        .await
                        .map_err(pg_error)?;
                    client.execute(&stmt, &[&id, &token.0, &now, error]).await
                }
            }
            .map_err(pg_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn counts(&self) -> Result<CallbackCounts, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(CALLBACK_COUNTS)
                .await
                .map_err(pg_error)?;
            let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
            let counts = rows
                .iter()
                .map(|row| {
                    let state: &str = row.try_get(0).map_err(pg_error)?;
                    let count: i64 = row.try_get(1).map_err(pg_error)?;
                    Ok((state, count))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            codec::callback_counts(counts)
        })
        .await
    }

    async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(CALLBACK_PURGE)
                .await
                .map_err(pg_error)?;
            client
                .execute(&stmt, &[&before, &i64::from(limit)])
                .await
                .map_err(pg_error)
        })
        .await
    }
}

/// A row [`CALLBACK_CLAIM`] returned, validated as the domain types require.
fn claimed_callback(row: &tokio_postgres::Row) -> Result<ClaimedCallback, StoreError> {
    let status: &str = row.try_get("status").map_err(pg_error)?;
    let url: &str = row.try_get("url").map_err(pg_error)?;
    Ok(ClaimedCallback {
        event: CallbackEvent {
            id: row.try_get("id").map_err(pg_error)?,
            message_id: row
                .try_get::<_, Option<uuid::Uuid>>("message_id")
                .map_err(pg_error)?
                .map(MessageId::from_uuid),
            status: codec::callback_status(status)?,
            url: codec::callback_url("callbacks.url", url)?,
            body: row.try_get("body").map_err(pg_error)?,
            created_at: row.try_get("created_at").map_err(pg_error)?,
        },
        attempts: codec::count("attempts", row.try_get("attempts").map_err(pg_error)?)?,
        token: LeaseToken(row.try_get("lease_token").map_err(pg_error)?),
    })
}
