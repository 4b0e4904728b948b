//! In-process vendors that answer like Aliyun, Tencent Cloud or Cloopen, with
//! reproducible latency, failures, hangs, outages and scripted fault windows, for tests,
//! benchmarks and the gateway's simulation mode.
//!
//! A [`SimulatedVendor`] draws its behaviour from a seeded random generator, always the
//! same number of values per send, so a given seed and a given order of sends give the
//! same outcomes on every run. Time is tokio's: under `tokio::time::pause()` the latency,
//! the hangs, the scripted windows and the per-number limits follow the test's virtual
//! clock.
//!
//! A send the faults let through meets what the real vendor of its protocol checks
//! ([`crate::rules`]): a template, signature or arguments the vendor has not approved
//! fail with [`VendorError::Misconfigured`], a number over the vendor's per-number
//! limits with [`VendorError::RecipientRefused`], both with the vendor's own codes (a
//! Tencent-like vendor, which answers per number, sends to the others and answers
//! [`VendorError::PartlySent`] with the refusal inside, as its HTTP adapter does). The
//! approved templates come from [`SimulatedVendor::with_templates`]; without them the
//! vendor approves anything, as suits a gateway without a catalogue. A delivered send
//! bills the segments of its signed text, and a Tencent-like vendor reports its own count
//! in [`Receipt::reported_billed`] as Tencent's `Fee` does.

mod checks;
mod receipts;
mod settings;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sms_core::sync::{lock, read, write};
use sms_core::{
    Clock, DeliveryReport, OutboundSms, PhoneNumber, Receipt, SystemClock, Templates, Vendor,
    VendorError, VendorId,
};
use tokio::time::Instant;

pub use settings::{FaultKind, ReceiptPlan, ScheduledFault, SimulationSettings};

/// Where a simulated vendor hands the delivery receipts of its sends, as a real vendor
/// pushes them: each a while after the send, per [`SimulationSettings::receipt_delay_ms`].
pub type ReceiptSink = Arc<dyn Fn(Vec<DeliveryReport>) + Send + Sync>;

use crate::ConfigError;
use crate::delivery_log::{DeliveryLog, DeliveryRecord};
use crate::rules::Protocol;
use checks::{VendorRules, partial_send, resolve, rules_for};

/// How long a hanging send sleeps: far past any deadline a caller would set.
const HANG: Duration = Duration::from_secs(3600);

/// How long a throttled send is told to wait before trying again.
const THROTTLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A vendor that lives in the process: it "delivers" by writing to a [`DeliveryLog`].
pub struct SimulatedVendor {
    id: VendorId,
    /// Swapped whole by [`SimulatedVendor::set_settings`]; a send clones the `Arc` under
    /// a short read lock and never holds the lock across an `await`.
    settings: RwLock<Arc<SimulationSettings>>,
    /// The templates the vendor approved; empty approves anything.
    templates: RwLock<Templates>,
    /// Built from the settings and the templates, replaced whole with them.
    rules: RwLock<Arc<VendorRules>>,
    /// The seeded generator; locked only to draw a send's values.
    rng: Mutex<StdRng>,
    /// The moment the scripted windows count from.
    started: Mutex<Instant>,
    log: DeliveryLog,
    clock: Arc<dyn Clock>,
    counters: Counters,
    /// Where receipts go; none: the vendor sends none.
    receipts: RwLock<Option<ReceiptSink>>,
}

#[derive(Default)]
struct Counters {
    attempted: AtomicU64,
    succeeded: AtomicU64,
    timed_out: AtomicU64,
    throttled: AtomicU64,
    rejected: AtomicU64,
    unauthorized: AtomicU64,
    transient: AtomicU64,
    recipient_refused: AtomicU64,
    misconfigured: AtomicU64,
    billed_messages: AtomicU64,
}

