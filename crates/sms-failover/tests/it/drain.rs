//! The drain: claims under a lease, sends through the same path, backs off, caps
//! attempts, never double-sends, and runs on its own task.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sms_core::mocks::MockDeferredQueue;
use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{
    DeferredQueue, Lease, LeaseToken, MessageId, MessageStatus, NewMessage, QueueReason,
    StoreError, StoredMessage, VendorError,
};
use sms_failover::{FailoverConfig, Gateway, GatewayEvent, SendOutcome, VendorEntry};

use crate::support::*;

async fn queue_one(h: &Harness) -> MessageId {
    let id = MessageId::new();
    h.queue
        .enqueue(NewMessage::queued(
            id,
            request(),
            QueueReason::RateLimited,
            10,
            start(),
        ))
        .await
        .unwrap();
    id
}

async fn status_of(h: &Harness, id: MessageId) -> MessageStatus {
    h.queue.get(id).await.unwrap().expect("stored").status
}

#[tokio::test]
async fn a_drain_sends_due_messages_and_marks_them_sent_without_new_rows() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let ids = [queue_one(&h).await, queue_one(&h).await];
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!((report.claimed, report.sent), (2, 2));
    for id in ids {
        let m = h.queue.get(id).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Sent);
        assert_eq!(m.last_vendor.unwrap().as_str(), "aliyun");
    }
    settle().await;
    let stats = h.queue.stats().await.unwrap();
    assert_eq!(
        (stats.sent, stats.queued),
        (2, 0),
        "no second row per message"
    );
    assert_eq!(h.vendor("aliyun").calls(), 2);
    // Drained sends go through the limiter and the ledger like live ones.
    assert_eq!(h.limiter.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(h.gateway.vendors()[0].billed_this_period, 2);
    let drained = h
        .events
        .events()
        .into_iter()
        .filter(|e| matches!(e, GatewayEvent::Delivered { drained: true, .. }))
        .count();
    assert_eq!(drained, 2);
}

#[tokio::test]
async fn a_failing_message_dies_once_out_of_attempts_and_past_the_retry_horizon() {
    // A message that keeps failing must not be retried forever, nor given up while it
    // is younger than the retry horizon.
    let h = Harness::new(
        &[("aliyun", 45_000)],
        FailoverConfig {
            max_attempts: 3,
            retry_horizon: Duration::from_secs(3600),
            consecutive_failures: 100,
            backoff_max: Duration::from_secs(10),
            ..config()
        },
    );
    h.vendor("aliyun").always(transient());
    let id = MessageId::new();
    h.queue
        .enqueue(NewMessage::queued(
            id,
            request(),
            QueueReason::VendorFailed,
            3,
            start(),
        ))
        .await
        .unwrap();
    for attempt in 1..=4u32 {
        if attempt == 4 {
            // Out of attempts, but only dead once the horizon has passed: then it is
            // buried when claimed, without another vendor call.
            h.clock.set(start() + chrono::Duration::seconds(3600));
        }
        let report = h.gateway.drain_once().await.unwrap();
        assert_eq!(report.claimed, 1, "attempt {attempt}");
        let m = h.queue.get(id).await.unwrap().unwrap();
        assert_eq!(m.attempts, attempt);
        if attempt < 4 {
            assert_eq!(report.requeued, 1, "attempt {attempt}");
            assert_eq!(m.status, MessageStatus::Queued);
            assert!(m.next_attempt_at <= start_plus(&h, 10), "backoff is capped");
            assert!(m.last_error.as_deref().unwrap().contains("503"));
        } else {
            assert_eq!(report.dead, 1);
            assert_eq!(m.status, MessageStatus::Dead);
            assert!(m.last_error.as_deref().unwrap().contains("retry horizon"));
        }
        h.clock.advance(Duration::from_secs(11));
    }
    assert_eq!(h.gateway.drain_once().await.unwrap().claimed, 0);
    assert_eq!(h.vendor("aliyun").calls(), 3);
    assert!(h.events.events().contains(&GatewayEvent::Dead { id }));
}

#[tokio::test]
async fn with_no_retry_horizon_the_attempts_alone_decide() {
    let h = Harness::new(
        &[("aliyun", 45_000)],
        FailoverConfig {
            max_attempts: 2,
            retry_horizon: Duration::ZERO,
            consecutive_failures: 100,
            ..config()
        },
    );
    h.vendor("aliyun").always(transient());
    let id = MessageId::new();
    h.queue
        .enqueue(NewMessage::queued(
            id,
            request(),
            QueueReason::VendorFailed,
            2,
            start(),
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        h.gateway.drain_once().await.unwrap();
        h.clock.advance(Duration::from_secs(400));
    }
    let m = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (MessageStatus::Dead, 2));
}

