//! The vendor seam: anything that can hand an SMS to a carrier network.

use std::time::Duration;

use async_trait::async_trait;

use crate::ids::VendorId;
use crate::money::Money;
use crate::phone::PhoneNumber;
use crate::template::OutboundSms;

/// What went wrong when a vendor was asked to send.
///
/// The kinds decide what the gateway does next, so adapters must map each vendor
/// response onto the right one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VendorError {
    /// No answer in time after the request may have reached the vendor: the message may
    /// or may not have been sent.
    #[error("vendor timed out; the outcome is unknown")]
    TimedOut,
    /// The vendor refused because we are sending too fast. Counts against its health.
    #[error("vendor throttled the request: {message}")]
    Throttled {
        /// The vendor's words.
        message: String,
        /// How long the vendor asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The vendor refused this message for good (bad number, unknown template, no
    /// signature). Not a sign of the vendor's health; retrying will not help.
    #[error("vendor rejected the message ({code}): {message}")]
    Rejected {
        /// The vendor's error code.
        code: String,
        /// The vendor's words.
        message: String,
    },
    /// The vendor refused our account: its credentials or signature (revoked or wrong
    /// key, expired signature), or an account that cannot send (no balance, suspended,
    /// not subscribed). The vendor is unusable until an operator fixes it; not the
    /// message's fault, so it counts against the vendor's health and the message is
    /// retried on another vendor.
    #[error("vendor refused our account ({code}): {message}")]
    Unauthorized {
        /// The vendor's error code.
        code: String,
        /// The vendor's words.
        message: String,
    },
    /// A failure that may pass: 5xx, connection refused, outage. Counts against the
    /// vendor's health; the message is retried.
    #[error("vendor failed: {message}")]
    Transient {
        /// What happened.
        message: String,
    },
    /// The vendor refuses this recipient for now: its per-number limit (Aliyun
    /// `isv.BUSINESS_LIMIT_CONTROL`, Tencent `LimitExceeded.PhoneNumber*`). Says nothing
    /// about the vendor's health. Sending through another vendor would get around a
    /// limit that protects the recipient, so the message waits for this vendor's window.
    #[error("vendor refuses this recipient for now ({code}): {message}")]
    RecipientRefused {
        /// The vendor's error code.
        code: String,
        /// The vendor's words.
        message: String,
        /// When the vendor's window lets the next message through.
        retry_after: Duration,
    },
    /// Our configuration at this vendor is wrong for this message: its template or
    /// signature is not approved there, or the parameters do not match the template.
    /// The vendor is up, so its health is untouched; the message goes to another vendor
    /// that has the template, and the mapping is reported broken.
    #[error("vendor refused our template or signature ({code}): {message}")]
    Misconfigured {
        /// The vendor's error code.
        code: String,
        /// The vendor's words.
        message: String,
    },
    /// A split send (one call per group of recipients) that the vendor took for `sent`
    /// and then failed for the others with `error`. `sent` got the message and were
    /// billed as `receipt` says: a retry goes to the others only. What it says about
    /// the vendor, and what happens to the others, is what `error` says.
    #[error("vendor took the message for {} recipients, then failed for the others: {error}", sent.len())]
    PartlySent {
        /// The recipients the vendor took.
        sent: Vec<PhoneNumber>,
        /// What the vendor answered for them.
        receipt: Receipt,
        /// Why the others were not sent.
        error: Box<VendorError>,
    },
}

impl VendorError {
    /// The failure itself: for a partly sent message, why the others were not sent.
    pub fn cause(&self) -> &VendorError {
        match self {
            Self::PartlySent { error, .. } => error.cause(),
            other => other,
        }
    }

    /// Whether this failure says something about the vendor's health.
    pub fn counts_against_vendor(&self) -> bool {
        // Spelled out so that a new kind has to be placed on one side deliberately.
        match self {
            Self::Rejected { .. } | Self::RecipientRefused { .. } | Self::Misconfigured { .. } => {
                false
            }
            Self::TimedOut
            | Self::Throttled { .. }
            | Self::Unauthorized { .. }
            | Self::Transient { .. } => true,
            Self::PartlySent { error, .. } => error.counts_against_vendor(),
        }
    }

    /// Short machine-readable kind, for metrics and storage.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TimedOut => "timed_out",
            Self::Throttled { .. } => "throttled",
            Self::Rejected { .. } => "rejected",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Transient { .. } => "transient",
            Self::RecipientRefused { .. } => "recipient_refused",
            Self::Misconfigured { .. } => "misconfigured",
            Self::PartlySent { error, .. } => error.kind(),
        }
    }
}

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
    /// The vendor's id for each accepted recipient, where they differ (Tencent's
    /// `SerialNo` is per number; a send split into several calls has an id per call).
    /// Empty: every recipient's id is `vendor_message_id`. Delivery receipts name these.
    pub recipient_ids: Vec<(PhoneNumber, String)>,
}

impl Receipt {
    /// The vendor's id for the send to `recipient`, which its delivery receipt names.
    pub fn id_of(&self, recipient: &PhoneNumber) -> &str {
        self.recipient_ids
            .iter()
            .find(|(number, _)| number == recipient)
            .map_or(self.vendor_message_id.as_str(), |(_, id)| id.as_str())
    }
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

    /// Where the price changes next after `billed_volume` messages this period, and to
    /// what: for operators watching spend against the tiers. The default knows no
    /// tiers and answers `None`.
    fn next_tier(&self, billed_volume: u64) -> Option<NextTier> {
        let _ = billed_volume;
        None
    }
}

/// The next price tier of a vendor: from the `from_volume`-th message of the period
/// (counted from 0), each message costs `price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextTier {
    /// The billed volume at which the tier starts.
    pub from_volume: u64,
    /// Its price per message.
    pub price: Money,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_counts_against_the_vendor_unlike_a_rejection() {
        let unauthorized = VendorError::Unauthorized {
            code: "SignatureDoesNotMatch".into(),
            message: "signature mismatch".into(),
        };
        assert!(unauthorized.counts_against_vendor());
        assert_eq!(unauthorized.kind(), "unauthorized");
        assert_eq!(
            unauthorized.to_string(),
            "vendor refused our account (SignatureDoesNotMatch): signature mismatch"
        );

        let rejected = VendorError::Rejected {
            code: "isv.MOBILE_NUMBER_ILLEGAL".into(),
            message: "bad number".into(),
        };
        assert!(!rejected.counts_against_vendor());
        assert_eq!(rejected.kind(), "rejected");
    }

    #[test]
    fn only_failures_of_the_vendor_count_against_it() {
        let kinds = [
            (VendorError::TimedOut, "timed_out", true),
            (
                VendorError::Throttled {
                    message: "slow down".into(),
                    retry_after: None,
                },
                "throttled",
                true,
            ),
            (
                VendorError::Transient {
                    message: "502".into(),
                },
                "transient",
                true,
            ),
            (
                VendorError::RecipientRefused {
                    code: "isv.BUSINESS_LIMIT_CONTROL".into(),
                    message: "触发分钟级流控Permits:1".into(),
                    retry_after: Duration::from_secs(60),
                },
                "recipient_refused",
                false,
            ),
            (
                VendorError::Misconfigured {
                    code: "isv.SMS_TEMPLATE_ILLEGAL".into(),
                    message: "template not approved".into(),
                },
                "misconfigured",
                false,
            ),
        ];
        for (error, kind, counts) in kinds {
            assert_eq!(error.kind(), kind);
            assert_eq!(error.counts_against_vendor(), counts, "{kind}");
        }
    }
}
