//! Receipt-aware failover: a vendor whose API accepts messages that do not reach the
//! handsets is demoted like a failing one.
//!
//! Each vendor keeps its last `receipt_window` delivery receipts (delivered or not).
//! Once the window is full, a delivery rate under `min_delivery_rate` puts the vendor
//! to rest (its window starts over) and, when it is current, switches to the cheapest
//! usable vendor. After its rest it is probed and comes back as any demoted vendor
//! does; if its receipts are still bad, a new full window demotes it again, for longer
//! (the flap rule). Only receipts that settled a recorded send count: a repeat says
//! nothing new, and a receipt with no send recorded may not be ours.
//!
//! A vendor that has sent receipts and then accepts at least 50 messages over
//! `receipt_silence` without a single receipt is demoted too: its receipts stopped.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use sms_core::sync::lock;
use sms_core::{CallbackStatus, DeliveryReport, ReportApplied, StatusEvent};

use super::Gateway;
use crate::events::GatewayEvent;
use crate::health::HealthOp;

/// What a vendor's receipts have said lately.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReceiptWatch {
    /// Its last receipts, oldest first: `true` for delivered.
    recent: VecDeque<bool>,
    /// Whether it ever sent a receipt: only then is its silence judged.
    sends_receipts: bool,
    /// When it accepted each send since its last receipt, oldest first (at most a
    /// window's worth).
    unanswered: VecDeque<DateTime<Utc>>,
    /// How long its last receipts took to come, from the send (at most a window's
    /// worth), oldest first.
    latencies: VecDeque<std::time::Duration>,
}

/// A vendor's receipts lately: its delivery rate and how long receipts take.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ReceiptStats {
    pub delivery_rate: Option<f64>,
    pub receipts: usize,
    pub latency_p50: Option<std::time::Duration>,
    pub latency_p95: Option<std::time::Duration>,
}

/// Appends `value` to `window`, dropping the oldest beyond `max`; the length after.
fn push_bounded<T>(window: &mut VecDeque<T>, value: T, max: usize) -> usize {
    window.push_back(value);
    if window.len() > max {
        window.pop_front();
    }
    window.len()
}

impl Gateway {
    /// Takes receipts into account, with what applying each to the delivery log did
    /// (`applied[i]` is `reports[i]`'s): tells the clients of the messages they settled,
    /// demotes vendors whose delivery rate fell, and re-sends undelivered messages whose
    /// templates ask for it.
    pub async fn receipts_applied(&self, reports: &[DeliveryReport], applied: &[ReportApplied]) {
        self.notify_receipts(reports, applied).await;
        self.reconcile_segments(reports, applied);
        self.watch_receipts(reports, applied).await;
        self.resend_undelivered(reports, applied).await;
    }

    /// Takes into account the receipts that came before their sends and were settled
    /// when the sends were recorded, as if they had come after.
    pub(crate) async fn late_receipts_applied(&self) {
        let late = std::mem::take(&mut *lock(&self.late_receipts));
        if late.is_empty() {
            return;
        }
        let (reports, applied): (Vec<DeliveryReport>, Vec<ReportApplied>) =
            late.into_iter().unzip();
        self.receipts_applied(&reports, &applied).await;
    }

    /// Stores a `delivered` or `undelivered` status event for each receipt that settled
    /// a recorded send.
    async fn notify_receipts(&self, reports: &[DeliveryReport], applied: &[ReportApplied]) {
        if self.callbacks.is_none() {
            return;
        }
        let now = self.clock.now();
        for (report, outcome) in reports.iter().zip(applied) {
            let ReportApplied::Applied {
                message_id,
                callback_url,
                ..
            } = outcome
            else {
                continue;
            };
            let Some((callbacks, url)) = self.callbacks_for(callback_url.as_ref()) else {
                continue;
            };
            let status = if report.delivered {
                CallbackStatus::Delivered
            } else {
                CallbackStatus::Undelivered
            };
            let mut event =
                StatusEvent::new(*message_id, status, report.reported_at.unwrap_or(now));
            event.recipient = Some(report.recipient.clone());
            event.vendor = Some(report.vendor.clone());
            event.vendor_message_id = Some(report.vendor_message_id.clone());
            event.code.clone_from(&report.code);
            event.description.clone_from(&report.description);
            callbacks.record(&url, [event]).await;
        }
    }

    /// Compares the segments each receipt says the vendor billed (Aliyun's `sms_size`)
    /// with what the gateway billed at the send. A difference is reported; segments
    /// the vendor billed beyond the gateway's count are added to its billed volume, so
    /// that prices and spend follow the vendor's bill. Fewer are only reported: billed
    /// volume never goes down.
    fn reconcile_segments(&self, reports: &[DeliveryReport], applied: &[ReportApplied]) {
        let now = self.clock.now();
        for (report, outcome) in reports.iter().zip(applied) {
            let (
                Some(reported),
                ReportApplied::Applied {
                    billed_segments: Some(counted),
                    ..
                },
            ) = (report.segments, outcome)
            else {
                continue;
            };
            if reported == *counted {
                continue;
            }
            self.emit(|| GatewayEvent::BillingMismatch {
                vendor: report.vendor.clone(),
                counted: u64::from(*counted),
                reported: u64::from(reported),
            });
            let Some(idx) = self.ids.iter().position(|id| *id == report.vendor) else {
                continue;
            };
            if reported > *counted {
                self.health()
                    .add_usage(idx, u64::from(reported - counted), now);
                self.write_behind.usage_added();
            }
        }
    }