fn start_plus(h: &Harness, secs: i64) -> chrono::DateTime<Utc> {
    use sms_core::Clock;
    h.clock.now() + chrono::Duration::seconds(secs)
}

#[tokio::test]
async fn a_message_not_yet_due_waits_for_its_backoff() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let id = MessageId::new();
    let mut m = NewMessage::queued(id, request(), QueueReason::VendorFailed, 10, start());
    m.next_attempt_at = start() + chrono::Duration::seconds(5);
    h.queue.enqueue(m).await.unwrap();
    assert_eq!(h.gateway.drain_once().await.unwrap().claimed, 0);
    h.clock.advance(Duration::from_secs(5));
    assert_eq!(h.gateway.drain_once().await.unwrap().sent, 1);
}

#[tokio::test]
async fn a_rejected_message_dies_at_once() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    h.vendor("aliyun").then(Step::Fail(VendorError::Rejected {
        code: "bad".into(),
        message: "no template".into(),
    }));
    let id = queue_one(&h).await;
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(report.dead, 1);
    assert_eq!(status_of(&h, id).await, MessageStatus::Dead);
}

#[tokio::test]
async fn a_drained_message_refused_for_our_credentials_backs_off_instead_of_dying() {
    // The vendor's keys are at fault, not the message: it must wait for a vendor that
    // takes it, and the refusal counts against the vendor.
    let h = Harness::new(
        &[("aliyun", 45_000)],
        FailoverConfig {
            consecutive_failures: 100,
            backoff_max: Duration::from_secs(10),
            ..config()
        },
    );
    h.vendor("aliyun").then(unauthorized());
    let id = queue_one(&h).await;
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!((report.requeued, report.dead), (1, 0));
    let m = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Queued);
    assert_eq!(m.attempts, 1);
    assert!(m.next_attempt_at <= start_plus(&h, 10), "backoff is capped");
    assert!(
        m.last_error
            .as_deref()
            .unwrap()
            .contains("InvalidAccessKeyId.NotFound")
    );
    assert_eq!(h.failures_of("aliyun"), 1);
    assert!(!h.events.events().contains(&GatewayEvent::Dead { id }));

    // Once the operator fixes the keys, the retry goes out.
    h.clock.advance(Duration::from_secs(11));
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(report.sent, 1);
    assert_eq!(status_of(&h, id).await, MessageStatus::Sent);
}

#[tokio::test]
async fn an_expired_message_is_expired_not_sent() {
    // A login code that arrives minutes late is worse than none.
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let id = MessageId::new();
    let request = request().with_expiry(start() + chrono::Duration::seconds(60));
    h.queue
        .enqueue(NewMessage::queued(
            id,
            request,
            QueueReason::RateLimited,
            10,
            start(),
        ))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(61));
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(status_of(&h, id).await, MessageStatus::Expired);
    assert_eq!(h.vendor("aliyun").calls(), 0);
    assert!(h.events.events().contains(&GatewayEvent::Expired { id }));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_drain_gives_messages_back_without_counting_an_attempt() {
    let queue = Arc::new(MemoryQueue::new());
    let vendor = FakeVendor::new("aliyun");
    let mut limiter = sms_core::mocks::MockRateLimiter::new();
    limiter.expect_capacity().return_const(None::<u32>);
    limiter
        .expect_window()
        .return_const(None::<std::time::Duration>);
    // Limited for longer than a drained message waits for it (1 s in all).
    limiter.expect_acquire_lane().times(1..).returning(|_, _| {
        Ok(sms_core::RateDecision::Limited {
            retry_after: Duration::from_millis(400),
        })
    });
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: vendor.clone(),
            fees: flat(45_000),
        }],
        Arc::new(limiter),
        queue.clone(),
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = MessageId::new();
        queue
            .enqueue(NewMessage::queued(
                id,
                request(),
                QueueReason::RateLimited,
                10,
                start(),
            ))
            .await
            .unwrap();
        ids.push(id);
    }
    let report = gateway.drain_once().await.unwrap();
    // The limiter said no once: the pass stops and every claimed message goes back.
    assert_eq!((report.claimed, report.released, report.sent), (3, 3, 0));
    for id in ids {
        let m = queue.get(id).await.unwrap().unwrap();
        assert_eq!((m.status, m.attempts), (MessageStatus::Queued, 0));
    }
    assert_eq!(vendor.calls(), 0);
}

