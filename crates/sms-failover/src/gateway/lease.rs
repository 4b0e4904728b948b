//! Leases around a vendor call: long enough for the call and the write of its outcome,
//! and held until that write lands.
//!
//! A message is sent only under a lease, and its outcome ("sent", "dead", back in the
//! queue) is written under the same lease. Were the lease to lapse before that write,
//! another drainer could claim the message and send it again. So:
//!
//! - Before a vendor call, the lease must have the attempt timeout left plus a margin
//!   for the outcome write and its retries; when it has less (a drain lane that waited
//!   behind slow calls, a live request that waited on the store and the limiters), it
//!   is renewed first.
//! - An outcome write that the store keeps refusing is handed to a task that goes on
//!   trying, renewing the lease each time, until it lands or another claimer holds the
//!   message. Its tries come at least four times per lease, so the lease lapses only
//!   when the store stays away from this instance for most of a lease; a message then
//!   claimed again is flagged `may_duplicate`, as after a crash.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{
    AttemptFailure, Clock, DeferredQueue, LeaseToken, MessageId, SmsRequest, StoreError, VendorId,
};

use super::Gateway;
use crate::backoff::after;

/// Longest margin kept for the outcome write beyond the attempt timeout.
const OUTCOME_MARGIN_MAX: Duration = Duration::from_secs(5);

/// First and longest pause between tries of an outcome write the store keeps refusing.
const KEEP_TRYING_FIRST: Duration = Duration::from_millis(500);
const KEEP_TRYING_MAX: Duration = Duration::from_secs(30);

/// The outcome of a leased message that must be written.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Delivered by `vendor` at `at`.
    Sent { vendor: VendorId, at: DateTime<Utc> },
    /// Given up at `at` (the caller was told it failed).
    Dead {
        failure: AttemptFailure,
        at: DateTime<Utc>,
    },
}

impl Outcome {
    /// Writes the outcome under `token`.
    async fn write(
        &self,
        queue: &dyn DeferredQueue,
        id: MessageId,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        match self {
            Outcome::Sent { vendor, at } => queue.complete(id, token, vendor, *at).await,
            Outcome::Dead { failure, at } => queue.dead(id, token, failure.clone(), *at).await,
        }
    }
}

impl Gateway {
    /// Room kept for the outcome write beyond the vendor call: at most
    /// [`OUTCOME_MARGIN_MAX`], and at most half of what the configured lease leaves
    /// beyond the attempt timeout, so a renewed lease always covers a one-call send.
    fn outcome_margin(&self) -> Duration {
        let spare = self
            .config
            .lease
            .saturating_sub(self.config.attempt_timeout);
        (spare / 2).min(OUTCOME_MARGIN_MAX)
    }

    /// What a lease must have left when the vendor call for `request` starts: the
    /// longest the call may take and the margin for the outcome write.
    pub(crate) fn lease_needed(&self, request: &SmsRequest) -> Duration {
        self.send_bound(request) + self.outcome_margin()
    }

    /// Renews the lease `token` holds on `id` when what is left of it (until
    /// `expires_at`) could not cover an attempt of `request` and its outcome write.
    pub(crate) async fn cover_attempt(
        &self,
        id: MessageId,
        token: LeaseToken,
        expires_at: DateTime<Utc>,
        request: &SmsRequest,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let needed = self.lease_needed(request);
        if after(now, needed) < expires_at {
            return Ok(());
        }
        // A split send to many recipients may need more than the configured lease.
        let lease_for = self.config.lease.max(needed + self.outcome_margin());
        self.queue
            .renew(id, token, lease_for, now)
            .await
            .map(|_| ())
    }

    /// Hands an outcome write the store refused to a task that keeps trying it,
    /// renewing the lease before each try, until it lands or the lease is lost.
    pub(crate) fn keep_writing(&self, id: MessageId, token: LeaseToken, outcome: Outcome) {
        let queue = self.queue.clone();
        let clock = self.clock.clone();
        let lease = self.config.lease;
        let longest_pause = KEEP_TRYING_MAX.min(lease / 4);
        tracing::warn!(%id, "the store refuses the outcome; trying again in the background, holding the lease");
        tokio::spawn(keep_trying(
            queue,
            clock,
            lease,
            longest_pause,
            id,
            token,
            outcome,
        ));
    }
}

/// The loop behind [`Gateway::keep_writing`].
async fn keep_trying(
    queue: Arc<dyn DeferredQueue>,
    clock: Arc<dyn Clock>,
    lease: Duration,
    longest_pause: Duration,
    id: MessageId,
    token: LeaseToken,
    outcome: Outcome,
) {
    let mut pause = KEEP_TRYING_FIRST.min(longest_pause);
    for tries in 1u64.. {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(longest_pause);
        // Renewing first keeps the message ours while the store comes back; a renewal
        // refused for the token means another claimer holds it now.
        let result = match queue.renew(id, token, lease, clock.now()).await {
            Ok(_) => outcome.write(queue.as_ref(), id, token).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(%id, tries, "the outcome was written after the store came back");
                return;
            }
            Err(StoreError::LeaseLost(_)) => {
                tracing::warn!(%id, "lease lost before the outcome could be written: another claimer holds the message");
                return;
            }
            Err(e @ (StoreError::NotFound(_) | StoreError::WrongStatus { .. })) => {
                tracing::warn!(%id, error = %e, "the outcome cannot be written");
                return;
            }
            Err(e) => {
                tracing::debug!(%id, tries, error = %e, "the outcome still cannot be written")
            }
        }
    }
}
