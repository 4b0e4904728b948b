//! The outcome of a claimed message: complete, fail, dead, expire, release, and the
//! manual retry of a message that ran out of attempts or time.

use std::sync::Arc;

use crate::error::StoreError;
use crate::ids::MessageId;
use crate::queue::{AttemptFailure, DeferredQueue, LeaseToken, MessageStatus, QueueReason};

use super::fixtures::{at, queued};
use super::support::{
    assert_lease_lost, assert_not_found, claim, claim_one, enqueue, failure, get, ids, token,
    vendor, vendor_failure,
};

/// `complete` marks the message sent with its vendor; a second completion is refused.
pub async fn complete_marks_sent_and_records_the_vendor(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue
        .complete(m.id, token(&claimed), &vendor("cloopen"), at(2))
        .await
        .unwrap();
    let sent = get(queue, m.id).await;
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(sent.last_vendor, Some(vendor("cloopen")));
    assert_eq!(sent.lease, None);
    assert_eq!(sent.updated_at, at(2));
    assert_eq!(sent.attempts, 1);
    assert!(claim(queue, "a", 10_000, 10).await.is_empty());
    // A duplicate completion (a retried call) is refused, not applied twice.
    assert_lease_lost(
        queue
            .complete(m.id, token(&claimed), &vendor("aliyun"), at(3))
            .await,
        m.id,
    );
    assert_eq!(get(queue, m.id).await.last_vendor, Some(vendor("cloopen")));
}

/// `fail` requeues the message at its backoff time and keeps the failure.
pub async fn fail_requeues_with_backoff_and_keeps_the_failure(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue
        .fail(
            m.id,
            token(&claimed),
            AttemptFailure {
                may_duplicate: true,
                ..vendor_failure("aliyun", "timed out")
            },
            at(31),
            at(1),
        )
        .await
        .unwrap();
    let failed = get(queue, m.id).await;
    assert_eq!(failed.status, MessageStatus::Queued);
    assert_eq!(failed.next_attempt_at, at(31));
    assert_eq!(failed.last_vendor, Some(vendor("aliyun")));
    assert_eq!(failed.last_error.as_deref(), Some("timed out"));
    assert!(failed.may_duplicate);
    assert_eq!(failed.lease, None);
    assert_eq!(failed.updated_at, at(1));
    // The backoff holds: not claimable a second early.
    assert!(claim(queue, "a", 30, 10).await.is_empty());
    let again = claim_one(queue, 31).await;
    assert_eq!(again.attempts, 2);
    // A failure before any vendor was tried keeps the last vendor, and a later clean
    // failure does not clear the "may have been delivered" flag.
    queue
        .fail(m.id, token(&again), failure("no vendor"), at(90), at(32))
        .await
        .unwrap();
    let failed = get(queue, m.id).await;
    assert_eq!(failed.last_vendor, Some(vendor("aliyun")));
    assert_eq!(failed.last_error.as_deref(), Some("no vendor"));
    assert!(failed.may_duplicate);
    // The old token is spent.
    assert_lease_lost(
        queue
            .fail(m.id, token(&again), failure("x"), at(99), at(33))
            .await,
        m.id,
    );
}

/// `dead` keeps the message, listed, never claimed and never purged.
pub async fn dead_messages_are_kept_and_never_claimed(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue
        .dead(
            m.id,
            token(&claimed),
            vendor_failure("tencent", "rejected: bad template"),
            at(2),
        )
        .await
        .unwrap();
    let dead = get(queue, m.id).await;
    assert_eq!(dead.status, MessageStatus::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("rejected: bad template"));
    assert_eq!(dead.last_vendor, Some(vendor("tencent")));
    assert_eq!(dead.lease, None);
    assert_eq!(dead.updated_at, at(2));
    assert!(claim(queue, "a", 1_000_000, 10).await.is_empty());
    assert_eq!(
        ids(&queue.list(MessageStatus::Dead, 10).await.unwrap()),
        [m.id]
    );
    // Retention never removes dead messages.
    assert_eq!(queue.purge_sent(at(1_000_000), 100).await.unwrap(), 0);
    assert!(queue.get(m.id).await.unwrap().is_some());
}

