//! Pulling delivery receipts from vendors that are not set up to push them.
//!
//! A real Aliyun or Tencent vendor without a receipt secret (so without a push
//! endpoint) is asked for its receipts every `receipts.pull_interval_s`: Tencent hands
//! out the receipts it holds (`PullSmsSendStatus`), Aliyun is asked about each send
//! still without one (`QuerySendDetails`), at most `receipts.pull_batch` per pass,
//! oldest first. A pass walks the sends of the last `receipts.unknown_after_s` a batch
//! at a time and starts over when it reaches the newest, so every waiting send is
//! asked about in turn. What comes back takes the push's path: the delivery log, the
//! metrics, and the gateway (callbacks, receipt-aware failover, re-sends).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{DeliveryLog, ReceiptPull, StoreError, VendorId};
use sms_failover::Gateway;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Sends younger than this are not asked about yet: their receipts take seconds.
const MIN_AGE: chrono::Duration = chrono::Duration::seconds(5);
/// Tries to store pulled receipts while the store is unreachable: 200 ms doubling,
/// about 6 s in all.
const STORE_TRIES: u32 = 6;
const STORE_RETRY_FIRST: Duration = Duration::from_millis(200);

/// One vendor that is pulled, and where its last pass stopped.
struct Pulled {
    id: VendorId,
    vendor: Arc<dyn ReceiptPull>,
    /// The send time the next batch starts after; none: the window's start.
    cursor: Option<DateTime<Utc>>,
}

/// Asks the pulled vendors for their receipts, on a schedule.
pub struct Puller {
    vendors: Vec<Pulled>,
    deliveries: Arc<dyn DeliveryLog>,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    every: Duration,
    batch: u32,
    window: chrono::Duration,
}

impl Puller {
    /// A puller of `pullers` (by vendor name) every `every`, asking about at most
    /// `batch` sends per vendor and pass, none older than `window`.
    pub fn new(
        pullers: &HashMap<String, Arc<dyn ReceiptPull>>,
        deliveries: Arc<dyn DeliveryLog>,
        gateway: Arc<Gateway>,
        metrics: Arc<Metrics>,
        every: Duration,
        batch: u32,
        window: chrono::Duration,
    ) -> anyhow::Result<Self> {
        let mut vendors = Vec::new();
        for (name, vendor) in pullers {
            let id = VendorId::new(name)
                .map_err(|e| anyhow::anyhow!("vendors.{name}: {}", e.problem))?;
            vendors.push(Pulled {
                id,
                vendor: Arc::clone(vendor),
                cursor: None,
            });
        }
        vendors.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(Self {
            vendors,
            deliveries,
            gateway,
            metrics,
            every,
            batch,
            window,
        })
    }

    /// The vendors it pulls.
    pub fn vendors(&self) -> impl Iterator<Item = &VendorId> {
        self.vendors.iter().map(|v| &v.id)
    }

    /// Runs a pass every interval until `stop`; a pass under way finishes first, so
    /// that receipts a vendor handed out are stored.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.pass().await;
        }
    }

    /// Asks each vendor once; returns how many receipts came back.
    pub async fn pass(&mut self) -> usize {
        let mut received = 0;
        for index in 0..self.vendors.len() {
            received += self.pull_one(index).await;
        }
        received
    }

    async fn pull_one(&mut self, index: usize) -> usize {
        let now = Utc::now();
        let start = now - self.window;
        let pulled = &self.vendors[index];
        let after = pulled.cursor.filter(|c| *c > start).unwrap_or(start);
        let pending = match self
            .deliveries
            .unsettled(&pulled.id, after, now - MIN_AGE, self.batch)
            .await
        {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(vendor = %pulled.id, error = %e, "could not list sends waiting for receipts");
                return 0;
            }
        };
        // A full batch: the next pass goes on after it. Less: every waiting send was
        // asked about, and the next pass starts over.
        let next = (pending.len() >= self.batch as usize)
            .then(|| pending.last().map(|p| p.sent_at))
            .flatten();
        let reports = match pulled.vendor.pull_receipts(&pending).await {
            Ok(reports) => reports,
            Err(e) => {
                tracing::warn!(vendor = %pulled.id, error = %e, "pulling delivery receipts failed; trying again next pass");
                return 0;
            }
        };
        self.vendors[index].cursor = next;
        if reports.is_empty() {
            return 0;
        }
        // Tencent hands each receipt out once: keep trying while the store is briefly
        // unreachable rather than lose them.
        let mut result = self.deliveries.apply_reports(&reports, Utc::now()).await;
        let mut wait = STORE_RETRY_FIRST;
        for _ in 1..STORE_TRIES {
            if !matches!(result, Err(StoreError::Unavailable(_))) {
                break;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
            result = self.deliveries.apply_reports(&reports, Utc::now()).await;
        }
        match result {
            Ok(applied) => {
                self.metrics.receipts(&reports, &applied);
                self.gateway.receipts_applied(&reports, &applied).await;
                reports.len()
            }
            Err(e) => {
                tracing::warn!(vendor = %self.vendors[index].id, error = %e, receipts = reports.len(), "could not store pulled receipts");
                0
            }
        }
    }
}
