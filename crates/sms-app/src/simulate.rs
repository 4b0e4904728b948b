//! `sms-app simulate`: the gateway on embedded defaults against three simulated vendors,
//! driven through a scenario, with a report a person can read at a glance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sms_core::sync::lock;
use sms_core::{DeferredQueue, Money, SendError, SmsRequest, VendorId};
use sms_failover::{
    AttemptOutcome, FailoverConfig, Gateway, GatewayEvent, GatewayObserver, SendOutcome,
};
use sms_limit::LimitConfig;
use sms_providers::delivery_log::DeliveryLog;
use sms_providers::simulated::{FaultKind, ScheduledFault, SimulationSettings};

use crate::config::{Config, SimulatedVendorConfig, VendorConfig};
use crate::wire::{Extras, build_send_path};

/// A scenario: steady traffic, faults on a schedule, bursts, then a wait for the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    /// How long traffic runs, in seconds.
    pub duration_s: f64,
    /// Steady requests per second.
    pub rate_per_s: u32,
    /// The global limit during the run (lower than production so a burst shows it).
    pub global_per_second: u32,
    /// Longest wait for the queue to empty after traffic stops, in seconds.
    pub settle_s: f64,
    /// Failures in a row that switch vendor.
    pub consecutive_failures: u32,
    /// Rest of a vendor after a switch, in seconds.
    pub cooldown_s: f64,
    /// First retry delay of queued messages, in milliseconds.
    pub backoff_base_ms: u64,
    /// Seed of the simulated vendors.
    pub seed: u64,
    /// Extra requests sent all at once.
    pub bursts: Vec<Burst>,
    /// Settings per simulated vendor (name → settings).
    pub vendors: BTreeMap<String, SimulationSettings>,
}

/// A burst of requests at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// When, in seconds from the start.
    pub at_s: f64,
    /// How many requests.
    pub requests: u32,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::preset("default").unwrap_or_else(|| unreachable!("the default preset exists"))
    }
}

fn vendor_settings(latency_ms: u64, jitter_ms: u64, error_rate: f64) -> SimulationSettings {
    SimulationSettings {
        latency_ms,
        jitter_ms,
        error_rate,
        ..SimulationSettings::default()
    }
}

impl Scenario {
    /// Names of the built-in scenarios.
    pub const PRESETS: [&'static str; 3] = ["default", "steady", "flaky"];

    /// A built-in scenario by name.
    pub fn preset(name: &str) -> Option<Self> {
        let mut vendors = BTreeMap::new();
        vendors.insert("aliyun".to_owned(), vendor_settings(20, 10, 0.0005));
        vendors.insert("tencent".to_owned(), vendor_settings(30, 15, 0.0005));
        vendors.insert("cloopen".to_owned(), vendor_settings(40, 20, 0.0005));
        let mut s = Self {
            name: name.to_owned(),
            duration_s: 12.0,
            rate_per_s: 200,
            global_per_second: 500,
            settle_s: 15.0,
            consecutive_failures: 2,
            cooldown_s: 3.0,
            backoff_base_ms: 250,
            seed: 7,
            bursts: vec![Burst {
                at_s: 9.0,
                requests: 1500,
            }],
            vendors,
        };
        match name {
            // The cheapest vendor (Aliyun at this volume) goes down from 3 s to 7 s.
            "default" => {
                if let Some(aliyun) = s.vendors.get_mut("aliyun") {
                    aliyun.schedule = vec![ScheduledFault::new(3, 7, FaultKind::Outage)];
                }
            }
            "steady" => s.bursts.clear(),
            // Every vendor errs now and then and Tencent is slow.
            "flaky" => {
                for v in s.vendors.values_mut() {
                    v.error_rate = 0.05;
                    v.throttle_rate = 0.02;
                }
                if let Some(t) = s.vendors.get_mut("tencent") {
                    t.latency_ms = 900;
                    t.jitter_ms = 400;
                }
            }
            _ => return None,
        }
        Some(s)
    }

    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Scenario = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        if !(self.duration_s > 0.0 && self.duration_s <= 3600.0) {
            bail!(
                "duration_s: expected more than 0 and at most 3600, found {}",
                self.duration_s
            );
        }
        if self.global_per_second == 0 || self.consecutive_failures == 0 {
            bail!("global_per_second and consecutive_failures must be at least 1");
        }
        if self.vendors.is_empty() {
            bail!("vendors: expected at least one simulated vendor");
        }
        for (name, settings) in &self.vendors {
            VendorId::new(name).map_err(|e| anyhow::anyhow!("vendors.{name}: {}", e.problem))?;
            settings
                .validate()
                .map_err(|e| anyhow::anyhow!("vendors.{name}: {e}"))?;
        }
        Ok(())
    }

