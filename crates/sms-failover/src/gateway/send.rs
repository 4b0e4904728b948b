//! A live request: expiry and template checks → per-recipient limits → a vendor that
//! can send its template → scheduled for later (`send_at`): stored, due then → global
//! rate limit, taken in the request's lane (limited: stored, caller told "queued") →
//! with an idempotency key, stored leased before the attempt → one attempt on the
//! vendor picked by the health state → usage, health, and either "sent", "queued" (for a
//! later attempt by the drain) or an error the caller can act on.
//!
//! A key already stored is found by the write that stores the message, so a retried
//! request gets the first try's message back without a separate look-up. Only a keyed
//! request refused before that write (recipient limit, no vendor) looks its key up, so
//! that a retry is never refused by the limit its first try used.
//!
//! A vendor's per-number limit is the recipient's, not the vendor's: a request without
//! a key is answered with the refusal and its wait; a keyed one, already stored, waits
//! for the vendor's window pinned to that vendor. Either way no other vendor is tried,
//! which would get around the limit.
//!
//! A failed live request is *not* retried inline on another vendor: it is stored at
//! once, and when its failure made the gateway switch, it is due immediately, so the
//! drain, which a fast success or the periodic tick starts, retries it on the new
//! vendor. This keeps the caller's latency bounded by one attempt and gives every retry
//! the same lease, backoff and attempt cap.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{
    AttemptFailure, CallbackStatus, Enqueued, InitialState, Lease, LeaseToken, MessageId,
    NewMessage, PhoneNumber, QueueReason, RateDecision, RecipientDecision, RecipientLimiter,
    SendError, SmsRequest, StoredMessage, ValidationError, VendorError, VendorId,
};

use tracing::Instrument;

use super::attempt::{Attempted, NoRoute, Origin, may_duplicate, queue_reason};
use super::lease::Outcome;
use super::{Gateway, Settled, due_after_rest};
use crate::backoff::after;
use crate::config::TimeoutPolicy;
use crate::events::GatewayEvent;
use crate::write_behind::SentRecord;

/// What happened to a request.
// One value per request, moved once to the caller and never stored in bulk, so the size
// of `Existing` costs nothing worth a box (and callers match on the plain message).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// A vendor accepted it.
    Sent {
        /// The gateway's id for it.
        id: MessageId,
        /// The vendor that accepted it.
        vendor: VendorId,
        /// Messages billed (at least one per recipient).
        billed_messages: u64,
        /// It was accepted, but slower than the slow threshold.
        slow: bool,
    },
    /// It is stored and will be attempted later.
    Queued {
        /// The gateway's id for it.
        id: MessageId,
        /// Why it was not sent now.
        reason: QueueReason,
        /// A timed-out attempt may have delivered it already.
        may_duplicate: bool,
    },
    /// A request with the same idempotency key was seen before; nothing was sent now.
    Existing(StoredMessage),
}

/// What the global rate limiter said about a request.
enum RateCheck {
    Allowed,
    /// Over the limit (or the limiter could not tell): stored, due after this wait.
    Limited {
        retry_after: Duration,
    },
}

/// A keyed request's row, stored before the attempt.
enum Reservation {
    /// No idempotency key: nothing is stored before the attempt.
    Unkeyed,
    /// Stored leased to this instance under this token, until then (this clock).
    Leased(LeaseToken, DateTime<Utc>),
    /// A concurrent request with the same key stored it first (boxed: the rare case
    /// should not make every reservation as large as a stored message).
    Existing(Box<StoredMessage>),
}

/// Which recipients a live request's vendor call may have reached: a refused request
/// gives the others their recipient-limit counts back.
#[derive(Debug, Default)]
enum Reached {
    /// No vendor took it (or it was never sent to one).
    #[default]
    Nobody,
    /// The vendor took it for these, and not for the others.
    Only(Vec<PhoneNumber>),
    /// Every recipient may have it: delivered, or a timeout left it unknown.
    Everyone,
}

