//! The usage ledger: billed messages per vendor per billing period, kept durably; the
//! spend ledger per client; and the gate that holds a client's stored messages back
//! once its spend cap is reached.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::clock::BillingPeriod;
use crate::error::StoreError;
use crate::ids::{ClientId, VendorId};
use crate::money::Money;

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

/// Money spent per client and billing period, kept durably for spend caps: every
/// delivered message adds its billed segments at the price tier in force.
///
/// Messages of the unnamed client (`api_tokens`) are kept under `None`. Shared by every
/// instance; additions are atomic.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SpendLedger: Send + Sync {
    /// Adds each `(client, amount)` to that client's spend in `period`, in one write.
    async fn add_spend(
        &self,
        period: &BillingPeriod,
        amounts: &[(Option<ClientId>, Money)],
    ) -> Result<(), StoreError>;

    /// Every client's spend in `period` (clients with none are absent).
    async fn spend(
        &self,
        period: &BillingPeriod,
    ) -> Result<BTreeMap<Option<ClientId>, Money>, StoreError>;
}

/// Holds back a stored message (scheduled, or queued for a retry) whose client, or the
/// deployment, has reached a monthly spend cap since the message was accepted: a cap
/// checked only when requests arrive would let a client's backlog spend past it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SpendGate: Send + Sync {
    /// `None` when `client`'s message may go out at `now`; otherwise until when it
    /// waits and why (the cap, whose, and what was spent).
    fn hold(&self, client: Option<ClientId>, now: DateTime<Utc>) -> Option<SpendHold>;
}

/// Why a message waits for a spend cap, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendHold {
    /// When to look again: the next billing month at the latest, sooner so that a cap
    /// raised meanwhile lets the message go.
    pub until: DateTime<Utc>,
    /// Whose cap is reached, and how far.
    pub why: String,
}
