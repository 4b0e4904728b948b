//! A request the global limit can never let through is refused, not stored to wait for
//! ever, and one such message already queued never holds up a drain pass.

use std::sync::Arc;
use std::time::Duration;

use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{DeferredQueue, MessageId, MessageStatus, NewMessage, QueueReason, SendError};
use sms_failover::{Gateway, VendorEntry};
use sms_limit::InProcessLimiter;

use crate::support::{FakeVendor, config, flat, request_to, start};

/// A gateway whose global limit allows 2 messages a second.
fn gateway(queue: Arc<MemoryQueue>) -> (Gateway, Arc<FakeVendor>) {
    let vendor = FakeVendor::new("aliyun");
    let limiter = InProcessLimiter::new(2, Duration::from_secs(1)).expect("a limiter");
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: vendor.clone(),
            fees: flat(40_000),
        }],
        Arc::new(limiter),
        queue,
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .expect("a gateway");
    (gateway, vendor)
}

#[tokio::test]
async fn more_recipients_than_the_global_limit_allows_are_refused_at_intake() {
    let queue = Arc::new(MemoryQueue::new());
    let (gateway, vendor) = gateway(queue.clone());
    let e = gateway.send(request_to(3)).await.unwrap_err();
    let SendError::Invalid(v) = &e else {
        panic!("expected a refusal naming the recipients, found {e:?}")
    };
    assert_eq!(v.field, "recipients");
    assert!(v.problem.contains("2"), "{v}");
    assert_eq!(queue.stats().await.unwrap().queued, 0, "nothing is stored");
    assert_eq!(vendor.calls(), 0);
    // Within the limit, it goes.
    gateway.send(request_to(2)).await.unwrap();
}

#[tokio::test]
async fn a_queued_message_too_large_for_the_limit_is_dead_and_the_pass_goes_on() {
    let queue = Arc::new(MemoryQueue::new());
    let (gateway, vendor) = gateway(queue.clone());
    let now = start();
    let too_large = MessageId::at(now);
    let small = MessageId::at(now);
    for (id, request) in [(too_large, request_to(3)), (small, request_to(1))] {
        let message = NewMessage::queued(id, request, QueueReason::RateLimited, 10, now);
        queue.enqueue(message).await.unwrap();
    }
    let report = gateway.drain_once().await.unwrap();
    assert_eq!(
        (report.sent, report.dead, report.released),
        (1, 1, 0),
        "{report:?}"
    );
    let dead = queue.get(too_large).await.unwrap().unwrap();
    assert_eq!(dead.status, MessageStatus::Dead);
    assert!(
        dead.last_error.as_deref().unwrap().contains("global limit"),
        "{dead:?}"
    );
    assert_eq!(vendor.calls(), 1);
}