    /// Adds the receipts that settled a send to their vendors' windows, and demotes
    /// vendors whose delivery rate fell.
    async fn watch_receipts(&self, reports: &[DeliveryReport], applied: &[ReportApplied]) {
        let window = self.config.receipt_window as usize;
        if window == 0 {
            return;
        }
        let mut fallen = Vec::new();
        let now = self.clock.now();
        {
            let mut windows = lock(&self.receipt_windows);
            for (report, outcome) in reports.iter().zip(applied) {
                let ReportApplied::Applied { sent_at, .. } = outcome else {
                    continue;
                };
                let Some(idx) = self.ids.iter().position(|id| *id == report.vendor) else {
                    continue;
                };
                let watch = &mut windows[idx];
                watch.sends_receipts = true;
                watch.unanswered.clear();
                let latency = (now - *sent_at).to_std().unwrap_or_default();
                push_bounded(&mut watch.latencies, latency, window);
                let receipts = &mut watch.recent;
                let full = push_bounded(receipts, report.delivered, window) >= window;
                if let Some(shared) = &self.shared {
                    // The deployment's tally judges the rate, on the board.
                    shared.tally(idx, report.delivered);
                    continue;
                }
                if !full {
                    continue;
                }
                let delivered = receipts.iter().filter(|d| **d).count();
                if (delivered as f64) < self.config.min_delivery_rate * window as f64 {
                    receipts.clear();
                    fallen.push((idx, delivered));
                }
            }
        }
        for (idx, delivered) in fallen {
            let reason = format!(
                "delivery rate {:.1}% over its last {window} receipts, under {:.1}%",
                100.0 * delivered as f64 / window as f64,
                100.0 * self.config.min_delivery_rate
            );
            self.demote_on_receipts(idx, reason).await;
        }
    }

    /// Notes that vendor `idx` accepted a message at `at`; demotes it when it sends
    /// receipts but none came for the sends of the last `receipt_silence`.
    pub(crate) async fn note_accepted(&self, idx: usize, at: DateTime<Utc>) {
        let window = self.config.receipt_window as usize;
        let Ok(silence) = chrono::Duration::from_std(self.config.receipt_silence) else {
            return;
        };
        if window == 0 || silence.is_zero() {
            return;
        }
        let silent = {
            let mut windows = lock(&self.receipt_windows);
            let watch = &mut windows[idx];
            if !watch.sends_receipts {
                return;
            }
            push_bounded(&mut watch.unanswered, at, window);
            let waited = watch.unanswered.front().map(|first| at - *first);
            let enough = watch.unanswered.len() >= crate::config::MIN_RECEIPT_WINDOW as usize;
            match waited {
                Some(waited) if enough && waited >= silence => {
                    let sends = watch.unanswered.len();
                    watch.unanswered.clear();
                    watch.recent.clear();
                    Some((sends, waited))
                }
                _ => None,
            }
        };
        if let Some((sends, waited)) = silent {
            let reason = format!(
                "no delivery receipt for its last {sends} accepted sends over {} s",
                waited.num_seconds()
            );
            self.demote_on_receipts(idx, reason).await;
        }
    }

    async fn demote_on_receipts(&self, idx: usize, reason: String) {
        tracing::warn!(vendor = %self.ids[idx], %reason, "vendor demoted on its delivery receipts");
        // Demoting it may switch, or leave no vendor to send with: both are reported.
        self.change_health(&[HealthOp::DemoteFor { idx, reason }])
            .await;
    }

    /// Each vendor's delivery rate over the receipts in its window, how many there are,
    /// and how long its recent receipts took (none: no receipt yet).
    pub(crate) fn receipt_stats(&self) -> Vec<ReceiptStats> {
        lock(&self.receipt_windows)
            .iter()
            .map(|watch| {
                let receipts = &watch.recent;
                let mut latencies: Vec<_> = watch.latencies.iter().copied().collect();
                latencies.sort_unstable();
                let percentile = |p: f64| {
                    let last = latencies.len().checked_sub(1)?;
                    Some(latencies[(last as f64 * p).round() as usize])
                };
                ReceiptStats {
                    delivery_rate: (!receipts.is_empty()).then(|| {
                        receipts.iter().filter(|d| **d).count() as f64 / receipts.len() as f64
                    }),
                    receipts: receipts.len(),
                    latency_p50: percentile(0.5),
                    latency_p95: percentile(0.95),
                }
            })
            .collect()
    }
}
