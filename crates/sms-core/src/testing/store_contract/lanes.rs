//! Lanes, schedules and clients: high-priority messages are claimed before normal ones,
//! a claim can keep room for normal ones, the drain learns when the next message falls
//! due, and a client lists its own messages and cancels one still queued.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::ids::{ClientId, MessageId};
use crate::queue::{DeferredQueue, MessageStatus, NewMessage, QueueReason, StoredMessage};
use crate::request::{Priority, SmsRequest};

use super::fixtures::{at, queued, queued_request, request};
use super::support::{
    LEASE, assert_not_found, claim, claim_one, created, enqueue, failure, get, ids, token, vendor,
};

/// A high-priority message queued at `created`, due at `due`.
fn high(created: DateTime<Utc>, due: DateTime<Utc>) -> NewMessage {
    queued_request(request().with_priority(Priority::High), created, due)
}

/// The client named `name`.
fn client(name: &str) -> ClientId {
    ClientId::new(name).unwrap()
}

/// A plain request of client `name`.
fn request_of(name: &str) -> SmsRequest {
    request().with_client(client(name))
}

/// Claims up to `limit` messages at `now_secs`, keeping room for `normal_min` normal
/// ones.
async fn claim_lanes(
    queue: &Arc<dyn DeferredQueue>,
    now_secs: i64,
    limit: u32,
    normal_min: u32,
) -> Vec<StoredMessage> {
    queue
        .claim_lanes("drainer-a", at(now_secs), LEASE, limit, normal_min)
        .await
        .unwrap()
}

/// Asserts that an operation on `id` was refused as `WrongStatus` with `status`,
/// expecting `expected`.
fn assert_wrong_status<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    id: MessageId,
    status: MessageStatus,
    expected: &str,
) {
    match result {
        Err(StoreError::WrongStatus {
            id: refused,
            status: found,
            expected: wanted,
        }) => assert_eq!((refused, found, wanted), (id, status, expected)),
        other => panic!("expected WrongStatus({id}, {status}), found {other:?}"),
    }
}

/// A claim takes due high-priority messages before normal ones due earlier, then
/// normal ones; each lane oldest due first, and the answer in that order.
pub async fn high_priority_messages_are_claimed_before_older_normal_ones(
    queue: &Arc<dyn DeferredQueue>,
) {
    let normal_1 = enqueue(queue, queued(at(0), at(1))).await;
    let normal_2 = enqueue(queue, queued(at(0), at(2))).await;
    let high_5 = enqueue(queue, high(at(0), at(5))).await;
    let high_3 = enqueue(queue, high(at(0), at(3))).await;
    // Not due yet: neither lane's order lets it in early.
    let high_later = enqueue(queue, high(at(0), at(100))).await;

    let first = claim(queue, "drainer-a", 10, 3).await;
    assert_eq!(ids(&first), [high_3.id, high_5.id, normal_1.id]);
    for m in &first {
        assert_eq!(m.status, MessageStatus::Leased);
        assert_eq!(&get(queue, m.id).await, m);
    }
    assert_eq!(ids(&claim(queue, "drainer-b", 10, 3).await), [normal_2.id]);
    // Lapsed high-priority leases (both at +40 s, so in id order) are claimed again
    // ahead of the normal lane, though a normal message has been due since +30 s.
    let normal_late = enqueue(queue, queued(at(0), at(30))).await;
    let mut lapsed_highs = [high_3.id, high_5.id];
    lapsed_highs.sort();
    let again = claim(queue, "drainer-c", 100, 2).await;
    assert_eq!(ids(&again), lapsed_highs);
    assert!(again.iter().all(|m| m.may_duplicate));
    let mut lapsed_normals = [normal_1.id, normal_2.id];
    lapsed_normals.sort();
    let rest = claim(queue, "drainer-c", 100, 10).await;
    assert_eq!(
        ids(&rest),
        [
            high_later.id,
            normal_late.id,
            lapsed_normals[0],
            lapsed_normals[1]
        ]
    );
}

