//! The spend ledger in Postgres: [`SpendLedger`] for [`PgStore`]. An addition is one
//! upsert of every client's increment, so it lands whole, and instances adding to one
//! client at once each add their share to the row the other left.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sms_core::{BillingPeriod, ClientId, Money, SpendLedger, StoreError};

use super::PgStore;
use super::error::pg_error;
use crate::spend_codec;

/// Adds `$3[i]` to client `$2[i]`'s spend in period `$1`. A total past the `bigint`
/// range fails the statement, and with it the whole addition.
const SPEND_ADD: &str = "INSERT INTO client_spend (client, period, micros) \
                         SELECT client, $1, micros FROM unnest($2::text[], $3::bigint[]) \
                                AS increment (client, micros) \
                         ON CONFLICT (client, period) \
                         DO UPDATE SET micros = client_spend.micros + excluded.micros";

const SPEND_OF: &str = "SELECT client, micros FROM client_spend WHERE period = $1";

#[async_trait]
impl SpendLedger for PgStore {
    async fn add_spend(
        &self,
        period: &BillingPeriod,
        amounts: &[(Option<ClientId>, Money)],
    ) -> Result<(), StoreError> {
        let increments = spend_codec::increments(period, amounts)?;
        if increments.is_empty() {
            return Ok(());
        }
        let (clients, micros): (Vec<&str>, Vec<i64>) = increments.into_iter().unzip();
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(SPEND_ADD).await.map_err(pg_error)?;
            client
                .execute(&stmt, &[&period.as_str(), &clients, &micros])
                .await
                .map_err(pg_error)?;
            Ok(())
        })
        .await
    }

    async fn spend(
        &self,
        period: &BillingPeriod,
    ) -> Result<BTreeMap<Option<ClientId>, Money>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(SPEND_OF).await.map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&period.as_str()])
                .await
                .map_err(pg_error)?;
            let mut spend = BTreeMap::new();
            for row in rows {
                spend.insert(
                    spend_codec::client(row.try_get(0).map_err(pg_error)?)?,
                    Money::from_micros(row.try_get(1).map_err(pg_error)?),
                );
            }
            Ok(spend)
        })
        .await
    }
}
