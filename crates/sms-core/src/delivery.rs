//! Delivery to the handset: what happened to each recipient after a vendor accepted a
//! message, as the vendor's delivery receipts tell it.
//!
//! A vendor's answer to a send only says that it accepted the message. Whether the
//! carrier delivered it arrives later, in a receipt per recipient, matched by the
//! vendor's own id for the send (Aliyun `BizId`, Tencent `SerialNo`, Cloopen
//! `smsMessageSid`) and the recipient's number. A receipt can arrive before the gateway
//! has recorded the send it belongs to; the log keeps it and applies it when the send
//! is recorded.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::callback_url::CallbackUrl;
use crate::error::StoreError;
use crate::ids::{MessageId, VendorId};
use crate::phone::PhoneNumber;

/// Where a message stands for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// The vendor accepted it; no receipt yet.
    Sent,
    /// The vendor reported it delivered to the handset.
    Delivered,
    /// The vendor reported that it could not be delivered.
    Undelivered,
}

impl DeliveryState {
    /// The lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
        }
    }

    /// Whether a receipt has settled it.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Sent)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sent" => Ok(Self::Sent),
            "delivered" => Ok(Self::Delivered),
            "undelivered" => Ok(Self::Undelivered),
            other => Err(format!(
                "unknown delivery state {other:?}; expected sent, delivered or undelivered"
            )),
        }
    }
}

/// A vendor's delivery receipt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The vendor that sent it (from the receipt's endpoint, not its body).
    pub vendor: VendorId,
    /// The vendor's id for the send it is about.
    pub vendor_message_id: String,
    /// The recipient it is about.
    pub recipient: PhoneNumber,
    /// Delivered, or not.
    pub delivered: bool,
    /// The vendor's or carrier's status code (`DELIVRD`, `MK:0001`, …), when given.
    pub code: Option<String>,
    /// The vendor's words about it, when given.
    pub description: Option<String>,
    /// When the handset got it, or when the vendor gave up, as the vendor says.
    pub reported_at: Option<DateTime<Utc>>,
    /// Segments the vendor billed for this recipient, when the receipt says.
    pub segments: Option<u32>,
}

impl DeliveryReport {
    /// Where it leaves its recipient.
    pub fn state(&self) -> DeliveryState {
        if self.delivered {
            DeliveryState::Delivered
        } else {
            DeliveryState::Undelivered
        }
    }
}

/// A recipient a vendor accepted a message for, with the vendor's id for the send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentDelivery {
    /// The gateway's message.
    pub message_id: MessageId,
    /// The recipient.
    pub recipient: PhoneNumber,
    /// The vendor that accepted it.
    pub vendor: VendorId,
    /// The vendor's id for the send.
    pub vendor_message_id: String,
    /// When the vendor accepted it.
    pub sent_at: DateTime<Utc>,
    /// Where the message's status events go, if anywhere.
    pub callback_url: Option<CallbackUrl>,
    /// Segments the gateway billed for this recipient (the vendor's count at the send,
    /// or the count from the text), when known: a receipt that says otherwise is a
    /// billing difference.
    pub billed_segments: Option<u32>,
}

/// What applying one receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportApplied {
    /// It settled a recorded send, which the vendor accepted then.
    Applied {
        /// When the send it settled was accepted.
        sent_at: DateTime<Utc>,
        /// The message it settled.
        message_id: MessageId,
        /// Where that message's status events go, if anywhere.
        callback_url: Option<CallbackUrl>,
        /// Segments the gateway billed for the recipient at the send, when recorded.
        billed_segments: Option<u32>,
    },
    /// The send was settled already (the same receipt again, or a later one): nothing
    /// changed.
    Duplicate,
    /// No send with that vendor id and recipient is recorded (yet): the receipt is kept
    /// and applied when the send is recorded.
    Kept,
}

/// One recipient of a message, as the log knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientDelivery {
    /// The recipient.
    pub recipient: PhoneNumber,
    /// The vendor that accepted the message for it.
    pub vendor: VendorId,
    /// The vendor's id for the send.
    pub vendor_message_id: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// The receipt's status code, once there is one.
    pub code: Option<String>,
    /// The receipt's description, once there is one.
    pub description: Option<String>,
    /// When the vendor accepted it.
    pub sent_at: DateTime<Utc>,
    /// When the handset got it (or the vendor gave up), from the receipt.
    pub reported_at: Option<DateTime<Utc>>,
    /// When the gateway received the receipt.
    pub receipt_at: Option<DateTime<Utc>>,
    /// Segments billed, from the receipt.
    pub segments: Option<u32>,
}

/// A recorded send still waiting for its receipt: what a vendor that is asked for
/// receipts, instead of pushing them, needs to be asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    /// The vendor's id for the send.
    pub vendor_message_id: String,
    /// The recipient.
    pub recipient: PhoneNumber,
    /// When the vendor accepted it.
    pub sent_at: DateTime<Utc>,
}

/// A vendor that hands out delivery receipts when asked (Tencent `PullSmsSendStatus`,
/// Aliyun `QuerySendDetails`): for a vendor that is not set up to push them.
#[async_trait]
pub trait ReceiptPull: Send + Sync {
    /// The receipts the vendor has now. `pending` lists the sends to this vendor still
    /// without a receipt, oldest first: a vendor that is asked per send asks about
    /// these (one query each, so the caller bounds the work by the list's length); one
    /// that hands out its receipts as a queue (each once) takes the next batch and
    /// ignores the list. Receipts the gateway already has may come again.
    async fn pull_receipts(
        &self,
        pending: &[PendingDelivery],
    ) -> Result<Vec<DeliveryReport>, crate::vendor::VendorError>;
}

/// Per-recipient delivery records: sends as vendors accepted them, and their receipts.
/// Shared by every instance; each call is atomic.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Records accepted sends. A receipt kept for one of them is applied now, and
    /// returned with what applying it did (as [`apply_reports`](DeliveryLog::apply_reports)
    /// would have answered, had the send been recorded first), so that the gateway
    /// takes it into account as it does any receipt. Recording the same send again
    /// changes nothing and returns nothing.
    async fn record_sent(
        &self,
        sent: &[SentDelivery],
    ) -> Result<Vec<(DeliveryReport, ReportApplied)>, StoreError>;

    /// Applies receipts received at `now`, one answer per receipt, in order. The first
    /// receipt that settles a send wins; later ones change nothing.
    async fn apply_reports(
        &self,
        reports: &[DeliveryReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReportApplied>, StoreError>;

    /// The recipients of message `id` that a vendor accepted, oldest send first.
    async fn deliveries(&self, id: MessageId) -> Result<Vec<RecipientDelivery>, StoreError>;

    /// The sends to `recipient` recorded at or after `since`, newest first, at most
    /// `limit`, each with its message.
    async fn sent_to(
        &self,
        recipient: &PhoneNumber,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(MessageId, RecipientDelivery)>, StoreError>;

    /// The sends to `vendor` still without a receipt, accepted after `after` and before
    /// `before`, oldest first, at most `limit`: what to ask a vendor that does not push
    /// its receipts about.
    async fn unsettled(
        &self,
        vendor: &VendorId,
        after: DateTime<Utc>,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingDelivery>, StoreError>;

    /// Deletes up to `limit` rows older than `before`: sends recorded before it, and
    /// kept receipts that never found their send, received before it. Returns how many.
    async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
}