/// `claim_lanes` gives high-priority messages at most `limit - normal_min` of a
/// claim; normal ones fill the rest. High-priority messages beyond that wait for the
/// next claim even when the normal lane cannot fill its room.
pub async fn normal_min_keeps_room_for_normal_messages(queue: &Arc<dyn DeferredQueue>) {
    let mut highs = Vec::new();
    let mut normals = Vec::new();
    for due in 1..=5 {
        highs.push(enqueue(queue, high(at(0), at(due))).await.id);
        normals.push(enqueue(queue, queued(at(0), at(due))).await.id);
    }
    let first = claim_lanes(queue, 10, 4, 1).await;
    assert_eq!(ids(&first), [highs[0], highs[1], highs[2], normals[0]]);
    let second = claim_lanes(queue, 10, 4, 3).await;
    assert_eq!(ids(&second), [highs[3], normals[1], normals[2], normals[3]]);
    // No room for the high lane at all (`normal_min` at or above the limit): the last
    // high-priority message waits, though only one normal message is left and then
    // none.
    assert_eq!(ids(&claim_lanes(queue, 10, 4, 10).await), [normals[4]]);
    assert!(claim_lanes(queue, 10, 4, 4).await.is_empty());
    assert_eq!(ids(&claim_lanes(queue, 10, 4, 3).await), [highs[4]]);
    assert!(claim_lanes(queue, 10, 4, 0).await.is_empty());

    // Normal messages fill whatever the high lane leaves.
    let lone_high = enqueue(queue, high(at(0), at(20))).await.id;
    let mut more = Vec::new();
    for due in 21..=25 {
        more.push(enqueue(queue, queued(at(0), at(due))).await.id);
    }
    let fourth = claim_lanes(queue, 30, 4, 1).await;
    assert_eq!(ids(&fourth), [lone_high, more[0], more[1], more[2]]);
    assert!(claim_lanes(queue, 30, 0, 0).await.is_empty());
    assert_eq!(ids(&claim_lanes(queue, 30, 4, 0).await), more[3..]);
}

/// `next_due` is the earliest time a queued message falls due or a lease lapses, over
/// both lanes; final messages do not count, and an empty queue has none.
pub async fn next_due_is_the_earliest_due_message_or_lapsing_lease(queue: &Arc<dyn DeferredQueue>) {
    assert_eq!(queue.next_due().await.unwrap(), None);
    let normal = enqueue(queue, queued(at(0), at(50))).await;
    assert_eq!(queue.next_due().await.unwrap(), Some(at(50)));
    let urgent = enqueue(queue, high(at(0), at(40))).await;
    assert_eq!(queue.next_due().await.unwrap(), Some(at(40)));

    // Leased until +45 + 30 s: the normal message is now the earliest.
    let claimed = claim_one(queue, 45).await;
    assert_eq!(claimed.id, urgent.id);
    assert_eq!(queue.next_due().await.unwrap(), Some(at(50)));
    let claimed_normal = claim_one(queue, 55).await;
    assert_eq!(claimed_normal.id, normal.id);
    assert_eq!(
        queue.next_due().await.unwrap(),
        Some(at(75)),
        "lease lapses"
    );

    queue
        .complete(urgent.id, token(&claimed), &vendor("aliyun"), at(60))
        .await
        .unwrap();
    assert_eq!(queue.next_due().await.unwrap(), Some(at(85)));
    queue
        .dead(normal.id, token(&claimed_normal), failure("x"), at(61))
        .await
        .unwrap();
    assert_eq!(queue.next_due().await.unwrap(), None);

    let scheduled = enqueue(queue, queued(at(70), at(1_000))).await;
    assert_eq!(queue.next_due().await.unwrap(), Some(at(1_000)));
    queue.cancel(scheduled.id, at(71)).await.unwrap();
    assert_eq!(queue.next_due().await.unwrap(), None);
}

