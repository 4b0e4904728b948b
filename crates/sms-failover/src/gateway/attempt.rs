//! One vendor attempt: the vendor health picks, the call under its timeout, what the
//! answer says about the vendor, the messages it billed, and when a failure is retried.
//!
//! Live sends and drained messages make their attempts here, so both follow one set of
//! rules: a slow success counts as one failure, a refusal of the message says nothing
//! about the vendor, and vendors bill at least one message per recipient.
//!
//! A vendor that answers that the message's template or signature is not approved
//! there is not failing: the gateway's configuration is wrong at that vendor. Its
//! mapping for the template is marked broken (logged as an error and reported once),
//! and the message goes at once to the next vendor that has the template.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{
    AttemptFailure, CallbackStatus, MessageId, Money, OutboundSms, QueueReason, Receipt, SendError,
    SentDelivery, SmsRequest, VendorError,
};
use tokio::time::Instant;
use tracing::Instrument;

use super::Gateway;
use crate::backoff::{after, jittered_backoff};
use crate::events::{AttemptOutcome, GatewayEvent};
use crate::health::{Blocked, Health, HealthOp, Notice, Ticket, Verdict};

/// Time a split send gets beyond its vendor's own bound, so the vendor's per-call
/// timeout fires first and its answer says which recipients were sent.
const SPLIT_SEND_GRACE: Duration = Duration::from_secs(1);

/// No vendor can take the message now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoRoute {
    /// Every vendor is disabled (no message can go), not only this message's.
    pub all_disabled: bool,
    /// Every enabled vendor that can send the message rests after failures; the first
    /// rest ends then. The message waits for it: nothing was attempted.
    pub resting_until: Option<DateTime<Utc>>,
    /// Why, for the caller and the log.
    pub reason: String,
}

impl From<NoRoute> for SendError {
    fn from(no_route: NoRoute) -> Self {
        SendError::NoVendor(no_route.reason)
    }
}

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
    /// What the failure `error` of this attempt is stored as. A per-number refusal pins
    /// the message to this vendor: another one would get around the limit.
    pub fn failure(&self, gateway: &Gateway, error: &VendorError) -> AttemptFailure {
        AttemptFailure {
            vendor: Some(gateway.ids[self.idx].clone()),
            error: error.to_string(),
            may_duplicate: may_duplicate(error),
            pinned: matches!(error.cause(), VendorError::RecipientRefused { .. }),
        }
    }
}

/// Whether the vendor may have delivered a message although the attempt failed: it
/// timed out, so its outcome is unknown.
pub(crate) fn may_duplicate(error: &VendorError) -> bool {
    matches!(error.cause(), VendorError::TimedOut)
}

/// What the observer is told about an answer, and what it says about the vendor.
fn outcome_of(result: &Result<Receipt, VendorError>, slow: bool) -> (AttemptOutcome, Verdict) {
    match result {
        Ok(_) if slow => (AttemptOutcome::Slow, Verdict::Slow),
        Ok(_) => (AttemptOutcome::Ok, Verdict::Fast),
        Err(error) => failure_outcome(error),
    }
}

/// What the observer is told about a failure, and what it says about the vendor.
fn failure_outcome(error: &VendorError) -> (AttemptOutcome, Verdict) {
    match error {
        VendorError::TimedOut => (AttemptOutcome::TimedOut, Verdict::Failure),
        VendorError::Throttled { .. } => (AttemptOutcome::Throttled, Verdict::Failure),
        VendorError::Rejected { .. } => (AttemptOutcome::Rejected, Verdict::Neutral),
        // A per-number limit protects one recipient; the vendor itself is fine.
        VendorError::RecipientRefused { .. } => {
            (AttemptOutcome::RecipientRefused, Verdict::Neutral)
        }
        // Our template or signature is wrong there; the vendor itself is fine.
        VendorError::Misconfigured { .. } => (AttemptOutcome::Misconfigured, Verdict::Neutral),
        // Revoked keys or a bad signature make the vendor unusable for every message:
        // count it so the gateway switches away instead of losing each message in turn.
        VendorError::Unauthorized { .. } => (AttemptOutcome::Unauthorized, Verdict::Failure),
        VendorError::Transient { .. } => (AttemptOutcome::Transient, Verdict::Failure),
        // What failed the rest is what the vendor's health hears about.
        VendorError::PartlySent { error, .. } => failure_outcome(error),
    }
}