impl Reached {
    /// What a vendor's answer says about who got the message.
    fn from_answer(result: &Result<sms_core::Receipt, VendorError>) -> Self {
        match result {
            Ok(_) => Self::Everyone,
            Err(error) if matches!(error.cause(), VendorError::TimedOut) => Self::Everyone,
            Err(VendorError::PartlySent { sent, .. }) => Self::Only(sent.clone()),
            Err(_) => Self::Nobody,
        }
    }
}

/// Gives `recipients`' counts back to the limiter; a failure only costs the recipients
/// part of their allowance, so it is logged.
pub(super) async fn give_back(limiter: &dyn RecipientLimiter, recipients: &[PhoneNumber]) {
    if recipients.is_empty() {
        return;
    }
    if let Err(e) = limiter.give_back(recipients).await {
        tracing::warn!(error = %e, "could not give recipient limit counts back");
    }
}

/// The number of rate-limit permits a request takes: one per recipient.
pub(crate) fn permits(request: &SmsRequest) -> u32 {
    u32::try_from(request.recipients().len()).unwrap_or(u32::MAX)
}

impl Gateway {
    /// Sends a request now, or stores it for later. See the module docs for the steps.
    pub async fn send(&self, request: SmsRequest) -> Result<SendOutcome, SendError> {
        let now = self.clock.now();
        if request.is_expired_at(now) {
            return Err(SendError::Expired);
        }
        self.templates.check(&request)?;
        if let Some(problem) = self.over_capacity(&request) {
            return Err(ValidationError::new("recipients", problem).into());
        }
        // A scheduled message is counted in its recipients' limits when it goes out.
        let scheduled = request.send_at().is_some_and(|t| t > now);
        let Some(limiter) = self.recipient_limiter.as_ref().filter(|_| !scheduled) else {
            return self.send_checked(request, now, &mut Reached::Nobody).await;
        };
        if let Err(refusal) = self.check_recipients(limiter.as_ref(), &request).await {
            // A retried request must not be refused by the recipient limiter that
            // counted its first try: a stored key answers instead.
            return self.existing_or(&request, refusal).await;
        }
        // A second handle on the request (it is shared, not copied), for the counts.
        let counted = request.clone();
        let mut reached = Reached::Nobody;
        let outcome = self.send_checked(request, now, &mut reached).await;
        let kept = matches!(
            outcome,
            Ok(SendOutcome::Sent { .. } | SendOutcome::Queued { .. })
        );
        if !kept {
            // Refused after it was counted: the counts of those who did not get it go
            // back, so the refusal does not use up their allowance.
            let recipients = counted.recipients();
            let not_reached: Vec<PhoneNumber> = match reached {
                Reached::Nobody => recipients.to_vec(),
                Reached::Only(sent) => recipients
                    .iter()
                    .filter(|r| !sent.contains(r))
                    .cloned()
                    .collect(),
                Reached::Everyone => Vec::new(),
            };
            give_back(limiter.as_ref(), &not_reached).await;
        }
        outcome
    }

