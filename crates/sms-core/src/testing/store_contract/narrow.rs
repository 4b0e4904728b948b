//! Narrowing a claimed message's recipients: a vendor took a split send for some of the
//! recipients and failed for the others, so later attempts must go to the others only,
//! or the first ones get the message twice.

use std::sync::Arc;

use crate::error::StoreError;
use crate::ids::{IdempotencyKey, MessageId};
use crate::phone::PhoneNumber;
use crate::queue::{DeferredQueue, MessageStatus, StoredMessage};
use crate::request::SmsRequest;

use super::fixtures::{at, queued_request};
use super::support::{
    assert_lease_lost, claim, claim_one, enqueue, failure, get, token, vendor, vendor_failure,
};

/// The recipients of [`split_request`], in the caller's order.
const RECIPIENTS: [&str; 4] = [
    "+8613800138000",
    "+8613900139000",
    "+8613700137000",
    "+8613600136000",
];

/// A request to `recipients` with arguments, an idempotency key and a deliver-by time,
/// so a read-back shows whether any of them moved.
fn request_to(recipients: &[&str]) -> SmsRequest {
    SmsRequest::new("order_shipped", ["SF1234", "明天 ###"], recipients)
        .expect("a valid request")
        .with_idempotency_key(IdempotencyKey::new("split-1").expect("a valid key"))
        .with_expiry(at(3_600))
}

/// The request a vendor splits into several calls: four recipients.
fn split_request() -> SmsRequest {
    request_to(&RECIPIENTS)
}

/// Recipient `i` of [`RECIPIENTS`].
fn recipient(i: usize) -> PhoneNumber {
    PhoneNumber::parse(RECIPIENTS[i]).expect("a valid number")
}

/// Stores [`split_request`] due now and claims it at +10s.
async fn claimed_split(queue: &Arc<dyn DeferredQueue>) -> StoredMessage {
    enqueue(queue, queued_request(split_request(), at(0), at(0))).await;
    claim_one(queue, 10).await
}

/// Asserts that narrowing `id` was refused as leaving no recipient: a backend error
/// naming the message.
fn assert_nobody_left(result: Result<(), StoreError>, id: MessageId) {
    match result {
        Err(e @ StoreError::Backend(_)) => {
            assert!(e.to_string().contains(&id.to_string()), "{e}");
        }
        other => panic!("expected a backend error naming {id}, found {other:?}"),
    }
}

/// The sent recipients come off; the others stay in their order, with the rest of the
/// request (template, arguments, key, deliver-by time) as it was. Numbers not on the
/// message are ignored, and only the time of the change moves besides: the message
/// stays leased under the same lease, with the same attempts and due time.
pub async fn narrow_keeps_the_other_recipients_in_order(queue: &Arc<dyn DeferredQueue>) {
    let claimed = claimed_split(queue).await;
    let stranger = PhoneNumber::parse("+14155550100").unwrap();
    queue
        .narrow(
            claimed.id,
            token(&claimed),
            &[recipient(3), stranger, recipient(1)],
            at(11),
        )
        .await
        .unwrap();

    let narrowed = get(queue, claimed.id).await;
    assert_eq!(
        narrowed,
        StoredMessage {
            request: request_to(&[RECIPIENTS[0], RECIPIENTS[2]]),
            updated_at: at(11),
            ..claimed.clone()
        },
        "only the recipients and the time of the change move"
    );
    assert_eq!(
        narrowed.request.recipients(),
        [recipient(0), recipient(2)],
        "in the caller's order"
    );

    // A second split send that took one more narrows what is left.
    queue
        .narrow(claimed.id, token(&claimed), &[recipient(0)], at(12))
        .await
        .unwrap();
    assert_eq!(
        get(queue, claimed.id).await.request,
        request_to(&[RECIPIENTS[2]])
    );

    // The message found by its key is the narrowed one too.
    let key = IdempotencyKey::new("split-1").unwrap();
    let found = queue.find_by_idempotency_key(&key).await.unwrap().unwrap();
    assert_eq!(found.request.recipients(), [recipient(2)]);
}

