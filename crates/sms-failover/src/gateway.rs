//! The gateway: one send path for live requests and drained messages.
//!
//! A live request goes: expiry check → idempotency look-up → per-recipient limits →
//! global rate limit (limited: stored, caller told "queued") → one attempt on the vendor
//! picked by [`crate::health`] → classification → usage, health, and either "sent",
//! "queued" (for a later attempt by the drain) or an error the caller can act on.
//!
//! A failed live request is *not* retried inline on another vendor (defect 9 of the
//! original design is answered by the queue instead): it is stored at once, and when its
//! failure made the gateway switch, it is due immediately, so the drain, which a fast
//! success or the periodic tick starts, retries it on the new vendor. This keeps the
//! caller's latency bounded by one attempt and gives every retry the same lease, backoff
//! and attempt cap.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use sms_core::{
    AttemptFailure, Clock, Completion, DeferredQueue, Enqueued, FeeSchedule, InitialState, Lease,
    LeaseToken, MessageId, Money, NewMessage, OutboundSms, QueueReason, RateDecision, RateLimiter,
    Receipt, RecipientDecision, RecipientLimiter, SendError, SmsRequest, StoreError, StoredMessage,
    SystemClock, UsageLedger, Vendor, VendorError, VendorId,
};
use tokio::sync::Notify;

use crate::backoff::{jittered_backoff, retry_while_unavailable};
use crate::config::{FailoverConfig, TimeoutPolicy};
use crate::error::FailoverError;
use crate::events::{AttemptOutcome, GatewayEvent, GatewayObserver};
use crate::health::{Health, Switch, Verdict};
use crate::route::{HealthGuard, MAX_VENDORS};
use crate::write_behind::{SentRecord, WriteBehind, lock, set_if_clear};

/// Longest a delivered drained message waits before its "sent" is written: completions
/// are written together, one commit per this interval (or per claimed batch, when that
/// is sent sooner). A process that dies in between sends these messages again once
/// their leases lapse, so the interval bounds that exposure.
const COMPLETE_EVERY: Duration = Duration::from_millis(20);
/// Tries to mark a batch sent while the store is briefly unreachable: 50, 100 and
/// 200 ms apart.
const COMPLETE_TRIES: u32 = 4;
const COMPLETE_RETRY_FIRST: Duration = Duration::from_millis(50);

/// A vendor and its price list.
#[derive(Clone)]
pub struct VendorEntry {
    /// The vendor.
    pub vendor: Arc<dyn Vendor>,
    /// Its tiered prices.
    pub fees: Arc<dyn FeeSchedule>,
}

/// One vendor's state, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorSnapshot {
    /// The vendor.
    pub id: VendorId,
    /// Whether live requests go to it now.
    pub is_current: bool,
    /// Failures in a row charged to it while current.
    pub consecutive_failures: u32,
    /// End of its cooldown, while it rests.
    pub cooling_down_until: Option<DateTime<Utc>>,
    /// Switched off by an operator.
    pub disabled: bool,
    /// Messages billed this period, as last read from the shared ledger.
    pub billed_this_period: u64,
    /// Price of its next message.
    pub price: Money,
    /// What was spent on it this period (as seen by this instance, plus what was billed
    /// before it started).
    pub spend: Money,
}

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

/// What one drain pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Messages claimed.
    pub claimed: usize,
    /// Delivered.
    pub sent: usize,
    /// Failed and put back with a backoff.
    pub requeued: usize,
    /// Out of attempts or refused for good.
    pub dead: usize,
    /// Past their deliver-by time.
    pub expired: usize,
    /// Updates refused because another claimer holds the message now.
    pub lease_lost: usize,
    /// Given back unattempted (rate limit reached, no vendor, lease too short, shutdown).
    pub released: usize,
}

impl DrainReport {
    /// Adds another report's counts to this one.
    fn add(&mut self, other: &DrainReport) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.requeued += other.requeued;
        self.dead += other.dead;
        self.expired += other.expired;
        self.lease_lost += other.lease_lost;
        self.released += other.released;
    }
}

/// Runs futures together on the current task and returns their outputs in order (a
/// few lanes per drain pass do not need a dependency for this).
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// How one attempt went.
struct Attempted {
    /// The vendor's index.
    idx: usize,
    result: Result<Receipt, VendorError>,
    slow: bool,
    billed: u64,
    switched: bool,
    /// When the answer came.
    finished_at: DateTime<Utc>,
}

/// What the drain should do after one message.
enum Next {
    Continue,
    Halt,
}

