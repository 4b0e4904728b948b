//! Deferring a claimed message: while every vendor rests the drain still claims due
//! messages (to expire the ones past their deadline on time) and gives the others back,
//! due when the first rest ends, without counting an attempt.

use std::sync::Arc;

use crate::queue::{AttemptFailure, DeferredQueue, MessageStatus, StoredMessage};

use super::fixtures::{at, queued};
use super::support::{assert_lease_lost, claim, claim_one, enqueue, get, token, vendor_failure};

/// A deferred message is queued again, due at `due_at`: a claim a second before takes
/// nothing, one at `due_at` takes it. Its attempts are those before the claim, and the
/// earlier failure, its pin and the duplicate flag stay; only the time of the change
/// moves besides.
pub async fn defer_requeues_at_due_at_without_counting_the_attempt(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    // One attempt failed, at a vendor whose per-number limit pins the message to it and
    // whose outcome is unknown.
    let first = claim_one(queue, 1).await;
    queue
        .fail(
            m.id,
            token(&first),
            AttemptFailure {
                may_duplicate: true,
                pinned: true,
                ..vendor_failure("aliyun", "recipient limit")
            },
            at(10),
            at(2),
        )
        .await
        .unwrap();
    let claimed = claim_one(queue, 10).await;
    assert_eq!(claimed.attempts, 2);

    queue
        .defer(m.id, token(&claimed), at(100), at(11))
        .await
        .unwrap();
    let deferred = get(queue, m.id).await;
    assert_eq!(
        deferred,
        StoredMessage {
            status: MessageStatus::Queued,
            attempts: 1,
            next_attempt_at: at(100),
            lease: None,
            updated_at: at(11),
            ..claimed.clone()
        },
        "queued at due_at, the claim's attempt given back, nothing else changed"
    );

    assert!(claim(queue, "drainer-b", 99, 10).await.is_empty());
    let again = claim_one(queue, 100).await;
    assert_eq!(again.id, m.id);
    assert_eq!(again.attempts, 2);
    assert_ne!(token(&again), token(&claimed));
}

/// Only the current holder defers: once another claimer took the message the old
/// token is refused and changes nothing, and a token spent by a deferral is refused.
pub async fn defer_with_a_stale_token_is_lease_lost(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let first = claim(queue, "crashed", 10, 1).await.remove(0);
    let second = claim(queue, "rescuer", 40, 10).await.remove(0);
    assert_eq!(second.id, m.id);

    assert_lease_lost(
        queue.defer(m.id, token(&first), at(500), at(41)).await,
        m.id,
    );
    assert_eq!(
        get(queue, m.id).await,
        second,
        "a refused deferral changes nothing"
    );

    queue
        .defer(m.id, token(&second), at(500), at(42))
        .await
        .unwrap();
    let deferred = get(queue, m.id).await;
    assert_lease_lost(
        queue.defer(m.id, token(&second), at(900), at(43)).await,
        m.id,
    );
    assert_eq!(
        get(queue, m.id).await,
        deferred,
        "a spent token changes nothing"
    );
    assert_eq!(deferred.next_attempt_at, at(500));
}
