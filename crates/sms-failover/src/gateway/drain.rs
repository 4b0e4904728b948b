//! One drain pass: claim due messages in batches, send each on one of a few lanes, and
//! write what happened back to the queue under each message's lease.
//!
//! Every update of a claimed message is checked against its lease token, so a message
//! whose lease lapsed and was claimed by another drainer is counted as lost and left to
//! that drainer. A lane stops the pass (the rest of the batch goes back unattempted)
//! when going on could not help: the rate limit is reached or no vendor can be used. A
//! lease too short for an attempt and the write of its outcome is renewed before the
//! vendor call (see [`lease`](super::lease)). While every vendor that could send a
//! message rests, it is put back unattempted, due when the first rest ends (or at its
//! deadline, to be expired on time): it keeps its attempts for when a vendor is back.
//!
//! A failed message is retried with a backoff until it is out of attempts *and* past
//! the retry horizon (counted from when it was accepted), or until its deadline: an
//! outage of every vendor that outlasts the attempts kills nothing.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use sms_core::sync::lock;
use sms_core::{
    AttemptFailure, CallbackStatus, Completion, LeaseToken, MessageId, RateDecision, SmsRequest,
    StoreError, StoredMessage, VendorError,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::attempt::{NoRoute, Origin};
use super::lease::Outcome;
use super::report::DrainReport;
use super::screen::Screened;
use super::send::permits;
use super::{Gateway, Settled, due_after_rest};
use crate::backoff::{after, jittered_backoff};
use crate::events::GatewayEvent;
use crate::health::Blocked;

/// Longest a delivered drained message waits before its "sent" is written: completions
/// are written together, one commit per this interval (or per claimed batch, when that
/// is sent sooner). A process that dies in between sends these messages again once
/// their leases lapse, so the interval bounds that exposure.
const COMPLETE_EVERY: Duration = Duration::from_millis(20);

/// Share of the global limit the drain aims for; live requests keep the rest.
const DRAIN_SHARE: f64 = 0.9;

/// Longest a drained message waits, in all, for the global limit to let it through
/// before it is given back and the pass ends.
const LIMIT_WAIT_MAX: Duration = Duration::from_secs(1);

/// A claimed batch, and the size at which it counts as full: a claim keeps part of its
/// size for normal messages, so one that filled the rest may have left more
/// high-priority messages due.
struct Claimed {
    batch: Vec<StoredMessage>,
    full_at: usize,
}

/// What the drain should do after one message.
enum Next {
    Continue,
    /// End the pass: the rest of the batch goes back unattempted.
    Halt,
}

impl Gateway {
    /// Claims due messages in batches and sends each, until none are due (at most
    /// `drain_max_batches` batches). Only one pass runs at a time in a process.
    pub async fn drain_once(&self) -> Result<DrainReport, StoreError> {
        self.drain(&CancellationToken::new()).await
    }

    /// A drain pass that ends early, giving claimed messages back unattempted, once
    /// `stop` is cancelled.
    pub(crate) async fn drain(&self, stop: &CancellationToken) -> Result<DrainReport, StoreError> {
        // One span per pass: its claims, and each message's attempt, belong to it.
        let span = tracing::debug_span!("drain", claimed = tracing::field::Empty);
        let report = self.drain_pass(stop).instrument(span.clone()).await;
        if let Ok(report) = &report {
            span.record("claimed", report.claimed);
        }
        report
    }

    /// The pass of [`drain`](Self::drain).
    async fn drain_pass(&self, stop: &CancellationToken) -> Result<DrainReport, StoreError> {
        let _one_at_a_time = self.drain_running.lock().await;
        self.late_receipts_applied().await;
        let mut report = DrainReport::default();
        // A batch claimed while the previous one was being marked sent.
        let mut claimed_ahead: Option<Claimed> = None;
        for pass_batch in 0..self.config.drain_max_batches {
            if stop.is_cancelled() {
                break;
            }
            let Claimed { batch, full_at } = match claimed_ahead.take() {
                Some(batch) => batch,
                None => self.claim_batch().await?,
            };
            if batch.is_empty() {
                break;
            }
            let full = batch.len() >= full_at;
            report.claimed += batch.len();
            // Cancelled by a lane that ends the pass, or with `stop`.
            let halt = stop.child_token();
            let delivered = Mutex::new(Vec::new());
            report.add(&self.send_batch(batch, &halt, &delivered).await);
            let halted = halt.is_cancelled();
            // When another batch follows, it is claimed while this one is marked sent:
            // the two statements touch different rows, and the pass waits for one
            // round trip per batch instead of two.
            let another = full && !halted && pass_batch + 1 < self.config.drain_max_batches;
            if another {
                let (_, next) = tokio::join!(
                    self.commit_delivered(&delivered, &mut report),
                    self.claim_batch()
                );
                claimed_ahead = Some(next?);
            } else {
                self.commit_delivered(&delivered, &mut report).await;
                break;
            }
        }
        if let Some(Claimed { batch, .. }) = claimed_ahead {
            // Stopped with a batch claimed ahead: it goes back unattempted.
            report.claimed += batch.len();
            for message in &batch {
                self.release(message, &mut report).await;
            }
        }
        Ok(report)
    }

    /// Claims the next batch of due messages for this instance.
    async fn claim_batch(&self) -> Result<Claimed, StoreError> {
        let limit = self.batch_size();
        let normal_min = normal_min(limit, self.config.normal_min_share);
        let batch = self
            .queue
            .claim_lanes(
                &self.config.instance_id,
                self.clock.now(),
                self.config.lease,
                limit,
                normal_min,
            )
            .await?;
        Ok(Claimed {
            batch,
            full_at: (limit - normal_min) as usize,
        })
    }

    /// Messages sent at the same time: enough for the drain's share of the global limit
    /// at the vendors' latency (rate × latency), between `drain_concurrency` and
    /// `drain_concurrency_max`. Without a known rate or latency, `drain_concurrency`.
    pub(crate) fn lanes(&self) -> usize {
        let floor = self.config.drain_concurrency.max(1) as usize;
        let ceiling = (self.config.drain_concurrency_max as usize).max(floor);
        let (Some(rate), Some(latency)) = (self.send_rate, self.latency()) else {
            return floor;
        };
        let needed = (rate * DRAIN_SHARE * latency.as_secs_f64()).ceil();
        (needed as usize).clamp(floor, ceiling)
    }

    /// Messages claimed per batch: `drain_batch` rounded up to a whole number of
    /// messages per lane, since a batch lasts as long as its busiest lane.
    fn batch_size(&self) -> u32 {
        let lanes = u32::try_from(self.lanes()).unwrap_or(u32::MAX).max(1);
        self.config
            .drain_batch
            .div_ceil(lanes)
            .saturating_mul(lanes)
    }

    /// Sends a batch on `drain_concurrency` lanes that run together, each sending its
    /// messages one after the other. Deliveries are marked sent together: the lanes
    /// leave them in `delivered`, and a committer writes what is there every
    /// [`COMPLETE_EVERY`] and once more when the lanes are done.
    async fn send_batch(
        &self,
        batch: Vec<StoredMessage>,
        halt: &CancellationToken,
        delivered: &Mutex<Vec<Completion>>,
    ) -> DrainReport {
        // Round-robin over the lanes, so each lane sends its messages oldest first.
        let lane_count = self.lanes().min(batch.len()).max(1);
        let mut lanes: Vec<Vec<StoredMessage>> = (0..lane_count).map(|_| Vec::new()).collect();
        for (i, message) in batch.into_iter().enumerate() {
            lanes[i % lane_count].push(message);
        }
        let lanes_done = CancellationToken::new();
        let lanes = async {
            let reports = join_all(
                lanes
                    .into_iter()
                    .map(|messages| self.drain_lane(messages, halt, delivered)),
            )
            .await;
            lanes_done.cancel();
            reports
        };
        let committer = async {
            let mut committed = DrainReport::default();
            while !lanes_done.is_cancelled() {
                tokio::select! {
                    _ = tokio::time::sleep(COMPLETE_EVERY) => {}
                    _ = lanes_done.cancelled() => {}
                }
                self.commit_delivered(delivered, &mut committed).await;
            }
            committed
        };
        let (lane_reports, mut report) = tokio::join!(lanes, committer);
        for lane in &lane_reports {
            report.add(lane);
        }
        report
    }

    /// Sends one lane's messages in order; once the pass is halted, gives the rest back
    /// unattempted.
    async fn drain_lane(
        &self,
        messages: Vec<StoredMessage>,
        halt: &CancellationToken,
        delivered: &Mutex<Vec<Completion>>,
    ) -> DrainReport {
        let mut report = DrainReport::default();
        for message in messages {
            if halt.is_cancelled() {
                self.release(&message, &mut report).await;
            } else if let Next::Halt = {
                let span = tracing::debug_span!(
                    "drain_message",
                    message_id = %message.id,
                    attempts = message.attempts
                );
                self.drain_one(message, &mut report, delivered)
                    .instrument(span)
                    .await
            } {
                halt.cancel();
            }
        }
        report
    }

    /// Settles an update of a claimed message, counting a lost lease in `report`;
    /// returns whether the update was made.
    pub(super) fn updated(
        &self,
        id: MessageId,
        result: Result<(), StoreError>,
        report: &mut DrainReport,
    ) -> bool {
        match self.settle(id, result) {
            Settled::Done => true,
            Settled::LeaseLost => {
                report.lease_lost += 1;
                false
            }
            Settled::Failed => false,
        }
    }

    /// Gives a claimed message back unattempted.
    pub(super) async fn release(&self, message: &StoredMessage, report: &mut DrainReport) {
        let Some(lease) = &message.lease else {
            return;
        };
        let result = self
            .queue
            .release(message.id, lease.token, self.clock.now())
            .await;
        if self.updated(message.id, result, report) {
            report.released += 1;
        }
    }

    /// Puts a claimed message back in the queue after a failed attempt, due at
    /// `next_attempt_at`.
    async fn requeue(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        report: &mut DrainReport,
    ) {
        let result = self
            .queue
            .fail(id, token, failure, next_attempt_at, now)
            .await;
        if self.updated(id, result, report) {
            report.requeued += 1;
        }
    }

    /// Marks a claimed message dead: out of attempts or refused for good.
    pub(super) async fn bury(
        &self,
        id: MessageId,
        request: &SmsRequest,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
        report: &mut DrainReport,
    ) {
        let error = failure.error.clone();
        let result = self.queue.dead(id, token, failure, now).await;
        if self.updated(id, result, report) {
            report.dead += 1;
            tracing::warn!(%id, "message is dead");
            self.emit(|| GatewayEvent::Dead { id });
            self.tell(request, id, CallbackStatus::Dead, now, |event| {
                event.description = Some(error);
            })
            .await;
        }
    }

    async fn drain_one(
        &self,
        message: StoredMessage,
        report: &mut DrainReport,
        delivered: &Mutex<Vec<Completion>>,
    ) -> Next {
        let Some(lease) = message.lease.clone() else {
            return Next::Continue;
        };
        let (id, token) = (message.id, lease.token);
        let now = self.clock.now();
        if message.request.is_expired_at(now) {
            let result = self.queue.expire(id, token, now).await;
            if self.updated(id, result, report) {
                report.expired += 1;
                self.emit(|| GatewayEvent::Expired { id });
                self.tell(&message.request, id, CallbackStatus::Expired, now, |_| {})
                    .await;
            }
            return Next::Continue;
        }
        if message.attempts > message.max_attempts && self.past_horizon(message.created_at, now) {
            // Claimed again after lapsed leases (crashes) without a recorded outcome.
            let failure = AttemptFailure {
                vendor: None,
                error: format!(
                    "out of attempts ({} of {}) and past the retry horizon",
                    message.attempts - 1,
                    message.max_attempts
                ),
                may_duplicate: false,
                pinned: false,
            };
            self.bury(id, &message.request, token, failure, now, report)
                .await;
            return Next::Continue;
        }
        let unavailable = self.health().unavailable(now);
        if let Some(Blocked::Resting { until }) = unavailable {
            // Every vendor rests: an attempt now would only spend one of its retries.
            self.defer(id, token, &message.request, until, report).await;
            return Next::Continue;
        }
        if let Some(problem) = self.over_capacity(&message.request) {
            // Waiting would never make it fit: it must not hold up every pass.
            let failure = AttemptFailure {
                vendor: None,
                error: problem,
                may_duplicate: false,
                pinned: false,
            };
            self.bury(id, &message.request, token, failure, now, report)
                .await;
            return Next::Continue;
        }
        let mut message = message;
        match self.screen(&mut message, token, now, report).await {
            Screened::Send => {}
            Screened::Settled => return Next::Continue,
            Screened::Halt => return Next::Halt,
        }
        if !self.wait_for_permits(&message.request).await {
            // The limit stays reached (or the limiter cannot tell): give the message
            // back without counting an attempt and end the pass; the next tick or
            // trigger resumes.
            self.emit(|| GatewayEvent::RateLimited);
            self.release(&message, report).await;
            return Next::Halt;
        }
        // A lease that could lapse during the attempt or before its outcome is written
        // would let another drainer send the message too: renew it first.
        if let Err(e) = self
            .cover_attempt(id, token, lease.expires_at, &message.request)
            .await
        {
            let lost = matches!(e, StoreError::LeaseLost(_));
            self.updated(id, Err(e), report);
            // Lost to another claimer: that one sends it. Otherwise the store is failing
            // and the message stays leased until its lease lapses.
            return if lost { Next::Continue } else { Next::Halt };
        }
        let StoredMessage {
            request,
            attempts,
            max_attempts,
            pinned_vendor,
            created_at,
            ..
        } = message;
        // A scheduled message's retries run from the time it was due, not stored.
        let since = request.send_at().map_or(created_at, |t| t.max(created_at));
        let gives_up = |now| attempts >= max_attempts && self.past_horizon(since, now);
        let pinned = pinned_vendor.and_then(|v| self.ids.iter().position(|id| *id == v));
        let attempted = match self.attempt(id, &request, pinned, Origin::Drained).await {
            Ok(attempted) => attempted,
            Err(NoRoute {
                resting_until: Some(until),
                ..
            }) => {
                // Every vendor with its template rests: it waits for the first rest to
                // end, and the others go on.
                self.defer(id, token, &request, until, report).await;
                return Next::Continue;
            }
            Err(no_route) if no_route.all_disabled => {
                // No message can go: give this one back unattempted and end the pass.
                let result = self.queue.release(id, token, self.clock.now()).await;
                if self.updated(id, result, report) {
                    report.released += 1;
                }
                return Next::Halt;
            }
            Err(no_route) => {
                // Only this message's template has no enabled vendor now: it waits with
                // a backoff, and the others go on.
                let now = self.clock.now();
                let failure = AttemptFailure {
                    vendor: None,
                    error: no_route.reason,
                    may_duplicate: false,
                    pinned: false,
                };
                if gives_up(now) {
                    self.bury(id, &request, token, failure, now, report).await;
                } else {
                    let backoff = jittered_backoff(
                        attempts,
                        self.config.backoff_base,
                        self.config.backoff_max,
                    );
                    let next_attempt_at = after(now, backoff);
                    self.requeue(id, token, failure, next_attempt_at, now, report)
                        .await;
                }
                return Next::Continue;
            }
        };
        let now = attempted.finished_at;
        match &attempted.result {
            Ok(_) => lock(delivered).push(Completion {
                id,
                token,
                vendor: self.ids[attempted.idx].clone(),
                at: now,
            }),
            Err(error) => {
                if let VendorError::PartlySent { sent, .. } = error {
                    // The vendor took it for some: what follows is about the others.
                    // Unwritten, the message stays leased and is claimed again, flagged
                    // may_duplicate, once its lease lapses.
                    if !self.narrow(id, token, sent).await {
                        return Next::Continue;
                    }
                }
                let failure = attempted.failure(self, error);
                // Only a refusal of the message itself is final. Unauthorized is the
                // vendor's fault: it counted as a failure and the message waits for a
                // vendor that takes it.
                let refused = matches!(error.cause(), VendorError::Rejected { .. });
                if refused || gives_up(now) {
                    self.bury(id, &request, token, failure, now, report).await;
                } else {
                    let next_attempt_at = self.retry_at(&attempted, attempts);
                    self.requeue(id, token, failure, next_attempt_at, now, report)
                        .await;
                }
            }
        }
        Next::Continue
    }

    /// Takes the global limit's permits for `request`, waiting while the limit frees
    /// within [`LIMIT_WAIT_MAX`]: a drain running at the limit meets it all the time,
    /// and ending the pass there would leave it idle until the next tick. Returns
    /// whether the permits were taken.
    async fn wait_for_permits(&self, request: &SmsRequest) -> bool {
        let mut waited = Duration::ZERO;
        loop {
            let lane = self
                .limiter
                .acquire_lane(permits(request), request.priority());
            match lane.await {
                Ok(RateDecision::Allowed) => return true,
                Ok(RateDecision::Limited { retry_after }) if waited < LIMIT_WAIT_MAX => {
                    let pause = retry_after
                        .max(Duration::from_millis(1))
                        .min(LIMIT_WAIT_MAX - waited);
                    tokio::time::sleep(pause).await;
                    waited += pause;
                }
                Ok(RateDecision::Limited { .. }) | Err(_) => return false,
            }
        }
    }

    /// Puts a claimed message back unattempted, due when the first rest ends (see
    /// [`due_after_rest`]).
    pub(super) async fn defer(
        &self,
        id: MessageId,
        token: LeaseToken,
        request: &SmsRequest,
        until: DateTime<Utc>,
        report: &mut DrainReport,
    ) {
        let due_at = due_after_rest(request, until);
        let result = self.queue.defer(id, token, due_at, self.clock.now()).await;
        if self.updated(id, result, report) {
            report.deferred += 1;
        }
    }

    /// Hands a delivery the store would not mark sent to the background writer.
    fn keep_completing(&self, completion: Completion) {
        let outcome = Outcome::Sent {
            vendor: completion.vendor,
            at: completion.at,
        };
        self.keep_writing(completion.id, completion.token, outcome);
    }

    /// Whether a message accepted at `created_at` has been retried for the whole retry
    /// horizon at `now`.
    fn past_horizon(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now >= after(since, self.config.retry_horizon)
    }

    /// Marks the deliveries waiting in `delivered` sent, in one write. A store that is
    /// briefly unreachable gets a few more tries; after that the writes go on in the
    /// background (see [`keep_writing`](Gateway::keep_writing)), so the messages are
    /// not left leased to be sent again.
    async fn commit_delivered(&self, delivered: &Mutex<Vec<Completion>>, report: &mut DrainReport) {
        let batch = std::mem::take(&mut *lock(delivered));
        if batch.is_empty() {
            return;
        }
        let results = match self
            .write_outcome("marking delivered messages sent", || {
                self.queue.complete_many(&batch)
            })
            .await
        {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(messages = batch.len(), error = %e, "delivered, but could not mark the messages sent yet");
                for completion in batch {
                    self.keep_completing(completion);
                }
                return;
            }
        };
        for (completion, result) in batch.into_iter().zip(results) {
            if let Err(StoreError::Unavailable(_)) = &result {
                self.keep_completing(completion);
                continue;
            }
            if self.updated(completion.id, result, report) {
                report.sent += 1;
                self.emit(|| GatewayEvent::Delivered {
                    id: completion.id,
                    vendor: completion.vendor,
                    drained: true,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// The part of a claim of `limit` messages kept for normal ones: `share` of it, rounded
/// up, so that any share above 0 keeps at least one, and never the whole claim, so that
/// high-priority messages always get a place.
fn normal_min(limit: u32, share: f64) -> u32 {
    // A share is between 0 and 1 (validated), so the product fits a u32.
    ((f64::from(limit) * share).ceil() as u32).min(limit.saturating_sub(1))
}
