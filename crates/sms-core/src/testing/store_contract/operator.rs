//! What operators and retention use: listing by status, counting, and purging old sent
//! messages.

use std::sync::Arc;

use crate::ids::IdempotencyKey;
use crate::queue::{DeferredQueue, MessageStatus};

use super::fixtures::{at, keyed_request, queued, queued_request};
use super::support::{LEASE, claim, claim_one, enqueue, failure, ids, token, vendor};

/// `list` returns the messages of one status, oldest first, up to the limit.
pub async fn list_returns_one_status_oldest_first_up_to_the_limit(queue: &Arc<dyn DeferredQueue>) {
    let mut queued_ids = Vec::new();
    for created in [3, 1, 2] {
        queued_ids.push((
            created,
            enqueue(queue, queued(at(created), at(1_000))).await.id,
        ));
    }
    queued_ids.sort();
    let dead = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 5).await;
    assert_eq!(claimed.id, dead.id);
    queue
        .dead(dead.id, token(&claimed), failure("x"), at(6))
        .await
        .unwrap();

    let oldest_two = queue.list(MessageStatus::Queued, 2).await.unwrap();
    assert_eq!(ids(&oldest_two), [queued_ids[0].1, queued_ids[1].1]);
    let all = queue.list(MessageStatus::Queued, 100).await.unwrap();
    assert_eq!(
        ids(&all),
        queued_ids.iter().map(|(_, id)| *id).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&queue.list(MessageStatus::Dead, 100).await.unwrap()),
        [dead.id]
    );
    assert!(
        queue
            .list(MessageStatus::Sent, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        queue
            .list(MessageStatus::Queued, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `stats` counts the messages of every status, as `list` finds them.
pub async fn stats_count_every_status(queue: &Arc<dyn DeferredQueue>) {
    assert_eq!(queue.stats().await.unwrap(), Default::default());
    // Five due at once, claimed in creation order (ties broken by id, which grows).
    let mut messages = Vec::new();
    for _ in 0..6 {
        messages.push(enqueue(queue, queued(at(0), at(0))).await);
    }
    let claimed = claim(queue, "a", 1, 4).await;
    let [sent, dead, expired, _leased] = &claimed[..] else {
        panic!("expected four claimed messages");
    };
    queue
        .complete(sent.id, token(sent), &vendor("aliyun"), at(2))
        .await
        .unwrap();
    queue
        .dead(dead.id, token(dead), failure("x"), at(2))
        .await
        .unwrap();
    queue
        .expire(expired.id, token(expired), at(2))
        .await
        .unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (
            stats.queued,
            stats.leased,
            stats.sent,
            stats.dead,
            stats.expired
        ),
        (2, 1, 1, 1, 1)
    );
    for status in MessageStatus::ALL {
        let listed = queue.list(status, 100).await.unwrap().len() as u64;
        assert_eq!(stats.get(status), listed, "{status}");
    }
}

/// `purge_sent` removes sent messages older than the cut-off only, at most `limit`.
pub async fn purge_sent_removes_only_old_sent_messages(queue: &Arc<dyn DeferredQueue>) {
    // Five messages sent at +1 … +5 s.
    let mut sent = Vec::new();
    for i in 1..=5 {
        let m = enqueue(
            queue,
            queued_request(keyed_request(&format!("k{i}")), at(0), at(0)),
        )
        .await;
        let claimed = claim_one(queue, i).await;
        assert_eq!(claimed.id, m.id);
        queue
            .complete(m.id, token(&claimed), &vendor("aliyun"), at(i))
            .await
            .unwrap();
        sent.push(m.id);
    }
    let waiting = enqueue(queue, queued(at(0), at(10_000))).await;

    // Sent before +4 s: three of them, removed at most two per call.
    assert_eq!(queue.purge_sent(at(4), 2).await.unwrap(), 2);
    assert_eq!(queue.purge_sent(at(4), 10).await.unwrap(), 1);
    assert_eq!(queue.purge_sent(at(4), 10).await.unwrap(), 0);
    for (i, id) in sent.iter().enumerate() {
        assert_eq!(
            queue.get(*id).await.unwrap().is_some(),
            i >= 3,
            "message sent at +{}s",
            i + 1
        );
    }
    assert!(queue.get(waiting.id).await.unwrap().is_some());
    assert_eq!(queue.stats().await.unwrap().sent, 2);
    // A purged message's key is free again.
    let key = IdempotencyKey::new("k1").unwrap();
    assert_eq!(queue.find_by_idempotency_key(&key).await.unwrap(), None);
    enqueue(queue, queued_request(keyed_request("k1"), at(20), at(20))).await;
}

/// `purge_sent` removes more messages than one of a backend's delete batches holds.
pub async fn purge_sent_works_through_more_than_one_batch(queue: &Arc<dyn DeferredQueue>) {
    const SENT: usize = 1_050;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let queue = Arc::clone(queue);
        tasks.push(tokio::spawn(async move {
            for _ in 0..SENT / 10 {
                queue.enqueue(queued(at(0), at(0))).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let claimed = queue.claim("a", at(1), LEASE, SENT as u32).await.unwrap();
    assert_eq!(claimed.len(), SENT);
    for m in &claimed {
        queue
            .complete(m.id, token(m), &vendor("aliyun"), at(2))
            .await
            .unwrap();
    }
    assert_eq!(queue.purge_sent(at(3), 1_040).await.unwrap(), 1_040);
    assert_eq!(queue.stats().await.unwrap().sent, 10);
    assert_eq!(queue.purge_sent(at(3), 1_040).await.unwrap(), 10);
}