/// A snapshot of a simulated vendor's counters, for reports.
///
/// `attempted - succeeded - failed` sends are still running or were abandoned by their
/// caller (for example cut short by a timeout shorter than the latency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SimulationStats {
    /// Sends started.
    pub attempted: u64,
    /// Sends delivered and answered.
    pub succeeded: u64,
    /// Sends that failed or hang: the sum of the seven kinds below.
    pub failed: u64,
    /// Sends that hang (counted when the hang starts).
    pub timed_out: u64,
    /// Sends throttled.
    pub throttled: u64,
    /// Sends rejected for good.
    pub rejected: u64,
    /// Sends refused for our credentials. The simulation has no credentials to refuse,
    /// so this stays 0; it is kept so every [`VendorError`] kind has its counter.
    pub unauthorized: u64,
    /// Sends failed transiently (errors and outages).
    pub transient: u64,
    /// Sends refused for the vendor's per-number limits: nothing delivered, or for
    /// Tencent, which answers per number, some numbers refused and the rest delivered
    /// ([`VendorError::PartlySent`] with this refusal inside).
    pub recipient_refused: u64,
    /// Sends refused because the template, signature or arguments are not approved.
    pub misconfigured: u64,
    /// Segments billed by the successful sends, and by the partly sent ones for the
    /// numbers they reached, counted from the signed text.
    pub billed_messages: u64,
}

/// The random values one send draws, always all of them, so the generator advances by
/// the same amount whatever the outcome and later sends stay reproducible.
#[derive(Debug, Clone, Copy)]
struct Draws {
    /// The send's number, from 1, in order of drawing.
    sequence: u64,
    /// Decides whether a scripted window's fault hits.
    window: f64,
    /// Decides the outcome among the rates.
    outcome: f64,
    /// Decides the jitter.
    jitter: f64,
    /// Makes the vendor message id.
    tag: u32,
}

/// What a send will do.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Deliver,
    Fail(VendorError),
    Hang { delivers: bool },
}

#[derive(Debug, Clone, PartialEq)]
struct Decision {
    outcome: Outcome,
    latency: Duration,
}

fn outage() -> VendorError {
    VendorError::Transient {
        message: "simulated outage: connection refused".into(),
    }
}

fn throttled() -> VendorError {
    VendorError::Throttled {
        message: "simulated throttling: too many requests".into(),
        retry_after: Some(THROTTLE_RETRY_AFTER),
    }
}

fn rejected() -> VendorError {
    VendorError::Rejected {
        code: "SIMULATED_REJECT".into(),
        message: "simulated rejection: the recipient cannot receive this template".into(),
    }
}

/// Decides a send's fate from the settings, the time since the vendor started and the
/// send's draws. Pure, so the rules are tested without running anything.
fn decide(settings: &SimulationSettings, elapsed: Duration, draws: &Draws) -> Decision {
    // An outage refuses the connection, so it fails without the usual latency.
    let refused = || Decision {
        outcome: Outcome::Fail(outage()),
        latency: Duration::ZERO,
    };
    // The outage switch overrides everything else, scripted windows included.
    if settings.outage {
        return refused();
    }
    // `jitter` is in [0, 1), so this is uniform over 0..=jitter_ms.
    let jitter_ms = (draws.jitter * (settings.jitter_ms as f64 + 1.0)) as u64;
    let mut slow_ms = None;
    let mut forced = None;
    for window in settings
        .schedule
        .iter()
        .filter(|w| w.is_active_at(elapsed) && draws.window < w.rate)
    {
        // Overlapping windows: the first one listed of each sort decides.
        match window.fault {
            FaultKind::Slow => {
                slow_ms.get_or_insert(window.latency_ms.unwrap_or(settings.latency_ms));
            }
            // These change what the receipts say, not the answer.
            FaultKind::Undelivered | FaultKind::Silent => {}
            kind => {
                forced.get_or_insert(kind);
            }
        }
    }
    let base_ms = slow_ms.unwrap_or(settings.latency_ms);
    let latency = Duration::from_millis(base_ms.saturating_add(jitter_ms));
    let hang = Outcome::Hang {
        delivers: settings.timeout_delivers,
    };
    let outcome = match forced {
        Some(FaultKind::Outage) => return refused(),
        Some(FaultKind::Throttle) => Outcome::Fail(throttled()),
        Some(FaultKind::Timeout) => hang,
        Some(FaultKind::Reject) => Outcome::Fail(rejected()),
        Some(FaultKind::Slow | FaultKind::Undelivered | FaultKind::Silent) | None => {
            // The rates are exclusive bands of [0, 1), in this order.
            let bands = [
                settings.timeout_rate,
                settings.error_rate,
                settings.throttle_rate,
                settings.reject_rate,
            ];
            let mut upper = 0.0;
            let band = bands.iter().position(|rate| {
                upper += rate;
                draws.outcome < upper
            });
            match band {
                Some(0) => hang,
                Some(1) => Outcome::Fail(VendorError::Transient {
                    message: "simulated error: HTTP 503 service unavailable".into(),
                }),
                Some(2) => Outcome::Fail(throttled()),
                Some(_) => Outcome::Fail(rejected()),
                None => Outcome::Deliver,
            }
        }
    };
    Decision { outcome, latency }
}

