//! What a drained message is checked for before its attempt, beyond what its first
//! acceptance checked: the blocklist, which may have gained a recipient since (a number
//! that opted out after the message was scheduled or queued must not get it); the spend
//! caps, which its client may have reached since; and, for a scheduled message's first
//! attempt, the per-recipient limits, counted when it goes out rather than when it was
//! accepted.

use chrono::{DateTime, Utc};
use sms_core::{AttemptFailure, LeaseToken, QueueReason, RecipientDecision, StoredMessage};

use super::Gateway;
use super::report::DrainReport;

/// What the screen left of a message.
pub(super) enum Screened {
    /// Send it (its request may have lost blocked recipients).
    Send,
    /// Settled here (dead, or put back for later): go on with the next message.
    Settled,
    /// The store failed: it was given back; end the pass.
    Halt,
}

impl Gateway {
    /// Takes blocked recipients off `message` (a message left with none is dead), holds
    /// it back while its client's spend cap is reached, and counts a scheduled message's
    /// recipients in their limits (a limited one waits for the recipient's window). A
    /// message held back or limited waits with its attempt not counted.
    pub(super) async fn screen(
        &self,
        message: &mut StoredMessage,
        token: LeaseToken,
        now: DateTime<Utc>,
        report: &mut DrainReport,
    ) -> Screened {
        let id = message.id;
        if let Some(blocklist) = &self.blocklist {
            let blocked = match blocklist.blocked_among(message.request.recipients()).await {
                Ok(blocked) => blocked,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "could not read the blocklist; the message waits");
                    self.release(message, report).await;
                    return Screened::Halt;
                }
            };
            if !blocked.is_empty() {
                let masked: Vec<String> = blocked.iter().map(|n| n.masked()).collect();
                match message.request.without(&blocked) {
                    None => {
                        tracing::info!(%id, recipients = ?masked, "every recipient is on the blocklist now; the message is dead");
                        let failure = AttemptFailure {
                            vendor: None,
                            error: "every recipient is on the blocklist".to_owned(),
                            may_duplicate: false,
                            pinned: false,
                        };
                        self.bury(id, &message.request, token, failure, now, report)
                            .await;
                        return Screened::Settled;
                    }
                    Some(rest) => {
                        tracing::info!(%id, recipients = ?masked, "recipients on the blocklist now are left out");
                        let result = self.queue.narrow(id, token, &blocked, now).await;
                        if !self.updated(id, result, report) {
                            return Screened::Settled;
                        }
                        message.request = rest;
                    }
                }
            }
        }
        if let Some(gate) = &self.spend_gate
            && let Some(hold) = gate.hold(message.request.client().cloned(), now)
        {
            tracing::info!(%id, why = %hold.why, until = %hold.until, "the message waits: a spend cap is reached");
            self.defer(id, token, &message.request, hold.until, report)
                .await;
            return Screened::Settled;
        }
        let first_of_schedule = message.reason == QueueReason::Scheduled && message.attempts == 1;
        if let (true, Some(limiter)) = (first_of_schedule, &self.recipient_limiter) {
            let recipients = message.request.recipients();
            let decisions = match limiter.check(recipients).await {
                Ok(decisions) => decisions,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "could not check the recipient limits; the message waits");
                    self.release(message, report).await;
                    return Screened::Halt;
                }
            };
            let wait = decisions
                .iter()
                .filter_map(|d| match d {
                    RecipientDecision::Limited { retry_after, .. } => Some(*retry_after),
                    RecipientDecision::Allowed => None,
                })
                .max();
            if let Some(wait) = wait {
                // All or none: the counts taken go back, and it waits for the window.
                let counted: Vec<_> = recipients
                    .iter()
                    .zip(&decisions)
                    .filter(|(_, d)| matches!(d, RecipientDecision::Allowed))
                    .map(|(r, _)| r.clone())
                    .collect();
                super::send::give_back(limiter.as_ref(), &counted).await;
                let until = crate::backoff::after(now, wait);
                self.defer(id, token, &message.request, until, report).await;
                return Screened::Settled;
            }
        }
        Screened::Send
    }
}
