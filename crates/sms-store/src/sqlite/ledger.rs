//! The usage ledger in SQLite: [`UsageLedger`] for [`SqliteStore`]. Each increment is
//! one upsert, so concurrent callers never lose a count.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::params;
use sms_core::{BillingPeriod, StoreError, UsageLedger, VendorId};

use super::SqliteStore;
use super::error::sqlite_error;
use super::statements::{USAGE_ADD, USAGE_TOTALS};
use crate::codec;

#[async_trait]
impl UsageLedger for SqliteStore {
    async fn add(
        &self,
        vendor: &VendorId,
        period: &BillingPeriod,
        messages: u64,
    ) -> Result<u64, StoreError> {
        let increment = codec::billed_increment(messages)?;
        let vendor = vendor.as_str().to_owned();
        let period = period.as_str().to_owned();
        self.call(move |conn| {
            let total: i64 = conn
                .prepare_cached(USAGE_ADD)
                .and_then(|mut s| s.query_row(params![vendor, period, increment], |r| r.get(0)))
                .map_err(sqlite_error)?;
            codec::billed_total(total)
        })
        .await
    }

    async fn totals(&self, period: &BillingPeriod) -> Result<BTreeMap<VendorId, u64>, StoreError> {
        let period = period.as_str().to_owned();
        self.call(move |conn| {
            let rows = conn
                .prepare_cached(USAGE_TOTALS)
                .and_then(|mut s| {
                    s.query_map([period], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sqlite_error)?;
            let mut totals = BTreeMap::new();
            for (vendor, billed) in rows {
                let vendor = codec::vendor(Some(vendor))?
                    .ok_or_else(|| StoreError::backend("stored vendor is missing"))?;
                totals.insert(vendor, codec::billed_total(billed)?);
            }
            Ok(totals)
        })
        .await
    }
}