    /// The rest of [`send`](Self::send), once the recipients are checked and counted.
    /// `reached` is told whom a vendor call may have reached.
    async fn send_checked(
        &self,
        request: SmsRequest,
        now: DateTime<Utc>,
        reached: &mut Reached,
    ) -> Result<SendOutcome, SendError> {
        // Never store a message no vendor can send: it would only wait to die.
        let no_route = {
            let health = self.health();
            (!health.can_route(&self.route(&health, &request, None)))
                .then(|| self.no_route_reason(&health, &request))
        };
        if let Some(reason) = no_route {
            return self
                .existing_or(&request, SendError::NoVendor(reason))
                .await;
        }

        let id = MessageId::at(now);
        if let Some(send_at) = request.send_at().filter(|t| *t > now) {
            // Scheduled: stored now, sent by the drain when due, with the queue's
            // leases, backoff and attempt cap. The global limit is taken then.
            let message = NewMessage {
                next_attempt_at: send_at,
                ..NewMessage::queued(
                    id,
                    request,
                    QueueReason::Scheduled,
                    self.config.max_attempts,
                    now,
                )
            };
            let stored = Box::pin(self.store_new(message)).await;
            // The drainer may sleep past the new due time: it looks again.
            self.trigger_drain();
            return stored;
        }
        if let RateCheck::Limited { retry_after } = self.check_rate(&request).await {
            self.emit(|| GatewayEvent::RateLimited);
            let message = NewMessage {
                next_attempt_at: after(now, retry_after),
                ..NewMessage::queued(
                    id,
                    request,
                    QueueReason::RateLimited,
                    self.config.max_attempts,
                    now,
                )
            };
            // Boxed, so that the future of every send does not carry this one's state.
            return Box::pin(self.store_new(message)).await;
        }

        let token = match self.reserve(id, &request, now).await? {
            Reservation::Unkeyed => None,
            Reservation::Leased(token, expires_at) => {
                // The store and the limiters may have taken a while since the row was
                // stored: the lease must still cover the call and the outcome write.
                if let Err(e) = self.cover_attempt(id, token, expires_at, &request).await {
                    // The row is stored: the drain sends it once the lease lapses.
                    tracing::warn!(%id, error = %e, "could not renew the lease before the vendor call; the message waits in the queue");
                    return Ok(SendOutcome::Queued {
                        id,
                        reason: QueueReason::Accepted,
                        may_duplicate: false,
                    });
                }
                Some(token)
            }
            Reservation::Existing(existing) => return Ok(SendOutcome::Existing(*existing)),
        };
        let attempted = match self.attempt(id, &request, None, Origin::Live).await {
            Ok(attempted) => attempted,
            Err(NoRoute {
                resting_until: Some(until),
                ..
            }) => {
                // Every vendor that can send it rests after failures: it waits for the
                // first rest to end without a vendor call, its attempts untouched.
                return Box::pin(self.store_unattempted(id, request, token, until)).await;
            }
            Err(no_route) => {
                // Every vendor that can send it was disabled (or refused its template)
                // between the check and the attempt. The caller hears it failed, so the
                // stored row must not be sent later.
                if let Some(token) = token {
                    let failure = AttemptFailure {
                        vendor: None,
                        error: no_route.reason.clone(),
                        may_duplicate: false,
                        pinned: false,
                    };
                    self.bury_keyed(id, token, failure, self.clock.now()).await;
                }
                return Err(no_route.into());
            }
        };
        *reached = Reached::from_answer(&attempted.result);
        match token {
            None if attempted.result.is_ok() => {
                Ok(self.delivered_without_key(id, request, &attempted).await)
            }
            // Every other outcome writes to the store. Its future is boxed, so that the
            // common case above does not carry (and move) its state.
            _ => Box::pin(self.finish(id, request, token, attempted)).await,
        }
    }

    /// Answers a request refused before it was stored: with the message stored earlier
    /// under its idempotency key if there is one (the request is a retry, and its first
    /// try stands), else with `refusal`.
    ///
    /// Keys are looked up only here. On the way to a send, storing the message answers
    /// the same question (`Enqueued::Existing`) in the write it needs anyway.
    async fn existing_or(
        &self,
        request: &SmsRequest,
        refusal: SendError,
    ) -> Result<SendOutcome, SendError> {
        let Some(key) = request.idempotency_key() else {
            return Err(refusal);
        };
        match self.queue.find_by_idempotency_key(key).await {
            Ok(Some(existing)) => Ok(SendOutcome::Existing(existing)),
            Ok(None) => Err(refusal),
            Err(e) => {
                tracing::warn!(error = %e, "could not look up an idempotency key; answering with the refusal");
                Err(refusal)
            }
        }
    }

