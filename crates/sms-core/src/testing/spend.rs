//! An in-memory spend ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::clock::BillingPeriod;
use crate::error::StoreError;
use crate::ids::ClientId;
use crate::ledger::SpendLedger;
use crate::money::Money;

/// A spend ledger in a map; exact under concurrency, lost on restart.
#[derive(Debug, Default)]
pub struct MemorySpendLedger {
    spend: Mutex<HashMap<BillingPeriod, BTreeMap<Option<ClientId>, Money>>>,
}

impl MemorySpendLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SpendLedger for MemorySpendLedger {
    async fn add_spend(
        &self,
        period: &BillingPeriod,
        amounts: &[(Option<ClientId>, Money)],
    ) -> Result<(), StoreError> {
        if amounts.is_empty() {
            return Ok(());
        }
        let mut spend = crate::sync::lock(&self.spend);
        // Added to a copy and swapped in, so an overflow part-way changes nothing, as a
        // rolled-back transaction would not.
        let mut updated = spend.get(period).cloned().unwrap_or_default();
        for (client, amount) in amounts {
            let total = updated.entry(client.clone()).or_default();
            *total = total.checked_add(*amount).ok_or_else(|| {
                StoreError::backend(format!(
                    "spend of {} in {} overflows adding {amount}",
                    client
                        .as_ref()
                        .map_or("the unnamed client", ClientId::as_str),
                    period.as_str()
                ))
            })?;
        }
        spend.insert(period.clone(), updated);
        Ok(())
    }

    async fn spend(
        &self,
        period: &BillingPeriod,
    ) -> Result<BTreeMap<Option<ClientId>, Money>, StoreError> {
        let spend = crate::sync::lock(&self.spend);
        Ok(spend.get(period).cloned().unwrap_or_default())
    }
}
