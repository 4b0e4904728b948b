//! Split sends: a vendor that takes a message for some recipients and fails for the
//! others. The ones it took are billed and never sent again; the others are retried
//! (or given up) on their own.

use std::time::Duration;

use sms_core::{
    DeferredQueue, IdempotencyKey, MessageId, MessageStatus, NewMessage, QueueReason, Receipt,
    SendError, VendorError,
};
use sms_failover::{FailoverConfig, SendOutcome};

use crate::support::*;

/// The vendor took the first recipient of `request_to(3)`, then failed with `error`.
fn took_the_first(error: VendorError) -> Step {
    let first = request_to(3).recipients()[0].clone();
    Step::Fail(VendorError::PartlySent {
        sent: vec![first],
        receipt: Receipt {
            vendor_message_id: "biz-1".into(),
            billed_messages: 1,
            reported_billed: None,
            recipient_ids: Vec::new(),
        },
        error: Box::new(error),
    })
}

fn timed_out() -> VendorError {
    VendorError::TimedOut
}

#[tokio::test]
async fn a_live_split_send_bills_what_was_taken_and_retries_only_the_others() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    h.vendor("aliyun")
        .then(took_the_first(VendorError::Transient {
            message: "503".into(),
        }));
    let outcome = h.gateway.send(request_to(3)).await.unwrap();
    let SendOutcome::Queued { id, .. } = outcome else {
        panic!("expected queued, found {outcome:?}");
    };
    let stored = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        stored.request.recipients(),
        &request_to(3).recipients()[1..]
    );
    assert_eq!(
        h.gateway.vendors()[0].billed_this_period,
        1,
        "the one taken is billed"
    );

    h.clock.advance(Duration::from_secs(600));
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let retried = h.vendor("aliyun").received().pop().unwrap();
    assert_eq!(
        retried.request.recipients(),
        &request_to(3).recipients()[1..],
        "the recipient who has it is not sent it again"
    );
    assert_eq!(h.gateway.vendors()[0].billed_this_period, 3);
}

#[tokio::test]
async fn a_drained_split_send_that_timed_out_part_way_keeps_the_others_flagged() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    let id = MessageId::new();
    let message = NewMessage::queued(id, request_to(3), QueueReason::RateLimited, 10, start());
    h.queue.enqueue(message).await.unwrap();
    h.vendor("aliyun").then(took_the_first(timed_out()));
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(report.requeued, 1, "{report:?}");
    let stored = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        stored.request.recipients(),
        &request_to(3).recipients()[1..]
    );
    assert!(
        stored.may_duplicate,
        "the call that timed out may have gone out"
    );
    assert_eq!(h.gateway.vendors()[0].billed_this_period, 1);
}

#[tokio::test]
async fn a_split_send_refused_for_the_others_tells_the_caller_part_went_out() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    h.vendor("aliyun")
        .then(took_the_first(VendorError::Rejected {
            code: "isv.MOBILE_NUMBER_ILLEGAL".into(),
            message: "bad number".into(),
        }));
    let keyed = request_to(3).with_idempotency_key(IdempotencyKey::new("k-split").unwrap());
    let e = h.gateway.send(keyed.clone()).await.unwrap_err();
    let SendError::Rejected { message, .. } = &e else {
        panic!("expected rejected, found {e:?}");
    };
    assert!(message.contains("took the message for 1"), "{message}");
    let stored = h
        .queue
        .find_by_idempotency_key(keyed.idempotency_key().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, MessageStatus::Dead);
    assert_eq!(
        stored.request.recipients(),
        &request_to(3).recipients()[1..]
    );
    assert_eq!(h.gateway.vendors()[0].billed_this_period, 1);
}

#[tokio::test(start_paused = true)]
async fn a_split_send_gets_the_time_its_vendor_needs_for_every_call() {
    // Three calls of up to 4 s: the 5 s attempt timeout must not cut it mid-way.
    let h = Harness::new(
        &[("aliyun", 40_000)],
        FailoverConfig {
            attempt_timeout: Duration::from_secs(5),
            ..config()
        },
    );
    h.vendor("aliyun").splits(Duration::from_secs(12));
    h.vendor("aliyun")
        .then(Step::OkAfter(Duration::from_secs(9)));
    let outcome = h.gateway.send(request_to(3)).await.unwrap();
    // Several calls in a row take longer than one: not a slow vendor.
    assert!(
        matches!(outcome, SendOutcome::Sent { slow: false, .. }),
        "{outcome:?}"
    );
    // A one-recipient message keeps the attempt timeout.
    h.vendor("aliyun")
        .then(Step::OkAfter(Duration::from_secs(9)));
    let outcome = h.gateway.send(request()).await.unwrap();
    assert!(
        matches!(
            outcome,
            SendOutcome::Queued {
                may_duplicate: true,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_unkeyed_split_send_refused_per_number_for_the_others_tells_the_caller() {
    // Queued, the others could go out through another vendor, around the number's limit.
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], config());
    h.vendor("aliyun")
        .then(took_the_first(VendorError::RecipientRefused {
            code: "LimitExceeded.PhoneNumberThirtySecondLimit".into(),
            message: "30 s limit".into(),
            retry_after: Duration::from_secs(30),
        }));
    let e = h.gateway.send(request_to(3)).await.unwrap_err();
    let SendError::RecipientRefused { message, .. } = &e else {
        panic!("expected a refusal, found {e:?}");
    };
    assert!(message.contains("took the message for 1"), "{message}");
    assert_eq!(h.queue.stats().await.unwrap().queued, 0, "nothing queued");
    assert_eq!(h.vendor("tencent").calls(), 0);
}
