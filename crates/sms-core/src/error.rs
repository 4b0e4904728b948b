//! Errors a caller can act on, one enum per concern.

use std::time::Duration;

use crate::phone::PhoneNumber;
use crate::vendor::Receipt;

/// A boxed error from a backend (driver, network) that the core cannot name.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Bad input: names the field that was wrong and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// The field, as the caller wrote it (`recipients[3]`, `args[0]`, `template`).
    pub field: String,
    /// What was wrong, and what was expected.
    pub problem: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

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

/// Failures of the deferred queue and the usage ledger.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now (server down, pool exhausted, timeout). May pass.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The message's lease was taken over by another claimer (or released): this writer
    /// is stale and its update was refused.
    #[error("lease of message {0} is no longer held by this claimer")]
    LeaseLost(crate::MessageId),
    /// No message has that id.
    #[error("message {0} not found")]
    NotFound(crate::MessageId),
    /// The operation does not apply to the message in its current status.
    #[error("message {id} is {status}, expected {expected}")]
    WrongStatus {
        /// The message.
        id: crate::MessageId,
        /// Its status now.
        status: crate::MessageStatus,
        /// The status the operation needs.
        expected: &'static str,
    },
    /// Anything else the backend reported (bad data, constraint, bug).
    #[error("storage backend error: {0}")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// An `Unavailable` error from anything printable.
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }
    /// A `Backend` error from anything printable.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Self::Backend(e.into())
    }
}

/// Failures of a rate limiter's backend (not a "limited" decision, which is a normal answer).
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The shared limiter cannot be reached now.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Anything else the backend reported.
    #[error("rate limiter backend error: {0}")]
    Backend(#[source] BoxError),
}

/// What the caller of the gateway is told when a message was not sent or queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request was malformed; nothing was stored or sent.
    #[error("invalid request: {0}")]
    Invalid(#[from] ValidationError),
    /// The vendor timed out and the policy is to report it: the message may have been sent.
    #[error("timed out; the message may or may not have been delivered")]
    TimedOut,
    /// The vendor rejected the message for good.
    #[error("rejected by {vendor} ({code}): {message}")]
    Rejected {
        /// The vendor that rejected it.
        vendor: crate::VendorId,
        /// The vendor's code.
        code: String,
        /// The vendor's words.
        message: String,
    },
    /// A recipient is over its per-recipient limit; nothing was sent to them.
    #[error("recipient {recipient} is over the limit of {limit} per {window:?}")]
    RecipientLimited {
        /// The recipient, masked.
        recipient: String,
        /// How many messages the window allows.
        limit: u32,
        /// The window.
        window: Duration,
        /// When the next message would be allowed.
        retry_after: Duration,
    },
    /// The vendor refuses this recipient for now (its per-number limit); nothing was
    /// sent. Another vendor is not tried: that would get around the limit.
    #[error("{vendor} refuses this recipient for now ({code}): {message}")]
    RecipientRefused {
        /// The vendor that refused.
        vendor: crate::VendorId,
        /// The vendor's code.
        code: String,
        /// The vendor's words.
        message: String,
        /// When the vendor's window lets the next message through.
        retry_after: Duration,
    },
    /// The message could neither be sent now nor stored for later.
    #[error("could not send or queue the message: {0}")]
    StorageUnavailable(#[source] StoreError),
    /// The message's deliver-by time has passed; it was not sent.
    #[error("the message expired before it could be delivered")]
    Expired,
    /// No vendor can take messages (all disabled or none configured).
    #[error("no vendor available: {0}")]
    NoVendor(String),
    /// The per-recipient limits could not be checked and the policy is to fail closed;
    /// nothing was sent or stored.
    #[error("the per-recipient limits cannot be checked now, so nothing was sent: {0}")]
    LimitsUnavailable(#[source] LimitError),
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
