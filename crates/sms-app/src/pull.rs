//! Pulling delivery receipts from vendors that are not set up to push them.
//!
//! A real Aliyun or Tencent vendor without a receipt secret (so without a push
//! endpoint) is asked for its receipts every `receipts.pull_interval_s`: Tencent hands
//! out the receipts it holds (`PullSmsSendStatus`), Aliyun is asked about each send
//! still without one (`QuerySendDetails`), at most `receipts.pull_batch` per pass,
//! oldest first. The passes walk the sends of the last `receipts.unknown_after_s` a
//! batch at a time (sends that share a time included: the recipients of one message do)
//! and start a new round when they reach the newest, so every waiting send is asked
//! about once per round. What comes back takes the push's path: the delivery log, the
//! metrics, and the gateway (callbacks, receipt-aware failover, re-sends).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{DeliveryLog, PendingDelivery, ReceiptPull, StoreError, VendorId};
use sms_failover::{Gateway, retry_while_unavailable};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Sends younger than this are not asked about yet: their receipts take seconds.
const MIN_AGE: chrono::Duration = chrono::Duration::seconds(5);
/// Tries to store pulled receipts while the store is unreachable: 200 ms doubling,
/// about 6 s in all.
const STORE_TRIES: u32 = 6;
const STORE_RETRY_FIRST: Duration = Duration::from_millis(200);
const STORE_RETRY_MAX: Duration = Duration::from_millis(3200);

/// Where a round of a vendor's pulls has got to: the send time of the last batch's
/// last send, and the sends at exactly that time already asked about (the sends of
/// one message share their time, and may not fit in one batch).
#[derive(Debug, Clone, Default, PartialEq)]
struct Cursor {
    at: Option<DateTime<Utc>>,
    asked_at: HashSet<(String, String)>,
}

impl Cursor {
    /// The cursor after a batch that started from `self` and asked about `batch`.
    fn after(mut self, batch: &[PendingDelivery]) -> Self {
        let Some(last) = batch.last().map(|p| p.sent_at) else {
            return self;
        };
        if self.at != Some(last) {
            self.asked_at.clear();
            self.at = Some(last);
        }
        self.asked_at.extend(
            batch
                .iter()
                .filter(|p| p.sent_at == last)
                .map(|p| (p.vendor_message_id.clone(), p.recipient.as_str().to_owned())),
        );
        self
    }

    /// Whether `send` was asked about in this round already.
    fn asked(&self, send: &PendingDelivery) -> bool {
        self.at == Some(send.sent_at)
            && self.asked_at.contains(&(
                send.vendor_message_id.clone(),
                send.recipient.as_str().to_owned(),
            ))
    }
}

/// The next `batch` sends of `vendor` to ask about, accepted between `start` and
/// `before`, after `cursor`; and the cursor after them (back at the start when the
/// round is over).
async fn next_batch(
    deliveries: &dyn DeliveryLog,
    vendor: &VendorId,
    cursor: &Cursor,
    start: DateTime<Utc>,
    before: DateTime<Utc>,
    batch: u32,
) -> Result<(Vec<PendingDelivery>, Cursor), StoreError> {
    let cursor = match cursor.at {
        Some(at) if at > start => cursor.clone(),
        _ => Cursor::default(),
    };
    // From just before the cursor's time, so that the sends sharing it which the last
    // batch had no room for come again; those it asked about are skipped.
    let after = cursor
        .at
        .map_or(start, |at| at - chrono::Duration::microseconds(1));
    let skipped = u32::try_from(cursor.asked_at.len()).unwrap_or(u32::MAX);
    let listed = deliveries
        .unsettled(vendor, after, before, batch.saturating_add(skipped))
        .await?;
    let pending: Vec<PendingDelivery> = listed
        .into_iter()
        .filter(|p| !cursor.asked(p))
        .take(batch as usize)
        .collect();
    // A full batch: the next pass goes on after it. Less: every waiting send was asked
    // about, and the next pass starts a new round at the oldest.
    let next = if pending.len() >= batch as usize {
        cursor.after(&pending)
    } else {
        Cursor::default()
    };
    Ok((pending, next))
}

/// One vendor that is pulled, and where its round has got to.
struct Pulled {
    id: VendorId,
    vendor: Arc<dyn ReceiptPull>,
    cursor: Cursor,
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
                cursor: Cursor::default(),
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
        let pulled = &self.vendors[index];
        let (pending, next) = match next_batch(
            self.deliveries.as_ref(),
            &pulled.id,
            &pulled.cursor,
            now - self.window,
            now - MIN_AGE,
            self.batch,
        )
        .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(vendor = %pulled.id, error = %e, "could not list sends waiting for receipts");
                return 0;
            }
        };
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
        let result = retry_while_unavailable(
            STORE_TRIES,
            STORE_RETRY_FIRST,
            STORE_RETRY_MAX,
            "storing pulled receipts",
            || self.deliveries.apply_reports(&reports, Utc::now()),
        )
        .await;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use sms_core::testing::MemoryDeliveryLog;
    use sms_core::{MessageId, PhoneNumber, SentDelivery};

    use super::*;

    #[tokio::test]
    async fn a_round_asks_about_every_waiting_send_once_even_when_many_share_a_time() {
        let log = MemoryDeliveryLog::new();
        let vendor = VendorId::new("aliyun").unwrap();
        let t0 = Utc::now() - chrono::Duration::minutes(10);
        let (one_message, later) = (t0, t0 + chrono::Duration::seconds(1));
        let send = |i: usize, at| SentDelivery {
            message_id: MessageId::new(),
            recipient: PhoneNumber::parse(&format!("+86138{i:08}")).unwrap(),
            vendor: vendor.clone(),
            vendor_message_id: format!("biz-{}", i / 1000),
            sent_at: at,
            callback_url: None,
            billed_segments: None,
        };
        // 250 recipients of one message at one instant, then 50 sent a second later.
        let mut sends: Vec<SentDelivery> = (0..250).map(|i| send(i, one_message)).collect();
        sends.extend((1000..1050).map(|i| send(i, later)));
        log.record_sent(&sends).await.unwrap();

        let (start, before) = (t0 - chrono::Duration::hours(1), Utc::now());
        let mut asked: HashMap<String, u32> = HashMap::new();
        let mut cursor = Cursor::default();
        let mut sizes = Vec::new();
        for _ in 0..4 {
            let (batch, next) = next_batch(&log, &vendor, &cursor, start, before, 100)
                .await
                .unwrap();
            sizes.push(batch.len());
            for p in &batch {
                *asked.entry(p.recipient.as_str().to_owned()).or_default() += 1;
            }
            cursor = next;
        }
        assert_eq!(
            sizes,
            [100, 100, 100, 0],
            "three full batches, then the round ends"
        );
        assert_eq!(asked.len(), 300, "every waiting send was asked about");
        assert!(asked.values().all(|n| *n == 1), "each once in the round");
        assert_eq!(
            cursor,
            Cursor::default(),
            "the next round starts at the oldest"
        );
        let (again, _) = next_batch(&log, &vendor, &cursor, start, before, 100)
            .await
            .unwrap();
        assert_eq!(again.len(), 100);
    }
}
