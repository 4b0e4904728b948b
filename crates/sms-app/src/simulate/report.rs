//! The report of a `simulate` run: the figures, the switch log, the timeline, and the
//! table printed for people.

use std::collections::BTreeMap;

use serde::Serialize;
use sms_core::Money;

#[derive(Debug, Clone, Serialize)]
pub(super) struct SwitchRecord {
    pub(super) at_s: f64,
    /// `from -> to` for a switch, or a change of every vendor's availability.
    pub(super) what: String,
    pub(super) reason: String,
    /// Whether the current vendor changed.
    pub(super) switched: bool,
}

/// One vendor's share of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VendorTally {
    /// Attempts it delivered.
    pub sent: u64,
    /// Attempts that failed (timeout, throttle, error, rejection).
    pub failed: u64,
    /// Attempts its per-number limit refused: not failures of the vendor.
    pub refused_numbers: u64,
    /// Attempts refused because it has not approved the template: not failures either.
    pub refused_templates: u64,
    /// Delivered attempts slower than the threshold.
    pub slow: u64,
    /// What its deliveries cost.
    pub spend: Money,
    /// Recipients its receipts said delivered to the handset.
    pub handset_delivered: u64,
    /// Recipients its receipts said undelivered.
    pub handset_undelivered: u64,
}

/// One sample of the timeline, taken every quarter second.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Sample {
    pub(super) t: f64,
    pub(super) vendor: String,
    pub(super) queue_depth: u64,
    pub(super) failures: u64,
    pub(super) spend: Money,
}

/// The run's result; `--json` prints it whole.
#[derive(Debug, Serialize)]
pub struct Report {
    pub(super) scenario: String,
    pub(super) elapsed_s: f64,
    /// Requests the gateway answered with sent or queued.
    pub accepted: u64,
    /// Requests refused outright (invalid, rejected, limited per recipient, storage down).
    pub refused: u64,
    /// Of those, requests a vendor's per-number limit refused.
    pub refused_by_vendor_limits: u64,
    /// Accepted messages that reached a vendor at least once.
    pub delivered: u64,
    /// Accepted messages still queued or leased when the run ended.
    pub pending: u64,
    /// Of those, messages waiting for a vendor's per-number window, pinned to it.
    pub waiting_for_windows: u64,
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
    pub(super) switch_log: Vec<SwitchRecord>,
    pub(super) latency_p50_ms: f64,
    pub(super) latency_p99_ms: f64,
    /// Total spend.
    pub spend_total: Money,
    pub(super) spend_if_always_cheapest: Money,
    pub(super) spend_if_round_robin: Money,
    /// Per vendor: sent, failed, spend.
    pub vendors: BTreeMap<String, VendorTally>,
    #[serde(skip)]
    pub(super) timeline: Vec<Sample>,
    /// With receipts: the share of accepted messages their receipts said delivered to
    /// the handset by their first send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handset_share: Option<f64>,
    /// When the first switch driven by delivery receipts happened, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_switch_at_s: Option<f64>,
    /// Undelivered login codes sent once more through another vendor.
    pub resends: u64,
    /// With receipts: the share of accepted messages delivered to the handset by their
    /// first send or by a re-send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handset_share_with_resends: Option<f64>,
    /// The same scenario without receipt-aware failover, when it was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_receipt_failover: Option<Box<Report>>,
}

impl Report {
    pub(super) fn timeline_points(&self) -> Vec<crate::chart::Point> {
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

    pub(super) fn switch_times(&self) -> Vec<(f64, String)> {
        self.switch_log
            .iter()
            .filter(|s| s.switched)
            .map(|s| (s.at_s, s.what.clone()))
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
        let refusals: Vec<String> = self
            .vendors
            .iter()
            .filter(|(_, v)| v.refused_numbers + v.refused_templates > 0)
            .map(|(name, v)| {
                format!(
                    "{name} {} per-number, {} template",
                    v.refused_numbers, v.refused_templates
                )
            })
            .collect();
        if !refusals.is_empty() {
            let _ = writeln!(out, "refusals (not failures): {}", refusals.join("; "));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "switches: {}", self.switches);
        for s in &self.switch_log {
            let _ = writeln!(out, "  {:>6.2} s  {}  ({})", s.at_s, s.what, s.reason);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "accepted {}  delivered {}  pending {}  dead {}  expired {}  refused {}",
            self.accepted, self.delivered, self.pending, self.dead, self.expired, self.refused
        );
        if self.refused_by_vendor_limits + self.waiting_for_windows > 0 {
            let _ = writeln!(
                out,
                "vendors' per-number limits: {} refused live, {} pending for the window on \
                 the same vendor (no vendor's health touched)",
                self.refused_by_vendor_limits, self.waiting_for_windows
            );
        }
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
        if let Some(share) = self.handset_share {
            let _ = writeln!(out);
            let per_vendor: Vec<String> = self
                .vendors
                .iter()
                .map(|(name, v)| {
                    format!(
                        "{name} {} delivered / {} undelivered",
                        v.handset_delivered, v.handset_undelivered
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "delivered to handsets (receipts): {}",
                per_vendor.join("; ")
            );
            match self.receipt_switch_at_s {
                Some(at) => {
                    let _ = writeln!(out, "first switch on delivery receipts at {at:.2} s");
                }
                None => {
                    let _ = writeln!(out, "no switch on delivery receipts");
                }
            }
            let _ = write!(
                out,
                "codes delivered to handsets by their first send: {:.1}% with receipt-aware failover",
                share * 100.0
            );
            match self
                .without_receipt_failover
                .as_ref()
                .and_then(|r| r.handset_share)
            {
                Some(without) => {
                    let _ = writeln!(out, ", {:.1}% without", without * 100.0);
                }
                None => {
                    let _ = writeln!(out);
                }
            }
            let _ = write!(
                out,
                "re-sends of undelivered codes through another vendor: {}; delivered after \
                 re-sends: {:.1}%",
                self.resends,
                100.0 * self.handset_share_with_resends.unwrap_or_default()
            );
            match &self.without_receipt_failover {
                Some(without) => {
                    let _ = writeln!(
                        out,
                        " (without receipt-aware failover: {} re-sends, {:.1}%)",
                        without.resends,
                        100.0 * without.handset_share_with_resends.unwrap_or_default()
                    );
                }
                None => {
                    let _ = writeln!(out);
                }
            }
        }
        out
    }
}
