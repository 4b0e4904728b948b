use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sms_core::mocks::{MockDeferredQueue, MockRateLimiter, MockVendor};
use sms_core::testing::{ManualClock, MemoryLedger};
use sms_core::{
    FeeSchedule, Lease, MessageStatus, Money, QueueReason, RateDecision, Receipt, SmsRequest,
    VendorId,
};

use super::*;
use crate::config::FailoverConfig;
use crate::gateway::VendorEntry;

struct Flat;

impl FeeSchedule for Flat {
    fn price_at(&self, _billed_volume: u64) -> Money {
        Money::from_micros(40_000)
    }
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).expect("a valid time")
}

fn leased(now: DateTime<Utc>) -> StoredMessage {
    let id = MessageId::new();
    StoredMessage {
        id,
        request: SmsRequest::new("login", ["1"], ["+8613800138000"]).expect("a request"),
        status: MessageStatus::Leased,
        reason: QueueReason::RateLimited,
        attempts: 1,
        max_attempts: 10,
        next_attempt_at: now,
        lease: Some(Lease {
            owner: "test".into(),
            token: LeaseToken::new(),
            expires_at: now + chrono::Duration::seconds(30),
        }),
        last_vendor: None,
        last_error: None,
        may_duplicate: false,
        pinned_vendor: None,
        created_at: now,
        updated_at: now,
    }
}

/// The next batch is claimed while the current one is marked sent; when the drainer
/// is stopped meanwhile, that batch goes back unattempted instead of being sent.
#[tokio::test]
async fn a_batch_claimed_ahead_is_released_when_the_drainer_stops() {
    let stop = CancellationToken::new();
    let first: Vec<StoredMessage> = (0..2).map(|_| leased(start())).collect();
    let ahead: Vec<StoredMessage> = (0..2).map(|_| leased(start())).collect();
    let first_ids: Vec<MessageId> = first.iter().map(|m| m.id).collect();
    let ahead_ids: Vec<MessageId> = ahead.iter().map(|m| m.id).collect();

    let mut queue = MockDeferredQueue::new();
    let claims = AtomicUsize::new(0);
    let batches = Mutex::new(vec![ahead, first]);
    let stopper = stop.clone();
    queue
        .expect_claim_lanes()
        .times(2)
        .returning(move |_, _, _, _, _| {
            if claims.fetch_add(1, Ordering::SeqCst) == 1 {
                // The claim ahead: the drainer is told to stop while it runs.
                stopper.cancel();
            }
            Ok(lock(&batches).pop().expect("two batches"))
        });
    let expected = first_ids.clone();
    queue
        .expect_complete_many()
        .times(1)
        .withf(move |done| done.iter().map(|c| c.id).collect::<Vec<_>>() == expected)
        .returning(|done| Ok(done.iter().map(|_| Ok(())).collect()));
    let released = Arc::new(Mutex::new(Vec::new()));
    let seen = released.clone();
    queue.expect_release().times(2).returning(move |id, _, _| {
        lock(&seen).push(id);
        Ok(())
    });

    let mut vendor = MockVendor::new();
    vendor.expect_split_send_time().return_const(None);
    vendor
        .expect_id()
        .returning(|| VendorId::new("aliyun").expect("an id"));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sent_by_vendor = sent.clone();
    vendor.expect_send().returning(move |sms| {
        lock(&sent_by_vendor).push(sms.id);
        Ok(Receipt {
            vendor_message_id: String::new(),
            billed_messages: 1,
            reported_billed: None,
            recipient_ids: Vec::new(),
        })
    });
    let mut limiter = MockRateLimiter::new();
    limiter.expect_capacity().return_const(None::<u32>);
    limiter
        .expect_window()
        .return_const(None::<std::time::Duration>);
    limiter
        .expect_acquire_lane()
        .returning(|_, _| Ok(RateDecision::Allowed));
    let config = FailoverConfig {
        drain_batch: 2,
        drain_concurrency: 1,
        ..FailoverConfig::default()
    };
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: Arc::new(vendor),
            fees: Arc::new(Flat),
        }],
        Arc::new(limiter),
        Arc::new(queue),
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config)
    .build()
    .expect("a gateway");

    let report = gateway.drain(&stop).await.expect("a drain pass");
    assert_eq!(
        (report.claimed, report.sent, report.released),
        (4, 2, 2),
        "{report:?}"
    );
    assert_eq!(*lock(&sent), first_ids);
    assert_eq!(*lock(&released), ahead_ids);
}
