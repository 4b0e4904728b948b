//! `sms-app simulate`: the gateway on embedded defaults against three simulated vendors,
//! driven through a scenario, with a report a person can read at a glance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sms_core::sync::lock;
use sms_core::{DeferredQueue, Money, SendError, VendorId};
use sms_failover::{AttemptOutcome, Gateway, GatewayEvent, GatewayObserver, SendOutcome};
use sms_providers::delivery_log::DeliveryLog;

use crate::wire::{Extras, build_send_path, take_simulated_receipts};

mod report;
mod scenario;

pub use report::Report;
use report::{Sample, SwitchRecord, VendorTally};
pub use scenario::Scenario;

/// Collects events for the report.
#[derive(Default)]
struct Recorder {
    started: Mutex<Option<Instant>>,
    switches: Mutex<Vec<SwitchRecord>>,
    attempts: Mutex<HashMap<VendorId, VendorTally>>,
    failures: AtomicU64,
    queued: AtomicU64,
    drained: AtomicU64,
    /// When the first switch driven by delivery receipts happened.
    receipt_switch_at: Mutex<Option<f64>>,
    /// Undelivered messages stored again for another vendor.
    resends: AtomicU64,
    /// The re-sends' ids, to tell their receipts from the first sends'.
    resent_ids: Mutex<std::collections::HashSet<sms_core::MessageId>>,
    /// Re-sends their receipts said delivered.
    resends_delivered: AtomicU64,
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
                    // The vendor is fine: these are the number's limit and our mapping.
                    AttemptOutcome::RecipientRefused => tally.refused_numbers += 1,
                    AttemptOutcome::Misconfigured => tally.refused_templates += 1,
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
                if reason.starts_with("delivery rate") {
                    lock(&self.receipt_switch_at).get_or_insert(self.elapsed());
                }
                let record = SwitchRecord {
                    at_s: self.elapsed(),
                    what: format!("{from} -> {to}"),
                    reason: reason.clone(),
                    switched: true,
                };
                lock(&self.switches).push(record);
            }
            GatewayEvent::Resent { id, .. } => {
                self.resends.fetch_add(1, Ordering::Relaxed);
                lock(&self.resent_ids).insert(*id);
            }
            GatewayEvent::AllVendorsUnavailable { .. } => {
                let record = SwitchRecord {
                    at_s: self.elapsed(),
                    what: "all vendors unavailable".into(),
                    reason: "each rests after failures; messages wait".into(),
                    switched: false,
                };
                lock(&self.switches).push(record);
            }
            GatewayEvent::VendorsAvailableAgain {
                vendor,
                unavailable_for,
                ..
            } => {
                let record = SwitchRecord {
                    at_s: self.elapsed(),
                    what: format!("{vendor} delivers again"),
                    reason: format!("no vendor for {:.1} s", unavailable_for.as_secs_f64()),
                    switched: false,
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
            spend_gate: None,
        },
    )
    .await?;
    if scenario.receipts {
        let names: Vec<&str> = scenario.vendors.keys().map(String::as_str).collect();
        let tallies = recorder.clone();
        take_simulated_receipts(
            &send_path,
            &names,
            Arc::new(move |reports, applied| {
                let mut attempts = lock(&tallies.attempts);
                let resent = lock(&tallies.resent_ids);
                for (report, outcome) in reports.iter().zip(applied) {
                    let tally = attempts.entry(report.vendor.clone()).or_default();
                    if report.delivered {
                        tally.handset_delivered += 1;
                        if let sms_core::ReportApplied::Applied { message_id, .. } = outcome
                            && resent.contains(message_id)
                        {
                            tallies.resends_delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        tally.handset_undelivered += 1;
                    }
                }
            }),
        );
    }
    let (gateway, drainer, queue) = (send_path.gateway, send_path.drainer, send_path.store.queue);
    let fee_schedules = send_path.fees;

    let started = Instant::now();
    *lock(&recorder.started) = Some(started);
    let progress = options.progress.then(|| progress_bar(scenario.duration_s));

    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let accepted_ids = Arc::new(Mutex::new(HashSet::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let refused_by_vendor = Arc::new(AtomicU64::new(0));
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
        let due = owed.floor() as u64;
        owed -= due as f64;
        // Each request due now, with the number it goes to: its own, or one of a
        // burst's few.
        let mut recipients: Vec<Option<u32>> = Vec::new();
        bursts.retain(|b| {
            if b.at_s <= t {
                recipients.extend(std::iter::repeat_n(b.recipients, b.requests as usize));
                false
            } else {
                true
            }
        });
        recipients.extend(std::iter::repeat_n(None, due as usize));
        for (i, few) in recipients.into_iter().enumerate() {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let to = match few {
                Some(count) => format!("+86137{:08}", i as u64 % u64::from(count.max(1))),
                None => format!("+86139{n:08}"),
            };
            let Some(request) = scenario.request(n, &to) else {
                continue;
            };
            let gateway = gateway.clone();
            let latencies = latencies.clone();
            let accepted_ids = accepted_ids.clone();
            let refused = refused.clone();
            let refused_by_vendor = refused_by_vendor.clone();
            tasks.spawn(async move {
                let began = Instant::now();
                let result = gateway.send(request).await;
                lock(&latencies).push(began.elapsed());
                match result {
                    Ok(SendOutcome::Sent { id, .. }) | Ok(SendOutcome::Queued { id, .. }) => {
                        lock(&accepted_ids).insert(id);
                    }
                    Ok(SendOutcome::Existing(_)) => {}
                    Err(SendError::RecipientRefused { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        refused_by_vendor.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
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
    if scenario.receipts {
        // The last sends' receipts are still on their way.
        let delay = scenario
            .vendors
            .values()
            .map(|v| v.receipt_delay_ms)
            .max()
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(delay + 500)).await;
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
    // Pending messages a vendor's per-number limit holds, pinned to that vendor.
    let mut waiting_for_windows = 0;
    for id in &accepted_ids {
        match deliveries.get(id) {
            Some(n) => {
                delivered += 1;
                duplicates += n - 1;
            }
            None => match queue.get(*id).await?.map(|m| (m.status, m.pinned_vendor)) {
                Some((sms_core::MessageStatus::Queued | sms_core::MessageStatus::Leased, pin)) => {
                    pending += 1;
                    waiting_for_windows += u64::from(pin.is_some());
                }
                Some((sms_core::MessageStatus::Dead, _)) => dead += 1,
                Some((sms_core::MessageStatus::Expired, _)) => expired += 1,
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
    let handset_delivered: u64 = vendors.values().map(|v| v.handset_delivered).sum();
    let accepted = accepted_ids.len() as u64;
    let resends_delivered = recorder.resends_delivered.load(Ordering::Relaxed);
    let share = |delivered: u64| {
        (scenario.receipts && accepted > 0).then(|| delivered as f64 / accepted as f64)
    };
    let handset_share = share(handset_delivered.saturating_sub(resends_delivered));
    let handset_share_with_resends = share(handset_delivered);
    let elapsed_s = started.elapsed().as_secs_f64();
    let without_receipt_failover = if scenario.compare_without_receipt_failover {
        let baseline = Scenario {
            name: format!("{} without receipt-aware failover", scenario.name),
            receipt_window: 0,
            compare_without_receipt_failover: false,
            ..scenario.clone()
        };
        let options = Options {
            scenario: baseline,
            chart: None,
            progress: options.progress,
        };
        Some(Box::new(Box::pin(run(options)).await?))
    } else {
        None
    };
    let report = Report {
        scenario: scenario.name.clone(),
        elapsed_s,
        accepted,
        refused: refused.load(Ordering::Relaxed),
        refused_by_vendor_limits: refused_by_vendor.load(Ordering::Relaxed),
        delivered,
        pending,
        waiting_for_windows,
        dead,
        expired,
        lost,
        duplicates,
        queued: recorder.queued.load(Ordering::Relaxed),
        drained: recorder.drained.load(Ordering::Relaxed),
        switches: switch_log.iter().filter(|s| s.switched).count(),
        switch_log,
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        spend_total,
        spend_if_always_cheapest,
        spend_if_round_robin,
        vendors,
        timeline,
        handset_share,
        receipt_switch_at_s: *lock(&recorder.receipt_switch_at),
        resends: recorder.resends.load(Ordering::Relaxed),
        handset_share_with_resends,
        without_receipt_failover,
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
