//! Prometheus metrics, fed by the gateway's events and by reads at scrape time.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sms_core::{
    CallbackCounts, CallbackOutcome, DeferredQueue, DeliveryReport, MessageStatus, ReportApplied,
    VendorId,
};
use sms_failover::{AttemptOutcome, Gateway, GatewayEvent, GatewayObserver};

use crate::activity::{self, Activity};
use crate::spend::Spend;
use crate::switch_log::{Switch, SwitchLog};

/// A vendor's name as a label value: looking a metric up by it copies nothing (the
/// name is held inline), where a `String` label cost an allocation per event.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct VendorLabel(VendorId);

impl EncodeLabelValue for VendorLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    vendor: VendorLabel,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiptLabels {
    vendor: VendorLabel,
    status: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VendorLabels {
    vendor: VendorLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MappingLabels {
    vendor: VendorLabel,
    template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientSendLabels {
    client: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
}

/// 100 ms to about 3.6 hours: receipts take seconds to hours.
fn receipt_latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 18))
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    sends: Family<SendLabels, Counter>,
    latency: Family<VendorLabels, Histogram, fn() -> Histogram>,
    switches: Counter,
    queue_depth: Family<StatusLabels, Gauge>,
    spend_micros: Family<VendorLabels, Gauge>,
    billed: Family<VendorLabels, Gauge>,
    limiter: Family<DecisionLabels, Counter>,
    queued: Counter,
    dead: Counter,
    expired: Counter,
    resends: Counter,
    broken_mappings: Family<MappingLabels, Gauge>,
    billing_mismatches: Family<VendorLabels, Counter>,
    receipts: Family<ReceiptLabels, Counter>,
    delivery_rate: Family<VendorLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    receipt_latency: Family<VendorLabels, Histogram, fn() -> Histogram>,
    callback_attempts: Family<OutcomeLabels, Counter>,
    callbacks: Family<StateLabels, Gauge>,
    client_sends: Family<ClientSendLabels, Counter>,
    client_spend: Family<ClientLabels, Gauge>,
    client_spend_cap: Family<ClientLabels, Gauge>,
    spend_warnings: Family<ClientLabels, Gauge>,
    /// The spend against the caps, read at scrape time.
    spend: OnceLock<Arc<Spend>>,
    /// The last switches, for the status page.
    switch_log: SwitchLog,
    /// Sends and outcomes per minute of the last hour, for the status page.
    activity: Activity,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("sms");
        let sends = Family::<SendLabels, Counter>::default();
        registry.register(
            "sends",
            "Send attempts by vendor and outcome",
            sends.clone(),
        );
        let latency = Family::<VendorLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "send_latency_seconds",
            "Vendor call latency",
            latency.clone(),
        );
        let switches = Counter::default();
        registry.register(
            "vendor_switches",
            "Failovers from one vendor to another",
            switches.clone(),
        );
        let queue_depth = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "queue_messages",
            "Stored messages by status",
            queue_depth.clone(),
        );
        let spend_micros = Family::<VendorLabels, Gauge>::default();
        registry.register(
            "spend_micros",
            "Spend this billing period, in millionths of the currency",
            spend_micros.clone(),
        );
        let client_sends = Family::<ClientSendLabels, Counter>::default();
        registry.register(
            "client_sends",
            "Send attempts by client (`(api_tokens)` for the unnamed one) and outcome",
            client_sends.clone(),
        );
        let client_spend = Family::<ClientLabels, Gauge>::default();
        registry.register(
            "client_spend_micros",
            "Spend this billing month by client, and `(deployment)` for all, in millionths",
            client_spend.clone(),
        );
        let client_spend_cap = Family::<ClientLabels, Gauge>::default();
        registry.register(
            "client_spend_cap_micros",
            "The monthly spend cap by client, and `(deployment)`'s, in millionths",
            client_spend_cap.clone(),
        );
        let spend_warnings = Family::<ClientLabels, Gauge>::default();
        registry.register(
            "spend_warnings",
            "Spend caps past their warning share (spend.warn_at), by client, since start",
            spend_warnings.clone(),
        );
        let billed = Family::<VendorLabels, Gauge>::default();
        registry.register(
            "billed_messages",
            "Messages billed this period",
            billed.clone(),
        );
        let limiter = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "limiter_decisions",
            "Rate-limiter decisions that stopped a send",
            limiter.clone(),
        );
        let queued = Counter::default();
        registry.register(
            "queued",
            "Messages put in the deferred queue",
            queued.clone(),
        );
        let dead = Counter::default();
        registry.register("dead", "Messages that ran out of attempts", dead.clone());
        let expired = Counter::default();
        registry.register(
            "expired",
            "Messages that passed their deliver-by time",
            expired.clone(),
        );
        let resends = Counter::default();
        registry.register(
            "resends",
            "Undelivered messages stored again for another vendor (templates with resend_undelivered)",
            resends.clone(),
        );
        let broken_mappings = Family::<MappingLabels, Gauge>::default();
        registry.register(
            "template_mapping_broken",
            "1 while a vendor refuses a template it is mapped to (not approved, signature or parameters wrong)",
            broken_mappings.clone(),
        );
        let billing_mismatches = Family::<VendorLabels, Counter>::default();
        registry.register(
            "billing_mismatches",
            "Accepted sends whose vendor-reported billed count differs from the count from the text, and receipts whose billed segments differ from the send's",
            billing_mismatches.clone(),
        );
        let receipts = Family::<ReceiptLabels, Counter>::default();
        registry.register(
            "receipts",
            "Delivery receipts by vendor, status (delivered, undelivered) and outcome (applied; kept: no send recorded with its id, yet; duplicate)",
            receipts.clone(),
        );
        let delivery_rate =
            Family::<VendorLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "delivery_rate",
            "Share of a vendor's recent delivery receipts (its failover window) that said delivered; absent before its first receipt",
            delivery_rate.clone(),
        );
        let receipt_latency =
            Family::<VendorLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                receipt_latency_histogram,
            );
        registry.register(
            "receipt_latency_seconds",
            "Time from a vendor accepting a message to its delivery receipt arriving",
            receipt_latency.clone(),
        );
        let callback_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "callback_attempts",
            "Posts of status events to clients' callback URLs, by outcome (delivered; retry: failed, tried again later; failed: failed for the last time)",
            callback_attempts.clone(),
        );
        let callbacks = Family::<StateLabels, Gauge>::default();
        registry.register(
            "callbacks",
            "Status events in the callback outbox by state (pending, delivered, failed), as last counted",
            callbacks.clone(),
        );
        Arc::new(Self {
            registry,
            receipts,
            callback_attempts,
            callbacks,
            delivery_rate,
            receipt_latency,
            broken_mappings,
            billing_mismatches,
            sends,
            latency,
            switches,
            queue_depth,
            spend_micros,
            billed,
            limiter,
            queued,
            dead,
            expired,
            resends,
            client_sends,
            client_spend,
            client_spend_cap,
            spend_warnings,
            spend: OnceLock::new(),
            switch_log: SwitchLog::default(),
            activity: Activity::default(),
        })
    }

    /// Shows `spend` at every scrape.
    pub fn watch_spend(&self, spend: Arc<Spend>) {
        let _ = self.spend.set(spend);
    }

    /// Each client's and the deployment's spend and cap, as the last scrape read them.
    fn render_spend(&self) {
        let Some(spend) = self.spend.get() else {
            return;
        };
        for line in spend.lines(chrono::Utc::now()) {
            let labels = ClientLabels {
                client: line.scope.label(),
            };
            self.client_spend
                .get_or_create(&labels)
                .set(line.spent.micros());
            if let Some(cap) = line.cap {
                self.client_spend_cap
                    .get_or_create(&labels)
                    .set(cap.micros());
            }
        }
        for (client, count) in spend.warnings() {
            self.spend_warnings
                .get_or_create(&ClientLabels { client })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Counts delivery receipts, `applied[i]` being what applying `reports[i]` did.
    pub fn receipts(&self, reports: &[DeliveryReport], applied: &[ReportApplied]) {
        for (report, outcome) in reports.iter().zip(applied) {
            self.receipt(&report.vendor, report.delivered, outcome);
        }
    }

    /// Counts a delivery receipt from `vendor`, by what it said and what applying it did,
    /// and times it from its send when it settled one.
    fn receipt(&self, vendor: &VendorId, delivered: bool, outcome: &ReportApplied) {
        if let ReportApplied::Applied { sent_at, .. } = outcome {
            let latency = (chrono::Utc::now() - *sent_at).to_std().unwrap_or_default();
            self.receipt_latency
                .get_or_create(&VendorLabels {
                    vendor: VendorLabel(vendor.clone()),
                })
                .observe(latency.as_secs_f64());
        }
        let outcome = match outcome {
            ReportApplied::Applied { .. } => "applied",
            ReportApplied::Kept => "kept",
            ReportApplied::Duplicate => "duplicate",
        };
        let status = if delivered {
            "delivered"
        } else {
            "undelivered"
        };
        self.receipts
            .get_or_create(&ReceiptLabels {
                vendor: VendorLabel(vendor.clone()),
                status,
                outcome,
            })
            .inc();
    }

    /// Counts one post of a status event, by how it ended.
    pub fn callback_attempt(&self, outcome: &CallbackOutcome) {
        let outcome = match outcome {
            CallbackOutcome::Delivered => "delivered",
            CallbackOutcome::Retry { .. } => "retry",
            CallbackOutcome::Failed { .. } => "failed",
        };
        self.callback_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Sets the outbox's counts by state.
    pub fn callbacks(&self, counts: CallbackCounts) {
        for (state, count) in [
            ("pending", counts.pending),
            ("delivered", counts.delivered),
            ("failed", counts.failed),
        ] {
            self.callbacks
                .get_or_create(&StateLabels { state })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Sends and outcomes per minute of the last hour.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// The last switches of the current vendor.
    pub fn switch_log(&self) -> &SwitchLog {
        &self.switch_log
    }

    /// The text exposition, after refreshing the values read at scrape time.
    pub async fn render(&self, gateway: &Gateway, queue: &dyn DeferredQueue) -> String {
        if let Ok(stats) = queue.stats().await {
            for status in MessageStatus::ALL {
                self.queue_depth
                    .get_or_create(&StatusLabels {
                        status: status.as_str().into(),
                    })
                    .set(stats.get(status) as i64);
            }
        }
        // Enabling a vendor again clears its broken mappings: read them afresh.
        self.broken_mappings.clear();
        for v in gateway.vendors() {
            for template in &v.broken_templates {
                self.broken_mappings
                    .get_or_create(&MappingLabels {
                        vendor: VendorLabel(v.id.clone()),
                        template: template.clone(),
                    })
                    .set(1);
            }
            let labels = VendorLabels {
                vendor: VendorLabel(v.id.clone()),
            };
            self.spend_micros
                .get_or_create(&labels)
                .set(v.spend.micros());
            self.billed
                .get_or_create(&labels)
                .set(v.billed_this_period as i64);
            if let Some(rate) = v.delivery_rate {
                self.delivery_rate.get_or_create(&labels).set(rate);
            }
        }
        self.render_spend();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl GatewayObserver for Metrics {
    fn on_event(&self, event: &GatewayEvent) {
        let this_minute = |kind| self.activity.count(kind, chrono::Utc::now());
        match event {
            GatewayEvent::Delivered { .. } => this_minute(activity::Kind::Sent),
            GatewayEvent::Attempt {
                vendor,
                outcome,
                latency,
                client,
                ..
            } => {
                self.client_sends
                    .get_or_create(&ClientSendLabels {
                        client: crate::config::clients::label(client.as_ref()).to_owned(),
                        outcome: outcome.as_str(),
                    })
                    .inc();
                self.sends
                    .get_or_create(&SendLabels {
                        vendor: VendorLabel(vendor.clone()),
                        outcome: outcome.as_str(),
                    })
                    .inc();
                self.latency
                    .get_or_create(&VendorLabels {
                        vendor: VendorLabel(vendor.clone()),
                    })
                    .observe(latency.as_secs_f64());
                if !matches!(outcome, AttemptOutcome::Ok | AttemptOutcome::Slow) {
                    this_minute(activity::Kind::Failed);
                }
            }
            GatewayEvent::Switched {
                from,
                to,
                reason,
                at,
            } => {
                self.switches.inc();
                self.switch_log.record(Switch {
                    at: *at,
                    from: from.clone(),
                    to: to.clone(),
                    reason: reason.clone(),
                });
            }
            GatewayEvent::Queued { .. } => {
                self.queued.inc();
                this_minute(activity::Kind::Queued);
            }
            GatewayEvent::Dead { .. } => {
                self.dead.inc();
                this_minute(activity::Kind::Dead);
            }
            GatewayEvent::Expired { .. } => {
                self.expired.inc();
                this_minute(activity::Kind::Dead);
            }
            GatewayEvent::Resent { .. } => {
                self.resends.inc();
            }
            GatewayEvent::RateLimited => {
                self.limiter
                    .get_or_create(&DecisionLabels {
                        decision: "global_limited".into(),
                    })
                    .inc();
            }
            GatewayEvent::RecipientLimited => {
                self.limiter
                    .get_or_create(&DecisionLabels {
                        decision: "recipient_limited".into(),
                    })
                    .inc();
            }
            GatewayEvent::BillingMismatch { vendor, .. } => {
                self.billing_mismatches
                    .get_or_create(&VendorLabels {
                        vendor: VendorLabel(vendor.clone()),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}
