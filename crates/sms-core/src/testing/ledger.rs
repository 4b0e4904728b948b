//! An in-memory usage ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::clock::BillingPeriod;
use crate::error::StoreError;
use crate::ids::VendorId;
use crate::ledger::UsageLedger;

/// A usage ledger in a map; exact under concurrency, lost on restart.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    totals: Mutex<HashMap<BillingPeriod, BTreeMap<VendorId, u64>>>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl UsageLedger for MemoryLedger {
    async fn add(
        &self,
        vendor: &VendorId,
        period: &BillingPeriod,
        messages: u64,
    ) -> Result<u64, StoreError> {
        let mut totals = crate::sync::lock(&self.totals);
        let total = totals
            .entry(period.clone())
            .or_default()
            .entry(vendor.clone())
            .or_default();
        *total = total.saturating_add(messages);
        Ok(*total)
    }

    async fn totals(&self, period: &BillingPeriod) -> Result<BTreeMap<VendorId, u64>, StoreError> {
        let totals = crate::sync::lock(&self.totals);
        Ok(totals.get(period).cloned().unwrap_or_default())
    }
}
