//! The live send path: limits, expiry, idempotency and how each vendor answer is handled.

use std::sync::Arc;
use std::time::Duration;

use sms_core::mocks::{MockDeferredQueue, MockRateLimiter, MockRecipientLimiter};
use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{
    DeferredQueue, IdempotencyKey, LimitError, MessageStatus, QueueReason, RateDecision,
    RecipientDecision, SendError, StoreError, UsageLedger, VendorError,
};
use sms_failover::{
    AttemptOutcome, FailoverConfig, Gateway, GatewayEvent, SendOutcome, TimeoutPolicy, VendorEntry,
};

use crate::support::*;

fn gateway_with(
    vendor: Arc<FakeVendor>,
    limiter: MockRateLimiter,
    recipients: Option<MockRecipientLimiter>,
    queue: Arc<dyn DeferredQueue>,
) -> Gateway {
    let mut builder = Gateway::builder(
        vec![VendorEntry {
            vendor,
            fees: flat(45_000),
        }],
        Arc::new(limiter),
        queue,
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config());
    if let Some(recipients) = recipients {
        builder = builder.recipient_limiter(Arc::new(recipients));
    }
    builder.build().unwrap()
}

fn limited() -> MockRateLimiter {
    let mut limiter = MockRateLimiter::new();
    limiter.expect_capacity().return_const(None::<u32>);
    limiter
        .expect_window()
        .return_const(None::<std::time::Duration>);
    limiter.expect_acquire_lane().returning(|_, _| {
        Ok(RateDecision::Limited {
            retry_after: Duration::from_millis(300),
        })
    });
    limiter
}

#[tokio::test]
async fn a_recipient_over_its_limit_is_refused_masked_and_nothing_is_queued_or_sent() {
    let vendor = FakeVendor::new("aliyun");
    let mut recipients = MockRecipientLimiter::new();
    recipients.expect_check().times(1).returning(|numbers| {
        assert_eq!(numbers.len(), 2);
        Ok(vec![
            RecipientDecision::Allowed,
            RecipientDecision::Limited {
                window: Duration::from_secs(60),
                limit: 1,
                retry_after: Duration::from_secs(42),
            },
        ])
    });
    // The allowed first recipient's count goes back: the request was refused.
    let first = request_to(2).recipients()[0].clone();
    recipients
        .expect_give_back()
        .times(1)
        .withf(move |numbers| numbers == [first.clone()])
        .returning(|_| Ok(()));
    let mut limiter = MockRateLimiter::new();
    limiter.expect_capacity().return_const(None::<u32>);
    limiter
        .expect_window()
        .return_const(None::<std::time::Duration>);
    limiter.expect_acquire_lane().never();
    let queue = Arc::new(MemoryQueue::new());
    let gateway = gateway_with(vendor.clone(), limiter, Some(recipients), queue.clone());
    let err = gateway.send(request_to(2)).await.unwrap_err();
    match &err {
        SendError::RecipientLimited {
            recipient,
            limit,
            window,
            retry_after,
        } => {
            assert_eq!(recipient, "+86138****0001");
            assert_eq!((*limit, *window), (1, Duration::from_secs(60)));
            assert_eq!(*retry_after, Duration::from_secs(42));
        }
        other => panic!("expected RecipientLimited, found {other:?}"),
    }
    assert!(!err.to_string().contains("8613800100001"));
    assert_eq!(vendor.calls(), 0);
    assert_eq!(queue.stats().await.unwrap(), Default::default());
}

#[tokio::test]
async fn a_globally_limited_request_is_queued_and_the_caller_is_told_so() {
    // A caller told "error" would retry, and the stored message would still go out
    // later: the caller is told it is queued.
    let vendor = FakeVendor::new("aliyun");
    let queue = Arc::new(MemoryQueue::new());
    let gateway = gateway_with(vendor.clone(), limited(), None, queue.clone());
    let outcome = gateway.send(request()).await.unwrap();
    let SendOutcome::Queued {
        id,
        reason,
        may_duplicate,
    } = outcome
    else {
        panic!("expected Queued, found {outcome:?}");
    };
    assert_eq!(reason, QueueReason::RateLimited);
    assert!(!may_duplicate);
    let stored = queue.get(id).await.unwrap().unwrap();
    assert_eq!(stored.status, MessageStatus::Queued);
    assert_eq!(stored.attempts, 0);
    assert_eq!(
        stored.next_attempt_at,
        start() + chrono::Duration::milliseconds(300)
    );
    assert_eq!(vendor.calls(), 0);
}