/// The failover SMS gateway. Share it with `Arc`.
pub struct Gateway {
    vendors: Vec<Arc<dyn Vendor>>,
    ids: Vec<VendorId>,
    /// Health, billed usage and the writes that follow sends.
    wb: Arc<WriteBehind>,
    /// Every vendor is disabled (kept beside the health state so a send checks it
    /// without the lock).
    all_disabled: AtomicBool,
    limiter: Arc<dyn RateLimiter>,
    recipient_limiter: Option<Arc<dyn RecipientLimiter>>,
    queue: Arc<dyn DeferredQueue>,
    ledger: Arc<dyn UsageLedger>,
    clock: Arc<dyn Clock>,
    config: FailoverConfig,
    observer: Option<Arc<dyn GatewayObserver>>,
    /// Whether the observer wants each attempt's cost (which takes the health lock).
    observer_wants_cost: bool,
    drain_wanted: Notify,
    /// A pass was asked for since the last one began: further asks need no wake-up (a
    /// fast success asks every time, and a notification is a write to shared memory).
    drain_requested: AtomicBool,
    drain_running: tokio::sync::Mutex<()>,
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

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

fn queue_reason(error: &VendorError) -> QueueReason {
    match error {
        VendorError::TimedOut => QueueReason::TimedOut,
        VendorError::Throttled { .. } => QueueReason::VendorThrottled,
        // Rejected messages are never queued; listed so a new kind needs a decision here.
        VendorError::Unauthorized { .. }
        | VendorError::Transient { .. }
        | VendorError::Rejected { .. } => QueueReason::VendorFailed,
    }
}

/// A vendor call bounded by `limit`. An answer ready at the first poll needs no timer,
/// so instant answers (cached, refused at once, in-memory vendors) skip its cost.
async fn within(
    limit: Duration,
    call: impl Future<Output = Result<Receipt, VendorError>>,
) -> Result<Receipt, VendorError> {
    let mut call = std::pin::pin!(call);
    if let Poll::Ready(answer) = first_poll(call.as_mut()).await {
        return answer;
    }
    // Boxed: the timer is large, and the answers that need it took a network round trip.
    Box::pin(tokio::time::timeout(limit, call))
        .await
        .unwrap_or(Err(VendorError::TimedOut))
}

/// Polls `future` once: ready means it waited on nothing (no I/O, no timer).
async fn first_poll<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// Awaits a limiter's `check`. One that was not ready at its first poll waited (a
/// Redis round trip), so `timed_from`, the send's first instant, can no longer time
/// the vendor call: it is cleared.
async fn limit_check<F: Future + ?Sized>(
    mut check: Pin<&mut F>,
    timed_from: &mut Option<tokio::time::Instant>,
) -> F::Output {
    match first_poll(check.as_mut()).await {
        Poll::Ready(answer) => answer,
        Poll::Pending => {
            *timed_from = None;
            check.await
        }
    }
}

fn permits(request: &SmsRequest) -> u32 {
    u32::try_from(request.recipients().len()).unwrap_or(u32::MAX)
}

/// Builds a [`Gateway`]: the collaborators every gateway needs are the arguments of
/// [`Gateway::builder`]; the rest have defaults.
pub struct GatewayBuilder {
    vendors: Vec<VendorEntry>,
    limiter: Arc<dyn RateLimiter>,
    queue: Arc<dyn DeferredQueue>,
    ledger: Arc<dyn UsageLedger>,
    recipient_limiter: Option<Arc<dyn RecipientLimiter>>,
    clock: Arc<dyn Clock>,
    config: FailoverConfig,
    observer: Option<Arc<dyn GatewayObserver>>,
}

impl GatewayBuilder {
    /// Limits how often each recipient is sent to (default: no per-recipient limit).
    pub fn recipient_limiter(mut self, limiter: Arc<dyn RecipientLimiter>) -> Self {
        self.recipient_limiter = Some(limiter);
        self
    }

    /// The source of wall time (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The failover settings (default: [`FailoverConfig::default`]).
    pub fn config(mut self, config: FailoverConfig) -> Self {
        self.config = config;
        self
    }

    /// Sends every [`GatewayEvent`] to `observer` (default: none).
    pub fn observer(mut self, observer: Arc<dyn GatewayObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The gateway, once the configuration and the vendor list are found valid: at least
    /// one vendor, no two with one name, at most as many as the gateway can route
    /// between.
    pub fn build(self) -> Result<Gateway, FailoverError> {
        let Self {
            vendors,
            limiter,
            queue,
            ledger,
            recipient_limiter,
            clock,
            config,
            observer,
        } = self;
        config.validate()?;
        if vendors.is_empty() {
            return Err(FailoverError::NoVendors);
        }
        if vendors.len() > MAX_VENDORS {
            return Err(FailoverError::TooManyVendors {
                max: MAX_VENDORS,
                found: vendors.len(),
            });
        }
        let ids: Vec<VendorId> = vendors.iter().map(|v| v.vendor.id()).collect();
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(FailoverError::DuplicateVendor(id.clone()));
            }
        }
        let offset = FixedOffset::east_opt(config.billing_utc_offset_hours * 3600).ok_or(
            FailoverError::InvalidConfig {
                field: "billing_utc_offset_hours",
                problem: "out of range".into(),
            },
        )?;
        let health = Health::new(
            vendors.iter().map(|v| v.fees.clone()).collect(),
            &config,
            offset,
            clock.now(),
        );
        Ok(Gateway {
            vendors: vendors.into_iter().map(|v| v.vendor).collect(),
            wb: Arc::new(WriteBehind::new(
                health,
                ids.clone(),
                ledger.clone(),
                queue.clone(),
            )),
            ids,
            all_disabled: AtomicBool::new(false),
            limiter,
            recipient_limiter,
            queue,
            ledger,
            clock,
            config,
            observer_wants_cost: observer.as_ref().is_some_and(|o| o.wants_cost()),
            observer,
            drain_wanted: Notify::new(),
            drain_requested: AtomicBool::new(false),
            drain_running: tokio::sync::Mutex::new(()),
        })
    }
}