/// Why a message whose attempt failed with `error` waits in the queue.
pub(crate) fn queue_reason(error: &VendorError) -> QueueReason {
    match error.cause() {
        VendorError::TimedOut => QueueReason::TimedOut,
        VendorError::Throttled { .. } => QueueReason::VendorThrottled,
        VendorError::RecipientRefused { .. } => QueueReason::RecipientRefused,
        // Rejected messages are never queued, and a misconfigured vendor is replaced
        // within the attempt; listed so a new kind needs a decision here.
        VendorError::Unauthorized { .. }
        | VendorError::Transient { .. }
        | VendorError::Rejected { .. }
        | VendorError::Misconfigured { .. }
        | VendorError::PartlySent { .. } => QueueReason::VendorFailed,
    }
}

impl Gateway {
    /// An attempt of message `id` on the vendor its route picks (see
    /// [`Health::begin_on`](crate::health::Health::begin_on)), `pinned` to a vendor when
    /// that vendor's per-number limit refused it before. A vendor that refuses the
    /// template is marked broken for it and the next vendor that has the template is
    /// tried at once.
    pub(crate) async fn attempt(
        &self,
        id: MessageId,
        request: &SmsRequest,
        pinned: Option<usize>,
        origin: Origin,
    ) -> Result<Attempted, NoRoute> {
        // Each refusal of the template marks that vendor's mapping broken, which takes
        // it off the route (a pin to it included).
        for _ in 0..self.vendors.len() {
            // While every vendor rests, the first whose rest ended takes over.
            self.change_health(&[HealthOp::Wake]).await;
            let ticket = {
                let mut health = self.health();
                let route = self.route(&health, request, pinned);
                health
                    .begin_on(&route, self.clock.now())
                    .map_err(|blocked| self.no_route(&health, request, blocked))
            }?;
            // One probe of a vendor at a time across the deployment.
            let ticket = self.claim_probe(ticket).await;
            let sms = self
                .templates
                .outbound(id, request, &self.ids[ticket.idx])
                .unwrap_or_else(|| OutboundSms::pass_through(id, request.clone()));
            let attempted = self.call(&sms, ticket, origin).await;
            if !matches!(attempted.result, Err(VendorError::Misconfigured { .. })) {
                return Ok(attempted);
            }
        }
        Err(self.no_route(&self.health(), request, Blocked::NoVendor))
    }

    fn no_route(&self, health: &Health, request: &SmsRequest, blocked: Blocked) -> NoRoute {
        match blocked {
            Blocked::NoVendor => NoRoute {
                all_disabled: health.all_disabled(),
                resting_until: None,
                reason: self.no_route_reason(health, request),
            },
            Blocked::Resting { until } => NoRoute {
                all_disabled: false,
                resting_until: Some(until),
                reason: format!(
                    "every vendor that can send template {:?} rests after failures until {until}",
                    request.template().as_str()
                ),
            },
        }
    }