#[tokio::test]
async fn the_global_limiter_is_asked_for_one_permit_per_recipient() {
    let vendor = FakeVendor::new("aliyun");
    let mut limiter = MockRateLimiter::new();
    limiter.expect_capacity().return_const(None::<u32>);
    limiter
        .expect_window()
        .return_const(None::<std::time::Duration>);
    limiter
        .expect_acquire_lane()
        .withf(|permits, lane| *permits == 3 && *lane == sms_core::Priority::Normal)
        .times(1)
        .returning(|_, _| Ok(RateDecision::Allowed));
    let gateway = gateway_with(vendor, limiter, None, Arc::new(MemoryQueue::new()));
    assert!(matches!(
        gateway.send(request_to(3)).await.unwrap(),
        SendOutcome::Sent { .. }
    ));
}

#[tokio::test]
async fn a_limited_request_that_cannot_be_stored_is_an_error_not_silently_lost() {
    // A message that is neither sent nor stored must be an error, not lost silently.
    let mut queue = MockDeferredQueue::new();
    queue
        .expect_enqueue()
        .times(1)
        .returning(|_| Err(StoreError::unavailable("connection refused")));
    let gateway = gateway_with(FakeVendor::new("aliyun"), limited(), None, Arc::new(queue));
    let err = gateway.send(request()).await.unwrap_err();
    assert!(matches!(err, SendError::StorageUnavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_limiter_error_queues_the_message_instead_of_sending_or_failing() {
    let vendor = FakeVendor::new("aliyun");
    let mut limiter = MockRateLimiter::new();
    limiter.expect_capacity().return_const(None::<u32>);
    limiter
        .expect_window()
        .return_const(None::<std::time::Duration>);
    limiter
        .expect_acquire_lane()
        .returning(|_, _| Err(LimitError::Unavailable("redis down".into())));
    let queue = Arc::new(MemoryQueue::new());
    let gateway = gateway_with(vendor.clone(), limiter, None, queue.clone());
    let outcome = gateway.send(request()).await.unwrap();
    assert!(matches!(
        outcome,
        SendOutcome::Queued {
            reason: QueueReason::RateLimited,
            ..
        }
    ));
    assert_eq!(queue.stats().await.unwrap().queued, 1);
    assert_eq!(vendor.calls(), 0);
}

#[tokio::test]
async fn an_expired_request_is_refused_and_not_sent() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let expired = request().with_expiry(start());
    assert!(matches!(
        h.gateway.send(expired).await,
        Err(SendError::Expired)
    ));
    assert_eq!(h.vendor("aliyun").calls(), 0);
    assert_eq!(h.queue.stats().await.unwrap(), Default::default());
}

#[tokio::test]
async fn a_fast_success_is_billed_per_recipient_and_recorded_for_look_ups() {
    // One request to five numbers is at least five billed messages.
    let h = Harness::new(&[("aliyun", 45_000)], config());
    h.vendor("aliyun").then(Step::Ok(1));
    let outcome = h.gateway.send(request_to(5)).await.unwrap();
    let SendOutcome::Sent {
        id,
        vendor,
        billed_messages,
        slow,
    } = outcome
    else {
        panic!("expected Sent, found {outcome:?}");
    };
    assert_eq!(
        (vendor.as_str(), billed_messages, slow),
        ("aliyun", 5, false)
    );
    // The next fee comparison sees the usage at once; the ledger and the record of the
    // message are written behind the send.
    let snapshot = &h.gateway.vendors()[0];
    assert_eq!(snapshot.billed_this_period, 5);
    assert_eq!(snapshot.spend, sms_core::Money::from_micros(5 * 45_000));
    h.gateway.flush().await.unwrap();
    let period = sms_core::BillingPeriod::from_label("2026-11");
    assert_eq!(h.ledger.totals(&period).await.unwrap()[&vendor], 5);
    let stored = h
        .queue
        .get(id)
        .await
        .unwrap()
        .expect("sent message recorded");
    assert_eq!(stored.status, MessageStatus::Sent);
    assert_eq!(stored.last_vendor, Some(vendor));
}

#[tokio::test]
async fn usage_and_records_are_written_behind_the_send_without_a_flush() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let mut ids = Vec::new();
    for _ in 0..20 {
        h.vendor("aliyun").then(Step::Ok(1));
        match h.gateway.send(request_to(2)).await.unwrap() {
            SendOutcome::Sent { id, .. } => ids.push(id),
            other => panic!("expected Sent, found {other:?}"),
        }
    }
    let period = sms_core::BillingPeriod::from_label("2026-11");
    let vendor = sms_core::VendorId::new("aliyun").unwrap();
    // Real time: the writes wait a few milliseconds to gather sends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let total = h
            .ledger
            .totals(&period)
            .await
            .unwrap()
            .get(&vendor)
            .copied();
        let recorded = h.queue.stats().await.unwrap().get(MessageStatus::Sent);
        if total == Some(40) && recorded == 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 5 s: ledger {total:?} of 40, {recorded} of 20 records"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for id in ids {
        assert_eq!(
            h.queue.get(id).await.unwrap().unwrap().status,
            MessageStatus::Sent
        );
    }
}

