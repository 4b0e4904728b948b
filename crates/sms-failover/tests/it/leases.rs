//! Leases around a vendor call: a lease too short for the call and the write of its
//! outcome is renewed first, on the drain and on a keyed live send alike.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{
    Clock, DeferredQueue, IdempotencyKey, LimitError, MessageId, MessageStatus, NewMessage,
    OutboundSms, QueueReason, RateDecision, RateLimiter, Receipt, Vendor, VendorError, VendorId,
};
use sms_failover::{FailoverConfig, Gateway, SendOutcome, VendorEntry};

use crate::support::*;

/// A vendor whose every call takes `takes` of the manual clock, and which notes how
/// much of the message's lease was left when the call started.
struct TimedVendor {
    clock: Arc<ManualClock>,
    queue: Arc<MemoryQueue>,
    takes: Duration,
    calls: AtomicUsize,
    lease_left: Mutex<Vec<chrono::Duration>>,
}

#[async_trait]
impl Vendor for TimedVendor {
    fn id(&self) -> VendorId {
        VendorId::new("aliyun").unwrap()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let stored = self.queue.get(sms.id).await.unwrap();
        if let Some(lease) = stored.and_then(|m| m.lease) {
            let left = lease.expires_at - self.clock.now();
            self.lease_left.lock().unwrap().push(left);
        }
        self.clock.advance(self.takes);
        Ok(Receipt {
            vendor_message_id: sms.id.to_string(),
            billed_messages: 1,
            reported_billed: None,
            recipient_ids: Vec::new(),
        })
    }
}

/// A global limiter that lets everything through after `waits` of the manual clock.
struct SlowLimiter {
    clock: Arc<ManualClock>,
    waits: Duration,
}

#[async_trait]
impl RateLimiter for SlowLimiter {
    async fn acquire(&self, _permits: u32) -> Result<RateDecision, LimitError> {
        self.clock.advance(self.waits);
        Ok(RateDecision::Allowed)
    }
}

struct Setup {
    gateway: Gateway,
    vendor: Arc<TimedVendor>,
    queue: Arc<MemoryQueue>,
}

fn setup(config: FailoverConfig, call_takes: Duration, limiter_waits: Duration) -> Setup {
    let clock = Arc::new(ManualClock::new(start()));
    let queue = Arc::new(MemoryQueue::new());
    let vendor = Arc::new(TimedVendor {
        clock: clock.clone(),
        queue: queue.clone(),
        takes: call_takes,
        calls: AtomicUsize::new(0),
        lease_left: Mutex::new(Vec::new()),
    });
    let limiter = SlowLimiter {
        clock: clock.clone(),
        waits: limiter_waits,
    };
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: vendor.clone(),
            fees: flat(40_000),
        }],
        Arc::new(limiter),
        queue.clone(),
        Arc::new(MemoryLedger::new()),
    )
    .clock(clock)
    .config(config)
    .build()
    .unwrap();
    Setup {
        gateway,
        vendor,
        queue,
    }
}

#[tokio::test]
async fn a_drain_lane_behind_slow_calls_renews_the_lease_instead_of_giving_up() {
    // Leases of 8 s, calls of up to 5 s that take 2 s each, one lane: the third message
    // starts its call with 4 s of its lease left, too little for a call and its write.
    let config = FailoverConfig {
        lease: Duration::from_secs(8),
        attempt_timeout: Duration::from_secs(5),
        drain_concurrency: 1,
        ..config()
    };
    let s = setup(config, Duration::from_secs(2), Duration::ZERO);
    for _ in 0..3 {
        let message = NewMessage::queued(
            MessageId::at(start()),
            request(),
            QueueReason::RateLimited,
            10,
            start(),
        );
        s.queue.enqueue(message).await.unwrap();
    }
    let report = s.gateway.drain_once().await.unwrap();
    assert_eq!((report.sent, report.released), (3, 0), "{report:?}");
    let left = s.vendor.lease_left.lock().unwrap().clone();
    assert_eq!(left.len(), 3);
    assert!(
        left.iter().all(|l| *l >= chrono::Duration::seconds(5)),
        "every call started with its timeout covered: {left:?}"
    );
}

#[tokio::test]
async fn a_keyed_send_renews_a_lease_the_limiters_used_up_before_calling_the_vendor() {
    // The row is stored with a lease counted from the request's start; a global limiter
    // that takes 28 s leaves 2 s of it.
    let s = setup(config(), Duration::from_millis(10), Duration::from_secs(28));
    let keyed = request().with_idempotency_key(IdempotencyKey::new("k-lease").unwrap());
    let outcome = s.gateway.send(keyed).await.unwrap();
    let SendOutcome::Sent { id, .. } = outcome else {
        panic!("expected sent, found {outcome:?}");
    };
    assert_eq!(s.vendor.calls.load(Ordering::SeqCst), 1);
    let left = s.vendor.lease_left.lock().unwrap().clone();
    assert!(
        left[0] >= chrono::Duration::seconds(5),
        "the call started with {:?} of the lease left",
        left[0]
    );
    assert_eq!(
        s.queue.get(id).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
}
