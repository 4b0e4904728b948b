//! Claiming: which messages a claim leases, in what order, and what a lease protects.

use std::collections::HashSet;
use std::sync::Arc;

use crate::ids::MessageId;
use crate::queue::{DeferredQueue, MessageStatus};

use super::fixtures::{at, queued};
use super::support::{
    LEASE, assert_lease_lost, claim, claim_one, enqueue, failure, get, ids, token, vendor,
    vendor_failure,
};

/// A claim leases up to `limit` due messages, oldest due first, under one fresh token.
pub async fn claim_takes_oldest_due_first_up_to_the_limit(queue: &Arc<dyn DeferredQueue>) {
    let mut by_due = Vec::new();
    for due in [5, 1, 3, 2, 4] {
        let m = enqueue(queue, queued(at(0), at(due))).await;
        by_due.push((due, m.id));
    }
    by_due.sort();
    let expected: Vec<MessageId> = by_due.iter().map(|(_, id)| *id).collect();

    let first = claim(queue, "drainer-a", 10, 3).await;
    assert_eq!(ids(&first), expected[..3]);
    let token_a = token(&first[0]);
    for m in &first {
        assert_eq!(m.status, MessageStatus::Leased);
        assert_eq!(m.attempts, 1);
        assert_eq!(m.updated_at, at(10));
        let lease = m.lease.as_ref().unwrap();
        assert_eq!(lease.owner, "drainer-a");
        assert_eq!(lease.token, token_a, "one claim, one token");
        assert_eq!(lease.expires_at, at(40));
        assert_eq!(&get(queue, m.id).await, m);
    }
    let second = claim(queue, "drainer-b", 10, 3).await;
    assert_eq!(ids(&second), expected[3..]);
    assert_ne!(token(&second[0]), token_a, "every claim has a fresh token");
    assert!(claim(queue, "drainer-c", 10, 3).await.is_empty());
    assert_eq!(queue.stats().await.unwrap().leased, 5);
}

/// Messages due at the same time are claimed in id order.
pub async fn claim_breaks_due_time_ties_by_id(queue: &Arc<dyn DeferredQueue>) {
    let mut expected = Vec::new();
    for _ in 0..4 {
        expected.push(enqueue(queue, queued(at(0), at(1))).await.id);
    }
    expected.sort();
    assert_eq!(ids(&claim(queue, "a", 1, 10).await), expected);
}

/// A claim with limit 0 leases nothing.
pub async fn claim_with_limit_zero_claims_nothing(queue: &Arc<dyn DeferredQueue>) {
    enqueue(queue, queued(at(0), at(0))).await;
    assert!(claim(queue, "a", 1, 0).await.is_empty());
    assert_eq!(queue.stats().await.unwrap().queued, 1);
}

/// A message is claimable from its due time on, not a second earlier.
pub async fn messages_are_not_claimable_before_their_due_time(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(60))).await;
    assert!(claim(queue, "a", 59, 10).await.is_empty());
    assert_eq!(get(queue, m.id).await.status, MessageStatus::Queued);
    // Due exactly now counts as due.
    assert_eq!(ids(&claim(queue, "a", 60, 10).await), [m.id]);
}

/// Every claim of a message counts one attempt.
pub async fn every_claim_counts_one_attempt(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    for attempt in 1..=3 {
        let now = i64::from(attempt) * 100;
        let claimed = claim_one(queue, now).await;
        assert_eq!(claimed.id, m.id);
        assert_eq!(claimed.attempts, attempt);
        queue
            .fail(
                m.id,
                token(&claimed),
                vendor_failure("tencent", "5xx"),
                at(now),
                at(now),
            )
            .await
            .unwrap();
        assert_eq!(get(queue, m.id).await.attempts, attempt);
    }
}