fn leased(id: MessageId, token: LeaseToken) -> StoredMessage {
    StoredMessage {
        id,
        request: request(),
        status: MessageStatus::Leased,
        reason: QueueReason::RateLimited,
        attempts: 1,
        max_attempts: 10,
        next_attempt_at: start(),
        lease: Some(Lease {
            owner: "test".into(),
            token,
            expires_at: start() + chrono::Duration::seconds(30),
        }),
        last_vendor: None,
        last_error: None,
        may_duplicate: false,
        pinned_vendor: None,
        created_at: start(),
        updated_at: start(),
    }
}

#[tokio::test]
async fn a_lost_lease_is_counted_and_not_retried() {
    let id = MessageId::new();
    let token = LeaseToken::new();
    let mut queue = MockDeferredQueue::new();
    let mut first = true;
    queue.expect_claim_lanes().returning(move |_, _, _, _, _| {
        let batch = if first {
            vec![leased(id, token)]
        } else {
            vec![]
        };
        first = false;
        Ok(batch)
    });
    queue.expect_complete_many().times(1).returning(|batch| {
        Ok(batch
            .iter()
            .map(|c| Err(StoreError::LeaseLost(c.id)))
            .collect())
    });
    let vendor = FakeVendor::new("aliyun");
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: vendor.clone(),
            fees: flat(45_000),
        }],
        Arc::new(AllowAll::default()),
        Arc::new(queue),
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .unwrap();
    let report = gateway.drain_once().await.unwrap();
    assert_eq!((report.claimed, report.sent, report.lease_lost), (1, 0, 1));
    assert_eq!(vendor.calls(), 1);
}

#[tokio::test]
async fn a_claim_failure_is_reported_to_the_caller() {
    let mut queue = MockDeferredQueue::new();
    queue
        .expect_claim_lanes()
        .returning(|_, _, _, _, _| Err(StoreError::unavailable("down")));
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: FakeVendor::new("aliyun"),
            fees: flat(45_000),
        }],
        Arc::new(AllowAll::default()),
        Arc::new(queue),
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .unwrap();
    assert!(matches!(
        gateway.drain_once().await,
        Err(StoreError::Unavailable(_))
    ));
}

// Worker threads make the tasks really run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_draining_one_queue_never_send_a_message_twice() {
    // Drains of several instances share one queue; a claimed message is sent by one.
    let queue = Arc::new(MemoryQueue::new());
    let a = Harness::with_fees(
        vec![FakeVendor::new("aliyun")],
        vec![flat(45_000)],
        FailoverConfig {
            instance_id: "a".into(),
            drain_batch: 7,
            ..config()
        },
        queue.clone(),
    );
    let b = Harness::with_fees(
        vec![FakeVendor::new("aliyun")],
        vec![flat(45_000)],
        FailoverConfig {
            instance_id: "b".into(),
            drain_batch: 7,
            ..config()
        },
        queue.clone(),
    );
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(queue_one(&a).await);
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        for h in [&a, &b] {
            let gateway = h.gateway.clone();
            tasks.push(tokio::spawn(
                async move { gateway.drain_once().await.unwrap() },
            ));
        }
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap().sent;
    }
    assert_eq!(sent, 200);
    let mut delivered: Vec<MessageId> = a.vendors[0]
        .received()
        .into_iter()
        .chain(b.vendors[0].received())
        .map(|sms| sms.id)
        .collect();
    delivered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(delivered, expected, "each message exactly once");
}

#[tokio::test]
async fn after_a_switch_the_failed_message_is_retried_at_once_on_the_new_vendor() {
    // A request whose failure made the gateway switch is retried on the new vendor at
    // once, without waiting for its backoff or for the caller to retry.
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], config());
    h.vendor("aliyun").always(transient());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let SendOutcome::Queued { id, .. } = h.gateway.send(request()).await.unwrap() else {
            panic!("expected Queued");
        };
        ids.push(id);
    }
    assert_eq!(h.current(), "tencent");
    // The message whose failure caused the switch is due now; the other backs off.
    let report = h.gateway.drain_once().await.unwrap();
    assert!(report.sent >= 1);
    let switched = h.queue.get(ids[1]).await.unwrap().unwrap();
    assert_eq!(switched.status, MessageStatus::Sent);
    assert_eq!(switched.last_vendor.unwrap().as_str(), "tencent");
    assert_eq!(h.vendor("tencent").received()[0].id, ids[1]);
}