    /// Checks and counts every recipient. When one is limited, the request is refused
    /// and the others' counts go back. A limiter that cannot answer refuses the request
    /// (the limiter crate falls back to in-process windows itself when it fails open).
    async fn check_recipients(
        &self,
        limiter: &dyn RecipientLimiter,
        request: &SmsRequest,
    ) -> Result<(), SendError> {
        let span = tracing::debug_span!(
            "limit_check",
            limit = "recipient",
            recipients = request.recipients().len()
        );
        let decisions = limiter
            .check(request.recipients())
            .instrument(span)
            .await
            .map_err(SendError::LimitsUnavailable)?;
        let limited =
            request
                .recipients()
                .iter()
                .zip(&decisions)
                .find_map(|(recipient, decision)| match *decision {
                    RecipientDecision::Limited {
                        window,
                        limit,
                        retry_after,
                    } => Some(SendError::RecipientLimited {
                        recipient: recipient.masked(),
                        limit,
                        window,
                        retry_after,
                    }),
                    RecipientDecision::Allowed => None,
                });
        let Some(refusal) = limited else {
            return Ok(());
        };
        self.emit(|| GatewayEvent::RecipientLimited);
        let counted: Vec<PhoneNumber> = request
            .recipients()
            .iter()
            .zip(&decisions)
            .filter(|(_, decision)| **decision == RecipientDecision::Allowed)
            .map(|(recipient, _)| recipient.clone())
            .collect();
        give_back(limiter, &counted).await;
        Err(refusal)
    }

    async fn check_rate(&self, request: &SmsRequest) -> RateCheck {
        let span = tracing::debug_span!(
            "limit_check",
            limit = "global",
            permits = permits(request),
            allowed = tracing::field::Empty,
        );
        let decision = self
            .limiter
            .acquire_lane(permits(request), request.priority())
            .instrument(span.clone())
            .await;
        span.record("allowed", matches!(decision, Ok(RateDecision::Allowed)));
        match decision {
            Ok(RateDecision::Allowed) => RateCheck::Allowed,
            Ok(RateDecision::Limited { retry_after }) => RateCheck::Limited { retry_after },
            Err(e) => {
                // Queueing is the safe answer: nothing goes out above the limit, and the
                // message is kept.
                tracing::warn!(error = %e, "rate limiter failed; queueing the message");
                RateCheck::Limited {
                    retry_after: Duration::ZERO,
                }
            }
        }
    }

    /// With an idempotency key, the message is stored (leased to us) before the
    /// attempt: a concurrent duplicate finds it, and if this process dies mid-send, the
    /// drain retries it once the lease lapses.
    async fn reserve(
        &self,
        id: MessageId,
        request: &SmsRequest,
        now: DateTime<Utc>,
    ) -> Result<Reservation, SendError> {
        if request.idempotency_key().is_none() {
            return Ok(Reservation::Unkeyed);
        }
        let token = LeaseToken::new();
        let expires_at = after(now, self.config.lease);
        let message = NewMessage {
            initial: InitialState::Leased(Lease {
                owner: self.config.instance_id.clone(),
                token,
                expires_at,
            }),
            attempts: 1,
            ..NewMessage::queued(
                id,
                request.clone(),
                QueueReason::Accepted,
                self.config.max_attempts,
                now,
            )
        };
        match self.queue.enqueue(message).await {
            Ok(Enqueued::Created(_)) => Ok(Reservation::Leased(token, expires_at)),
            Ok(Enqueued::Existing(existing)) => Ok(Reservation::Existing(Box::new(existing))),
            Err(e) => Err(SendError::StorageUnavailable(e)),
        }
    }

