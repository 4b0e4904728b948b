//! Easy mistakes on the send path that need a scenario of their own, one test each:
//! arguments mangled by separators, a crash between send and bookkeeping, a drain tied
//! to a request, a price list with a gap, prices that do not decide. The crate docs
//! list every guarantee of the gateway and the tests that check it.

use std::sync::Arc;
use std::time::Duration;

use sms_core::mocks::MockFeeSchedule;
use sms_core::testing::MemoryQueue;
use sms_core::{
    BillingPeriod, DeferredQueue, IdempotencyKey, InitialState, Lease, LeaseToken, MessageId,
    MessageStatus, Money, NewMessage, QueueReason, SmsRequest, UsageLedger, VendorId,
};
use sms_failover::SendOutcome;

use crate::support::*;

#[tokio::test]
async fn arguments_with_separators_reach_the_vendor_unchanged_live_and_drained() {
    // Arguments and numbers travel as lists: joined with a separator such as `###` or
    // `;`, an argument containing it would split, and an empty list would become [""].
    let args = ["a###b", "x;y", "", "验证码;###"];
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let request = SmsRequest::new("login", args, ["+8613800138000", "+8613900139000"]).unwrap();
    h.gateway.send(request.clone()).await.unwrap();
    let id = MessageId::new();
    h.queue
        .enqueue(NewMessage::queued(
            id,
            request.clone(),
            QueueReason::RateLimited,
            10,
            start(),
        ))
        .await
        .unwrap();
    h.gateway.drain_once().await.unwrap();
    let received = h.vendor("aliyun").received();
    assert_eq!(received.len(), 2);
    for sms in received {
        assert_eq!(sms.request.args(), args);
        assert_eq!(sms.request.recipients(), request.recipients());
    }
    let none = SmsRequest::new("login", Vec::<String>::new(), ["+8613800138000"]).unwrap();
    h.gateway.send(none).await.unwrap();
    assert!(h.vendor("aliyun").received()[2].request.args().is_empty());
}

#[tokio::test]
async fn a_crash_between_send_and_bookkeeping_is_retried_once_after_the_lease() {
    // Sending and recording the outcome cannot be one atomic step. So a keyed message is
    // stored leased before its attempt; if the process dies before recording the outcome,
    // the row stays leased, no drain touches it while the lease holds, and one drain
    // retries it after.
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let key = IdempotencyKey::new("crashed").unwrap();
    let id = MessageId::new();
    let request = request().with_idempotency_key(key.clone());
    h.queue
        .enqueue(NewMessage {
            initial: InitialState::Leased(Lease {
                owner: "dead-instance".into(),
                token: LeaseToken::new(),
                expires_at: start() + chrono::Duration::seconds(30),
            }),
            attempts: 1,
            ..NewMessage::queued(id, request.clone(), QueueReason::Accepted, 10, start())
        })
        .await
        .unwrap();
    // A retry by the caller finds it and sends nothing.
    assert!(matches!(
        h.gateway.send(request).await.unwrap(),
        SendOutcome::Existing(m) if m.id == id
    ));
    assert_eq!(h.gateway.drain_once().await.unwrap().claimed, 0);
    h.clock.advance(Duration::from_secs(30));
    assert_eq!(h.gateway.drain_once().await.unwrap().sent, 1);
    assert_eq!(h.gateway.drain_once().await.unwrap().claimed, 0);
    assert_eq!(h.vendor("aliyun").calls(), 1);
    let m = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (MessageStatus::Sent, 2));
}

#[tokio::test]
async fn the_drain_outlives_the_request_that_triggered_it() {
    // A drain run on the request's task would be cancelled with it. Here the request's
    // task ends right after its send; the drainer, on a task of its own, still delivers.
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let drainer = h.gateway.start_drainer();
    settle().await;
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
    let gateway = h.gateway.clone();
    let request_task = tokio::spawn(async move { gateway.send(request()).await });
    request_task.await.unwrap().unwrap();
    // The pass comes at most 100 ms after the empty start-up pass.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while h.queue.get(id).await.unwrap().unwrap().status != MessageStatus::Sent {
        assert!(
            std::time::Instant::now() < deadline,
            "not drained 2 s after the success"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drainer.shutdown().await;
}

#[tokio::test]
async fn without_a_drainer_a_success_does_not_drain_on_the_callers_task() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
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
    h.gateway.send(request()).await.unwrap();
    settle().await;
    assert_eq!(
        h.queue.get(id).await.unwrap().unwrap().status,
        MessageStatus::Queued
    );
    assert_eq!(h.vendor("aliyun").calls(), 1);
}

#[tokio::test]
async fn a_price_list_gap_does_not_make_a_vendor_free_and_always_win() {
    // A price list that ends at 125,000 messages prices every later message at 0; taken
    // as free, that vendor would win every comparison.
    let mut gap = MockFeeSchedule::new();
    gap.expect_price_at().returning(|volume| {
        if volume < 125_000 {
            Money::from_micros(40_000)
        } else {
            Money::ZERO
        }
    });
    gap.expect_cost_of().returning(|_, _| Money::ZERO);
    let fakes = vec![FakeVendor::new("aliyun"), FakeVendor::new("cloopen")];
    let fees: Vec<Arc<dyn sms_core::FeeSchedule>> = vec![flat(45_000), Arc::new(gap)];
    let h = Harness::with_fees(fakes, fees, config(), Arc::new(MemoryQueue::new()));
    assert_eq!(h.current(), "cloopen", "cheaper while its list has a price");
    h.ledger
        .add(
            &VendorId::new("cloopen").unwrap(),
            &BillingPeriod::from_label("2026-11"),
            130_000,
        )
        .await
        .unwrap();
    h.gateway.init().await.unwrap();
    assert_eq!(h.current(), "aliyun", "a zero price ranks last, not first");
}

#[tokio::test]
async fn real_fee_schedules_drive_the_choice_not_round_robin() {
    // Prices decide, not the configured order: the fee schedule is asked with the real
    // billed volume and its answer picks the vendor.
    let mut fees = MockFeeSchedule::new();
    fees.expect_price_at()
        .withf(|volume| *volume == 0)
        .returning(|_| Money::from_micros(30_000));
    let fakes = vec![
        FakeVendor::new("aliyun"),
        FakeVendor::new("tencent"),
        FakeVendor::new("cloopen"),
    ];
    let all: Vec<Arc<dyn sms_core::FeeSchedule>> = vec![flat(45_000), flat(47_000), Arc::new(fees)];
    let h = Harness::with_fees(fakes, all, config(), Arc::new(MemoryQueue::new()));
    assert_eq!(h.current(), "cloopen");
}
