//! The gateway: one send path for live requests and drained messages.
//!
//! - [`builder`]: building a gateway and checking its vendors and configuration.
//! - [`send`]: a live request, from the limits to the caller's answer.
//! - [`attempt`]: one vendor call, what it says about the vendor, and its usage.
//! - [`drain`]: one pass over the deferred queue; [`drainer`]: the task that runs them.
//!
//! This module holds the gateway's state and what operators and status pages use:
//! vendor snapshots, enabling and disabling vendors, start-up and flushing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::sync::lock;
use sms_core::{
    CallbackStatus, CallbackUrl, Clock, DeferredQueue, FeeSchedule, MessageId, Money, NextTier,
    PhoneNumber, RateLimiter, RecipientLimiter, SmsRequest, StatusEvent, StoreError, StoredMessage,
    Templates, UsageLedger, Vendor, VendorId,
};
use tokio::sync::Notify;

use crate::backoff::retry_while_unavailable;
use crate::batch::{BatchWriter, Deliveries, LateReceipts};
use crate::callbacks::StatusCallbacks;
use crate::config::FailoverConfig;
use crate::error::FailoverError;
use crate::events::{GatewayEvent, GatewayObserver};
use crate::health::{Health, HealthOp, Route, Switch};
use crate::write_behind::WriteBehind;

pub(crate) mod attempt;
pub(crate) mod builder;
pub(crate) mod drain;
pub(crate) mod drainer;
pub(crate) mod lease;
pub(crate) mod receipts;
pub(crate) mod report;
pub(crate) mod resend;
pub(crate) mod screen;
pub(crate) mod send;
pub(crate) mod shared;

/// Tries to write a leased message's outcome (sent, dead) while the store is briefly
/// unreachable: 50, 100 and 200 ms apart. A write that still fails leaves the message
/// leased, to be sent again when the lease lapses: this keeps that to real outages.
const OUTCOME_TRIES: u32 = 4;
const OUTCOME_RETRY_FIRST: Duration = Duration::from_millis(50);
const OUTCOME_RETRY_MAX: Duration = Duration::from_millis(200);

/// How often the drainer reads the other instances' billed totals from the ledger.
pub const TOTALS_REFRESH: Duration = Duration::from_secs(10);

/// When a message that waits for a vendor's rest to end is due: then, or at its
/// deadline when that comes first, so that it is expired on time.
pub(crate) fn due_after_rest(request: &SmsRequest, until: DateTime<Utc>) -> DateTime<Utc> {
    request
        .expires_at()
        .map_or(until, |deadline| deadline.min(until))
}

/// A vendor and its price list.
#[derive(Clone)]
pub struct VendorEntry {
    /// The vendor.
    pub vendor: Arc<dyn Vendor>,
    /// Its tiered prices.
    pub fees: Arc<dyn FeeSchedule>,
}

/// One vendor's state, for status pages and metrics.
#[derive(Debug, Clone, PartialEq)]
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
    /// Where its price changes next this period, and to what (none past its last tier).
    pub next_tier: Option<NextTier>,
    /// What was spent on it this period (as seen by this instance, plus what was billed
    /// before it started).
    pub spend: Money,
    /// Templates this vendor answered it has not approved (template, signature or
    /// parameters): it gets no more messages of these until an operator enables it again.
    pub broken_templates: Vec<String>,
    /// Share of its receipts in the failover window that said delivered (none: no
    /// receipt in the window).
    pub delivery_rate: Option<f64>,
    /// Receipts in that window.
    pub receipts_in_window: usize,
    /// How long its recent receipts took to come after the send: the median and the
    /// 95th percentile (none before its first receipt).
    pub receipt_latency: Option<(std::time::Duration, std::time::Duration)>,
}