    /// The gateway's configuration for this scenario in `dir`: the embedded store, the
    /// in-process limiter at the scenario's global limit and no per-recipient windows
    /// (the requests go to distinct numbers anyway), quicker retries and drains than in
    /// production so the queue settles within the run, and the scenario's vendors with
    /// their built-in price lists.
    fn config(&self, dir: &Path) -> Config {
        Config {
            sqlite_path: dir.join("simulate.db"),
            failover: FailoverConfig {
                consecutive_failures: self.consecutive_failures,
                cooldown: Duration::from_secs_f64(self.cooldown_s),
                backoff_base: Duration::from_millis(self.backoff_base_ms),
                backoff_max: Duration::from_millis(self.backoff_base_ms.max(2000)),
                drain_interval: Duration::from_millis(200),
                attempt_timeout: Duration::from_secs(2),
                ..FailoverConfig::default()
            },
            limit: LimitConfig {
                global_per_second: self.global_per_second,
                recipient_windows: Vec::new(),
                ..LimitConfig::default()
            },
            vendors: self
                .vendors
                .iter()
                .zip(0..)
                .map(|((name, simulation), order)| {
                    let vendor = VendorConfig::Simulated(SimulatedVendorConfig {
                        order,
                        fees: None,
                        simulation: simulation.clone(),
                    });
                    (name.clone(), vendor)
                })
                .collect(),
            ..Config::default()
        }
    }
}

/// One sample of the timeline, taken every quarter second.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    t: f64,
    vendor: String,
    queue_depth: u64,
    failures: u64,
    spend: Money,
}

/// Collects events for the report.
#[derive(Default)]
struct Recorder {
    started: Mutex<Option<Instant>>,
    switches: Mutex<Vec<SwitchRecord>>,
    attempts: Mutex<HashMap<VendorId, VendorTally>>,
    failures: AtomicU64,
    queued: AtomicU64,
    drained: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
struct SwitchRecord {
    at_s: f64,
    from: VendorId,
    to: VendorId,
    reason: String,
}

/// One vendor's share of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VendorTally {
    /// Attempts it delivered.
    pub sent: u64,
    /// Attempts that failed (timeout, throttle, error, rejection).
    pub failed: u64,
    /// Delivered attempts slower than the threshold.
    pub slow: u64,
    /// What its deliveries cost.
    pub spend: Money,
}

impl Recorder {
    fn elapsed(&self) -> f64 {
        lock(&self.started)
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0)
    }
}