impl SimulatedVendor {
    /// A vendor named `id` behaving as `settings`, drawing from a generator seeded with
    /// `seed`, delivering into `log`, approving any template until
    /// [`with_templates`](Self::with_templates). Refuses invalid settings, and a vendor
    /// whose protocol is neither set nor its name (see [`SimulationSettings::protocol`]).
    ///
    /// The scripted windows count from now (tokio's clock: create the vendor after
    /// `tokio::time::pause()` in tests).
    pub fn new(
        id: VendorId,
        settings: SimulationSettings,
        seed: u64,
        log: DeliveryLog,
    ) -> Result<Self, ConfigError> {
        let settings = resolve(&id, settings, None)?;
        let templates = Templates::default();
        let rules = rules_for(&id, &settings, &templates, None);
        Ok(Self {
            id,
            settings: RwLock::new(Arc::new(settings)),
            templates: RwLock::new(templates),
            rules: RwLock::new(Arc::new(rules)),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            started: Mutex::new(Instant::now()),
            log,
            clock: Arc::new(SystemClock),
            counters: Counters::default(),
            receipts: RwLock::new(None),
        })
    }

    fn preset(name: &str, settings: SimulationSettings, seed: u64, log: DeliveryLog) -> Self {
        let id = VendorId::new(name).expect("preset vendor names are valid");
        Self::new(id, settings, seed, log).expect("preset settings are valid")
    }

    /// A healthy `aliyun` with [`SimulationSettings::aliyun`] timing.
    pub fn aliyun(seed: u64, log: DeliveryLog) -> Self {
        Self::preset("aliyun", SimulationSettings::aliyun(), seed, log)
    }

    /// A healthy `tencent` with [`SimulationSettings::tencent`] timing.
    pub fn tencent(seed: u64, log: DeliveryLog) -> Self {
        Self::preset("tencent", SimulationSettings::tencent(), seed, log)
    }

    /// A healthy `cloopen` with [`SimulationSettings::cloopen`] timing.
    pub fn cloopen(seed: u64, log: DeliveryLog) -> Self {
        Self::preset("cloopen", SimulationSettings::cloopen(), seed, log)
    }

    /// The same vendor approving the templates `templates` maps for its name, each with
    /// its own signature or the vendor's `sign_name`; an empty catalogue approves any.
    pub fn with_templates(self, templates: Templates) -> Self {
        let settings = self.settings();
        let rules = rules_for(&self.id, &settings, &templates, Some(&self.rules()));
        *write(&self.templates) = templates;
        *write(&self.rules) = Arc::new(rules);
        self
    }

    /// The protocol the vendor speaks.
    pub fn protocol(&self) -> Protocol {
        self.rules().protocol
    }

    /// The same vendor stamping deliveries with `clock`'s time instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The current settings, with the protocol the vendor speaks filled in.
    pub fn settings(&self) -> Arc<SimulationSettings> {
        read(&self.settings).clone()
    }

    fn rules(&self) -> Arc<VendorRules> {
        read(&self.rules).clone()
    }

