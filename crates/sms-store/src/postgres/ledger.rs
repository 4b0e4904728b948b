//! The usage ledger in Postgres: [`UsageLedger`] for [`PgStore`]. Each increment is one
//! upsert, so concurrent instances adding to one vendor and period never lose a count.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sms_core::{BillingPeriod, StoreError, UsageLedger, VendorId};

use super::PgStore;
use super::error::pg_error;
use super::statements::{USAGE_ADD, USAGE_TOTALS};
use crate::codec;

#[async_trait]
impl UsageLedger for PgStore {
    async fn add(
        &self,
        vendor: &VendorId,
        period: &BillingPeriod,
        messages: u64,
    ) -> Result<u64, StoreError> {
        let increment = codec::billed_increment(messages)?;
        self.timed(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(USAGE_ADD).await.map_err(pg_error)?;
            let row = client
                .query_one(&stmt, &[&vendor.as_str(), &period.as_str(), &increment])
                .await
                .map_err(pg_error)?;
            codec::billed_total(row.try_get(0).map_err(pg_error)?)
        })
        .await
    }

    async fn totals(&self, period: &BillingPeriod) -> Result<BTreeMap<VendorId, u64>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(USAGE_TOTALS)
                .await
                .map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&period.as_str()])
                .await
                .map_err(pg_error)?;
            let mut totals = BTreeMap::new();
            for row in rows {
                let vendor = codec::vendor(Some(row.try_get(0).map_err(pg_error)?))?
                    .ok_or_else(|| StoreError::backend("stored vendor is missing"))?;
                totals.insert(
                    vendor,
                    codec::billed_total(row.try_get(1).map_err(pg_error)?)?,
                );
            }
            Ok(totals)
        })
        .await
    }
}
