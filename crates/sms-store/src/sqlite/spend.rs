//! The spend ledger in SQLite: [`SpendLedger`] for [`SqliteStore`]. An addition is one
//! transaction of one upsert per client, so it lands whole or, when a total would
//! overflow, not at all.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{TransactionBehavior, params};
use sms_core::{BillingPeriod, ClientId, Money, SpendLedger, StoreError};

use super::SqliteStore;
use super::error::sqlite_error;
use crate::spend_codec;

/// Adds `?3` to client `?1`'s spend in period `?2`. SQLite turns a sum past the
/// integer range into a float, which the table's type check refuses.
const SPEND_ADD: &str = "INSERT INTO client_spend (client, period, micros) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (client, period) \
                         DO UPDATE SET micros = micros + excluded.micros";

const SPEND_OF: &str = "SELECT client, micros FROM client_spend WHERE period = ?1";

#[async_trait]
impl SpendLedger for SqliteStore {
    async fn add_spend(
        &self,
        period: &BillingPeriod,
        amounts: &[(Option<ClientId>, Money)],
    ) -> Result<(), StoreError> {
        let increments: Vec<(String, i64)> = spend_codec::increments(period, amounts)?
            .into_iter()
            .map(|(client, micros)| (client.to_owned(), micros))
            .collect();
        if increments.is_empty() {
            return Ok(());
        }
        let period = period.as_str().to_owned();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            {
                let mut add = tx.prepare_cached(SPEND_ADD).map_err(sqlite_error)?;
                for (client, micros) in &increments {
                    add.execute(params![client, period, micros])
                        .map_err(sqlite_error)?;
                }
            }
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn spend(
        &self,
        period: &BillingPeriod,
    ) -> Result<BTreeMap<Option<ClientId>, Money>, StoreError> {
        let period = period.as_str().to_owned();
        let rows = self
            .call(move |conn| {
                conn.prepare_cached(SPEND_OF)
                    .and_then(|mut s| {
                        s.query_map([period], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(sqlite_error)
            })
            .await?;
        rows.into_iter()
            .map(|(client, micros)| Ok((spend_codec::client(client)?, Money::from_micros(micros))))
            .collect()
    }
}