/// Only the current holder narrows: once another claimer took the message the old
/// token is refused and changes nothing, and so is a token spent by a failure.
pub async fn narrow_with_a_stale_token_is_lease_lost(queue: &Arc<dyn DeferredQueue>) {
    let first = claimed_split(queue).await;
    let second = claim(queue, "rescuer", 40, 10).await.remove(0);
    assert_eq!(second.id, first.id);

    assert_lease_lost(
        queue
            .narrow(first.id, token(&first), &[recipient(0)], at(41))
            .await,
        first.id,
    );
    assert_eq!(
        get(queue, first.id).await,
        second,
        "a refused narrowing changes nothing"
    );

    queue
        .fail(
            second.id,
            token(&second),
            failure("vendor down"),
            at(100),
            at(42),
        )
        .await
        .unwrap();
    let failed = get(queue, second.id).await;
    assert_lease_lost(
        queue
            .narrow(second.id, token(&second), &[recipient(0)], at(43))
            .await,
        second.id,
    );
    assert_eq!(
        get(queue, second.id).await,
        failed,
        "a spent token changes nothing"
    );
    assert_eq!(failed.request, split_request());
}

/// Narrowing away every recipient (in any order, among other numbers) would leave a
/// message to nobody: it is refused with an error naming the message, and nothing
/// changes, also when an earlier narrowing took some of them off already. The message
/// is still held and can be completed.
pub async fn narrowing_away_every_recipient_is_refused(queue: &Arc<dyn DeferredQueue>) {
    let claimed = claimed_split(queue).await;
    let everyone = [
        recipient(2),
        recipient(0),
        PhoneNumber::parse("+14155550100").unwrap(),
        recipient(3),
        recipient(1),
    ];
    assert_nobody_left(
        queue
            .narrow(claimed.id, token(&claimed), &everyone, at(11))
            .await,
        claimed.id,
    );
    assert_eq!(
        get(queue, claimed.id).await,
        claimed,
        "a refused narrowing changes nothing"
    );

    queue
        .narrow(claimed.id, token(&claimed), &[recipient(1)], at(12))
        .await
        .unwrap();
    let narrowed = get(queue, claimed.id).await;
    let the_rest = [recipient(0), recipient(2), recipient(3)];
    assert_nobody_left(
        queue
            .narrow(claimed.id, token(&claimed), &the_rest, at(13))
            .await,
        claimed.id,
    );
    assert_eq!(
        get(queue, claimed.id).await,
        narrowed,
        "a refused narrowing changes nothing"
    );

    queue
        .complete(claimed.id, token(&claimed), &vendor("aliyun"), at(14))
        .await
        .unwrap();
    assert_eq!(get(queue, claimed.id).await.status, MessageStatus::Sent);
}

/// A narrowed message goes on as any other under its lease: failed, it is queued with
/// the remaining recipients, the next claim hands those out, and it can be completed;
/// or it can be buried, keeping them.
pub async fn a_narrowed_message_can_still_be_failed_completed_or_buried(
    queue: &Arc<dyn DeferredQueue>,
) {
    let claimed = claimed_split(queue).await;
    queue
        .narrow(claimed.id, token(&claimed), &[recipient(0)], at(11))
        .await
        .unwrap();
    queue
        .fail(
            claimed.id,
            token(&claimed),
            vendor_failure("aliyun", "split send failed part way"),
            at(20),
            at(11),
        )
        .await
        .unwrap();
    let failed = get(queue, claimed.id).await;
    assert_eq!(failed.status, MessageStatus::Queued);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.next_attempt_at, at(20));

    let again = claim_one(queue, 20).await;
    assert_eq!(again.id, claimed.id);
    let remaining = request_to(&[RECIPIENTS[1], RECIPIENTS[2], RECIPIENTS[3]]);
    assert_eq!(
        again.request, remaining,
        "the retry goes to the others only"
    );
    queue
        .complete(again.id, token(&again), &vendor("tencent"), at(21))
        .await
        .unwrap();
    let sent = get(queue, again.id).await;
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(sent.request, remaining);

    // Another message, narrowed and then given up on, keeps its remaining recipients.
    let mut other = queued_request(
        SmsRequest::new("order_shipped", ["SF5678"], RECIPIENTS).unwrap(),
        at(30),
        at(30),
    );
    other.max_attempts = 1;
    let other = enqueue(queue, other).await;
    let claimed = claim_one(queue, 30).await;
    assert_eq!(claimed.id, other.id);
    queue
        .narrow(
            other.id,
            token(&claimed),
            &[recipient(1), recipient(2)],
            at(31),
        )
        .await
        .unwrap();
    queue
        .dead(
            other.id,
            token(&claimed),
            vendor_failure("aliyun", "rejected"),
            at(32),
        )
        .await
        .unwrap();
    let dead = get(queue, other.id).await;
    assert_eq!(dead.status, MessageStatus::Dead);
    assert_eq!(dead.request.recipients(), [recipient(0), recipient(3)]);
}