#[tokio::test]
async fn more_segments_than_recipients_are_billed_as_the_vendor_says() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    h.vendor("aliyun").then(Step::Ok(6));
    let outcome = h.gateway.send(request_to(3)).await.unwrap();
    assert!(matches!(
        outcome,
        SendOutcome::Sent {
            billed_messages: 6,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_slow_success_is_sent_but_counts_as_one_failure() {
    let h = Harness::new(&[("aliyun", 45_000), ("tencent", 47_000)], config());
    h.vendor("aliyun")
        .then(Step::OkAfter(Duration::from_millis(1500)));
    let outcome = h.gateway.send(request()).await.unwrap();
    assert!(
        matches!(outcome, SendOutcome::Sent { slow: true, .. }),
        "{outcome:?}"
    );
    assert_eq!(h.failures_of("aliyun"), 1);
    let outcomes: Vec<AttemptOutcome> = h
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::Attempt { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, [AttemptOutcome::Slow]);
    // Just under the threshold is fast and clears the count.
    h.vendor("aliyun")
        .then(Step::OkAfter(Duration::from_millis(999)));
    let outcome = h.gateway.send(request()).await.unwrap();
    assert!(matches!(outcome, SendOutcome::Sent { slow: false, .. }));
    assert_eq!(h.failures_of("aliyun"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_queued_as_may_duplicate_and_stored_after_the_deadline() {
    // The store after a timeout gets a deadline of its own, not the attempt's spent one.
    let h = Harness::new(&[("aliyun", 45_000), ("tencent", 47_000)], config());
    h.vendor("aliyun").then(Step::Hang);
    let outcome = h.gateway.send(request()).await.unwrap();
    let SendOutcome::Queued {
        id,
        reason,
        may_duplicate,
    } = outcome
    else {
        panic!("expected Queued, found {outcome:?}");
    };
    assert_eq!((reason, may_duplicate), (QueueReason::TimedOut, true));
    let stored = h.queue.get(id).await.unwrap().unwrap();
    assert!(stored.may_duplicate);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.last_vendor.unwrap().as_str(), "aliyun");
    assert_eq!(h.failures_of("aliyun"), 1);
}

#[tokio::test(start_paused = true)]
async fn with_the_fail_policy_a_timeout_is_reported_and_not_retried() {
    let h = Harness::new(
        &[("aliyun", 45_000)],
        sms_failover::FailoverConfig {
            on_timeout: TimeoutPolicy::Fail,
            ..config()
        },
    );
    h.vendor("aliyun").then(Step::Hang);
    let key = IdempotencyKey::new("k-timeout").unwrap();
    let err = h
        .gateway
        .send(request().with_idempotency_key(key.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::TimedOut));
    let stored = h
        .queue
        .find_by_idempotency_key(&key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, MessageStatus::Dead);
    assert!(stored.may_duplicate);
    assert_eq!(h.gateway.drain_once().await.unwrap().claimed, 0);
}

#[tokio::test]
async fn throttled_and_failed_sends_are_queued_and_counted_against_the_vendor() {
    let h = Harness::new(&[("aliyun", 45_000), ("tencent", 47_000)], config());
    h.vendor("aliyun").then(Step::Fail(VendorError::Throttled {
        message: "slow down".into(),
        retry_after: Some(Duration::from_secs(600)),
    }));
    let outcome = h.gateway.send(request()).await.unwrap();
    let SendOutcome::Queued {
        id,
        reason,
        may_duplicate,
    } = outcome
    else {
        panic!("expected Queued, found {outcome:?}");
    };
    assert_eq!(
        (reason, may_duplicate),
        (QueueReason::VendorThrottled, false)
    );
    // The vendor's own wait is respected (the backoff alone would be at most 1 s).
    let stored = h.queue.get(id).await.unwrap().unwrap();
    assert!(stored.next_attempt_at >= start() + chrono::Duration::seconds(600));
    assert_eq!(h.failures_of("aliyun"), 1);

    h.vendor("aliyun").then(transient());
    let outcome = h.gateway.send(request()).await.unwrap();
    assert!(matches!(
        outcome,
        SendOutcome::Queued {
            reason: QueueReason::VendorFailed,
            ..
        }
    ));
}

#[tokio::test]
async fn refused_credentials_are_queued_counted_and_switch_away_after_n_failures() {
    // Refused credentials are the vendor's fault, not the message's: taken as a
    // rejection, they would never count, every message would die and nothing would
    // fail over.
    let h = Harness::new(
        &[("aliyun", 45_000), ("tencent", 47_000)],
        FailoverConfig {
            consecutive_failures: 3,
            ..config()
        },
    );
    h.vendor("aliyun").always(unauthorized());
    let mut ids = Vec::new();
    for sent in 1..=3u32 {
        assert_eq!(h.current(), "aliyun", "switched after only {}", sent - 1);
        let outcome = h.gateway.send(request()).await.unwrap();
        let SendOutcome::Queued {
            id,
            reason,
            may_duplicate,
        } = outcome
        else {
            panic!("expected Queued, found {outcome:?}");
        };
        assert_eq!((reason, may_duplicate), (QueueReason::VendorFailed, false));
        let stored = h.queue.get(id).await.unwrap().unwrap();
        assert_eq!(stored.status, MessageStatus::Queued);
        assert!(
            stored
                .last_error
                .as_deref()
                .unwrap()
                .contains("InvalidAccessKeyId.NotFound"),
            "{stored:?}"
        );
        if sent < 3 {
            assert_eq!(h.failures_of("aliyun"), sent);
        }
        ids.push(id);
    }
    assert_eq!(h.current(), "tencent");
    assert_eq!(h.events.switches(), [("aliyun".into(), "tencent".into())]);
    let unauthorized_attempts = h
        .events
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                GatewayEvent::Attempt {
                    outcome: AttemptOutcome::Unauthorized,
                    ..
                }
            )
        })
        .count();
    assert_eq!(unauthorized_attempts, 3);
    assert_eq!(AttemptOutcome::Unauthorized.as_str(), "unauthorized");

    // None of the messages is lost: once due, they all go out on the other vendor.
    h.clock.advance(Duration::from_secs(301));
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!((report.sent, report.dead), (3, 0));
    for id in ids {
        let m = h.queue.get(id).await.unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Sent);
        assert_eq!(m.last_vendor.unwrap().as_str(), "tencent");
    }
    assert_eq!(h.vendor("aliyun").calls(), 3);
}

#[tokio::test]
async fn a_rejection_is_reported_and_neither_counted_nor_queued() {
    let h = Harness::new(&[("aliyun", 45_000), ("tencent", 47_000)], config());
    h.vendor("aliyun").always(Step::Fail(VendorError::Rejected {
        code: "isv.MOBILE_NUMBER_ILLEGAL".into(),
        message: "bad number".into(),
    }));
    for _ in 0..3 {
        let err = h.gateway.send(request()).await.unwrap_err();
        let SendError::Rejected { vendor, code, .. } = err else {
            panic!("expected Rejected, found {err:?}");
        };
        assert_eq!(
            (vendor.as_str(), code.as_str()),
            ("aliyun", "isv.MOBILE_NUMBER_ILLEGAL")
        );
    }
    assert_eq!(h.failures_of("aliyun"), 0);
    assert_eq!(h.current(), "aliyun");
    assert_eq!(h.queue.stats().await.unwrap(), Default::default());
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_message_without_sending() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let key = IdempotencyKey::new("order-42").unwrap();
    let first = h
        .gateway
        .send(request().with_idempotency_key(key.clone()))
        .await
        .unwrap();
    let SendOutcome::Sent { id, .. } = first else {
        panic!("expected Sent, found {first:?}");
    };
    let again = h
        .gateway
        .send(request().with_idempotency_key(key.clone()))
        .await
        .unwrap();
    let SendOutcome::Existing(existing) = again else {
        panic!("expected Existing, found {again:?}");
    };
    assert_eq!(existing.id, id);
    assert_eq!(existing.status, MessageStatus::Sent);
    assert_eq!(h.vendor("aliyun").calls(), 1);
}

// Worker threads make the tasks really run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_send_once() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let key = IdempotencyKey::new("double-click").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let gateway = h.gateway.clone();
        let request = request().with_idempotency_key(key.clone());
        tasks.push(tokio::spawn(
            async move { gateway.send(request).await.unwrap() },
        ));
    }
    let mut sent = 0;
    for t in tasks {
        if let SendOutcome::Sent { .. } = t.await.unwrap() {
            sent += 1;
        }
    }
    assert_eq!(sent, 1);
    assert_eq!(h.vendor("aliyun").calls(), 1);
}