/// The failover SMS gateway. Build it with [`Gateway::builder`]; share it with `Arc`.
pub struct Gateway {
    vendors: Vec<Arc<dyn Vendor>>,
    /// The vendors' ids, in configured order (health refers to vendors by index).
    ids: Vec<VendorId>,
    /// Who is current, failure counts and billed usage, behind one short lock.
    health: Arc<Mutex<Health>>,
    /// The board this instance shares vendor health on with the deployment's others.
    shared: Option<shared::Shared>,
    /// Ledger writes of billed usage and records of sent messages, behind the send.
    write_behind: Arc<WriteBehind>,
    limiter: Arc<dyn RateLimiter>,
    recipient_limiter: Option<Arc<dyn RecipientLimiter>>,
    /// Numbers no drained message may go to.
    blocklist: Option<Arc<dyn sms_core::Blocklist>>,
    /// Holds drained messages back once their client's spend cap is reached.
    spend_gate: Option<Arc<dyn sms_core::SpendGate>>,
    queue: Arc<dyn DeferredQueue>,
    ledger: Arc<dyn UsageLedger>,
    clock: Arc<dyn Clock>,
    config: FailoverConfig,
    observer: Option<Arc<dyn GatewayObserver>>,
    /// Which recipients each vendor accepted, under its id, for delivery receipts.
    deliveries: Option<BatchWriter<Deliveries>>,
    /// Receipts that came before their sends, settled when the sends were recorded;
    /// taken into account at the next drain pass or flush.
    late_receipts: LateReceipts,
    /// Status events for the clients' callbacks, into the outbox.
    callbacks: Option<StatusCallbacks>,
    /// Each vendor's last delivery receipts, for receipt-aware failover.
    receipt_windows: Mutex<Vec<receipts::ReceiptWatch>>,
    /// The logical templates; empty for pass-through.
    templates: Templates,
    /// By template name, the vendors with a template for it (bit `i`: vendor `i`).
    template_routes: HashMap<String, u64>,
    /// The most recipients the global limit can ever let through in one request.
    max_permits: Option<u32>,
    /// Messages per second the global limit lets through, when the limiter says.
    send_rate: Option<f64>,
    /// Vendor call latency, a moving average in microseconds (0 until the first call):
    /// the drain keeps about rate × latency sends in flight.
    latency_micros: std::sync::atomic::AtomicU64,
    /// A switch happened since the drainer last read the ledger's totals.
    totals_stale: std::sync::atomic::AtomicBool,
    /// Wakes the drainer for a pass; a pass asked for while one runs is one more pass.
    drain_wanted: Notify,
    /// One drain pass at a time in this process.
    drain_running: tokio::sync::Mutex<()>,
}

/// How a token-checked update of a leased message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The update was made.
    Done,
    /// Another claimer holds the message now; nothing was changed.
    LeaseLost,
    /// The store failed; the message stays leased and is retried when its lease lapses.
    Failed,
}

impl Gateway {
    /// The configuration in use.
    pub fn config(&self) -> &FailoverConfig {
        &self.config
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        lock(&self.health)
    }

