//! Test doubles: a scriptable vendor, simple price lists, limiters, an event recorder and
//! a harness wiring them to the in-memory queue, ledger and clock of `sms-core`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sms_core::testing::{
    ManualClock, MemoryBoard, MemoryDeliveryLog, MemoryLedger, MemoryOutbox, MemoryQueue,
};
use sms_core::{
    FeeSchedule, LimitError, Money, OutboundSms, RateDecision, RateLimiter, Receipt, SmsRequest,
    Templates, Vendor, VendorError, VendorId,
};
use sms_failover::{FailoverConfig, Gateway, GatewayEvent, GatewayObserver, VendorEntry};

/// What the fake vendor does with one send.
#[derive(Debug, Clone)]
pub enum Step {
    /// Accept at once, billing this many messages.
    Ok(u64),
    /// Accept at once, counting the first number of messages from the text while the
    /// vendor reports the second.
    Reported(u64, u64),
    /// Accept after a delay.
    OkAfter(Duration),
    /// Accept at once with this receipt.
    Receipt(Receipt),
    /// Answer with this error.
    Fail(VendorError),
    /// Never answer (the gateway's timeout fires).
    Hang,
}

pub fn transient() -> Step {
    Step::Fail(VendorError::Transient {
        message: "503".into(),
    })
}

/// The vendor refuses our credentials (revoked key, bad signature).
pub fn unauthorized() -> Step {
    Step::Fail(VendorError::Unauthorized {
        code: "InvalidAccessKeyId.NotFound".into(),
        message: "Specified access key is not found.".into(),
    })
}

/// A vendor that follows a script, then a default step, and records what it was sent.
pub struct FakeVendor {
    id: VendorId,
    script: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    received: Mutex<Vec<OutboundSms>>,
    calls: AtomicUsize,
    /// When set, every send waits here before answering (to hold many sends in flight).
    gate: Mutex<Option<Arc<tokio::sync::Barrier>>>,
    /// What it says a split send may take (like an HTTP adapter with a recipient cap).
    split_send_time: Mutex<Option<Duration>>,
}

impl FakeVendor {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            id: VendorId::new(name).unwrap(),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Step::Ok(1)),
            received: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            gate: Mutex::new(None),
            split_send_time: Mutex::new(None),
        })
    }

    /// Says that a send to more than one recipient takes several calls, `time` in all.
    pub fn splits(&self, time: Duration) {
        *self.split_send_time.lock().unwrap() = Some(time);
    }

    pub fn then(&self, step: Step) -> &Self {
        self.script.lock().unwrap().push_back(step);
        self
    }

    pub fn always(&self, step: Step) {
        *self.default.lock().unwrap() = step;
    }

    pub fn gate(&self, barrier: Arc<tokio::sync::Barrier>) {
        *self.gate.lock().unwrap() = Some(barrier);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<OutboundSms> {
        self.received.lock().unwrap().clone()
    }
}

#[async_trait]
impl Vendor for FakeVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    fn split_send_time(&self, recipients: usize) -> Option<Duration> {
        let time = *self.split_send_time.lock().unwrap();
        time.filter(|_| recipients > 1)
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.received.lock().unwrap().push(sms.clone());
        let step = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.wait().await;
        }
        let receipt = |billed| Receipt {
            vendor_message_id: format!("{}-{}", self.id, sms.id),
            billed_messages: billed,
            reported_billed: None,
            recipient_ids: Vec::new(),
        };
        match step {
            Step::Ok(billed) => Ok(receipt(billed)),
            Step::Receipt(answer) => Ok(answer),
            Step::Reported(counted, reported) => Ok(Receipt {
                reported_billed: Some(reported),
                ..receipt(counted)
            }),
            Step::OkAfter(delay) => {
                tokio::time::sleep(delay).await;
                Ok(receipt(1))
            }
            Step::Fail(e) => Err(e),
            Step::Hang => {
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                Ok(receipt(1))
            }
        }
    }
}

/// A price list: `(up to volume, price in micros)` tiers, last tier open-ended.
pub struct Tiers(pub Vec<(u64, i64)>);

impl FeeSchedule for Tiers {
    fn price_at(&self, billed_volume: u64) -> Money {
        let micros = self
            .0
            .iter()
            .find(|(upto, _)| billed_volume < *upto)
            .or(self.0.last())
            .map_or(0, |(_, p)| *p);
        Money::from_micros(micros)
    }
}

pub fn flat(micros: i64) -> Arc<dyn FeeSchedule> {
    Arc::new(Tiers(vec![(u64::MAX, micros)]))
}

/// A limiter that lets everything through, counting permits.
#[derive(Default)]
pub struct AllowAll(pub AtomicUsize);

#[async_trait]
impl RateLimiter for AllowAll {
    async fn acquire(&self, permits: u32) -> Result<RateDecision, LimitError> {
        self.0.fetch_add(permits as usize, Ordering::SeqCst);
        Ok(RateDecision::Allowed)
    }
}

/// Records every event.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<GatewayEvent>>);

impl GatewayObserver for Recorder {
    fn on_event(&self, event: &GatewayEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<GatewayEvent> {
        self.0.lock().unwrap().clone()
    }

    pub fn switches(&self) -> Vec<(String, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                GatewayEvent::Switched { from, to, .. } => Some((from.to_string(), to.to_string())),
                _ => None,
            })
            .collect()
    }
}

pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 10, 4, 0, 0).unwrap()
}

pub fn config() -> FailoverConfig {
    FailoverConfig {
        instance_id: "test".into(),
        // Probing is switched off unless a test is about it.
        probe_every: u32::MAX,
        ..FailoverConfig::default()
    }
}

pub fn request() -> SmsRequest {
    SmsRequest::new("login", ["1234"], ["+8613800138000"]).unwrap()
}

pub fn request_to(n: usize) -> SmsRequest {
    let recipients: Vec<String> = (0..n).map(|i| format!("+86138001{i:05}")).collect();
    SmsRequest::new("login", ["1234"], recipients).unwrap()
}

/// A gateway over fake vendors with the in-memory queue, ledger and clock.
pub struct Harness {
    pub gateway: Arc<Gateway>,
    pub queue: Arc<MemoryQueue>,
    pub ledger: Arc<MemoryLedger>,
    pub deliveries: Arc<MemoryDeliveryLog>,
    pub outbox: Arc<MemoryOutbox>,
    pub clock: Arc<ManualClock>,
    pub vendors: Vec<Arc<FakeVendor>>,
    pub events: Arc<Recorder>,
    pub limiter: Arc<AllowAll>,
}

impl Harness {
    /// Vendors named with prices in micros, in configured order.
    pub fn new(vendors: &[(&str, i64)], config: FailoverConfig) -> Self {
        let fakes: Vec<Arc<FakeVendor>> = vendors.iter().map(|(n, _)| FakeVendor::new(n)).collect();
        let fees = vendors.iter().map(|(_, p)| flat(*p)).collect();
        Self::with_fees(fakes, fees, config, Arc::new(MemoryQueue::new()))
    }

    /// Vendors named with prices in micros, routing by `templates`.
    pub fn with_templates(
        vendors: &[(&str, i64)],
        config: FailoverConfig,
        templates: Templates,
    ) -> Self {
        let fakes: Vec<Arc<FakeVendor>> = vendors.iter().map(|(n, _)| FakeVendor::new(n)).collect();
        let fees = vendors.iter().map(|(_, p)| flat(*p)).collect();
        Self::build(
            fakes,
            fees,
            config,
            Arc::new(MemoryQueue::new()),
            templates,
            None,
        )
    }

    pub fn with_fees(
        fakes: Vec<Arc<FakeVendor>>,
        fees: Vec<Arc<dyn FeeSchedule>>,
        config: FailoverConfig,
        queue: Arc<MemoryQueue>,
    ) -> Self {
        Self::build(fakes, fees, config, queue, Templates::default(), None)
    }

    /// One instance of a deployment: vendors with these price lists, sharing vendor
    /// health on `board` and billed volumes in `ledger` with the other instances.
    pub fn on_board(
        vendors: &[&str],
        fees: Vec<Arc<dyn FeeSchedule>>,
        config: FailoverConfig,
        board: Arc<MemoryBoard>,
        ledger: Arc<MemoryLedger>,
    ) -> Self {
        let fakes = vendors.iter().map(|n| FakeVendor::new(n)).collect();
        let queue = Arc::new(MemoryQueue::new());
        Self::build(
            fakes,
            fees,
            config,
            queue,
            Templates::default(),
            Some((board, ledger)),
        )
    }

    fn build(
        fakes: Vec<Arc<FakeVendor>>,
        fees: Vec<Arc<dyn FeeSchedule>>,
        config: FailoverConfig,
        queue: Arc<MemoryQueue>,
        templates: Templates,
        shared: Option<(Arc<MemoryBoard>, Arc<MemoryLedger>)>,
    ) -> Self {
        let events = Arc::new(Recorder::default());
        let clock = Arc::new(ManualClock::new(start()));
        let (board, ledger) = match shared {
            Some((board, ledger)) => (Some(board), ledger),
            None => (None, Arc::new(MemoryLedger::new())),
        };
        let deliveries = Arc::new(MemoryDeliveryLog::new());
        let outbox = Arc::new(MemoryOutbox::new());
        let limiter = Arc::new(AllowAll::default());
        let entries = fakes
            .iter()
            .zip(fees)
            .map(|(v, fees)| VendorEntry {
                vendor: v.clone(),
                fees,
            })
            .collect();
        let mut builder = Gateway::builder(entries, limiter.clone(), queue.clone(), ledger.clone())
            .clock(clock.clone())
            .config(config)
            .observer(events.clone())
            .templates(templates)
            .deliveries(deliveries.clone())
            .callbacks(outbox.clone(), None);
        if let Some(board) = board {
            builder = builder.board(board);
        }
        let gateway = builder.build().unwrap();
        Self {
            gateway: Arc::new(gateway),
            queue,
            ledger,
            deliveries,
            outbox,
            clock,
            vendors: fakes,
            events,
            limiter,
        }
    }

    pub fn vendor(&self, name: &str) -> &Arc<FakeVendor> {
        self.vendors
            .iter()
            .find(|v| v.id().as_str() == name)
            .unwrap()
    }

    pub fn current(&self) -> String {
        self.gateway.current_vendor().to_string()
    }

    pub fn failures_of(&self, name: &str) -> u32 {
        self.gateway
            .vendors()
            .into_iter()
            .find(|v| v.id.as_str() == name)
            .unwrap()
            .consecutive_failures
    }
}

/// Lets spawned tasks (the best-effort `Sent` record, the drainer) run.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}
