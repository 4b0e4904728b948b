//! Per-recipient limits on the live path: an unavailable limiter refuses instead of
//! letting the request through unchecked, a request refused after it was counted
//! gives its counts back, and a retry is answered by its first try, not refused by the
//! limit that first try used.

use std::sync::Arc;

use sms_core::mocks::{MockDeferredQueue, MockRecipientLimiter};
use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{
    DeferredQueue, IdempotencyKey, LimitError, RecipientLimiter, RecipientWindow, SendError,
    SmsRequest, StoreError, VendorId,
};
use sms_failover::{Gateway, VendorEntry};
use sms_limit::InProcessRecipientLimiter;

use crate::support::*;

/// One vendor, every request allowed by the global limit, and `recipients` as the
/// per-recipient limiter.
fn gateway(
    recipients: Arc<dyn RecipientLimiter>,
    queue: Arc<dyn DeferredQueue>,
) -> (Gateway, Arc<FakeVendor>) {
    let vendor = FakeVendor::new("aliyun");
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: vendor.clone(),
            fees: flat(40_000),
        }],
        Arc::new(AllowAll::default()),
        queue,
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .recipient_limiter(recipients)
    .build()
    .expect("a gateway");
    (gateway, vendor)
}

/// One message per number per minute, in process.
fn one_a_minute() -> Arc<InProcessRecipientLimiter> {
    Arc::new(
        InProcessRecipientLimiter::new(vec![RecipientWindow::per_seconds(1, 60)])
            .expect("a limiter"),
    )
}

fn to(numbers: &[&str]) -> SmsRequest {
    SmsRequest::new("login", ["1234"], numbers.iter().copied()).unwrap()
}

#[tokio::test]
async fn an_unavailable_recipient_limiter_refuses_the_request_instead_of_skipping_the_check() {
    let mut recipients = MockRecipientLimiter::new();
    recipients
        .expect_check()
        .returning(|_| Err(LimitError::Unavailable("redis down".into())));
    let queue = Arc::new(MemoryQueue::new());
    let (gateway, vendor) = gateway(Arc::new(recipients), queue.clone());

    let e = gateway.send(request()).await.unwrap_err();
    assert!(matches!(e, SendError::LimitsUnavailable(_)), "{e:?}");
    assert!(e.to_string().contains("per-recipient"), "{e}");
    assert_eq!(vendor.calls(), 0, "nothing sent unchecked");
    assert_eq!(queue.stats().await.unwrap().queued, 0, "nothing stored");
}

#[tokio::test]
async fn a_request_refused_for_one_limited_number_gives_the_others_their_counts_back() {
    let limiter = one_a_minute();
    let (gateway, vendor) = gateway(limiter.clone(), Arc::new(MemoryQueue::new()));
    gateway.send(to(&["+8613800000001"])).await.unwrap();

    // Two numbers, the first limited: refused, and the second is not counted.
    let e = gateway
        .send(to(&["+8613800000001", "+8613800000002"]))
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::RecipientLimited { .. }), "{e:?}");
    gateway.send(to(&["+8613800000002"])).await.unwrap();
    assert_eq!(vendor.calls(), 2);
}

#[tokio::test]
async fn a_request_refused_because_every_vendor_is_disabled_gives_its_counts_back() {
    let limiter = one_a_minute();
    let (gateway, _vendor) = gateway(limiter, Arc::new(MemoryQueue::new()));
    let aliyun = VendorId::new("aliyun").unwrap();
    gateway.disable(&aliyun).await.unwrap();
    let e = gateway.send(request()).await.unwrap_err();
    assert!(matches!(e, SendError::NoVendor(_)), "{e:?}");

    gateway.enable(&aliyun).await.unwrap();
    gateway
        .send(request())
        .await
        .expect("the refused request did not use the number's one message a minute");
}