    /// Writes the billed usage and the records of sent messages that wait in memory
    /// (they are written within milliseconds anyway), and waits for writes in flight.
    /// Call it before the process ends, after the last send; counts a failed ledger
    /// write kept are reported as its error.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if let Some(deliveries) = &self.deliveries {
            deliveries.flush().await;
        }
        self.late_receipts_applied().await;
        if let Some(callbacks) = &self.callbacks {
            callbacks.flush().await;
        }
        self.write_behind.flush().await
    }

    /// Where the status events of a message whose own callback URL is `url` go, and
    /// the writer that stores them; none when they have nowhere to go (so nothing is
    /// built for them).
    fn callbacks_for(&self, url: Option<&CallbackUrl>) -> Option<(&StatusCallbacks, CallbackUrl)> {
        let callbacks = self.callbacks.as_ref()?;
        Some((callbacks, callbacks.target(url)?))
    }

    /// Tells the callback endpoint of `request` (its own, or the default) that message
    /// `id` changed to `status` at `at`, a re-send's event naming the message it
    /// re-sends; `fill` adds what the status carries. Makes nothing without callbacks
    /// or an endpoint.
    async fn tell(
        &self,
        request: &SmsRequest,
        id: MessageId,
        status: CallbackStatus,
        at: DateTime<Utc>,
        fill: impl FnOnce(&mut StatusEvent),
    ) {
        if let Some((callbacks, url)) = self.callbacks_for(request.callback_url()) {
            let mut event = StatusEvent::new(id, status, at);
            event.resend_of = request.resend().map(|r| r.of);
            fill(&mut event);
            callbacks.record(&url, [event]).await;
        }
    }

    /// Sends the event `make` builds to the observer; builds nothing without one.
    fn emit(&self, make: impl FnOnce() -> GatewayEvent) {
        if let Some(observer) = &self.observer {
            observer.on_event(&make());
        }
    }

    /// Logs and reports a change of current vendor, if there was one; returns whether
    /// there was.
    fn announce(&self, switch: Option<Switch>) -> bool {
        let Some(switch) = switch else {
            return false;
        };
        // Prices decide the next switch: read the deployment's totals soon.
        self.totals_stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
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

    /// Logs a failed update of a leased message and says how it went.
    fn settle(&self, id: MessageId, result: Result<(), StoreError>) -> Settled {
        match result {
            Ok(()) => Settled::Done,
            Err(StoreError::LeaseLost(_)) => {
                tracing::warn!(%id, "lease lost: another claimer holds the message now");
                Settled::LeaseLost
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "could not update the message; it is retried when its lease lapses");
                Settled::Failed
            }
        }
    }

    /// Runs the write of a leased message's outcome until it lands or the store stays
    /// unreachable for a few tries ([`OUTCOME_TRIES`]).
    pub(crate) async fn write_outcome<T, F, Fut>(
        &self,
        what: &str,
        write: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        retry_while_unavailable(
            OUTCOME_TRIES,
            OUTCOME_RETRY_FIRST,
            OUTCOME_RETRY_MAX,
            what,
            write,
        )
        .await
    }

    /// Takes the recipients a vendor took off leased message `id`, so that what follows
    /// (a retry, or giving up) is about the others only; returns whether that was
    /// written. When it was not, nothing else may be written under the lease: a retry
    /// would send to everybody again, unflagged.
    async fn narrow(
        &self,
        id: MessageId,
        token: sms_core::LeaseToken,
        sent: &[PhoneNumber],
    ) -> bool {
        let result = self
            .write_outcome("keeping the recipients not yet sent", || {
                self.queue.narrow(id, token, sent, self.clock.now())
            })
            .await;
        self.settle(id, result) == Settled::Done
    }

    /// The message with this id: from the store, or, for a message just delivered
    /// whose record is still being written, from memory. A look-up straight after a
    /// send finds it.
    pub async fn message(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        // Memory first: a record leaves it only once its write has landed, so a miss
        // there means the store has it (or it never existed).
        if let Some(m) = self.write_behind.pending(id) {
            return Ok(Some(m));
        }
        self.queue.get(id).await
    }

    /// Cancels a message not yet sent (scheduled, or queued for a retry), as
    /// [`DeferredQueue::cancel`] does, and tells its callback endpoint: a client that
    /// follows its messages by their events sees this one end too.
    pub async fn cancel(&self, id: MessageId) -> Result<StoredMessage, StoreError> {
        let now = self.clock.now();
        let cancelled = self.queue.cancel(id, now).await?;
        self.tell(
            &cancelled.request,
            id,
            CallbackStatus::Cancelled,
            now,
            |_| {},
        )
        .await;
        Ok(cancelled)
    }

    /// Loads this period's billed volumes from the ledger and makes the cheapest vendor
    /// current. Call once before serving.
    pub async fn init(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let period = self.health().usage.period(now);
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
        // Taken before the health lock: the two locks are never held together.
        let receipts = self.receipt_stats();
        let health = self.health();
        self.ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let v = &health.vendors[i];
                let stats = receipts[i];
                VendorSnapshot {
                    id: id.clone(),
                    is_current: i == health.current,
                    consecutive_failures: v.consecutive_failures,
                    cooling_down_until: v.cooling_until.filter(|until| *until > now),
                    disabled: v.disabled,
                    billed_this_period: health.usage.billed(i),
                    price: health.price(i),
                    next_tier: health.usage.next_tier(i),
                    spend: health.usage.spend(i),
                    broken_templates: health.broken_templates(i),
                    delivery_rate: stats.delivery_rate,
                    receipts_in_window: stats.receipts,
                    receipt_latency: stats.latency_p50.zip(stats.latency_p95),
                }
            })
            .collect()
    }

    /// The logical templates the gateway routes by (empty: pass-through).
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The vendors that can send `request` now: those with its template whose mapping
    /// is not broken, and `pinned` first while enabled.
    fn route(&self, health: &Health, request: &SmsRequest, pinned: Option<usize>) -> Route {
        let template = request.template().as_str();
        // A re-send keeps away from the vendor that did not deliver the first.
        let avoided = request
            .resend()
            .and_then(|r| self.ids.iter().position(|id| *id == r.avoid))
            .map_or(0, |i| 1u64 << i);
        Route {
            eligible: self.mapped(template) & !health.broken_mask(template) & !avoided,
            pinned,
        }
    }

    /// The vendors with a template for `template` (all of them, with no templates).
    fn mapped(&self, template: &str) -> u64 {
        if self.templates.is_pass_through() {
            u64::MAX
        } else {
            self.template_routes.get(template).copied().unwrap_or(0)
        }
    }

    /// Why `request` can never fit the global limit, when it has more recipients than
    /// the limit allows per window.
    fn over_capacity(&self, request: &SmsRequest) -> Option<String> {
        let max = self.max_permits?;
        let found = request.recipients().len();
        (found > max as usize).then(|| {
            format!(
                "expected at most {max} recipients, found {found}: the global limit allows \
                 {max} messages per window, so this request could never be sent; split it"
            )
        })
    }

    /// Why no vendor can take `request` now, for the caller.
    fn no_route_reason(&self, health: &Health, request: &SmsRequest) -> String {
        if health.all_disabled() {
            return "every vendor is disabled".into();
        }
        let template = request.template().as_str();
        let mapped = self.mapped(template);
        let states: Vec<String> = self
            .ids
            .iter()
            .enumerate()
            .filter(|(i, _)| mapped & (1 << i) != 0)
            .map(|(i, id)| {
                let state = if health.vendors[i].disabled {
                    "disabled"
                } else {
                    "its template was refused"
                };
                format!("{id} ({state})")
            })
            .collect();
        format!(
            "no enabled vendor can send template {template:?}: {}",
            states.join(", ")
        )
    }

    /// Reads every vendor's billed total this period from the shared ledger, so that
    /// prices follow what the other instances billed too. The drainer calls it every
    /// [`TOTALS_REFRESH`] and soon after a switch.
    pub async fn refresh_totals(&self) -> Result<(), StoreError> {
        let period = self.health().usage.period(self.clock.now());
        let totals = self.ledger.totals(&period).await?;
        let mut health = self.health();
        for (idx, id) in self.ids.iter().enumerate() {
            let total = totals.get(id).copied().unwrap_or(0);
            health.usage.refreshed(&period, idx, total);
        }
        Ok(())
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
    /// With a board, every instance does.
    pub async fn disable(&self, vendor: &VendorId) -> Result<(), FailoverError> {
        let idx = self.index_of(vendor)?;
        self.change_health(&[HealthOp::Disable { idx }]).await;
        Ok(())
    }

    /// Puts a vendor back in use (operator action). It becomes current when it is the
    /// only enabled one; otherwise it is probed like a rested vendor when it is cheaper.
    pub async fn enable(&self, vendor: &VendorId) -> Result<(), FailoverError> {
        let idx = self.index_of(vendor)?;
        self.change_health(&[HealthOp::Enable { idx }]).await;
        Ok(())
    }

    /// Asks the drainer (if started) for a pass soon. Never blocks and never drains on
    /// the caller's task; a pass already running absorbs the request into one more pass.
    pub fn trigger_drain(&self) {
        self.drain_wanted.notify_one();
    }
}
