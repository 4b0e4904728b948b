//! The blocklist in Postgres: [`Blocklist`] for [`PgStore`]. A block is one insert that
//! leaves an existing row alone, so instances blocking one number together keep the
//! first entry and only one of them hears that it was new.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sms_core::{BlockReason, BlockedNumber, Blocklist, PhoneNumber, StoreError};

use super::PgStore;
use super::error::pg_error;
use crate::{blocklist_codec, codec};

const BLOCK: &str = "INSERT INTO blocklist (number, reason, since) VALUES ($1, $2, $3) \
                     ON CONFLICT (number) DO NOTHING";

const UNBLOCK: &str = "DELETE FROM blocklist WHERE number = $1";

/// The blocked ones of a list of numbers, by the primary key, in one round trip.
const BLOCKED_AMONG: &str = "SELECT number FROM blocklist WHERE number = ANY($1)";

const ENTRY: &str = "SELECT reason, since FROM blocklist WHERE number = $1";

const COUNT: &str = "SELECT count(*) FROM blocklist";
const NUMBERS: &str = "SELECT number FROM blocklist";

#[async_trait]
impl Blocklist for PgStore {
    async fn block(
        &self,
        number: &PhoneNumber,
        reason: BlockReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let since = codec::whole_micros(now);
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(BLOCK).await.map_err(pg_error)?;
            let inserted = client
                .execute(&stmt, &[&number.as_str(), &reason.as_str(), &since])
                .await
                .map_err(pg_error)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn unblock(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(UNBLOCK).await.map_err(pg_error)?;
            let deleted = client
                .execute(&stmt, &[&number.as_str()])
                .await
                .map_err(pg_error)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn blocked_among(&self, numbers: &[PhoneNumber]) -> Result<Vec<PhoneNumber>, StoreError> {
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let asked = blocklist_codec::lookup_columns(numbers);
        let blocked = self
            .timed(async {
                let client = self.client().await?;
                let stmt = client
                    .prepare_cached(BLOCKED_AMONG)
                    .await
                    .map_err(pg_error)?;
                let rows = client.query(&stmt, &[&asked]).await.map_err(pg_error)?;
                rows.iter()
                    .map(|row| row.try_get::<_, String>(0).map_err(pg_error))
                    .collect::<Result<HashSet<String>, StoreError>>()
            })
            .await?;
        Ok(blocklist_codec::in_given_order(numbers, &blocked))
    }

    async fn entry(&self, number: &PhoneNumber) -> Result<Option<BlockedNumber>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(ENTRY).await.map_err(pg_error)?;
            let Some(row) = client
                .query_opt(&stmt, &[&number.as_str()])
                .await
                .map_err(pg_error)?
            else {
                return Ok(None);
            };
            let reason: &str = row.try_get(0).map_err(pg_error)?;
            Ok(Some(BlockedNumber {
                number: number.clone(),
                reason: blocklist_codec::reason(reason)?,
                since: row.try_get(1).map_err(pg_error)?,
            }))
        })
        .await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(COUNT).await.map_err(pg_error)?;
            let row = client.query_one(&stmt, &[]).await.map_err(pg_error)?;
            let count: i64 = row.try_get(0).map_err(pg_error)?;
            u64::try_from(count)
                .map_err(|_| StoreError::backend(format!("expected a count, found {count}")))
        })
        .await
    }

    async fn numbers(&self) -> Result<Vec<PhoneNumber>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(NUMBERS).await.map_err(pg_error)?;
            let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
            rows.iter()
                .map(|row| {
                    let stored: &str = row.try_get(0).map_err(pg_error)?;
                    blocklist_codec::number(stored)
                })
                .collect()
        })
        .await
    }
}