#[tokio::test]
async fn a_request_the_store_cannot_take_gives_its_counts_back() {
    let limiter = one_a_minute();
    let mut queue = MockDeferredQueue::new();
    // Storing the message answers whether its key is known: no separate look-up.
    queue.expect_find_by_idempotency_key().never();
    queue
        .expect_enqueue()
        .times(1)
        .returning(|_| Err(StoreError::Unavailable("database down".into())));
    let (gateway, vendor) = gateway(limiter.clone(), Arc::new(queue));
    let keyed = request().with_idempotency_key(IdempotencyKey::new("k-1").unwrap());
    let e = gateway.send(keyed).await.unwrap_err();
    assert!(matches!(e, SendError::StorageUnavailable(_)), "{e:?}");
    assert_eq!(vendor.calls(), 0);

    let again = limiter.check(request().recipients()).await.unwrap();
    assert!(
        again
            .iter()
            .all(|d| *d == sms_core::RecipientDecision::Allowed),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_delivered_request_keeps_its_count() {
    // The give-back must not reach requests that went out: the limit still holds.
    let limiter = one_a_minute();
    let (gateway, _vendor) = gateway(limiter, Arc::new(MemoryQueue::new()));
    gateway.send(request()).await.unwrap();
    let e = gateway.send(request()).await.unwrap_err();
    assert!(matches!(e, SendError::RecipientLimited { .. }), "{e:?}");
}

#[tokio::test]
async fn a_split_send_refused_for_the_others_keeps_only_the_counts_of_those_who_got_it() {
    let limiter = one_a_minute();
    let (gateway, vendor) = gateway(limiter, Arc::new(MemoryQueue::new()));
    let request = to(&["+8613800000001", "+8613800000002"]);
    let first = request.recipients()[0].clone();
    vendor.then(Step::Fail(sms_core::VendorError::PartlySent {
        sent: vec![first],
        receipt: sms_core::Receipt {
            vendor_message_id: "biz-1".into(),
            billed_messages: 1,
            reported_billed: None,
            recipient_ids: Vec::new(),
        },
        error: Box::new(sms_core::VendorError::Rejected {
            code: "isv.MOBILE_NUMBER_ILLEGAL".into(),
            message: "bad number".into(),
        }),
    }));
    let e = gateway.send(request).await.unwrap_err();
    assert!(matches!(e, SendError::Rejected { .. }), "{e:?}");
    // The first got it: its count stays. The second did not: its count is back.
    let e = gateway.send(to(&["+8613800000001"])).await.unwrap_err();
    assert!(matches!(e, SendError::RecipientLimited { .. }), "{e:?}");
    gateway.send(to(&["+8613800000002"])).await.unwrap();
}

#[tokio::test]
async fn a_keyed_retry_after_its_first_try_used_the_limit_gets_the_first_message() {
    let limiter = one_a_minute();
    let queue = Arc::new(MemoryQueue::new());
    let (gateway, vendor) = gateway(limiter, queue.clone());
    let keyed = request().with_idempotency_key(IdempotencyKey::new("k-retry").unwrap());
    let first = gateway.send(keyed.clone()).await.unwrap();
    let sms_failover::SendOutcome::Sent { id, .. } = first else {
        panic!("expected Sent, found {first:?}");
    };

    let again = gateway.send(keyed).await.unwrap();
    assert!(
        matches!(&again, sms_failover::SendOutcome::Existing(m) if m.id == id),
        "{again:?}"
    );
    assert_eq!(vendor.calls(), 1);
    // Another request to the number is still refused: the retry did not free the count.
    let e = gateway.send(request()).await.unwrap_err();
    assert!(matches!(e, SendError::RecipientLimited { .. }), "{e:?}");
}

#[tokio::test]
async fn a_keyed_retry_while_no_vendor_can_send_gets_the_first_message() {
    // A limit the retry does not reach: what refuses it is that no vendor is enabled.
    let limiter = Arc::new(
        InProcessRecipientLimiter::new(vec![RecipientWindow::per_seconds(10, 60)])
            .expect("a limiter"),
    );
    let (gateway, vendor) = gateway(limiter, Arc::new(MemoryQueue::new()));
    let keyed = request().with_idempotency_key(IdempotencyKey::new("k-disabled").unwrap());
    let first = gateway.send(keyed.clone()).await.unwrap();
    let sms_failover::SendOutcome::Sent { id, .. } = first else {
        panic!("expected Sent, found {first:?}");
    };
    gateway
        .disable(&VendorId::new("aliyun").unwrap())
        .await
        .unwrap();

    let again = gateway.send(keyed).await.unwrap();
    assert!(
        matches!(&again, sms_failover::SendOutcome::Existing(m) if m.id == id),
        "{again:?}"
    );
    // A new key is refused as before.
    let fresh = request().with_idempotency_key(IdempotencyKey::new("k-new").unwrap());
    let e = gateway.send(fresh).await.unwrap_err();
    assert!(matches!(e, SendError::NoVendor(_)), "{e:?}");
    assert_eq!(vendor.calls(), 1);
}
