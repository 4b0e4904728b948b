//! Errors a caller can act on, one enum per concern.

use std::time::Duration;

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
