//! What the gateway tells an observer (metrics, simulations, logs) as it works.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{ClientId, MessageId, Money, QueueReason, VendorId};

/// How one vendor call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Accepted within the slow threshold.
    Ok,
    /// Accepted, but slower than the slow threshold: counts as one failure.
    Slow,
    /// No answer within the attempt timeout: the outcome is unknown.
    TimedOut,
    /// The vendor asked us to slow down.
    Throttled,
    /// The vendor refused the message for good.
    Rejected,
    /// The vendor refused our credentials or signature: counts as a failure of the vendor.
    Unauthorized,
    /// A failure that may pass (5xx, network).
    Transient,
    /// The vendor's per-number limit refused a recipient: says nothing about the vendor.
    RecipientRefused,
    /// The vendor has not approved the message's template or signature: says nothing
    /// about the vendor, the message goes to another.
    Misconfigured,
}

impl AttemptOutcome {
    /// The lower-case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Slow => "slow",
            Self::TimedOut => "timed_out",
            Self::Throttled => "throttled",
            Self::Rejected => "rejected",
            Self::Unauthorized => "unauthorized",
            Self::Transient => "transient",
            Self::RecipientRefused => "recipient_refused",
            Self::Misconfigured => "misconfigured",
        }
    }
}

/// Something the gateway did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayEvent {
    /// One vendor call finished.
    Attempt {
        /// The vendor called.
        vendor: VendorId,
        /// How it ended.
        outcome: AttemptOutcome,
        /// How long it took (the timeout, for timeouts).
        latency: Duration,
        /// Messages billed for it (0 unless it was accepted).
        billed_messages: u64,
        /// What those messages cost at the vendor's tiered price (zero unless it was
        /// accepted).
        cost: Money,
        /// Whether the message came from the deferred queue.
        drained: bool,
        /// The client that sent the message, when it was a named one: spend caps count
        /// `cost` against it.
        client: Option<ClientId>,
    },
    /// The current vendor changed.
    Switched {
        /// The vendor switched away from.
        from: VendorId,
        /// The new current vendor.
        to: VendorId,
        /// Why (failures, recovery, operator).
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Every vendor rests after failures (or is disabled): nothing is attempted, and
    /// messages wait, until the first rest ends. Reported once per outage.
    AllVendorsUnavailable {
        /// When the last usable vendor was put to rest.
        at: DateTime<Utc>,
        /// When the first rest ends.
        until: DateTime<Utc>,
    },
    /// A vendor delivered again after every vendor was unavailable: the outage is over.
    VendorsAvailableAgain {
        /// The vendor that delivered.
        vendor: VendorId,
        /// When.
        at: DateTime<Utc>,
        /// How long no vendor could be used.
        unavailable_for: Duration,
    },
    /// A message was stored for a later attempt.
    Queued {
        /// The message.
        id: MessageId,
        /// Why.
        reason: QueueReason,
    },
    /// A message reached a vendor.
    Delivered {
        /// The message.
        id: MessageId,
        /// The vendor that accepted it.
        vendor: VendorId,
        /// Whether it came from the deferred queue.
        drained: bool,
    },
    /// An undelivered message was stored again for its recipient, to go through
    /// another vendor (its template re-sends undelivered messages).
    Resent {
        /// The undelivered message.
        original: MessageId,
        /// The re-send.
        id: MessageId,
        /// The vendor that did not deliver it, which the re-send avoids.
        avoided: VendorId,
    },
    /// A queued message ran out of attempts or was refused for good.
    Dead {
        /// The message.
        id: MessageId,
    },
    /// A queued message passed its deliver-by time unsent.
    Expired {
        /// The message.
        id: MessageId,
    },
    /// The global rate limit deferred a message.
    RateLimited,
    /// A per-recipient limit refused a request.
    RecipientLimited,
    /// A vendor refused a template (not approved there, signature or parameters wrong):
    /// its mapping is marked broken and no message of the template goes there until an
    /// operator enables the vendor again. Reported once per template and vendor.
    MappingBroken {
        /// The logical template.
        template: String,
        /// The vendor that refused it.
        vendor: VendorId,
        /// The vendor's code.
        code: String,
        /// The vendor's words.
        message: String,
    },
    /// A vendor reported billing a different number of messages than the gateway
    /// counted from the text (in its answer to the send; the count recorded is then
    /// the vendor's), or a receipt reported other segments for a recipient than were
    /// billed at the send (segments beyond the count are then added).
    BillingMismatch {
        /// The vendor.
        vendor: VendorId,
        /// Messages counted from the signed text.
        counted: u64,
        /// Messages the vendor reported.
        reported: u64,
    },
}

/// Receives the gateway's events. Called inline on the sending task: keep it quick and
/// never block (count, log, push to a channel).
pub trait GatewayObserver: Send + Sync {
    /// Called once per event.
    fn on_event(&self, event: &GatewayEvent);
}