/// A cancelled message is final: never claimed again, counted and listed as
/// cancelled, refused by an operator's retry and by a second cancel.
pub async fn cancel_takes_a_queued_message_out_for_good(queue: &Arc<dyn DeferredQueue>) {
    let mut new = queued_request(request_of("shop").with_send_at(at(100)), at(0), at(100));
    new.reason = QueueReason::Scheduled;
    let scheduled = enqueue(queue, new).await;
    let waiting = enqueue(queue, queued(at(0), at(0))).await;

    let cancelled = queue.cancel(scheduled.id, at(5)).await.unwrap();
    assert_eq!(cancelled.status, MessageStatus::Cancelled);
    assert_eq!(cancelled.updated_at, at(5));
    assert_eq!(cancelled.lease, None);
    assert_eq!(cancelled.reason, QueueReason::Scheduled);
    assert_eq!(cancelled.request, scheduled.request);
    assert_eq!(cancelled, get(queue, scheduled.id).await);

    assert_eq!(ids(&claim(queue, "a", 1_000, 10).await), [waiting.id]);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.cancelled, stats.queued, stats.leased), (1, 0, 1));
    assert_eq!(
        ids(&queue.list(MessageStatus::Cancelled, 10).await.unwrap()),
        [scheduled.id]
    );
    assert_wrong_status(
        queue.retry(scheduled.id, at(6)).await,
        scheduled.id,
        MessageStatus::Cancelled,
        "dead or expired",
    );
    assert_wrong_status(
        queue.cancel(scheduled.id, at(7)).await,
        scheduled.id,
        MessageStatus::Cancelled,
        "queued",
    );
    assert_eq!(get(queue, scheduled.id).await, cancelled);
}

/// Only a queued message can be cancelled: a leased one stays with its sender, a sent
/// one stays sent, and an unknown id is not found.
pub async fn cancel_refuses_leased_and_final_messages(queue: &Arc<dyn DeferredQueue>) {
    let leased = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    assert_eq!(claimed.id, leased.id);
    assert_wrong_status(
        queue.cancel(leased.id, at(2)).await,
        leased.id,
        MessageStatus::Leased,
        "queued",
    );
    assert_eq!(get(queue, leased.id).await, claimed, "nothing changed");
    // The sender still holds it.
    queue
        .complete(leased.id, token(&claimed), &vendor("aliyun"), at(3))
        .await
        .unwrap();
    assert_wrong_status(
        queue.cancel(leased.id, at(4)).await,
        leased.id,
        MessageStatus::Sent,
        "queued",
    );
    let missing = MessageId::new();
    assert_not_found(queue.cancel(missing, at(5)).await, missing);
    assert_eq!(queue.stats().await.unwrap().cancelled, 0);
}

/// A message waiting for its retry is queued, and can be cancelled too.
pub async fn a_message_waiting_for_a_retry_can_be_cancelled(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    queue
        .fail(m.id, token(&claimed), failure("503"), at(60), at(2))
        .await
        .unwrap();
    let cancelled = queue.cancel(m.id, at(3)).await.unwrap();
    assert_eq!(cancelled.status, MessageStatus::Cancelled);
    assert_eq!(cancelled.attempts, 1);
    assert_eq!(cancelled.last_error.as_deref(), Some("503"));
    assert!(claim(queue, "a", 1_000, 10).await.is_empty());
}