impl Gateway {
    /// Starts building a gateway over `vendors` (in configured order: it breaks price
    /// ties), limited by `limiter`, storing deferred messages in `queue` and billed
    /// usage in `ledger`.
    pub fn builder(
        vendors: Vec<VendorEntry>,
        limiter: Arc<dyn RateLimiter>,
        queue: Arc<dyn DeferredQueue>,
        ledger: Arc<dyn UsageLedger>,
    ) -> GatewayBuilder {
        GatewayBuilder {
            vendors,
            limiter,
            queue,
            ledger,
            recipient_limiter: None,
            clock: Arc::new(SystemClock),
            config: FailoverConfig::default(),
            observer: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &FailoverConfig {
        &self.config
    }

    fn health(&self) -> HealthGuard<'_> {
        self.wb.health()
    }

    /// Writes the billed usage and the records of sent messages that wait in memory
    /// (they are written within milliseconds anyway), and waits for writes in flight.
    /// Call it before the process ends, after the last send; counts a failed ledger
    /// write kept are reported as its error.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.wb.flush().await
    }

    /// Sends the event `make` builds to the observer; builds nothing without one.
    fn emit(&self, make: impl FnOnce() -> GatewayEvent) {
        if let Some(observer) = &self.observer {
            observer.on_event(&make());
        }
    }

    fn announce(&self, switch: Option<Switch>) -> bool {
        let Some(switch) = switch else {
            return false;
        };
        let (from, to) = (self.ids[switch.from].clone(), self.ids[switch.to].clone());
        tracing::warn!(%from, %to, reason = %switch.reason, "switched vendor");
        self.emit(|| GatewayEvent::Switched {
            from,
            to,
            reason: switch.reason,
            at: self.clock.now(),
        });
        true
    }

    /// Loads this period's billed volumes from the ledger and makes the cheapest vendor
    /// current. Call once before serving.
    pub async fn init(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let period = self.health().period(now);
        let totals = self.ledger.totals(&period).await?;
        let billed: Vec<u64> = self
            .ids
            .iter()
            .map(|id| totals.get(id).copied().unwrap_or(0))
            .collect();
        let switch = self.health().load_totals(&billed, now);
        self.announce(switch);
        Ok(())
    }