impl GatewayObserver for Recorder {
    fn on_event(&self, event: &GatewayEvent) {
        match event {
            GatewayEvent::Attempt {
                vendor,
                outcome,
                cost,
                ..
            } => {
                let mut attempts = lock(&self.attempts);
                let tally = attempts.entry(vendor.clone()).or_default();
                match outcome {
                    AttemptOutcome::Ok => tally.sent += 1,
                    AttemptOutcome::Slow => {
                        tally.sent += 1;
                        tally.slow += 1;
                    }
                    _ => {
                        tally.failed += 1;
                        self.failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tally.spend += *cost;
            }
            GatewayEvent::Switched {
                from, to, reason, ..
            } => {
                let record = SwitchRecord {
                    at_s: self.elapsed(),
                    from: from.clone(),
                    to: to.clone(),
                    reason: reason.clone(),
                };
                lock(&self.switches).push(record);
            }
            GatewayEvent::Queued { .. } => {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            GatewayEvent::Delivered { drained: true, .. } => {
                self.drained.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// The run's result; `--json` prints it whole.
#[derive(Debug, Serialize)]
pub struct Report {
    scenario: String,
    elapsed_s: f64,
    /// Requests the gateway answered with sent or queued.
    pub accepted: u64,
    /// Requests refused outright (invalid, rejected, limited per recipient, storage down).
    pub refused: u64,
    /// Accepted messages that reached a vendor at least once.
    pub delivered: u64,
    /// Accepted messages still queued or leased when the run ended.
    pub pending: u64,
    /// Accepted messages that ran out of attempts.
    pub dead: u64,
    /// Accepted messages that passed their deliver-by time.
    pub expired: u64,
    /// Accepted messages that are nowhere: must be 0.
    pub lost: u64,
    /// Deliveries beyond the first of a message.
    pub duplicates: u64,
    /// Messages that went through the queue.
    pub queued: u64,
    /// Queued messages later delivered by the drain.
    pub drained: u64,
    /// Vendor switches.
    pub switches: usize,
    switch_log: Vec<SwitchRecord>,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    /// Total spend.
    pub spend_total: Money,
    spend_if_always_cheapest: Money,
    spend_if_round_robin: Money,
    /// Per vendor: sent, failed, spend.
    pub vendors: BTreeMap<String, VendorTally>,
    #[serde(skip)]
    timeline: Vec<Sample>,
}

/// Options of `simulate`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// Draw the timeline here.
    pub chart: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
}

/// Runs the scenario and prints the report. Fails if any accepted message was lost.
pub async fn run(options: Options) -> Result<Report> {
    let scenario = options.scenario.clone();
    scenario.validate()?;
    let dir =
        tempfile::tempdir().context("creating a temporary directory for the embedded store")?;
    let log = DeliveryLog::in_memory();
    let recorder = Arc::new(Recorder::default());
    let send_path = build_send_path(
        &scenario.config(dir.path()),
        Extras {
            delivery_log: log.clone(),
            observer: recorder.clone(),
            seed: scenario.seed,
        },
    )
    .await?;
    let (gateway, drainer, queue) = (send_path.gateway, send_path.drainer, send_path.store.queue);
    let fee_schedules = send_path.fees;

    let started = Instant::now();
    *lock(&recorder.started) = Some(started);
    let progress = options.progress.then(|| progress_bar(scenario.duration_s));

    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let accepted_ids = Arc::new(Mutex::new(HashSet::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut timeline = Vec::new();

    let total_ticks = (scenario.duration_s * 20.0).round() as u64; // 50 ms ticks
    let per_tick = f64::from(scenario.rate_per_s) / 20.0;
    let mut owed = 0.0;
    let mut bursts = scenario.bursts.clone();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    for tick in 0..total_ticks {
        ticker.tick().await;
        let t = started.elapsed().as_secs_f64();
        owed += per_tick;
        let mut due = owed.floor() as u64;
        owed -= due as f64;
        bursts.retain(|b| {
            if b.at_s <= t {
                due += u64::from(b.requests);
                false
            } else {
                true
            }
        });
        for _ in 0..due {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let gateway = gateway.clone();
            let latencies = latencies.clone();
            let accepted_ids = accepted_ids.clone();
            let refused = refused.clone();
            tasks.spawn(async move {
                let request = match SmsRequest::new(
                    "SMS_LOGIN",
                    [format!("{:06}", n % 1_000_000)],
                    [format!("+86139{n:08}")],
                ) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                let began = Instant::now();
                let result = gateway.send(request).await;
                lock(&latencies).push(began.elapsed());
                match result {
                    Ok(SendOutcome::Sent { id, .. }) | Ok(SendOutcome::Queued { id, .. }) => {
                        lock(&accepted_ids).insert(id);
                    }
                    Ok(SendOutcome::Existing(_)) => {}
                    Err(SendError::Invalid(_)) | Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while tasks.try_join_next().is_some() {}
        if tick % 5 == 0 {
            timeline.push(sample(&gateway, queue.as_ref(), &recorder, t).await);
            if let Some(bar) = &progress {
                bar.set_position((t * 10.0) as u64);
            }
        }
    }
    while tasks.join_next().await.is_some() {}

    // Let the queue settle: everything queued is sent, dead or expired.
    let settle_until = Instant::now() + Duration::from_secs_f64(scenario.settle_s);
    loop {
        let stats = queue.stats().await.context("reading queue stats")?;
        let t = started.elapsed().as_secs_f64();
        timeline.push(sample(&gateway, queue.as_ref(), &recorder, t).await);
        if stats.queued + stats.leased == 0 || Instant::now() >= settle_until {
            break;
        }
        gateway.trigger_drain();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    drainer.shutdown().await;
    if let Err(e) = gateway.flush().await {
        tracing::warn!(error = %e, "could not write the last billed usage to the ledger");
    }

    let accepted_ids = std::mem::take(&mut *lock(&accepted_ids));
    let mut deliveries: HashMap<sms_core::MessageId, u64> = HashMap::new();
    for record in log.records() {
        *deliveries.entry(record.message_id).or_default() += 1;
    }
    let mut delivered = 0;
    let mut duplicates = 0;
    let (mut pending, mut dead, mut expired, mut lost) = (0, 0, 0, 0);
    for id in &accepted_ids {
        match deliveries.get(id) {
            Some(n) => {
                delivered += 1;
                duplicates += n - 1;
            }
            None => match queue.get(*id).await?.map(|m| m.status) {
                Some(sms_core::MessageStatus::Queued | sms_core::MessageStatus::Leased) => {
                    pending += 1
                }
                Some(sms_core::MessageStatus::Dead) => dead += 1,
                Some(sms_core::MessageStatus::Expired) => expired += 1,
                _ => lost += 1,
            },
        }
    }

    let mut lat = std::mem::take(&mut *lock(&latencies));
    lat.sort();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i].as_secs_f64() * 1000.0
    };
    let vendors: BTreeMap<String, VendorTally> = lock(&recorder.attempts)
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let spend_total: Money = vendors.values().map(|v| v.spend).sum();
    let billed: u64 = vendors.values().map(|v| v.sent).sum();
    let spend_if_always_cheapest = fee_schedules
        .iter()
        .map(|f| f.cost_of(0, billed))
        .min()
        .unwrap_or_default();
    let share = billed / fee_schedules.len().max(1) as u64;
    let extra = billed % fee_schedules.len().max(1) as u64;
    let spend_if_round_robin = fee_schedules
        .iter()
        .enumerate()
        .map(|(i, f)| f.cost_of(0, share + u64::from((i as u64) < extra)))
        .sum();
    let switch_log = lock(&recorder.switches).clone();
    let report = Report {
        scenario: scenario.name.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
        accepted: accepted_ids.len() as u64,
        refused: refused.load(Ordering::Relaxed),
        delivered,
        pending,
        dead,
        expired,
        lost,
        duplicates,
        queued: recorder.queued.load(Ordering::Relaxed),
        drained: recorder.drained.load(Ordering::Relaxed),
        switches: switch_log.len(),
        switch_log,
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        spend_total,
        spend_if_always_cheapest,
        spend_if_round_robin,
        vendors,
        timeline,
    };
    if let Some(path) = &options.chart {
        std::fs::write(
            path,
            crate::chart::render(&report.timeline_points(), &report.switch_times()),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

async fn sample(
    gateway: &Gateway,
    queue: &dyn DeferredQueue,
    recorder: &Recorder,
    t: f64,
) -> Sample {
    let stats = queue.stats().await.unwrap_or_default();
    let spend = gateway.vendors().iter().map(|v| v.spend).sum();
    Sample {
        t,
        vendor: gateway.current_vendor().to_string(),
        queue_depth: stats.queued + stats.leased,
        failures: recorder.failures.load(Ordering::Relaxed),
        spend,
    }
}

fn progress_bar(duration_s: f64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new((duration_s * 10.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} simulating [{bar:40}] {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

impl Report {
    fn timeline_points(&self) -> Vec<crate::chart::Point> {
        self.timeline
            .iter()
            .map(|s| crate::chart::Point {
                t: s.t,
                vendor: s.vendor.clone(),
                queue_depth: s.queue_depth,
                failures: s.failures,
                spend: s.spend.micros() as f64 / 1e6,
            })
            .collect()
    }

    fn switch_times(&self) -> Vec<(f64, String)> {
        self.switch_log
            .iter()
            .map(|s| (s.at_s, format!("{} → {}", s.from, s.to)))
            .collect()
    }

    /// The report as a table for people.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {:?} finished in {:.1} s",
            self.scenario, self.elapsed_s
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<10} {:>8} {:>8} {:>8} {:>12}",
            "vendor", "sent", "failed", "slow", "spend"
        );
        for (name, v) in &self.vendors {
            let _ = writeln!(
                out,
                "{:<10} {:>8} {:>8} {:>8} {:>12}",
                name,
                v.sent,
                v.failed,
                v.slow,
                v.spend.to_string()
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "switches: {}", self.switches);
        for s in &self.switch_log {
            let _ = writeln!(
                out,
                "  {:>6.2} s  {} -> {}  ({})",
                s.at_s, s.from, s.to, s.reason
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "accepted {}  delivered {}  pending {}  dead {}  expired {}  refused {}",
            self.accepted, self.delivered, self.pending, self.dead, self.expired, self.refused
        );
        let _ = writeln!(out, "queued {}  drained {}", self.queued, self.drained);
        let _ = writeln!(out, "lost {}  duplicates {}", self.lost, self.duplicates);
        let _ = writeln!(
            out,
            "latency p50 {:.1} ms  p99 {:.1} ms",
            self.latency_p50_ms, self.latency_p99_ms
        );
        let _ = writeln!(
            out,
            "spend {}  (always cheapest: {}, round-robin: {})",
            self.spend_total, self.spend_if_always_cheapest, self.spend_if_round_robin
        );
        out
    }
}