    /// Logs and reports a change of whether any vendor can be used.
    pub(super) fn report(&self, notice: Option<Notice>) {
        match notice {
            None => {}
            Some(Notice::AllUnavailable { until }) => {
                tracing::error!(%until, "all vendors unavailable: each rests after failures or is disabled; messages are kept and nothing is attempted until a rest ends");
                self.emit(|| GatewayEvent::AllVendorsUnavailable {
                    at: self.clock.now(),
                    until,
                });
            }
            Some(Notice::AvailableAgain { idx, since }) => {
                let vendor = &self.ids[idx];
                let unavailable_for = (self.clock.now() - since).to_std().unwrap_or_default();
                tracing::warn!(%vendor, ?unavailable_for, "a vendor delivered again after all vendors were unavailable");
                self.emit(|| GatewayEvent::VendorsAvailableAgain {
                    vendor: vendor.clone(),
                    at: self.clock.now(),
                    unavailable_for,
                });
            }
        }
    }

    /// One vendor call, with its timeout, health accounting and usage. The call is
    /// timed from just before it starts, so time spent on limits or the store before
    /// it is never counted as the vendor's latency.
    async fn call(&self, sms: &OutboundSms, ticket: Ticket, origin: Origin) -> Attempted {
        let idx = ticket.idx;
        let timeout = self.send_timeout(idx, sms.request.recipients().len());
        let span = tracing::debug_span!(
            "vendor_call",
            vendor = %self.ids[idx],
            message_id = %sms.id,
            recipients = sms.request.recipients().len(),
            drained = origin == Origin::Drained,
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, self.vendors[idx].send(sms))
            .instrument(span.clone())
            .await
            .unwrap_or(Err(VendorError::TimedOut));
        let latency = started.elapsed();
        // A split send makes several calls in a row: its total says nothing about how
        // fast the vendor answers one, so it is judged by its errors only.
        let split = timeout > self.config.attempt_timeout;
        let slow = result.is_ok() && !split && latency > self.config.slow_threshold;
        // Only the drain sizes itself by it, so only its calls feed it: live sends on
        // every core would otherwise all write one shared word.
        if origin == Origin::Drained && !split {
            self.note_latency(latency);
        }
        let (outcome, verdict) = outcome_of(&result, slow);
        span.record("outcome", outcome.as_str());
        span.record("latency_ms", latency.as_secs_f64() * 1000.0);
        drop(span);
        let recipients = sms.request.recipients().len();
        let billed = match &result {
            Ok(receipt) => self.billed(idx, receipt, recipients),
            // The recipients the vendor took before it failed were billed.
            Err(VendorError::PartlySent { sent, receipt, .. }) => {
                self.billed(idx, receipt, sent.len())
            }
            Err(_) => 0,
        };
        let finished_at = self.clock.now();
        let accepted = match &result {
            Ok(receipt) => Some((receipt, sms.request.recipients())),
            Err(VendorError::PartlySent { sent, receipt, .. }) => Some((receipt, sent.as_slice())),
            Err(_) => None,
        };
        if let Some((receipt, recipients)) = accepted {
            let callback_url = sms.request.callback_url();
            // Per recipient, when the vendor's count splits evenly between them.
            let count = recipients.len() as u64;
            let billed_segments = (count > 0 && billed % count == 0)
                .then(|| u32::try_from(billed / count).ok())
                .flatten();
            if let Some(deliveries) = &self.deliveries {
                let records = recipients
                    .iter()
                    .map(|recipient| SentDelivery {
                        message_id: sms.id,
                        recipient: recipient.clone(),
                        vendor: self.ids[idx].clone(),
                        vendor_message_id: receipt.id_of(recipient).to_owned(),
                        sent_at: finished_at,
                        callback_url: callback_url.cloned(),
                        billed_segments,
                    })
                    .collect();
                deliveries.record(records).await;
                self.note_accepted(idx, finished_at).await;
            }
            self.tell(
                &sms.request,
                sms.id,
                CallbackStatus::Sent,
                finished_at,
                |event| {
                    event.vendor = Some(self.ids[idx].clone());
                    event.vendor_message_id = Some(receipt.vendor_message_id.clone());
                },
            )
            .await;
        }
        let template = sms.request.template().as_str();
        let refused_template = matches!(result, Err(VendorError::Misconfigured { .. }));
        let (cost, newly_broken) = {
            let mut health = self.health();
            let cost = if billed > 0 {
                health.add_usage(idx, billed, finished_at)
            } else {
                Money::ZERO
            };
            (
                cost,
                refused_template && health.broken_mask(template) & (1 << idx) == 0,
            )
        };
        let mut ops = Vec::with_capacity(2);
        if refused_template {
            ops.push(HealthOp::MarkBroken {
                template: template.to_owned(),
                idx,
            });
        }
        ops.push(HealthOp::Record { ticket, verdict });
        let switched = self.change_health(&ops).await;
        self.release_probe(ticket).await;
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
            client: sms.request.client().cloned(),
        });
        if let (true, Err(VendorError::Misconfigured { code, message })) = (newly_broken, &result) {
            let (template, vendor) = (sms.request.template().as_str(), &self.ids[idx]);
            tracing::error!(%template, %vendor, %code, %message, vendor_template = %sms.template.id, "the vendor refuses this template; no more messages of it go there until the vendor is enabled again");
            self.emit(|| GatewayEvent::MappingBroken {
                template: template.to_owned(),
                vendor: vendor.clone(),
                code: code.clone(),
                message: message.clone(),
            });
        }
        Attempted {
            idx,
            result,
            slow,
            billed,
            switched,
            finished_at,
        }
    }

    /// How long vendor `idx` may take to send to `recipients` recipients: the attempt
    /// timeout, or, when it needs several calls, its own bound for them and a little
    /// more, so that its per-call timeout fires first and it can say whom it sent to.
    fn send_timeout(&self, idx: usize, recipients: usize) -> Duration {
        match self.vendors[idx].split_send_time(recipients) {
            Some(split) => self.config.attempt_timeout.max(split + SPLIT_SEND_GRACE),
            None => self.config.attempt_timeout,
        }
    }

    /// Adds one drained call's latency to the moving average the drain sizes its
    /// concurrency by (each call weighs an eighth).
    fn note_latency(&self, latency: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let sample = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        // Racing updates may drop a sample; an average does not need every one.
        let old = self.latency_micros.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old.saturating_mul(7).saturating_add(sample)) / 8
        };
        self.latency_micros.store(new.max(1), Relaxed);
    }

    /// The vendors' recent call latency, once a call has been made.
    pub(crate) fn latency(&self) -> Option<Duration> {
        match self
            .latency_micros
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// The longest any vendor may take to send `request`.
    pub(crate) fn send_bound(&self, request: &SmsRequest) -> Duration {
        let recipients = request.recipients().len();
        (0..self.vendors.len())
            .map(|idx| self.send_timeout(idx, recipients))
            .max()
            .unwrap_or(self.config.attempt_timeout)
    }

    /// Messages billed for a send the vendor took for `recipients` recipients: the
    /// vendor's own count when it reports one (a difference from the count from the
    /// text is reported), else the count from the text; never less than one per
    /// recipient.
    fn billed(&self, idx: usize, receipt: &Receipt, recipients: usize) -> u64 {
        let recipients = recipients as u64;
        let billed = match receipt.reported_billed {
            Some(reported) => {
                if reported != receipt.billed_messages {
                    self.emit(|| GatewayEvent::BillingMismatch {
                        vendor: self.ids[idx].clone(),
                        counted: receipt.billed_messages,
                        reported,
                    });
                }
                reported
            }
            None => receipt.billed_messages,
        };
        billed.max(recipients)
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
        match attempted.result.as_ref().map_err(VendorError::cause) {
            Err(VendorError::Throttled {
                retry_after: Some(wait),
                ..
            }) => delay = delay.max(*wait),
            // The vendor's window for this number, not a backoff: it is the same vendor
            // next time, and the window says exactly when it lets the message through.
            Err(VendorError::RecipientRefused { retry_after, .. }) => delay = *retry_after,
            _ => {}
        }
        after(now, delay)
    }
}
