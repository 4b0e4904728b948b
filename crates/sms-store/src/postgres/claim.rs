//! The drain's side of the Postgres queue: the claim, lane by lane, and the time the
//! next message falls due. Both read the partial index `messages_claim_by_lane`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{LeaseToken, StoreError, StoredMessage};

use super::PgStore;
use super::error::pg_error;
use super::lease::LeaseTiming;
use super::row::message_from_row;
use super::statements::{CLAIM, NEXT_DUE};

/// [`DeferredQueue::claim_lanes`]: one statement, [`CLAIM`], whose two picks take up to
/// `limit - normal_min` high-priority messages and then normal ones up to `limit`.
///
/// [`DeferredQueue::claim_lanes`]: sms_core::DeferredQueue::claim_lanes
pub(super) async fn claim_lanes(
    store: &PgStore,
    owner: &str,
    now: DateTime<Utc>,
    lease_for: Duration,
    limit: u32,
    normal_min: u32,
) -> Result<Vec<StoredMessage>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let lease = LeaseTiming::new(store.lease_clock, now, lease_for)?;
    let token = LeaseToken::new();
    let high_limit = i64::from(limit.saturating_sub(normal_min));
    store
        .timed(async {
            let client = store.client().await?;
            let stmt = client.prepare_cached(CLAIM).await.map_err(pg_error)?;
            let rows = client
                .query(
                    &stmt,
                    &[
                        &lease.start,
                        &high_limit,
                        &owner,
                        &token.0,
                        &lease.micros,
                        &now,
                        &i64::from(limit),
                    ],
                )
                .await
                .map_err(pg_error)?;
            let mut claimed = rows
                .iter()
                .map(|row| {
                    let lane: i32 = row.try_get("claimed_lane").map_err(pg_error)?;
                    let was_due: DateTime<Utc> = row.try_get("claimed_due_at").map_err(pg_error)?;
                    Ok((lane, was_due, message_from_row(row)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            // RETURNING has no order of its own: high-priority first, then oldest due.
            claimed.sort_by_key(|(lane, was_due, m)| (*lane, *was_due, m.id));
            Ok(claimed
                .into_iter()
                .map(|(_, _, m)| lease.for_caller(m))
                .collect())
        })
        .await
}

/// [`DeferredQueue::next_due`]: the earlier of the lanes' first due times.
///
/// [`DeferredQueue::next_due`]: sms_core::DeferredQueue::next_due
pub(super) async fn next_due(store: &PgStore) -> Result<Option<DateTime<Utc>>, StoreError> {
    store
        .timed(async {
            let client = store.client().await?;
            let stmt = client.prepare_cached(NEXT_DUE).await.map_err(pg_error)?;
            let row = client.query_one(&stmt, &[]).await.map_err(pg_error)?;
            row.try_get(0).map_err(pg_error)
        })
        .await
}

impl PgStore {
    /// The plan Postgres chooses for [`DeferredQueue::next_due`], one line per `EXPLAIN`
    /// row, for operators and tests. A healthy plan reads the first entry of each
    /// lane's range of `messages_claim_by_lane` (`Index Only Scan` under a `Limit`) and
    /// sorts nothing.
    ///
    /// [`DeferredQueue::next_due`]: sms_core::DeferredQueue::next_due
    pub async fn explain_next_due(&self) -> Result<Vec<String>, StoreError> {
        self.explain(NEXT_DUE, &[]).await
    }
}