/// A lapsed lease is claimed again under a new token, and every change under the old
/// token is refused.
pub async fn a_lapsed_lease_is_claimed_again_and_the_old_token_is_refused(
    queue: &Arc<dyn DeferredQueue>,
) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let first = claim(queue, "crashed", 10, 1).await.remove(0);
    // The lease runs 30 s: still held a second before it lapses.
    assert!(claim(queue, "rescuer", 39, 10).await.is_empty());
    let second = claim(queue, "rescuer", 40, 10).await;
    assert_eq!(ids(&second), [m.id]);
    let second = &second[0];
    assert_eq!(second.attempts, 2);
    assert_eq!(second.lease.as_ref().unwrap().owner, "rescuer");
    assert_ne!(token(second), token(&first));

    // The stale holder wakes up: every change it tries is refused.
    let stale = token(&first);
    assert_lease_lost(
        queue.complete(m.id, stale, &vendor("aliyun"), at(41)).await,
        m.id,
    );
    assert_lease_lost(
        queue.fail(m.id, stale, failure("x"), at(41), at(41)).await,
        m.id,
    );
    assert_lease_lost(queue.dead(m.id, stale, failure("x"), at(41)).await, m.id);
    assert_lease_lost(queue.expire(m.id, stale, at(41)).await, m.id);
    assert_lease_lost(queue.release(m.id, stale, at(41)).await, m.id);
    assert_eq!(
        get(queue, m.id).await,
        *second,
        "refused updates change nothing"
    );

    queue
        .complete(m.id, token(second), &vendor("tencent"), at(42))
        .await
        .unwrap();
    assert_eq!(get(queue, m.id).await.status, MessageStatus::Sent);
}

/// A message claimed again because its lease lapsed may have been sent by the holder
/// that lost it (a crash mid-call): the new claim flags it `may_duplicate`. A first
/// claim of a queued message does not.
pub async fn a_reclaimed_lapsed_lease_is_flagged_may_duplicate(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let first = claim(queue, "crashed", 10, 1).await.remove(0);
    assert!(!first.may_duplicate, "a first claim is not a duplicate");
    let second = claim(queue, "rescuer", 40, 10).await.remove(0);
    assert!(second.may_duplicate, "{second:?}");
    assert!(get(queue, m.id).await.may_duplicate);
    // Released (shutdown) rather than lapsed: not sent, not flagged.
    let other = enqueue(queue, queued(at(50), at(50))).await;
    let claimed = claim(queue, "a", 50, 10).await;
    let mine = claimed.iter().find(|c| c.id == other.id).unwrap();
    queue.release(other.id, token(mine), at(51)).await.unwrap();
    let again = claim(queue, "b", 52, 10).await;
    let again = again.iter().find(|c| c.id == other.id).unwrap();
    assert!(!again.may_duplicate, "{again:?}");
}

/// A lapsed lease nobody claimed again still accepts its holder's outcome.
pub async fn a_lapsed_lease_not_yet_reclaimed_still_accepts_its_token(
    queue: &Arc<dyn DeferredQueue>,
) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 0).await;
    // Nobody claimed it after the lease lapsed, so the slow sender's outcome is kept.
    queue
        .complete(m.id, token(&claimed), &vendor("aliyun"), at(500))
        .await
        .unwrap();
    assert_eq!(get(queue, m.id).await.status, MessageStatus::Sent);
}

/// Eight claimers at once never lease the same message.
pub async fn concurrent_claimers_never_share_a_message(queue: &Arc<dyn DeferredQueue>) {
    const MESSAGES: usize = 200;
    for _ in 0..MESSAGES {
        enqueue(queue, queued(at(0), at(0))).await;
    }
    let mut claimers = Vec::new();
    for c in 0..8 {
        let queue = Arc::clone(queue);
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = queue
                    .claim(&format!("c{c}"), at(1), LEASE, 7)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), MESSAGES, "every message claimed once");
    assert_eq!(distinct.len(), MESSAGES, "no message claimed twice");
}