/// `expire` takes the message out of the queue for good.
pub async fn expire_marks_the_message_expired(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue.expire(m.id, token(&claimed), at(2)).await.unwrap();
    let expired = get(queue, m.id).await;
    assert_eq!(expired.status, MessageStatus::Expired);
    assert_eq!(expired.lease, None);
    assert_eq!(expired.updated_at, at(2));
    assert!(claim(queue, "a", 1_000_000, 10).await.is_empty());
    assert_lease_lost(queue.expire(m.id, token(&claimed), at(3)).await, m.id);
}

/// `release` requeues the message and gives back the claim's attempt.
pub async fn release_requeues_now_without_counting_the_attempt(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    assert_eq!(claimed.attempts, 1);
    queue.release(m.id, token(&claimed), at(5)).await.unwrap();
    let released = get(queue, m.id).await;
    assert_eq!(released.status, MessageStatus::Queued);
    assert_eq!(released.attempts, 0);
    assert_eq!(released.next_attempt_at, at(5));
    assert_eq!(released.lease, None);
    assert_eq!(claim_one(queue, 5).await.attempts, 1);
    assert_lease_lost(queue.release(m.id, token(&claimed), at(6)).await, m.id);
}

/// `retry` requeues dead and expired messages with fresh attempts, and refuses others.
pub async fn retry_requeues_dead_and_expired_messages_only(queue: &Arc<dyn DeferredQueue>) {
    let dead = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue
        .dead(dead.id, token(&claimed), failure("out of attempts"), at(2))
        .await
        .unwrap();
    let retried = queue.retry(dead.id, at(100)).await.unwrap();
    assert_eq!(retried.status, MessageStatus::Queued);
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.reason, QueueReason::ManualRetry);
    assert_eq!(retried.next_attempt_at, at(100));
    assert_eq!(retried.updated_at, at(100));
    assert_eq!(retried.last_error.as_deref(), Some("out of attempts"));
    assert_eq!(get(queue, dead.id).await, retried);
    let again = claim_one(queue, 100).await;
    assert_eq!(again.attempts, 1);
    queue
        .complete(dead.id, token(&again), &vendor("aliyun"), at(101))
        .await
        .unwrap();

    let expired = enqueue(queue, queued(at(0), at(200))).await;
    let claimed = claim_one(queue, 200).await;
    assert_eq!(claimed.id, expired.id);
    queue
        .expire(expired.id, token(&claimed), at(201))
        .await
        .unwrap();
    assert_eq!(
        queue.retry(expired.id, at(300)).await.unwrap().status,
        MessageStatus::Queued
    );

    // Queued, leased and sent messages are not retried.
    match queue.retry(expired.id, at(301)).await {
        Err(StoreError::WrongStatus { id, status, .. }) => {
            assert_eq!(id, expired.id);
            assert_eq!(status, MessageStatus::Queued);
        }
        other => panic!("expected WrongStatus, found {other:?}"),
    }
    let unknown = MessageId::new();
    assert_not_found(queue.retry(unknown, at(301)).await, unknown);
}

/// Every change of a message never stored is `NotFound`.
pub async fn updates_of_unknown_messages_are_not_found(queue: &Arc<dyn DeferredQueue>) {
    let id = MessageId::new();
    let t = LeaseToken::new();
    assert_not_found(queue.complete(id, t, &vendor("aliyun"), at(0)).await, id);
    assert_not_found(queue.fail(id, t, failure("x"), at(0), at(0)).await, id);
    assert_not_found(queue.dead(id, t, failure("x"), at(0)).await, id);
    assert_not_found(queue.expire(id, t, at(0)).await, id);
    assert_not_found(queue.release(id, t, at(0)).await, id);
    assert_not_found(queue.defer(id, t, at(0), at(0)).await, id);
    assert_not_found(queue.narrow(id, t, &[], at(0)).await, id);
}