#[tokio::test(start_paused = true)]
async fn the_drainer_retries_stored_messages_without_new_traffic() {
    // Stored messages are retried on the drainer's tick even when no new request
    // arrives to trigger a pass.
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let drainer = h.gateway.start_drainer();
    settle().await;
    let id = queue_one(&h).await;
    assert_eq!(h.vendor("aliyun").calls(), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    settle().await;
    assert_eq!(status_of(&h, id).await, MessageStatus::Sent);
    drainer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_drainer_drains_at_start_up() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let id = queue_one(&h).await;
    let drainer = h.gateway.start_drainer();
    settle().await;
    assert_eq!(status_of(&h, id).await, MessageStatus::Sent);
    drainer.shutdown().await;
}

/// A harness whose drainer ticks once an hour: within a test, only start-up and asks run
/// passes.
fn without_ticks() -> Harness {
    Harness::new(
        &[("aliyun", 45_000)],
        FailoverConfig {
            drain_interval: Duration::from_secs(3600),
            ..config()
        },
    )
}

#[tokio::test(start_paused = true)]
async fn a_fast_success_wakes_the_drainer_before_its_tick() {
    let h = without_ticks();
    let drainer = h.gateway.start_drainer();
    settle().await;
    let id = queue_one(&h).await;
    h.gateway.send(request()).await.unwrap();
    // The start-up pass found nothing, so the asked-for pass waits until 100 ms after it.
    tokio::time::sleep(Duration::from_millis(99)).await;
    settle().await;
    assert_eq!(
        status_of(&h, id).await,
        MessageStatus::Queued,
        "a pass right after an empty one waits for the gap"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    settle().await;
    assert_eq!(status_of(&h, id).await, MessageStatus::Sent);
    drainer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_fast_success_after_a_busy_pass_wakes_the_drainer_at_once() {
    let h = without_ticks();
    let first = queue_one(&h).await;
    let drainer = h.gateway.start_drainer();
    settle().await;
    assert_eq!(
        h.queue.get(first).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
    let id = queue_one(&h).await;
    h.gateway.send(request()).await.unwrap();
    settle().await;
    assert_eq!(status_of(&h, id).await, MessageStatus::Sent);
    drainer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_the_send_in_flight_and_gives_back_the_rest() {
    let h = Harness::new(
        &[("aliyun", 45_000)],
        FailoverConfig {
            drain_concurrency: 1,
            ..config()
        },
    );
    h.vendor("aliyun")
        .then(Step::OkAfter(Duration::from_millis(500)));
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(queue_one(&h).await);
    }
    let drainer = h.gateway.start_drainer();
    // Let the drainer claim the batch and start the first (slow) send.
    while h.vendor("aliyun").calls() == 0 {
        tokio::task::yield_now().await;
    }
    drainer.shutdown().await;
    assert_eq!(h.vendor("aliyun").calls(), 1);
    let mut sent = 0;
    for id in ids {
        let m = h.queue.get(id).await.unwrap().unwrap();
        match m.status {
            MessageStatus::Sent => sent += 1,
            MessageStatus::Queued => assert_eq!(m.attempts, 0, "released unattempted"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(sent, 1);
}

#[tokio::test(start_paused = true)]
async fn a_drained_timeout_is_requeued_as_may_duplicate() {
    let h = Harness::new(
        &[("aliyun", 45_000)],
        FailoverConfig {
            consecutive_failures: 10,
            ..config()
        },
    );
    h.vendor("aliyun").then(Step::Hang);
    let id = queue_one(&h).await;
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(report.requeued, 1);
    let m = h.queue.get(id).await.unwrap().unwrap();
    assert!(m.may_duplicate);
    assert_eq!(m.status, MessageStatus::Queued);
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_sent_on_several_lanes_at_once() {
    let h = Harness::new(
        &[("aliyun", 45_000)],
        FailoverConfig {
            drain_concurrency: 4,
            ..config()
        },
    );
    // Each send waits until four are in flight: only concurrent lanes get through.
    h.vendor("aliyun")
        .gate(Arc::new(tokio::sync::Barrier::new(4)));
    for _ in 0..8 {
        queue_one(&h).await;
    }
    let report = tokio::time::timeout(Duration::from_secs(3), h.gateway.drain_once())
        .await
        .expect("the lanes did not run together")
        .unwrap();
    assert_eq!((report.claimed, report.sent), (8, 8));
}
