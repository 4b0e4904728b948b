//! One vendor attempt: the vendor health picks, the call under its timeout, what the
//! answer says about the vendor, the messages it billed, and when a failure is retried.
//!
//! Live sends and drained messages make their attempts here, so both follow one set of
//! rules: a slow success counts as one failure, a refusal of the message says nothing
//! about the vendor, and vendors bill at least one message per recipient.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{AttemptFailure, Money, OutboundSms, QueueReason, Receipt, SendError, VendorError};
use tokio::time::Instant;

use super::Gateway;
use crate::backoff::{after, jittered_backoff};
use crate::events::{AttemptOutcome, GatewayEvent};
use crate::health::Verdict;

/// Where the message of an attempt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A request the caller waits on.
    Live,
    /// A message claimed from the deferred queue.
    Drained,
}

/// How one attempt went.
pub(crate) struct Attempted {
    /// The vendor's index.
    pub idx: usize,
    pub result: Result<Receipt, VendorError>,
    /// Accepted, but slower than the slow threshold.
    pub slow: bool,
    /// Messages billed (0 unless accepted).
    pub billed: u64,
    /// This attempt's failure made the gateway switch to another vendor.
    pub switched: bool,
    /// When the answer came.
    pub finished_at: DateTime<Utc>,
}

impl Attempted {
    /// What the failure `error` of this attempt is stored as.
    pub fn failure(&self, gateway: &Gateway, error: &VendorError) -> AttemptFailure {
        AttemptFailure {
            vendor: Some(gateway.ids[self.idx].clone()),
            error: error.to_string(),
            may_duplicate: may_duplicate(error),
        }
    }
}

/// Whether the vendor may have delivered a message although the attempt failed: it
/// timed out, so its outcome is unknown.
pub(crate) fn may_duplicate(error: &VendorError) -> bool {
    matches!(error, VendorError::TimedOut)
}

/// What the observer is told about an answer, and what it says about the vendor.
fn outcome_of(result: &Result<Receipt, VendorError>, slow: bool) -> (AttemptOutcome, Verdict) {
    match result {
        Ok(_) if slow => (AttemptOutcome::Slow, Verdict::Slow),
        Ok(_) => (AttemptOutcome::Ok, Verdict::Fast),
        Err(VendorError::TimedOut) => (AttemptOutcome::TimedOut, Verdict::Failure),
        Err(VendorError::Throttled { .. }) => (AttemptOutcome::Throttled, Verdict::Failure),
        Err(VendorError::Rejected { .. }) => (AttemptOutcome::Rejected, Verdict::Neutral),
        // Revoked keys or a bad signature make the vendor unusable for every message:
        // count it so the gateway switches away instead of losing each message in turn.
        Err(VendorError::Unauthorized { .. }) => (AttemptOutcome::Unauthorized, Verdict::Failure),
        Err(VendorError::Transient { .. }) => (AttemptOutcome::Transient, Verdict::Failure),
    }
}

/// Why a message whose attempt failed with `error` waits in the queue.
pub(crate) fn queue_reason(error: &VendorError) -> QueueReason {
    match error {
        VendorError::TimedOut => QueueReason::TimedOut,
        VendorError::Throttled { .. } => QueueReason::VendorThrottled,
        // Rejected messages are never queued; listed so a new kind needs a decision here.
        VendorError::Unauthorized { .. }
        | VendorError::Transient { .. }
        | VendorError::Rejected { .. } => QueueReason::VendorFailed,
    }
}

impl Gateway {
    /// One vendor call, with its timeout, health accounting and usage. The call is
    /// timed from just before it starts, so time spent on limits or the store before
    /// it is never counted as the vendor's latency.
    pub(crate) async fn attempt(
        &self,
        sms: &OutboundSms,
        origin: Origin,
    ) -> Result<Attempted, SendError> {
        let ticket = self
            .health()
            .begin(self.clock.now())
            .ok_or_else(|| SendError::NoVendor("every vendor is disabled".into()))?;
        let idx = ticket.idx;
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.attempt_timeout, self.vendors[idx].send(sms))
            .await
            .unwrap_or(Err(VendorError::TimedOut));
        let latency = started.elapsed();
        let slow = result.is_ok() && latency > self.config.slow_threshold;
        let (outcome, verdict) = outcome_of(&result, slow);
        // Vendors bill at least one message per recipient, whatever they report.
        let billed = match &result {
            Ok(receipt) => receipt
                .billed_messages
                .max(sms.request.recipients().len() as u64),
            Err(_) => 0,
        };
        let finished_at = self.clock.now();
        let (cost, switch) = {
            let mut health = self.health();
            let cost = if billed > 0 {
                health.add_usage(idx, billed, finished_at)
            } else {
                Money::ZERO
            };
            (cost, health.record(ticket, verdict, finished_at))
        };
        if billed > 0 {
            self.write_behind.usage_added();
        }
        self.emit(|| GatewayEvent::Attempt {
            vendor: self.ids[idx].clone(),
            outcome,
            latency,
            billed_messages: billed,
            cost,
            drained: origin == Origin::Drained,
        });
        let switched = self.announce(switch);
        Ok(Attempted {
            idx,
            result,
            slow,
            billed,
            switched,
            finished_at,
        })
    }

    /// When the message of a failed attempt, its `attempt_number`-th, is retried.
    pub(crate) fn retry_at(&self, attempted: &Attempted, attempt_number: u32) -> DateTime<Utc> {
        let now = attempted.finished_at;
        if attempted.switched {
            // This failure moved the gateway to another vendor: retry there right away.
            return now;
        }
        let mut delay: Duration = jittered_backoff(
            attempt_number,
            self.config.backoff_base,
            self.config.backoff_max,
        );
        if let Err(VendorError::Throttled {
            retry_after: Some(wait),
            ..
        }) = &attempted.result
        {
            delay = delay.max(*wait);
        }
        after(now, delay)
    }
}