    /// Stores a message that was not sent now and tells the caller so.
    async fn store_new(&self, message: NewMessage) -> Result<SendOutcome, SendError> {
        let (id, reason, may_duplicate) = (message.id, message.reason, message.may_duplicate);
        let request = message.request.clone();
        match self.queue.enqueue(message).await {
            Ok(Enqueued::Created(_)) => Ok(self.queued(id, &request, reason, may_duplicate).await),
            Ok(Enqueued::Existing(m)) => Ok(SendOutcome::Existing(m)),
            // Never lose a message silently: the caller hears it was neither sent nor kept.
            Err(e) => Err(SendError::StorageUnavailable(e)),
        }
    }

    /// Keeps a live request that no vendor could take now (each rests), due `until` (or
    /// at its deadline, when that comes first). A keyed one, stored already, is put back
    /// unattempted.
    async fn store_unattempted(
        &self,
        id: MessageId,
        request: SmsRequest,
        token: Option<LeaseToken>,
        until: DateTime<Utc>,
    ) -> Result<SendOutcome, SendError> {
        let now = self.clock.now();
        let reason = QueueReason::VendorFailed;
        let due_at = due_after_rest(&request, until);
        let Some(token) = token else {
            let message = NewMessage {
                next_attempt_at: due_at,
                ..NewMessage::queued(id, request, reason, self.config.max_attempts, now)
            };
            return self.store_new(message).await;
        };
        let result = self
            .write_outcome("putting back a message no vendor could take", || {
                self.queue.defer(id, token, due_at, now)
            })
            .await;
        // If that failed, it is still leased to us and the drain takes it once the
        // lease lapses (logged by `settle`).
        self.settle(id, result);
        Ok(self.queued(id, &request, reason, false).await)
    }

    /// Tells the observer, the client's callback and the caller that message `id` waits
    /// in the queue.
    async fn queued(
        &self,
        id: MessageId,
        request: &SmsRequest,
        reason: QueueReason,
        may_duplicate: bool,
    ) -> SendOutcome {
        self.emit(|| GatewayEvent::Queued { id, reason });
        self.tell(
            request,
            id,
            CallbackStatus::Queued,
            self.clock.now(),
            |event| {
                event.code = Some(reason.as_str().to_owned());
            },
        )
        .await;
        SendOutcome::Queued {
            id,
            reason,
            may_duplicate,
        }
    }

    /// A live request without a key that the vendor took: recorded for look-ups
    /// behind the send.
    async fn delivered_without_key(
        &self,
        id: MessageId,
        request: SmsRequest,
        attempted: &Attempted,
    ) -> SendOutcome {
        if !attempted.slow {
            self.trigger_drain();
        }
        let full = self.write_behind.record(SentRecord {
            id,
            request,
            vendor: attempted.idx,
            at: attempted.finished_at,
            max_attempts: self.config.max_attempts,
        });
        if full {
            // Rare (the store falls behind): boxed for the same reason as in `send`.
            Box::pin(self.write_behind.wait_for_room()).await;
        }
        self.delivered_live(id, attempted)
    }

    /// Tells the observer and the caller that a live request was delivered.
    fn delivered_live(&self, id: MessageId, attempted: &Attempted) -> SendOutcome {
        let vendor = &self.ids[attempted.idx];
        self.emit(|| GatewayEvent::Delivered {
            id,
            vendor: vendor.clone(),
            drained: false,
        });
        SendOutcome::Sent {
            id,
            vendor: vendor.clone(),
            billed_messages: attempted.billed,
            slow: attempted.slow,
        }
    }