#[tokio::test]
async fn a_failed_keyed_request_is_queued_on_its_reserved_row() {
    let h = Harness::new(&[("aliyun", 45_000), ("tencent", 47_000)], config());
    h.vendor("aliyun").then(transient());
    let key = IdempotencyKey::new("k1").unwrap();
    let outcome = h
        .gateway
        .send(request().with_idempotency_key(key.clone()))
        .await
        .unwrap();
    let SendOutcome::Queued { id, .. } = outcome else {
        panic!("expected Queued, found {outcome:?}");
    };
    let stored = h
        .queue
        .find_by_idempotency_key(&key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id, id, "no second row for the same message");
    assert_eq!(stored.status, MessageStatus::Queued);
    assert_eq!(stored.attempts, 1);
    assert_eq!(h.queue.stats().await.unwrap().queued, 1);
}

#[tokio::test]
async fn a_keyed_request_that_cannot_be_reserved_is_not_sent() {
    let mut queue = MockDeferredQueue::new();
    queue.expect_find_by_idempotency_key().never();
    queue
        .expect_enqueue()
        .returning(|_| Err(StoreError::unavailable("down")));
    let vendor = FakeVendor::new("aliyun");
    let mut limiter = MockRateLimiter::new();
    limiter.expect_capacity().return_const(None::<u32>);
    limiter
        .expect_window()
        .return_const(None::<std::time::Duration>);
    limiter
        .expect_acquire_lane()
        .returning(|_, _| Ok(RateDecision::Allowed));
    let gateway = gateway_with(vendor.clone(), limiter, None, Arc::new(queue));
    let key = IdempotencyKey::new("k").unwrap();
    let err = gateway
        .send(request().with_idempotency_key(key))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::StorageUnavailable(_)));
    assert_eq!(vendor.calls(), 0);
}

