//! The vendor seam: anything that can hand an SMS to a carrier network.

use async_trait::async_trait;

use crate::error::VendorError;
use crate::ids::VendorId;
use crate::money::Money;
use crate::template::OutboundSms;

/// What a vendor answers when it accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The vendor's own id for the send (Aliyun `BizId`, Tencent `SerialNo`, Cloopen `smsMessageSid`).
    pub vendor_message_id: String,
    /// Messages the vendor will bill: at least one per recipient, more for long texts
    /// split into segments. Counted from the text when the vendor does not say.
    pub billed_messages: u64,
    /// The count the vendor reported itself (Tencent's `Fee`), when it did; the gateway
    /// bills this one and reports a difference from `billed_messages`.
    pub reported_billed: Option<u64>,
}

/// A vendor that sends SMS. Implementations map every vendor answer onto
/// [`VendorError`]'s kinds; the gateway decides health, failover and retries from them.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Vendor: Send + Sync {
    /// The vendor's configured name.
    fn id(&self) -> VendorId;

    /// Sends one message to all its recipients. The gateway bounds the call with its own
    /// timeout; an implementation that hangs is treated as timed out. A vendor that needs
    /// several calls for the recipients and fails part way answers
    /// [`VendorError::PartlySent`] with the recipients it took.
    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError>;

    /// When a message to `recipients` recipients takes this vendor several calls, the
    /// longest it may take in all (its own per-call timeout times the calls). The
    /// gateway waits that long, so that it never cuts a split send mid-way and loses
    /// which recipients were sent. `None` (the default): one call, bounded by the
    /// gateway's attempt timeout.
    fn split_send_time(&self, recipients: usize) -> Option<std::time::Duration> {
        let _ = recipients;
        None
    }
}

/// A vendor's tiered price list: the per-message price given how many messages were
/// already billed in the current billing period.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait FeeSchedule: Send + Sync {
    /// Price of the next message when `billed_volume` messages were billed so far this period.
    fn price_at(&self, billed_volume: u64) -> Money;

    /// Cost of billing `count` more messages after `billed_volume`, crossing tiers as it goes.
    /// The default sums message by message; implementations with tiers should do better.
    fn cost_of(&self, billed_volume: u64, count: u64) -> Money {
        (0..count)
            .map(|i| self.price_at(billed_volume.saturating_add(i)))
            .sum()
    }
}
