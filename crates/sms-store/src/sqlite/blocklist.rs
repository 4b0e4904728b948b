//! The blocklist in SQLite: [`Blocklist`] for [`SqliteStore`]. Each call is one
//! statement on the store's one connection; a block is an insert that leaves an
//! existing row alone, so the first entry stays.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use sms_core::{BlockReason, BlockedNumber, Blocklist, PhoneNumber, StoreError};

use super::SqliteStore;
use super::error::sqlite_error;
use super::row::{micros, time, to_json};
use crate::blocklist_codec;

const BLOCK: &str = "INSERT INTO blocklist (number, reason, since) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (number) DO NOTHING";

const UNBLOCK: &str = "DELETE FROM blocklist WHERE number = ?1";

/// The blocked ones of a list of numbers, given as one JSON array so that a list of any
/// length is one statement with one parameter (a `?` per number would meet SQLite's
/// limit on parameters and prepare a new statement per length).
const BLOCKED_AMONG: &str = "SELECT number FROM blocklist \
                             WHERE number IN (SELECT value FROM json_each(?1))";

const ENTRY: &str = "SELECT reason, since FROM blocklist WHERE number = ?1";

const COUNT: &str = "SELECT count(*) FROM blocklist";
const NUMBERS: &str = "SELECT number FROM blocklist";

#[async_trait]
impl Blocklist for SqliteStore {
    async fn block(
        &self,
        number: &PhoneNumber,
        reason: BlockReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let number = number.as_str().to_owned();
        let since = micros(now);
        self.call(move |conn| {
            let inserted = conn
                .prepare_cached(BLOCK)
                .and_then(|mut s| s.execute(params![number, reason.as_str(), since]))
                .map_err(sqlite_error)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn unblock(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        let number = number.as_str().to_owned();
        self.call(move |conn| {
            let deleted = conn
                .prepare_cached(UNBLOCK)
                .and_then(|mut s| s.execute([number]))
                .map_err(sqlite_error)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn blocked_among(&self, numbers: &[PhoneNumber]) -> Result<Vec<PhoneNumber>, StoreError> {
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let asked = to_json(&blocklist_codec::lookup_columns(numbers))?;
        let blocked = self
            .call(move |conn| {
                conn.prepare_cached(BLOCKED_AMONG)
                    .and_then(|mut s| {
                        s.query_map([asked], |r| r.get::<_, String>(0))?
                            .collect::<rusqlite::Result<HashSet<String>>>()
                    })
                    .map_err(sqlite_error)
            })
            .await?;
        Ok(blocklist_codec::in_given_order(numbers, &blocked))
    }

    async fn entry(&self, number: &PhoneNumber) -> Result<Option<BlockedNumber>, StoreError> {
        let key = number.as_str().to_owned();
        let found = self
            .call(move |conn| {
                conn.prepare_cached(ENTRY)
                    .and_then(|mut s| {
                        s.query_row([key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                            .optional()
                    })
                    .map_err(sqlite_error)
            })
            .await?;
        found
            .map(|(reason, since)| {
                Ok(BlockedNumber {
                    number: number.clone(),
                    reason: blocklist_codec::reason(&reason)?,
                    since: time("since", since)?,
                })
            })
            .transpose()
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let count: i64 = self
            .call(|conn| {
                conn.prepare_cached(COUNT)
                    .and_then(|mut s| s.query_row([], |r| r.get(0)))
                    .map_err(sqlite_error)
            })
            .await?;
        u64::try_from(count)
            .map_err(|_| StoreError::backend(format!("expected a count, found {count}")))
    }

    async fn numbers(&self) -> Result<Vec<PhoneNumber>, StoreError> {
        let stored: Vec<String> = self
            .call(|conn| {
                conn.prepare_cached(NUMBERS)
                    .and_then(|mut s| {
                        s.query_map([], |r| r.get::<_, String>(0))?
                            .collect::<rusqlite::Result<Vec<String>>>()
                    })
                    .map_err(sqlite_error)
            })
            .await?;
        stored.iter().map(|n| blocklist_codec::number(n)).collect()
    }
}