#[tokio::test]
async fn a_failed_look_up_record_does_not_fail_a_delivered_send() {
    let mut queue = MockDeferredQueue::new();
    queue
        .expect_enqueue_many()
        .returning(|_| Err(StoreError::Backend("disk full".into())));
    let mut limiter = MockRateLimiter::new();
    limiter.expect_capacity().return_const(None::<u32>);
    limiter
        .expect_window()
        .return_const(None::<std::time::Duration>);
    limiter
        .expect_acquire_lane()
        .returning(|_, _| Ok(RateDecision::Allowed));
    let gateway = gateway_with(FakeVendor::new("aliyun"), limiter, None, Arc::new(queue));
    let outcome = gateway.send(request()).await.unwrap();
    assert!(matches!(outcome, SendOutcome::Sent { .. }));
    // The failed record write is logged, not raised.
    gateway.flush().await.unwrap();
}

#[tokio::test]
async fn with_every_vendor_disabled_requests_are_refused() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    h.gateway
        .disable(&sms_core::VendorId::new("aliyun").unwrap())
        .await
        .unwrap();
    assert!(matches!(
        h.gateway.send(request()).await,
        Err(SendError::NoVendor(_))
    ));
    h.gateway
        .enable(&sms_core::VendorId::new("aliyun").unwrap())
        .await
        .unwrap();
    assert!(h.gateway.send(request()).await.is_ok());
}
