//! Pinning: a vendor's per-number limit refused the recipient, so the message's next
//! attempt must go to that vendor again (another vendor would get around the limit).
//! A failure records the pin, every read returns it, and a failure without a pin or an
//! operator's retry clears it.

use std::sync::Arc;

use crate::queue::{AttemptFailure, DeferredQueue, MessageStatus, QueueReason};

use super::fixtures::{at, queued};
use super::support::{claim, claim_one, enqueue, failure, get, ids, token, vendor, vendor_failure};

/// A failure at `vendor_name` that pins the message to it.
fn pinned_failure(vendor_name: &str) -> AttemptFailure {
    AttemptFailure {
        pinned: true,
        ..vendor_failure(vendor_name, "recipient refused: per-number limit")
    }
}

/// A pinned failure stores its vendor; `get`, `list` and the next claim return it, and
/// a release (the attempt never made) keeps it.
pub async fn a_pinned_failure_stores_its_vendor_and_the_claim_returns_it(
    queue: &Arc<dyn DeferredQueue>,
) {
    let mut new = queued(at(0), at(0));
    new.reason = QueueReason::RecipientRefused;
    let m = enqueue(queue, new).await;
    assert_eq!(
        m.pinned_vendor, None,
        "a new message is pinned to no vendor"
    );
    let claimed = claim_one(queue, 1).await;
    assert_eq!(claimed.pinned_vendor, None);
    queue
        .fail(
            m.id,
            token(&claimed),
            pinned_failure("aliyun"),
            at(61),
            at(1),
        )
        .await
        .unwrap();
    let failed = get(queue, m.id).await;
    assert_eq!(failed.status, MessageStatus::Queued);
    assert_eq!(failed.pinned_vendor, Some(vendor("aliyun")));
    assert_eq!(failed.last_vendor, Some(vendor("aliyun")));
    assert_eq!(
        failed.last_error.as_deref(),
        Some("recipient refused: per-number limit")
    );
    assert_eq!(failed.reason, QueueReason::RecipientRefused);
    assert_eq!(
        queue.list(MessageStatus::Queued, 10).await.unwrap(),
        [failed]
    );

    let again = claim_one(queue, 61).await;
    assert_eq!(again.id, m.id);
    assert_eq!(again.pinned_vendor, Some(vendor("aliyun")));
    queue.release(m.id, token(&again), at(62)).await.unwrap();
    assert_eq!(
        get(queue, m.id).await.pinned_vendor,
        Some(vendor("aliyun")),
        "a release gives the attempt back unmade, pin and all"
    );
    assert_eq!(
        claim_one(queue, 62).await.pinned_vendor,
        Some(vendor("aliyun"))
    );
}

/// Only a pinned failure at a vendor pins: a later failure without a pin (at another
/// vendor, or before any vendor was tried) clears it, and a pin without a vendor pins
/// nothing.
pub async fn a_failure_without_a_pin_clears_it(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue
        .fail(
            m.id,
            token(&claimed),
            pinned_failure("tencent"),
            at(10),
            at(1),
        )
        .await
        .unwrap();
    let claimed = claim_one(queue, 10).await;
    assert_eq!(claimed.pinned_vendor, Some(vendor("tencent")));
    queue
        .fail(
            m.id,
            token(&claimed),
            vendor_failure("tencent", "503 service unavailable"),
            at(20),
            at(11),
        )
        .await
        .unwrap();
    let cleared = get(queue, m.id).await;
    assert_eq!(cleared.pinned_vendor, None);
    assert_eq!(cleared.last_vendor, Some(vendor("tencent")));

    // Pinned again, then a failure before any vendor was tried: no pin is left.
    let claimed = claim_one(queue, 20).await;
    queue
        .fail(
            m.id,
            token(&claimed),
            pinned_failure("cloopen"),
            at(30),
            at(21),
        )
        .await
        .unwrap();
    assert_eq!(
        get(queue, m.id).await.pinned_vendor,
        Some(vendor("cloopen"))
    );
    let claimed = claim_one(queue, 30).await;
    queue
        .fail(
            m.id,
            token(&claimed),
            failure("rate limited"),
            at(40),
            at(31),
        )
        .await
        .unwrap();
    let cleared = get(queue, m.id).await;
    assert_eq!(cleared.pinned_vendor, None);
    assert_eq!(cleared.last_vendor, Some(vendor("cloopen")));

    // A pin with no vendor to pin to leaves none.
    let claimed = claim_one(queue, 40).await;
    queue
        .fail(
            m.id,
            token(&claimed),
            AttemptFailure {
                pinned: true,
                ..failure("no vendor")
            },
            at(50),
            at(41),
        )
        .await
        .unwrap();
    assert_eq!(claim_one(queue, 50).await.pinned_vendor, None);
}

/// A message that dies pinned keeps its pin for the operator to see; a retry clears it,
/// and a failure that marks a message dead without a pin clears an earlier one.
pub async fn dead_keeps_the_pin_and_retry_clears_it(queue: &Arc<dyn DeferredQueue>) {
    let pinned = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue
        .dead(pinned.id, token(&claimed), pinned_failure("aliyun"), at(2))
        .await
        .unwrap();
    let dead = get(queue, pinned.id).await;
    assert_eq!(dead.status, MessageStatus::Dead);
    assert_eq!(dead.pinned_vendor, Some(vendor("aliyun")));
    assert_eq!(
        queue.list(MessageStatus::Dead, 10).await.unwrap(),
        [dead],
        "listing returns the pin"
    );

    let retried = queue.retry(pinned.id, at(100)).await.unwrap();
    assert_eq!(retried.status, MessageStatus::Queued);
    assert_eq!(retried.reason, QueueReason::ManualRetry);
    assert_eq!(retried.pinned_vendor, None);
    assert_eq!(retried.last_vendor, Some(vendor("aliyun")));
    assert_eq!(get(queue, pinned.id).await, retried);
    let again = claim_one(queue, 100).await;
    assert_eq!(again.pinned_vendor, None);
    queue
        .complete(pinned.id, token(&again), &vendor("tencent"), at(101))
        .await
        .unwrap();

    // Pinned by a failure, then dead without a pin: no pin is left.
    let other = enqueue(queue, queued(at(200), at(200))).await;
    let claimed = claim_one(queue, 200).await;
    assert_eq!(claimed.id, other.id);
    queue
        .fail(
            other.id,
            token(&claimed),
            pinned_failure("tencent"),
            at(210),
            at(201),
        )
        .await
        .unwrap();
    let claimed = claim(queue, "drainer-b", 210, 10).await;
    assert_eq!(ids(&claimed), [other.id]);
    queue
        .dead(
            other.id,
            token(&claimed[0]),
            vendor_failure("tencent", "out of attempts"),
            at(211),
        )
        .await
        .unwrap();
    assert_eq!(get(queue, other.id).await.pinned_vendor, None);
}