    /// Every vendor's state, in configured order.
    pub fn vendors(&self) -> Vec<VendorSnapshot> {
        let now = self.clock.now();
        let health = self.health();
        self.ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let v = &health.vendors[i];
                VendorSnapshot {
                    id: id.clone(),
                    is_current: i == health.current,
                    consecutive_failures: v.consecutive_failures,
                    cooling_down_until: v.cooling_until.filter(|until| *until > now),
                    disabled: v.disabled,
                    billed_this_period: v.billed,
                    price: health.price(i),
                    spend: v.spend,
                }
            })
            .collect()
    }

    /// The vendor live requests go to now.
    pub fn current_vendor(&self) -> VendorId {
        self.ids[self.health().current].clone()
    }

    fn index_of(&self, vendor: &VendorId) -> Result<usize, FailoverError> {
        self.ids
            .iter()
            .position(|id| id == vendor)
            .ok_or_else(|| FailoverError::UnknownVendor(vendor.clone()))
    }

    /// Takes a vendor out of use (operator action); the gateway leaves it if current.
    pub fn disable(&self, vendor: &VendorId) -> Result<(), FailoverError> {
        let idx = self.index_of(vendor)?;
        let switch = {
            let mut health = self.health();
            let switch = health.disable(idx, self.clock.now());
            self.all_disabled
                .store(health.vendors.iter().all(|v| v.disabled), Ordering::Release);
            switch
        };
        self.announce(switch);
        Ok(())
    }

    /// Puts a vendor back in use (operator action). It becomes current when it is the
    /// only enabled one; otherwise it is probed like a rested vendor when it is cheaper.
    pub fn enable(&self, vendor: &VendorId) -> Result<(), FailoverError> {
        let idx = self.index_of(vendor)?;
        let switch = {
            let mut health = self.health();
            let switch = health.enable(idx);
            self.all_disabled.store(false, Ordering::Release);
            switch
        };
        self.announce(switch);
        Ok(())
    }

    /// Asks the drainer (if started) for a pass soon. Never blocks and never drains on
    /// the caller's task; a pass already running absorbs the request into one more pass.
    pub fn trigger_drain(&self) {
        if set_if_clear(&self.drain_requested) {
            self.drain_wanted.notify_one();
        }
    }

    /// One vendor call, with its timeout, health accounting and usage; `now` is when
    /// the caller began. The call is timed from `started`, when the caller read it
    /// with `now` and did nothing since that could wait (see [`Gateway::send`]), or
    /// else from a reading taken here.
    async fn attempt(
        &self,
        sms: &OutboundSms,
        drained: bool,
        now: DateTime<Utc>,
        started: Option<tokio::time::Instant>,
    ) -> Result<Attempted, SendError> {
        let ticket = match self.wb.health.steady_ticket(now.timestamp_micros()) {
            Some(ticket) => ticket,
            None => self
                .health()
                .begin(now)
                .ok_or_else(|| SendError::NoVendor("every vendor is disabled".into()))?,
        };
        let started = started.unwrap_or_else(tokio::time::Instant::now);
        let result = within(
            self.config.attempt_timeout,
            self.vendors[ticket.idx].send(sms),
        )
        .await;
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
        let now = self.clock.now();
        let idx = ticket.idx;
        // In the steady state a fast success changes nothing but per-thread counts. With
        // an observer that wants costs, the cost it is told needs the prices, so the
        // lock is taken.
        let steady = verdict == Verdict::Fast
            && !self.observer_wants_cost
            && self
                .wb
                .health
                .steady_success(ticket, billed, now.timestamp_micros());
        let (cost, switch) = if steady {
            (None, None)
        } else {
            let mut health = self.health();
            let cost = if billed > 0 {
                health.add_usage(idx, billed, now)
            } else {
                Money::ZERO
            };
            (
                self.observer_wants_cost.then_some(cost),
                health.record(ticket, verdict, now),
            )
        };
        if billed > 0 {
            self.wb.usage_added();
        }
        self.emit(|| GatewayEvent::Attempt {
            vendor: self.ids[idx].clone(),
            outcome,
            latency,
            billed_messages: billed,
            cost,
            drained,
        });
        let switched = self.announce(switch);
        Ok(Attempted {
            idx,
            result,
            slow,
            billed,
            switched,
            finished_at: now,
        })
    }

    /// When a failed attempt should be retried.
    fn retry_at(
        &self,
        attempted: &Attempted,
        attempt_number: u32,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        if attempted.switched {
            // This failure moved the gateway to another vendor: retry there right away.
            return now;
        }
        let mut delay = jittered_backoff(
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

    async fn check_recipients(&self, request: &SmsRequest) -> Result<(), SendError> {
        let Some(limiter) = &self.recipient_limiter else {
            return Ok(());
        };
        match limiter.check(request.recipients()).await {
            Ok(decisions) => {
                for (recipient, decision) in request.recipients().iter().zip(decisions) {
                    if let RecipientDecision::Limited {
                        window,
                        limit,
                        retry_after,
                    } = decision
                    {
                        self.emit(|| GatewayEvent::RecipientLimited);
                        return Err(SendError::RecipientLimited {
                            recipient: recipient.masked(),
                            limit,
                            window,
                            retry_after,
                        });
                    }
                }
                Ok(())
            }
            Err(e) => {
                // The limiter crate already applied its fail-open/closed policy; an error
                // that still reaches us is logged and the request goes on.
                tracing::warn!(error = %e, "recipient limiter failed; not limiting this request");
                Ok(())
            }
        }
    }

    /// Stores a message that was not sent now and tells the caller so.
    async fn store_new(&self, message: NewMessage) -> Result<SendOutcome, SendError> {
        let (id, reason, may_duplicate) = (message.id, message.reason, message.may_duplicate);
        match self.queue.enqueue(message).await {
            Ok(Enqueued::Created(_)) => {
                self.emit(|| GatewayEvent::Queued { id, reason });
                Ok(SendOutcome::Queued {
                    id,
                    reason,
                    may_duplicate,
                })
            }
            Ok(Enqueued::Existing(m)) => Ok(SendOutcome::Existing(m)),
            // Never lose a message silently: the caller hears it was neither sent nor kept.
            Err(e) => Err(SendError::StorageUnavailable(e)),
        }
    }

    /// Sends a request now, or stores it for later. See the module docs for the steps.
    pub async fn send(&self, request: SmsRequest) -> Result<SendOutcome, SendError> {
        // One reading of the clock stamps the message and, when nothing on the way to
        // the vendor can wait (no key to look up or store, limiters that answer at
        // their first poll), starts the vendor call's timing too: the latency then
        // includes the limit checks and the id, well under a microsecond in memory,
        // and never a wait that is not the vendor's.
        let (now, timed_from) = (self.clock.now(), tokio::time::Instant::now());
        let mut timed_from = Some(timed_from);
        if request.is_expired_at(now) {
            return Err(SendError::Expired);
        }
        if let Some(key) = request.idempotency_key() {
            timed_from = None;
            // A retried request must not be refused by the recipient limiter that
            // counted its first try, so known keys answer before any limit.
            match self.queue.find_by_idempotency_key(key).await {
                Ok(Some(existing)) => return Ok(SendOutcome::Existing(existing)),
                Ok(None) => {}
                Err(e) => return Err(SendError::StorageUnavailable(e)),
            }
        }
        {
            let recipients = std::pin::pin!(self.check_recipients(&request));
            limit_check(recipients, &mut timed_from).await?;
        }
        if self.all_disabled.load(Ordering::Acquire) {
            return Err(SendError::NoVendor("every vendor is disabled".into()));
        }

        let id = MessageId::at(now);
        let mut acquire = self.limiter.acquire(permits(&request));
        let limited = match limit_check(acquire.as_mut(), &mut timed_from).await {
            Ok(RateDecision::Allowed) => None,
            Ok(RateDecision::Limited { retry_after }) => Some(retry_after),
            Err(e) => {
                // Queueing is the safe answer: nothing goes out above the limit, and the
                // message is kept.
                tracing::warn!(error = %e, "rate limiter failed; queueing the message");
                Some(Duration::ZERO)
            }
        };
        if let Some(retry_after) = limited {
            self.emit(|| GatewayEvent::RateLimited);
            let mut message = NewMessage::queued(
                id,
                request,
                QueueReason::RateLimited,
                self.config.max_attempts,
                now,
            );
            message.next_attempt_at = after(now, retry_after);
            // Boxed, so that the future of every send does not carry this one's state.
            return Box::pin(self.store_new(message)).await;
        }

        // With an idempotency key, the message is stored (leased to us) before the
        // attempt: a concurrent duplicate finds it, and if this process dies mid-send,
        // the drain retries it once the lease lapses.
        let token = if request.idempotency_key().is_some() {
            let token = LeaseToken::new();
            let message = NewMessage {
                initial: InitialState::Leased(Lease {
                    owner: self.config.instance_id.clone(),
                    token,
                    expires_at: after(now, self.config.lease),
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
                Ok(Enqueued::Created(_)) => Some(token),
                Ok(Enqueued::Existing(m)) => return Ok(SendOutcome::Existing(m)),
                Err(e) => return Err(SendError::StorageUnavailable(e)),
            }
        } else {
            None
        };

        let sms = OutboundSms { id, request };
        let attempted = match self.attempt(&sms, false, now, timed_from).await {
            Ok(a) => a,
            Err(e) => {
                // Every vendor was disabled between the check and the attempt.
                if let Some(token) = token {
                    self.settle_release(id, token).await;
                }
                return Err(e);
            }
        };
        if token.is_none() && attempted.result.is_ok() {
            return Ok(self.delivered_without_key(sms, &attempted).await);
        }
        // Every other outcome writes to the store. Its future is boxed, so that the
        // common case above does not carry (and move) its state.
        Box::pin(self.finish_live(id, sms.request, token, attempted)).await
    }

    /// A live request without a key that the vendor took: recorded for look-ups
    /// behind the send.
    async fn delivered_without_key(&self, sms: OutboundSms, attempted: &Attempted) -> SendOutcome {
        if !attempted.slow {
            self.trigger_drain();
        }
        let id = sms.id;
        let full = self.wb.record(SentRecord {
            id,
            request: sms.request,
            vendor: attempted.idx,
            at: attempted.finished_at,
            max_attempts: self.config.max_attempts,
        });
        if let Some(shard) = full {
            // Rare (the store falls behind): boxed for the same reason as above.
            Box::pin(self.wb.wait_for_room(shard)).await;
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

    async fn finish_live(
        &self,
        id: MessageId,
        request: SmsRequest,
        token: Option<LeaseToken>,
        attempted: Attempted,
    ) -> Result<SendOutcome, SendError> {
        let now = attempted.finished_at;
        let vendor = &self.ids[attempted.idx];
        let failure = |error: &VendorError| AttemptFailure {
            vendor: Some(vendor.clone()),
            error: error.to_string(),
            may_duplicate: matches!(error, VendorError::TimedOut),
        };
        match &attempted.result {
            Ok(_) => {
                let Some(token) = token else {
                    let sms = OutboundSms { id, request };
                    return Ok(self.delivered_without_key(sms, &attempted).await);
                };
                if !attempted.slow {
                    self.trigger_drain();
                }
                if let Err(e) = self.queue.complete(id, token, vendor, now).await {
                    tracing::warn!(%id, error = %e, "delivered, but could not mark the message sent");
                }
                Ok(self.delivered_live(id, &attempted))
            }
            Err(error @ VendorError::Rejected { code, message }) => {
                if let Some(token) = token {
                    self.settle(id, self.queue.dead(id, token, failure(error), now).await);
                }
                Err(SendError::Rejected {
                    vendor: vendor.clone(),
                    code: code.clone(),
                    message: message.clone(),
                })
            }
            Err(error @ VendorError::TimedOut) if self.config.on_timeout == TimeoutPolicy::Fail => {
                if let Some(token) = token {
                    // The caller was told; a later automatic retry would surprise them.
                    self.settle(id, self.queue.dead(id, token, failure(error), now).await);
                }
                Err(SendError::TimedOut)
            }
            Err(error) => {
                let reason = queue_reason(error);
                let may_duplicate = matches!(error, VendorError::TimedOut);
                let next_attempt_at = self.retry_at(&attempted, 1, now);
                match token {
                    Some(token) => {
                        // If this update fails the row stays leased to us and the drain
                        // retries it when the lease lapses: it is not lost.
                        let result = self
                            .queue
                            .fail(id, token, failure(error), next_attempt_at, now)
                            .await;
                        self.settle(id, result);
                        self.emit(|| GatewayEvent::Queued { id, reason });
                        Ok(SendOutcome::Queued {
                            id,
                            reason,
                            may_duplicate,
                        })
                    }
                    None => {
                        let message = NewMessage {
                            attempts: 1,
                            next_attempt_at,
                            last_vendor: Some(vendor.clone()),
                            last_error: Some(error.to_string()),
                            may_duplicate,
                            ..NewMessage::queued(id, request, reason, self.config.max_attempts, now)
                        };
                        self.store_new(message).await
                    }
                }
            }
        }
    }

    /// Logs a failed update of a leased message; returns whether it succeeded.
    fn settle(&self, id: MessageId, result: Result<(), StoreError>) -> bool {
        match result {
            Ok(()) => true,
            Err(StoreError::LeaseLost(_)) => {
                tracing::warn!(%id, "lease lost: another claimer holds the message now");
                false
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "could not update the message; it is retried when its lease lapses");
                false
            }
        }
    }

    async fn settle_release(&self, id: MessageId, token: LeaseToken) {
        let result = self.queue.release(id, token, self.clock.now()).await;
        self.settle(id, result);
    }

    /// Claims due messages in batches and sends each, until none are due (at most
    /// `drain_max_batches` batches). Only one pass runs at a time in a process.
    pub async fn drain_once(&self) -> Result<DrainReport, StoreError> {
        self.drain(&AtomicBool::new(false)).await
    }

    pub(crate) async fn drain(&self, stop: &AtomicBool) -> Result<DrainReport, StoreError> {
        let _one_at_a_time = self.drain_running.lock().await;
        // Asks from now on wake the drainer for another pass.
        self.drain_requested.store(false, Ordering::Release);
        let mut report = DrainReport::default();
        // A batch claimed while the previous one was being marked sent.
        let mut claimed_ahead: Option<Vec<StoredMessage>> = None;
        for pass_batch in 0..self.config.drain_max_batches {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let batch = match claimed_ahead.take() {
                Some(batch) => batch,
                None => self.claim_batch().await?,
            };
            if batch.is_empty() {
                break;
            }
            let full = batch.len() >= self.config.drain_batch as usize;
            report.claimed += batch.len();
            // Spread the batch over lanes round-robin (oldest first in each lane); the
            // lanes run together, each sending its messages one after the other.
            let lanes = (self.config.drain_concurrency.max(1) as usize).min(batch.len());
            let mut lane_messages: Vec<Vec<StoredMessage>> =
                (0..lanes).map(|_| Vec::new()).collect();
            for (i, message) in batch.into_iter().enumerate() {
                lane_messages[i % lanes].push(message);
            }
            let halt = AtomicBool::new(false);
            // Deliveries are marked sent together: the lanes leave them here and the
            // committer writes what is there every `COMPLETE_EVERY` and once more when
            // the lanes are done.
            let delivered = Mutex::new(Vec::new());
            let lanes_done = AtomicBool::new(false);
            let wake_committer = Notify::new();
            let lanes = async {
                let reports = join_all(
                    lane_messages
                        .into_iter()
                        .map(|messages| self.drain_lane(messages, stop, &halt, &delivered)),
                )
                .await;
                lanes_done.store(true, Ordering::Release);
                wake_committer.notify_one();
                reports
            };
            let committer = async {
                let mut committed = DrainReport::default();
                while !lanes_done.load(Ordering::Acquire) {
                    tokio::select! {
                        _ = tokio::time::sleep(COMPLETE_EVERY) => {}
                        _ = wake_committer.notified() => {}
                    }
                    self.commit_delivered(&delivered, &mut committed).await;
                }
                committed
            };
            let (lane_reports, mut committed) = tokio::join!(lanes, committer);
            let halted = halt.load(Ordering::Acquire);
            // When another batch follows, it is claimed while this one is marked sent:
            // the two statements touch different rows, and the pass waits for one
            // round trip per batch instead of two.
            let another = full
                && !halted
                && !stop.load(Ordering::Acquire)
                && pass_batch + 1 < self.config.drain_max_batches;
            let next = if another {
                let (_, next) = tokio::join!(
                    self.commit_delivered(&delivered, &mut committed),
                    self.claim_batch()
                );
                Some(next)
            } else {
                self.commit_delivered(&delivered, &mut committed).await;
                None
            };
            report.add(&committed);
            for lane in lane_reports {
                report.add(&lane);
            }
            if halted || !full {
                break;
            }
            claimed_ahead = next.transpose()?;
        }
        if let Some(batch) = claimed_ahead {
            // Stopped with a batch claimed ahead: it goes back unattempted.
            report.claimed += batch.len();
            for message in &batch {
                self.release(message, &mut report).await;
            }
        }
        Ok(report)
    }

    /// Claims the next batch of due messages for this instance.
    async fn claim_batch(&self) -> Result<Vec<StoredMessage>, StoreError> {
        self.queue
            .claim(
                &self.config.instance_id,
                self.clock.now(),
                self.config.lease,
                self.config.drain_batch,
            )
            .await
    }

    /// Sends one lane's messages in order; once the pass is halted or stopped, gives the
    /// rest back unattempted.
    async fn drain_lane(
        &self,
        messages: Vec<StoredMessage>,
        stop: &AtomicBool,
        halt: &AtomicBool,
        delivered: &Mutex<Vec<Completion>>,
    ) -> DrainReport {
        let mut report = DrainReport::default();
        for message in messages {
            if stop.load(Ordering::Acquire) || halt.load(Ordering::Acquire) {
                self.release(&message, &mut report).await;
            } else if let Next::Halt = self.drain_one(message, &mut report, delivered).await {
                halt.store(true, Ordering::Release);
            }
        }
        report
    }

    async fn release(&self, message: &StoredMessage, report: &mut DrainReport) {
        let Some(lease) = &message.lease else {
            return;
        };
        match self
            .queue
            .release(message.id, lease.token, self.clock.now())
            .await
        {
            Ok(()) => report.released += 1,
            Err(StoreError::LeaseLost(_)) => report.lease_lost += 1,
            Err(e) => {
                tracing::warn!(id = %message.id, error = %e, "could not release the message; it is retried when its lease lapses");
            }
        }
    }

    fn count_update(
        &self,
        id: MessageId,
        result: Result<(), StoreError>,
        done: &mut usize,
        report_lost: &mut usize,
    ) {
        match result {
            Ok(()) => *done += 1,
            Err(StoreError::LeaseLost(_)) => *report_lost += 1,
            Err(e) => {
                tracing::warn!(%id, error = %e, "could not update the message; it is retried when its lease lapses");
            }
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
            let before = report.expired;
            self.count_update(id, result, &mut report.expired, &mut report.lease_lost);
            if report.expired > before {
                self.emit(|| GatewayEvent::Expired { id });
            }
            return Next::Continue;
        }
        if message.attempts > message.max_attempts {
            // Claimed again after lapsed leases (crashes) without a recorded outcome.
            let failure = AttemptFailure {
                vendor: None,
                error: format!(
                    "out of attempts ({} of {})",
                    message.attempts - 1,
                    message.max_attempts
                ),
                may_duplicate: false,
            };
            let result = self.queue.dead(id, token, failure, now).await;
            self.count_dead(id, result, report);
            return Next::Continue;
        }
        // A lease that could lapse during the attempt would let another drainer send the
        // message too: give it back instead.
        if after(now, self.config.attempt_timeout) >= lease.expires_at {
            self.release(&message, report).await;
            return Next::Halt;
        }
        match self.limiter.acquire(permits(&message.request)).await {
            Ok(RateDecision::Allowed) => {}
            Ok(RateDecision::Limited { .. }) | Err(_) => {
                // The limit is reached (or the limiter cannot tell): give the message back
                // without counting an attempt
                // and end the pass; the next tick or trigger resumes.
                self.emit(|| GatewayEvent::RateLimited);
                self.release(&message, report).await;
                return Next::Halt;
            }
        }
        let StoredMessage {
            request,
            attempts,
            max_attempts,
            ..
        } = message;
        let sms = OutboundSms { id, request };
        let attempted = match self.attempt(&sms, true, now, None).await {
            Ok(a) => a,
            Err(_) => {
                let result = self.queue.release(id, token, self.clock.now()).await;
                self.count_update(id, result, &mut report.released, &mut report.lease_lost);
                return Next::Halt;
            }
        };
        let now = attempted.finished_at;
        let vendor = self.ids[attempted.idx].clone();
        match &attempted.result {
            Ok(_) => {
                lock(delivered).push(Completion {
                    id,
                    token,
                    vendor,
                    at: now,
                });
            }
            Err(error) => {
                let failure = AttemptFailure {
                    vendor: Some(vendor),
                    error: error.to_string(),
                    may_duplicate: matches!(error, VendorError::TimedOut),
                };
                // Only a refusal of the message itself is final. Unauthorized is the
                // vendor's fault: it counted as a failure and the message waits for a vendor
                // that takes it.
                let refused = matches!(error, VendorError::Rejected { .. });
                if refused || attempts >= max_attempts {
                    let result = self.queue.dead(id, token, failure, now).await;
                    self.count_dead(id, result, report);
                } else {
                    let next_attempt_at = self.retry_at(&attempted, attempts, now);
                    let result = self
                        .queue
                        .fail(id, token, failure, next_attempt_at, now)
                        .await;
                    self.count_update(id, result, &mut report.requeued, &mut report.lease_lost);
                }
            }
        }
        Next::Continue
    }

    /// Marks the deliveries waiting in `delivered` sent, in one write. A store that is
    /// briefly unreachable gets a few more tries; after that the messages stay leased
    /// and are sent again when their leases lapse (logged).
    async fn commit_delivered(&self, delivered: &Mutex<Vec<Completion>>, report: &mut DrainReport) {
        let batch = std::mem::take(&mut *lock(delivered));
        if batch.is_empty() {
            return;
        }
        let results = match retry_while_unavailable(
            COMPLETE_TRIES,
            COMPLETE_RETRY_FIRST,
            COMPLETE_RETRY_FIRST * 4,
            "marking delivered messages sent",
            || self.queue.complete_many(&batch),
        )
        .await
        {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(messages = batch.len(), error = %e, "delivered, but could not mark the messages sent; they are sent again when their leases lapse");
                return;
            }
        };
        for (completion, result) in batch.into_iter().zip(results) {
            let before = report.sent;
            self.count_update(
                completion.id,
                result,
                &mut report.sent,
                &mut report.lease_lost,
            );
            if report.sent > before {
                self.emit(|| GatewayEvent::Delivered {
                    id: completion.id,
                    vendor: completion.vendor,
                    drained: true,
                });
            }
        }
    }

    fn count_dead(&self, id: MessageId, result: Result<(), StoreError>, report: &mut DrainReport) {
        let before = report.dead;
        self.count_update(id, result, &mut report.dead, &mut report.lease_lost);
        if report.dead > before {
            tracing::warn!(%id, "message is dead");
            self.emit(|| GatewayEvent::Dead { id });
        }
    }

    pub(crate) fn drain_wanted(&self) -> &Notify {
        &self.drain_wanted
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use sms_core::MessageStatus;
    use sms_core::mocks::{MockDeferredQueue, MockRateLimiter, MockVendor};
    use sms_core::testing::{ManualClock, MemoryLedger};

    use super::*;

    struct Flat;

    impl FeeSchedule for Flat {
        fn price_at(&self, _billed_volume: u64) -> Money {
            Money::from_micros(40_000)
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, 0).expect("a valid time")
    }

    fn leased(now: DateTime<Utc>) -> StoredMessage {
        let id = MessageId::new();
        StoredMessage {
            id,
            request: SmsRequest::new("login", ["1"], ["+8613800138000"]).expect("a request"),
            status: MessageStatus::Leased,
            reason: QueueReason::RateLimited,
            attempts: 1,
            max_attempts: 10,
            next_attempt_at: now,
            lease: Some(Lease {
                owner: "test".into(),
                token: LeaseToken::new(),
                expires_at: now + chrono::Duration::seconds(30),
            }),
            last_vendor: None,
            last_error: None,
            may_duplicate: false,
            created_at: now,
            updated_at: now,
        }
    }

    /// The next batch is claimed while the current one is marked sent; when the drainer
    /// is stopped meanwhile, that batch goes back unattempted instead of being sent.
    #[tokio::test]
    async fn a_batch_claimed_ahead_is_released_when_the_drainer_stops() {
        let stop = Arc::new(AtomicBool::new(false));
        let first: Vec<StoredMessage> = (0..2).map(|_| leased(start())).collect();
        let ahead: Vec<StoredMessage> = (0..2).map(|_| leased(start())).collect();
        let first_ids: Vec<MessageId> = first.iter().map(|m| m.id).collect();
        let ahead_ids: Vec<MessageId> = ahead.iter().map(|m| m.id).collect();

        let mut queue = MockDeferredQueue::new();
        let claims = AtomicUsize::new(0);
        let batches = Mutex::new(vec![ahead, first]);
        let stopper = stop.clone();
        queue.expect_claim().times(2).returning(move |_, _, _, _| {
            if claims.fetch_add(1, Ordering::SeqCst) == 1 {
                // The claim ahead: the drainer is told to stop while it runs.
                stopper.store(true, Ordering::Release);
            }
            Ok(lock(&batches).pop().expect("two batches"))
        });
        let expected = first_ids.clone();
        queue
            .expect_complete_many()
            .times(1)
            .withf(move |done| done.iter().map(|c| c.id).collect::<Vec<_>>() == expected)
            .returning(|done| Ok(done.iter().map(|_| Ok(())).collect()));
        let released = Arc::new(Mutex::new(Vec::new()));
        let seen = released.clone();
        queue.expect_release().times(2).returning(move |id, _, _| {
            lock(&seen).push(id);
            Ok(())
        });

        let mut vendor = MockVendor::new();
        vendor
            .expect_id()
            .returning(|| VendorId::new("aliyun").expect("an id"));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sent_by_vendor = sent.clone();
        vendor.expect_send().returning(move |sms| {
            lock(&sent_by_vendor).push(sms.id);
            Ok(Receipt {
                vendor_message_id: String::new(),
                billed_messages: 1,
            })
        });
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_acquire()
            .returning(|_| Ok(RateDecision::Allowed));
        let config = FailoverConfig {
            drain_batch: 2,
            drain_concurrency: 1,
            ..FailoverConfig::default()
        };
        let gateway = Gateway::builder(
            vec![VendorEntry {
                vendor: Arc::new(vendor),
                fees: Arc::new(Flat),
            }],
            Arc::new(limiter),
            Arc::new(queue),
            Arc::new(MemoryLedger::new()),
        )
        .clock(Arc::new(ManualClock::new(start())))
        .config(config)
        .build()
        .expect("a gateway");

        let report = gateway.drain(&stop).await.expect("a drain pass");
        assert_eq!(
            (report.claimed, report.sent, report.released),
            (4, 2, 2),
            "{report:?}"
        );
        assert_eq!(*lock(&sent), first_ids);
        assert_eq!(*lock(&released), ahead_ids);
    }
}
