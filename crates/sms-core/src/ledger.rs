//! The usage ledger: billed messages per vendor per billing period, kept durably.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::clock::BillingPeriod;
use crate::error::StoreError;
use crate::ids::VendorId;

/// Billed volume per vendor and period. Shared by every instance; increments are atomic.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UsageLedger: Send + Sync {
    /// Adds `messages` billed messages to `vendor`'s total for `period`; returns the new total.
    async fn add(
        &self,
        vendor: &VendorId,
        period: &BillingPeriod,
        messages: u64,
    ) -> Result<u64, StoreError>;

    /// Every vendor's total for `period` (vendors with none are absent).
    async fn totals(&self, period: &BillingPeriod) -> Result<BTreeMap<VendorId, u64>, StoreError>;
}