/// `list_for_client` returns one client's messages of one status, oldest first, up to
/// the limit; other clients' and unnamed clients' messages are not among them.
pub async fn list_for_client_returns_one_clients_messages_of_one_status_oldest_first(
    queue: &Arc<dyn DeferredQueue>,
) {
    let shop = client("shop");
    let mut shop_queued = Vec::new();
    for created in [3, 1, 2] {
        let m = queued_request(request_of("shop"), at(created), at(1_000));
        shop_queued.push((created, enqueue(queue, m).await.id));
    }
    shop_queued.sort();
    let shop_queued: Vec<MessageId> = shop_queued.into_iter().map(|(_, id)| id).collect();
    let auth = enqueue(queue, queued_request(request_of("auth"), at(0), at(1_000))).await;
    enqueue(queue, queued(at(0), at(1_000))).await;
    let shop_sent = enqueue(queue, queued_request(request_of("shop"), at(0), at(0))).await;
    let claimed = claim_one(queue, 5).await;
    assert_eq!(claimed.id, shop_sent.id);
    queue
        .complete(shop_sent.id, token(&claimed), &vendor("aliyun"), at(6))
        .await
        .unwrap();

    let list = |c: ClientId, status, limit| {
        let queue = Arc::clone(queue);
        async move { queue.list_for_client(&c, status, limit).await.unwrap() }
    };
    assert_eq!(
        ids(&list(shop.clone(), MessageStatus::Queued, 2).await),
        shop_queued[..2]
    );
    let all = list(shop.clone(), MessageStatus::Queued, 100).await;
    assert_eq!(ids(&all), shop_queued);
    for m in &all {
        assert_eq!(m, &get(queue, m.id).await);
    }
    assert_eq!(
        ids(&list(shop.clone(), MessageStatus::Sent, 100).await),
        [shop_sent.id]
    );
    assert_eq!(
        ids(&list(client("auth"), MessageStatus::Queued, 100).await),
        [auth.id]
    );
    assert!(
        list(client("nobody"), MessageStatus::Queued, 100)
            .await
            .is_empty()
    );
    assert!(
        list(shop.clone(), MessageStatus::Queued, 0)
            .await
            .is_empty()
    );
    assert!(list(shop, MessageStatus::Dead, 100).await.is_empty());
}

/// The requests the round-trip cases store: a named client's high-priority message
/// scheduled at a time with nanoseconds, a named client's normal one, and a plain one.
fn lane_requests(tag: &str) -> Vec<NewMessage> {
    let send_at = at(600) + chrono::Duration::nanoseconds(123_456);
    let mut scheduled = queued_request(
        request_of("shop")
            .with_priority(Priority::High)
            .with_send_at(send_at),
        at(0),
        send_at,
    );
    scheduled.reason = QueueReason::Scheduled;
    let named = queued_request(request_of(&format!("{tag}-client")), at(1), at(1));
    vec![scheduled, named, queued(at(2), at(2))]
}

/// What every stored request of [`lane_requests`] must read back as.
fn assert_lanes_kept(given: &NewMessage, stored: &StoredMessage) {
    let (asked, kept) = (&given.request, &stored.request);
    assert_eq!(kept.client(), asked.client(), "{}", given.id);
    assert_eq!(kept.priority(), asked.priority(), "{}", given.id);
    assert_eq!(stored.reason, given.reason, "{}", given.id);
    match (kept.send_at(), asked.send_at()) {
        (None, None) => {}
        (Some(kept), Some(asked)) => {
            // Equal to the microsecond the durable stores keep.
            assert!((kept - asked).num_nanoseconds().unwrap().abs() < 1_000);
        }
        other => panic!("send_at of {} changed: {other:?}", given.id),
    }
}

/// A request's client, lane and scheduled time are stored with it and read back by
/// `get` exactly as `enqueue` answered them.
pub async fn client_priority_and_schedule_round_trip_through_enqueue_and_get(
    queue: &Arc<dyn DeferredQueue>,
) {
    let messages = lane_requests("one");
    for new in &messages {
        let answer = enqueue(queue, new.clone()).await;
        assert_eq!(answer, get(queue, new.id).await, "{}", new.id);
        assert_lanes_kept(new, &answer);
    }
    let plain = get(queue, messages[2].id).await.request;
    assert_eq!(
        (plain.client(), plain.priority(), plain.send_at()),
        (None, Priority::Normal, None)
    );
}

/// `enqueue_many` stores each request's client, lane and scheduled time, as `enqueue`
/// does.
pub async fn client_priority_and_schedule_round_trip_through_enqueue_many(
    queue: &Arc<dyn DeferredQueue>,
) {
    let batch = lane_requests("many");
    let outcomes = queue.enqueue_many(batch.clone()).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    for (new, outcome) in batch.iter().zip(outcomes) {
        let answer = created(outcome);
        assert_eq!(answer, get(queue, new.id).await, "{}", new.id);
        assert_lanes_kept(new, &answer);
    }
    // The scheduled high-priority message is claimed first once due.
    let claimed = claim(queue, "a", 1_000, 3).await;
    assert_eq!(
        ids(&claimed),
        [batch[0].id, batch[1].id, batch[2].id],
        "high first, then normal oldest due first"
    );
}