    /// Every outcome of a live attempt but an unkeyed success: the keyed row is
    /// updated, or the failed message stored.
    async fn finish(
        &self,
        id: MessageId,
        request: SmsRequest,
        token: Option<LeaseToken>,
        attempted: Attempted,
    ) -> Result<SendOutcome, SendError> {
        let now = attempted.finished_at;
        let vendor = &self.ids[attempted.idx];
        let error = match &attempted.result {
            Ok(_) => {
                let Some(token) = token else {
                    return Ok(self.delivered_without_key(id, request, &attempted).await);
                };
                if !attempted.slow {
                    self.trigger_drain();
                }
                let result = self
                    .write_outcome("marking a delivered message sent", || {
                        self.queue.complete(id, token, vendor, now)
                    })
                    .await;
                if self.settle(id, result) == Settled::Failed {
                    // Left leased, it would be sent again when the lease lapses.
                    let outcome = Outcome::Sent {
                        vendor: vendor.clone(),
                        at: now,
                    };
                    self.keep_writing(id, token, outcome);
                }
                return Ok(self.delivered_live(id, &attempted));
            }
            Err(error) => error,
        };
        // A split send the vendor took for some recipients: what follows is about the
        // others only, and the stored message keeps only them.
        let partly = matches!(error, VendorError::PartlySent { .. });
        // The caller's message: the vendor's, or when part of it went out, one saying so.
        let told = |message: &str| {
            if partly {
                error.to_string()
            } else {
                message.to_owned()
            }
        };
        let request = match error {
            VendorError::PartlySent { sent, .. } => {
                if let Some(token) = token {
                    if !self.narrow(id, token, sent).await {
                        // Still leased with every recipient: when the lease lapses it is
                        // claimed again, flagged may_duplicate, as after a crash.
                        return Ok(SendOutcome::Queued {
                            id,
                            reason: queue_reason(error),
                            may_duplicate: true,
                        });
                    }
                }
                request.without(sent).unwrap_or(request)
            }
            _ => request,
        };
        match error.cause() {
            VendorError::Rejected { code, message } => {
                if let Some(token) = token {
                    let failure = attempted.failure(self, error);
                    self.bury_keyed(id, token, failure, now).await;
                }
                Err(SendError::Rejected {
                    vendor: vendor.clone(),
                    code: code.clone(),
                    message: told(message),
                })
            }
            // Without a key nothing is stored: the caller hears the refusal (for the
            // others, when the vendor took it for some) and retries when the window
            // allows. Queued, it could go to another vendor, around the limit.
            VendorError::RecipientRefused {
                code,
                message,
                retry_after,
            } if token.is_none() => Err(SendError::RecipientRefused {
                vendor: vendor.clone(),
                code: code.clone(),
                message: told(message),
                retry_after: *retry_after,
            }),
            VendorError::TimedOut if self.config.on_timeout == TimeoutPolicy::Fail => {
                if let Some(token) = token {
                    // The caller was told; a later automatic retry would surprise them.
                    let failure = attempted.failure(self, error);
                    self.bury_keyed(id, token, failure, now).await;
                }
                Err(SendError::TimedOut)
            }
            _ => {
                let reason = queue_reason(error);
                let may_duplicate = may_duplicate(error);
                let next_attempt_at = self.retry_at(&attempted, 1);
                let Some(token) = token else {
                    let message = NewMessage {
                        attempts: 1,
                        next_attempt_at,
                        last_vendor: Some(vendor.clone()),
                        last_error: Some(error.to_string()),
                        may_duplicate,
                        ..NewMessage::queued(id, request, reason, self.config.max_attempts, now)
                    };
                    return self.store_new(message).await;
                };
                // If this update fails the row stays leased to us and the drain retries
                // it when the lease lapses: it is not lost.
                let failure = attempted.failure(self, error);
                let result = self
                    .queue
                    .fail(id, token, failure, next_attempt_at, now)
                    .await;
                self.settle(id, result);
                Ok(self.queued(id, &request, reason, may_duplicate).await)
            }
        }
    }

    /// Marks a keyed message dead after the caller was told it failed, trying again
    /// while the store is briefly unreachable: left leased, it would be sent again.
    async fn bury_keyed(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: sms_core::AttemptFailure,
        now: DateTime<Utc>,
    ) {
        let result = self
            .write_outcome("marking a failed message dead", || {
                self.queue.dead(id, token, failure.clone(), now)
            })
            .await;
        if self.settle(id, result) == Settled::Failed {
            self.keep_writing(id, token, Outcome::Dead { failure, at: now });
        }
    }
}
