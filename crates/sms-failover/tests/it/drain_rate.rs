//! The drain keeps as many sends in flight as the global limit and the vendors'
//! latency call for, not a fixed handful.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{
    DeferredQueue, LimitError, MessageId, MessageStatus, NewMessage, OutboundSms, QueueReason,
    RateDecision, RateLimiter, Receipt, Vendor, VendorError, VendorId,
};
use sms_failover::{Gateway, VendorEntry};

use crate::support::*;

/// A vendor that answers after `latency` and notes the most calls it had at once.
struct SlowVendor {
    latency: Duration,
    in_flight: AtomicUsize,
    most_at_once: AtomicUsize,
}

#[async_trait]
impl Vendor for SlowVendor {
    fn id(&self) -> VendorId {
        VendorId::new("aliyun").unwrap()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(Receipt {
            vendor_message_id: sms.id.to_string(),
            billed_messages: 1,
            reported_billed: None,
            recipient_ids: Vec::new(),
        })
    }
}

/// A global limit of `per_second` that never has to say no in this test: it tells the
/// gateway the rate, and lets every send through.
struct Rated {
    per_second: u32,
}

#[async_trait]
impl RateLimiter for Rated {
    async fn acquire(&self, _permits: u32) -> Result<RateDecision, LimitError> {
        Ok(RateDecision::Allowed)
    }

    fn capacity(&self) -> Option<u32> {
        Some(self.per_second)
    }

    fn window(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}

#[tokio::test(start_paused = true)]
async fn the_drain_keeps_limit_times_latency_sends_in_flight() {
    // 1,000/s and 100 ms calls: about 90 in flight (90% of the limit) drain 2,000
    // messages in a little over 2 s; 8 at a time would take 25 s.
    let vendor = Arc::new(SlowVendor {
        latency: Duration::from_millis(100),
        in_flight: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
    });
    let queue = Arc::new(MemoryQueue::new());
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: vendor.clone(),
            fees: flat(40_000),
        }],
        Arc::new(Rated { per_second: 1_000 }),
        queue.clone(),
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .unwrap();
    for _ in 0..2_000 {
        let message = NewMessage::queued(
            MessageId::at(start()),
            request(),
            QueueReason::RateLimited,
            10,
            start(),
        );
        queue.enqueue(message).await.unwrap();
    }
    let began = tokio::time::Instant::now();
    while queue.stats().await.unwrap().get(MessageStatus::Queued) > 0 {
        gateway.drain_once().await.unwrap();
    }
    let took = began.elapsed();
    assert_eq!(queue.stats().await.unwrap().get(MessageStatus::Sent), 2_000);
    let most = vendor.most_at_once.load(Ordering::SeqCst);
    println!(
        "drain-rate-figures {{\"most_at_once\":{most},\"seconds\":{:.2}}}",
        took.as_secs_f64()
    );
    assert!((80..=100).contains(&most), "{most} sends at once");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}