    /// Replaces the settings, for the sends that start from now on (sends already
    /// running keep what they drew). Refuses invalid settings and keeps the old ones.
    /// Without a `protocol` the vendor keeps the one it speaks; with the same protocol
    /// it keeps what each number was sent, so the per-number windows carry on.
    pub fn set_settings(&self, settings: SimulationSettings) -> Result<(), ConfigError> {
        let current = self.rules();
        let settings = resolve(&self.id, settings, Some(current.protocol))?;
        let rules = rules_for(&self.id, &settings, &read(&self.templates), Some(&current));
        *write(&self.settings) = Arc::new(settings);
        *write(&self.rules) = Arc::new(rules);
        Ok(())
    }

    /// Turns the outage switch on or off, keeping the other settings.
    pub fn set_outage(&self, outage: bool) {
        Arc::make_mut(&mut write(&self.settings)).outage = outage;
    }

    /// Makes the scripted windows count from now again.
    pub fn restart_schedule(&self) {
        *lock(&self.started) = Instant::now();
    }

    /// The log this vendor delivers into.
    pub fn delivery_log(&self) -> &DeliveryLog {
        &self.log
    }

    /// The counters so far.
    pub fn stats(&self) -> SimulationStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (timed_out, throttled, rejected, unauthorized, transient) = (
            get(&c.timed_out),
            get(&c.throttled),
            get(&c.rejected),
            get(&c.unauthorized),
            get(&c.transient),
        );
        let (recipient_refused, misconfigured) = (get(&c.recipient_refused), get(&c.misconfigured));
        SimulationStats {
            attempted: get(&c.attempted),
            succeeded: get(&c.succeeded),
            failed: timed_out
                + throttled
                + rejected
                + unauthorized
                + transient
                + recipient_refused
                + misconfigured,
            timed_out,
            throttled,
            rejected,
            unauthorized,
            transient,
            recipient_refused,
            misconfigured,
            billed_messages: get(&c.billed_messages),
        }
    }

    fn draw(&self) -> Draws {
        let mut rng = lock(&self.rng);
        // The sequence number is taken under the generator's lock so that send number n
        // always gets the n-th draws.
        let sequence = self.counters.attempted.fetch_add(1, Ordering::Relaxed) + 1;
        Draws {
            sequence,
            window: rng.random(),
            outcome: rng.random(),
            jitter: rng.random(),
            tag: rng.random(),
        }
    }

    /// Counts a failed send under its kind. A partly sent one counts under the kind of
    /// why the others were not sent (as [`VendorError::kind`] names it), and what it
    /// billed for the numbers it reached counts as billed.
    fn count_failure(&self, error: &VendorError) {
        let counter = match error {
            VendorError::TimedOut => &self.counters.timed_out,
            VendorError::Throttled { .. } => &self.counters.throttled,
            VendorError::Rejected { .. } => &self.counters.rejected,
            VendorError::Unauthorized { .. } => &self.counters.unauthorized,
            VendorError::Transient { .. } => &self.counters.transient,
            VendorError::RecipientRefused { .. } => &self.counters.recipient_refused,
            VendorError::Misconfigured { .. } => &self.counters.misconfigured,
            VendorError::PartlySent { receipt, error, .. } => {
                self.counters
                    .billed_messages
                    .fetch_add(receipt.billed_messages, Ordering::Relaxed);
                return self.count_failure(error);
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes one record per recipient in `recipients`; the send succeeds only if this
    /// does.
    fn deliver(
        &self,
        sms: &OutboundSms,
        vendor_message_id: &str,
        recipients: &[PhoneNumber],
    ) -> Result<(), VendorError> {
        let at = self.clock.now();
        let records = recipients
            .iter()
            .map(|recipient| DeliveryRecord {
                message_id: sms.id,
                vendor: self.id.clone(),
                recipient: recipient.clone(),
                vendor_message_id: vendor_message_id.to_owned(),
                at,
            })
            .collect();
        self.log
            .record_all(records)
            .map_err(|e| VendorError::Transient {
                message: format!("simulated vendor could not write its delivery log: {e}"),
            })
    }
}

impl std::fmt::Debug for SimulatedVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedVendor")
            .field("id", &self.id)
            .field("settings", &self.settings())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Waits `latency`; a vendor without latency answers at once. (A zero-length tokio
/// sleep still waits for the timer wheel's next turn, which a busy runtime takes late.)
async fn pause(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

#[async_trait]
impl Vendor for SimulatedVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    /// Waits the drawn latency, then fails as drawn, or checks the message as the real
    /// vendor does and delivers it (recording each accepted recipient in the log).
    /// Billed messages are the segments of the signed text, as
    /// [`OutboundSms::billed_segments`] counts them; a Tencent-like vendor also reports
    /// its own count, from the text it approved.
    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        let settings = self.settings();
        let rules = self.rules();
        let elapsed = lock(&self.started).elapsed();
        let draws = self.draw();
        let decision = decide(&settings, elapsed, &draws);
        let per_number_limits = settings.per_number_limits;
        let receipts = settings.receipts_at(elapsed);
        drop(settings);
        let vendor_message_id = format!("sim-{}-{:06}-{:08x}", self.id, draws.sequence, draws.tag);
        tracing::debug!(
            vendor = %self.id,
            message_id = %sms.id,
            outcome = ?decision.outcome,
            latency_ms = decision.latency.as_millis() as u64,
            "simulated send"
        );
        match decision.outcome {
            Outcome::Hang { delivers } => {
                self.count_failure(&VendorError::TimedOut);
                if delivers {
                    // The vendor took the message, checked it as usual, and only the
                    // answer is lost. A refusal or a log failure here changes nothing for
                    // the caller, who never gets an answer.
                    if let Ok(screened) = rules.screen(sms, per_number_limits) {
                        let _ = self.deliver(sms, &vendor_message_id, &screened.accepted);
                    }
                }
                tokio::time::sleep(HANG).await;
                Err(VendorError::TimedOut)
            }
            Outcome::Fail(error) => {
                pause(decision.latency).await;
                self.count_failure(&error);
                Err(error)
            }
            Outcome::Deliver => {
                pause(decision.latency).await;
                let screened = match rules.screen(sms, per_number_limits) {
                    Ok(screened) => screened,
                    Err(error) => {
                        self.count_failure(&error);
                        return Err(error);
                    }
                };
                if let Err(error) = self.deliver(sms, &vendor_message_id, &screened.accepted) {
                    self.count_failure(&error);
                    return Err(error);
                }
                self.push_receipts(receipts, &vendor_message_id, &screened.accepted);
                if let Some(refusal) = screened.refused.clone() {
                    // Some numbers got it and others were refused: answered as the HTTP
                    // adapter answers Tencent's mixed statuses.
                    let error = partial_send(screened, vendor_message_id, refusal);
                    self.count_failure(&error);
                    return Err(error);
                }
                let billed_messages = screened.billed_messages;
                self.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .billed_messages
                    .fetch_add(billed_messages, Ordering::Relaxed);
                Ok(Receipt {
                    vendor_message_id,
                    billed_messages,
                    reported_billed: screened.reported_billed,
                    recipient_ids: Vec::new(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(window: f64, outcome: f64, jitter: f64) -> Draws {
        Draws {
            sequence: 1,
            window,
            outcome,
            jitter,
            tag: 0,
        }
    }

    fn rates(timeout: f64, error: f64, throttle: f64, reject: f64) -> SimulationSettings {
        SimulationSettings {
            timeout_rate: timeout,
            error_rate: error,
            throttle_rate: throttle,
            reject_rate: reject,
            ..SimulationSettings::default()
        }
    }

    #[test]
    fn rates_are_exclusive_bands_in_a_fixed_order() {
        // Binary fractions, so the band edges are exact.
        let s = rates(0.125, 0.25, 0.25, 0.125);
        let at = |outcome| decide(&s, Duration::ZERO, &draws(0.0, outcome, 0.0)).outcome;
        assert_eq!(at(0.0), Outcome::Hang { delivers: false });
        assert_eq!(at(0.124), Outcome::Hang { delivers: false });
        assert!(matches!(
            at(0.125),
            Outcome::Fail(VendorError::Transient { .. })
        ));
        assert!(matches!(
            at(0.374),
            Outcome::Fail(VendorError::Transient { .. })
        ));
        assert!(matches!(
            at(0.375),
            Outcome::Fail(VendorError::Throttled { .. })
        ));
        assert!(matches!(
            at(0.624),
            Outcome::Fail(VendorError::Throttled { .. })
        ));
        assert!(matches!(
            at(0.625),
            Outcome::Fail(VendorError::Rejected { .. })
        ));
        assert!(matches!(
            at(0.749),
            Outcome::Fail(VendorError::Rejected { .. })
        ));
        assert_eq!(at(0.75), Outcome::Deliver);
        assert_eq!(at(0.999), Outcome::Deliver);
    }

    #[test]
    fn latency_is_base_plus_jitter_up_to_its_bound() {
        let s = SimulationSettings::healthy(100, 50);
        let latency = |jitter| decide(&s, Duration::ZERO, &draws(0.0, 0.5, jitter)).latency;
        assert_eq!(latency(0.0), Duration::from_millis(100));
        assert_eq!(latency(0.9999), Duration::from_millis(150));
    }

    #[test]
    fn an_outage_fails_at_once_whatever_the_draw() {
        let mut s = SimulationSettings::healthy(100, 0);
        s.outage = true;
        // The switch wins over scripted windows too.
        s.schedule = vec![ScheduledFault::new(0, 10, FaultKind::Reject)];
        for outcome in [0.0, 0.5, 0.999] {
            let d = decide(&s, Duration::ZERO, &draws(0.0, outcome, 0.0));
            assert_eq!(d.outcome, Outcome::Fail(outage()));
            assert_eq!(d.latency, Duration::ZERO);
        }
    }

    #[test]
    fn windows_apply_only_inside_and_to_their_share() {
        let mut s = SimulationSettings::healthy(10, 0);
        let mut throttle = ScheduledFault::new(20, 60, FaultKind::Throttle);
        throttle.rate = 0.5;
        s.schedule = vec![throttle];
        let at =
            |secs, window| decide(&s, Duration::from_secs(secs), &draws(window, 0.9, 0.0)).outcome;
        assert_eq!(at(19, 0.0), Outcome::Deliver);
        assert!(matches!(
            at(20, 0.0),
            Outcome::Fail(VendorError::Throttled { .. })
        ));
        assert!(matches!(
            at(59, 0.49),
            Outcome::Fail(VendorError::Throttled { .. })
        ));
        assert_eq!(at(59, 0.5), Outcome::Deliver);
        assert_eq!(at(60, 0.0), Outcome::Deliver);
    }

    #[test]
    fn a_slow_window_replaces_the_base_latency_and_keeps_other_faults() {
        let mut s = SimulationSettings::healthy(10, 0);
        let mut slow = ScheduledFault::new(0, 10, FaultKind::Slow);
        slow.latency_ms = Some(1500);
        s.schedule = vec![slow, ScheduledFault::new(5, 10, FaultKind::Reject)];
        let d = decide(&s, Duration::from_secs(1), &draws(0.0, 0.9, 0.0));
        assert_eq!(
            d,
            Decision {
                outcome: Outcome::Deliver,
                latency: Duration::from_millis(1500)
            }
        );
        let d = decide(&s, Duration::from_secs(6), &draws(0.0, 0.9, 0.0));
        assert_eq!(d.outcome, Outcome::Fail(rejected()));
        assert_eq!(d.latency, Duration::from_millis(1500));
    }

    #[test]
    fn the_first_listed_window_decides_when_they_overlap() {
        let s = SimulationSettings {
            schedule: vec![
                ScheduledFault::new(0, 10, FaultKind::Timeout),
                ScheduledFault::new(0, 10, FaultKind::Outage),
            ],
            ..SimulationSettings::default()
        };
        let d = decide(&s, Duration::from_secs(1), &draws(0.0, 0.9, 0.0));
        assert_eq!(d.outcome, Outcome::Hang { delivers: false });
    }
}
