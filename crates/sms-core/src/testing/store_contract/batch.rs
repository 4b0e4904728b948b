//! Batches: `enqueue_many` and `complete_many` answer each message as the one-by-one
//! calls would, and a store keeps the times it answers with.

use std::sync::Arc;

use crate::error::StoreError;
use crate::ids::{IdempotencyKey, MessageId};
use crate::queue::{
    Completion, DeferredQueue, Enqueued, InitialState, Lease, LeaseToken, MessageStatus,
    NewMessage, QueueReason, StoredMessage,
};
use crate::request::SmsRequest;

use super::fixtures::{at, keyed_request, queued, queued_request};
use super::support::{
    assert_lease_lost, assert_not_found, claim, claim_one, created, enqueue, get, ids, token,
    vendor,
};

/// What `enqueue` stores for `new`: every field as given, updated when created.
fn as_stored(new: &NewMessage) -> StoredMessage {
    let (status, lease, last_vendor) = match &new.initial {
        InitialState::Queued => (MessageStatus::Queued, None, new.last_vendor.clone()),
        InitialState::Leased(lease) => (
            MessageStatus::Leased,
            Some(lease.clone()),
            new.last_vendor.clone(),
        ),
        InitialState::Sent { vendor } => (MessageStatus::Sent, None, Some(vendor.clone())),
    };
    StoredMessage {
        id: new.id,
        request: new.request.clone(),
        status,
        reason: new.reason,
        attempts: new.attempts,
        max_attempts: new.max_attempts,
        next_attempt_at: new.next_attempt_at,
        lease,
        last_vendor,
        last_error: new.last_error.clone(),
        may_duplicate: new.may_duplicate,
        pinned_vendor: None,
        created_at: new.created_at,
        updated_at: new.created_at,
    }
}

/// The stored message an enqueue found; panics when it created one.
fn existing(outcome: &Enqueued) -> &StoredMessage {
    match outcome {
        Enqueued::Existing(m) => m,
        Enqueued::Created(m) => panic!("expected an existing row, found new {}", m.id),
    }
}

/// The completion of claimed message `m` at `vendor_name`, `now_secs` after the start.
fn completion(m: &StoredMessage, vendor_name: &str, now_secs: i64) -> Completion {
    Completion {
        id: m.id,
        token: token(m),
        vendor: vendor(vendor_name),
        at: at(now_secs),
    }
}

/// Messages in every initial state, with odd arguments, several recipients (some not
/// in their normal spelling) and times that are not whole microseconds, on either side
/// of 1970 and 2000, for the answer-equals-stored case.
fn odd_messages(tag: &str) -> Vec<NewMessage> {
    let nanos = |t: chrono::DateTime<chrono::Utc>, n: i64| t + chrono::Duration::nanoseconds(n);
    let y2k = chrono::DateTime::<chrono::Utc>::from_timestamp(946_684_800, 0).unwrap();
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let args = [
        "a###b;c",
        "",
        "\"quoted\" 'x' \\ {a,b} [\"j\"]",
        "验证码 😀 🇨🇳",
        "line\nbreak\ttab",
        "NULL",
    ];
    let recipients = ["+8613800138000", "+1 (415) 555-0100", "+44 7911 123456"];
    let request = |n: usize| {
        SmsRequest::new("SMS_123456", args, recipients)
            .unwrap()
            .with_idempotency_key(IdempotencyKey::new(&format!("{tag}:{n}")).unwrap())
            .with_expiry(nanos(at(3_600), 999))
    };
    let mut queued_one = queued_request(request(0), nanos(at(1), 123_456_789), nanos(at(2), 1));
    queued_one.reason = QueueReason::TimedOut;
    queued_one.attempts = 1;
    queued_one.last_vendor = Some(vendor("aliyun"));
    queued_one.last_error = Some("timed out: \"no answer\" ; 超时".to_owned());
    queued_one.may_duplicate = true;
    let mut leased = queued_request(request(1), nanos(y2k, -1_500), nanos(y2k, -999));
    leased.reason = QueueReason::Accepted;
    leased.attempts = 1;
    leased.initial = InitialState::Leased(Lease {
        owner: "api-1 'n' \"q\"".to_owned(),
        token: LeaseToken::new(),
        expires_at: nanos(y2k, 1_999),
    });
    let mut sent = queued_request(
        SmsRequest::new(
            "login_code",
            ["4321", "5 分钟"],
            ["+8613900139000", "+447911123457"],
        )
        .unwrap()
        .with_expiry(nanos(epoch, -1_001)),
        nanos(epoch, -1),
        nanos(epoch, 1),
    );
    sent.reason = QueueReason::Accepted;
    sent.attempts = 1;
    sent.last_vendor = Some(vendor("ignored"));
    sent.initial = InitialState::Sent {
        vendor: vendor("tencent"),
    };
    let plain = queued(nanos(at(5), 500), nanos(at(6), 999_999_999));
    vec![queued_one, leased, sent, plain]
}

/// `enqueue_many` stores every message of a batch, in any initial state, and answers
/// them in batch order.
pub async fn enqueue_many_stores_every_message_and_answers_created_in_order(
    queue: &Arc<dyn DeferredQueue>,
) {
    let mut batch: Vec<NewMessage> = (0..5).map(|i| queued(at(i), at(100 - i))).collect();
    // Every initial state and every optional field, as `enqueue` takes them.
    let mut timed_out = queued_request(keyed_request("batch-7"), at(1), at(61));
    timed_out.reason = QueueReason::TimedOut;
    timed_out.attempts = 1;
    timed_out.last_vendor = Some(vendor("aliyun"));
    timed_out.last_error = Some("timed out after 3 s".to_owned());
    timed_out.may_duplicate = true;
    batch.insert(2, timed_out);
    let mut leased = queued_request(keyed_request("batch-8"), at(2), at(2));
    leased.reason = QueueReason::Accepted;
    leased.initial = InitialState::Leased(Lease {
        owner: "api-1".to_owned(),
        token: LeaseToken::new(),
        expires_at: at(30),
    });
    leased.attempts = 1;
    batch.push(leased);
    let mut sent = queued(at(3), at(3));
    sent.initial = InitialState::Sent {
        vendor: vendor("tencent"),
    };
    sent.attempts = 1;
    batch.insert(0, sent);

    let outcomes = queue.enqueue_many(batch.clone()).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    for (new, outcome) in batch.iter().zip(outcomes) {
        let stored = created(outcome);
        assert_eq!(stored, as_stored(new), "answer for {}", new.id);
        assert_eq!(get(queue, new.id).await, stored, "stored {}", new.id);
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.queued, stats.leased, stats.sent), (6, 1, 1));
    // Stored like any message: claimable oldest due first (the lapsed lease at +30 s,
    // the timed-out one at +61 s, then the queued ones due at +96 … +100 s).
    let claimed = claim(queue, "a", 100, 10).await;
    let by_due: Vec<MessageId> = [7, 3, 6, 5, 4, 2, 1].iter().map(|&i| batch[i].id).collect();
    assert_eq!(ids(&claimed), by_due);
}

/// `enqueue_many` answers the stored message for a known key and for a key repeated in
/// the batch.
pub async fn enqueue_many_answers_existing_for_known_and_repeated_keys(
    queue: &Arc<dyn DeferredQueue>,
) {
    let known = enqueue(
        queue,
        queued_request(keyed_request("known-1"), at(0), at(0)),
    )
    .await;
    let batch = vec![
        queued_request(keyed_request("known-1"), at(5), at(5)),
        queued_request(keyed_request("dup-1"), at(6), at(6)),
        queued(at(7), at(7)),
        // A retry inside the same batch: same key, new id, other times.
        queued_request(keyed_request("dup-1"), at(8), at(9)),
        queued_request(keyed_request("known-1"), at(9), at(9)),
    ];
    let outcomes = queue.enqueue_many(batch.clone()).await.unwrap();
    assert_eq!(outcomes.len(), 5);
    assert_eq!(existing(&outcomes[0]), &known);
    let first_dup = created(outcomes[1].clone());
    assert_eq!(first_dup, as_stored(&batch[1]));
    assert_eq!(created(outcomes[2].clone()), as_stored(&batch[2]));
    assert_eq!(
        existing(&outcomes[3]),
        &first_dup,
        "a repeated key answers the message its first use stored"
    );
    assert_eq!(existing(&outcomes[4]), &known);
    for skipped in [&batch[0], &batch[3], &batch[4]] {
        assert_eq!(queue.get(skipped.id).await.unwrap(), None);
    }
    let key = IdempotencyKey::new("dup-1").unwrap();
    assert_eq!(
        queue.find_by_idempotency_key(&key).await.unwrap(),
        Some(first_dup)
    );
    assert_eq!(queue.stats().await.unwrap().queued, 3);
}

/// A batch stores every queue reason as itself, as `enqueue` does.
pub async fn enqueue_many_keeps_every_reason(queue: &Arc<dyn DeferredQueue>) {
    let batch: Vec<NewMessage> = (0_i64..)
        .zip(QueueReason::ALL)
        .map(|(i, reason)| NewMessage {
            reason,
            ..queued(at(i), at(i))
        })
        .collect();
    let outcomes = queue.enqueue_many(batch.clone()).await.unwrap();
    for (new, outcome) in batch.iter().zip(outcomes) {
        assert_eq!(
            created(outcome),
            as_stored(new),
            "answer for {}",
            new.reason
        );
        assert_eq!(get(queue, new.id).await, as_stored(new), "{}", new.reason);
    }
}

/// An empty batch stores nothing.
pub async fn enqueue_many_of_nothing_stores_nothing(queue: &Arc<dyn DeferredQueue>) {
    assert!(queue.enqueue_many(Vec::new()).await.unwrap().is_empty());
    assert_eq!(queue.stats().await.unwrap(), Default::default());
}

/// Arguments and recipients stored by a batch come back exactly.
pub async fn enqueue_many_round_trips_arguments_and_recipients_exactly(
    queue: &Arc<dyn DeferredQueue>,
) {
    let tricky = vec![
        "a###b",
        "x;y;z",
        "",
        "\"double\" and 'single' quotes",
        "验证码 😀 🇨🇳",
        "line\nbreak\ttab",
        "back\\slash",
        "[\"looks\", \"like json\"]",
        "NULL",
        "{a,b}",
        " padded ",
    ];
    let recipients = ["+8613800138000", "+1 (415) 555-0100", "+447911123456"];
    let requests = [
        SmsRequest::new("SMS_123456", tricky.clone(), recipients)
            .unwrap()
            .with_idempotency_key(IdempotencyKey::new("round-trip:many").unwrap())
            .with_expiry(at(3_600)),
        SmsRequest::new("login_code", Vec::<&str>::new(), ["+8613800138000"]).unwrap(),
        SmsRequest::new("login_code", [""], ["+8613900139000"]).unwrap(),
        SmsRequest::new("login_code", ["NULL"], ["+8613900139000"]).unwrap(),
    ];
    let batch: Vec<NewMessage> = requests
        .iter()
        .map(|r| queued_request(r.clone(), at(0), at(0)))
        .collect();
    let outcomes = queue.enqueue_many(batch.clone()).await.unwrap();
    for ((new, request), outcome) in batch.iter().zip(&requests).zip(outcomes) {
        assert_eq!(&created(outcome).request, request);
        assert_eq!(&get(queue, new.id).await.request, request);
    }
    assert_eq!(get(queue, batch[0].id).await.request.args(), tricky);
    assert!(get(queue, batch[1].id).await.request.args().is_empty());
    assert_eq!(get(queue, batch[2].id).await.request.args(), [""]);
}

/// A store may keep coarser times than it is given; `enqueue` and `enqueue_many` then
/// answer with the times as stored, so their answer is exactly what `get` returns.
pub async fn enqueue_answers_equal_what_get_returns_at_the_stored_precision(
    queue: &Arc<dyn DeferredQueue>,
) {
    let batch = odd_messages("precision-many");
    let outcomes = queue.enqueue_many(batch.clone()).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    for (new, outcome) in batch.iter().zip(outcomes) {
        let answer = created(outcome);
        assert_eq!(
            answer,
            get(queue, new.id).await,
            "enqueue_many answer for {}",
            new.id
        );
        // Equal to what was given but for the times' precision.
        let given = as_stored(new);
        assert!(answer.request.same_content(&given.request));
        assert_eq!(
            (answer.status, &answer.lease.as_ref().map(|l| l.token)),
            (given.status, &given.lease.as_ref().map(|l| l.token))
        );
        assert_eq!(answer.last_vendor, given.last_vendor);
        assert_eq!(answer.updated_at, answer.created_at);
        let close = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
            (a - b).num_nanoseconds().unwrap().abs() < 1_000
        };
        assert!(close(answer.created_at, given.created_at));
        assert!(close(answer.next_attempt_at, given.next_attempt_at));
    }
    for new in odd_messages("precision-one") {
        let answer = enqueue(queue, new.clone()).await;
        assert_eq!(
            answer,
            get(queue, new.id).await,
            "enqueue answer for {}",
            new.id
        );
    }
    // A conflicting key answers the stored message, as `get` returns it too.
    let again = odd_messages("precision-many");
    let outcomes = queue.enqueue_many(again[..2].to_vec()).await.unwrap();
    for (first, outcome) in batch.iter().zip(&outcomes) {
        assert_eq!(existing(outcome), &get(queue, first.id).await);
    }
}

/// Batches racing with the same keys in different orders store each key once.
pub async fn concurrent_enqueue_many_with_shared_keys_store_each_key_once(
    queue: &Arc<dyn DeferredQueue>,
) {
    const KEYS: usize = 200;
    const BATCHES: usize = 4;
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let keys: Vec<String> = (0..KEYS).map(|k| format!("r{round}-k{k:02}")).collect();
        let mut tasks = Vec::new();
        for b in 0..BATCHES {
            // The same keys in a different order in every batch.
            let mut mine = keys.clone();
            mine.rotate_left(b * KEYS / BATCHES);
            if b % 2 == 1 {
                mine.reverse();
            }
            let queue = Arc::clone(queue);
            tasks.push(tokio::spawn(async move {
                let batch: Vec<NewMessage> = mine
                    .iter()
                    .map(|k| queued_request(keyed_request(k), at(0), at(0)))
                    .collect();
                let outcomes = queue.enqueue_many(batch.clone()).await.unwrap();
                batch.into_iter().zip(outcomes).collect::<Vec<_>>()
            }));
        }
        let mut created_by_key = std::collections::HashMap::new();
        let mut answered = Vec::new();
        for task in tasks {
            for (new, outcome) in task.await.unwrap() {
                let key = new.request.idempotency_key().unwrap().as_str().to_owned();
                if let Enqueued::Created(m) = &outcome {
                    assert_eq!(m.id, new.id);
                    assert!(
                        created_by_key.insert(key.clone(), m.id).is_none(),
                        "{key} stored twice"
                    );
                }
                answered.push((key, outcome.message().id));
            }
        }
        assert_eq!(created_by_key.len(), KEYS, "every key stored once");
        for (key, id) in answered {
            assert_eq!(created_by_key[&key], id, "{key} answers its one message");
        }
    }
    assert_eq!(queue.stats().await.unwrap().queued, (ROUNDS * KEYS) as u64);
}

/// `complete_many` marks every message sent with its own vendor and time.
pub async fn complete_many_marks_every_message_sent_with_its_vendor(
    queue: &Arc<dyn DeferredQueue>,
) {
    for _ in 0..4 {
        enqueue(queue, queued(at(0), at(0))).await;
    }
    let claimed = claim(queue, "drainer-a", 1, 10).await;
    assert_eq!(claimed.len(), 4);
    let vendors = ["cloopen", "aliyun", "tencent", "aliyun"];
    let completions: Vec<Completion> = claimed
        .iter()
        .zip(vendors)
        .enumerate()
        .map(|(i, (m, v))| completion(m, v, 2 + i as i64))
        .collect();
    let results = queue.complete_many(&completions).await.unwrap();
    assert_eq!(results.len(), 4);
    for ((m, c), result) in claimed.iter().zip(&completions).zip(results) {
        result.unwrap_or_else(|e| panic!("completing {}: {e}", m.id));
        let sent = get(queue, m.id).await;
        assert_eq!(sent.status, MessageStatus::Sent);
        assert_eq!(sent.last_vendor, Some(c.vendor.clone()));
        assert_eq!(sent.lease, None);
        assert_eq!(sent.updated_at, c.at);
        assert_eq!(sent.attempts, 1);
    }
    assert_eq!(queue.stats().await.unwrap().sent, 4);
    assert!(claim(queue, "a", 10_000, 10).await.is_empty());
}

/// `complete_many` refuses a completion under a wrong token for that message only.
pub async fn complete_many_refuses_a_wrong_token_for_that_message_only(
    queue: &Arc<dyn DeferredQueue>,
) {
    for _ in 0..3 {
        enqueue(queue, queued(at(0), at(0))).await;
    }
    let claimed = claim(queue, "drainer-a", 1, 10).await;
    let [a, b, c] = &claimed[..] else {
        panic!("expected three claimed messages");
    };
    let mut wrong = completion(b, "tencent", 2);
    wrong.token = LeaseToken::new();
    let results = queue
        .complete_many(&[
            completion(a, "aliyun", 2),
            wrong,
            completion(c, "cloopen", 2),
        ])
        .await
        .unwrap();
    let [ra, rb, rc] = <[_; 3]>::try_from(results).expect("three results");
    ra.unwrap();
    assert_lease_lost(rb, b.id);
    rc.unwrap();
    assert_eq!(get(queue, a.id).await.last_vendor, Some(vendor("aliyun")));
    assert_eq!(get(queue, c.id).await.status, MessageStatus::Sent);
    assert_eq!(
        &get(queue, b.id).await,
        b,
        "the refused message keeps its lease, unchanged"
    );

    // Completed already (a retried call): refused, not applied twice; the same message
    // twice in one batch is done once, as one-by-one completions would.
    let results = queue
        .complete_many(&[
            completion(a, "tencent", 3),
            completion(b, "tencent", 3),
            completion(b, "cloopen", 4),
        ])
        .await
        .unwrap();
    let [ra, rb, rb_again] = <[_; 3]>::try_from(results).expect("three results");
    assert_lease_lost(ra, a.id);
    rb.unwrap();
    assert_lease_lost(rb_again, b.id);
    assert_eq!(get(queue, a.id).await.last_vendor, Some(vendor("aliyun")));
    let b_sent = get(queue, b.id).await;
    assert_eq!(b_sent.last_vendor, Some(vendor("tencent")));
    assert_eq!(b_sent.updated_at, at(3));
    assert_eq!(queue.stats().await.unwrap().sent, 3);
}

/// `complete_many` answers an unknown id `NotFound`, as `complete` does.
pub async fn complete_many_answers_unknown_ids_like_complete(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    let unknown = MessageId::new();
    assert_not_found(
        queue
            .complete(unknown, LeaseToken::new(), &vendor("aliyun"), at(2))
            .await,
        unknown,
    );
    let results = queue
        .complete_many(&[
            Completion {
                id: unknown,
                token: token(&claimed),
                vendor: vendor("aliyun"),
                at: at(2),
            },
            completion(&claimed, "aliyun", 2),
        ])
        .await
        .unwrap();
    let [r_unknown, r_known] = <[_; 2]>::try_from(results).expect("two results");
    assert_not_found(r_unknown, unknown);
    r_known.unwrap();
    assert_eq!(get(queue, m.id).await.status, MessageStatus::Sent);
    assert_eq!(queue.get(unknown).await.unwrap(), None);
}

/// An empty batch of completions changes nothing.
pub async fn complete_many_of_nothing_changes_nothing(queue: &Arc<dyn DeferredQueue>) {
    let m = enqueue(queue, queued(at(0), at(0))).await;
    let claimed = claim_one(queue, 1).await;
    assert!(queue.complete_many(&[]).await.unwrap().is_empty());
    assert_eq!(get(queue, m.id).await, claimed);
}

/// A batch with one failing message (a reused id) stores none of it, and the rest of
/// the batch goes in whole afterwards. Only backends whose batches are transactions
/// pass it (see [`store_contract_atomic_batch_tests!`](crate::store_contract_atomic_batch_tests)).
pub async fn enqueue_many_stores_nothing_when_one_message_fails(queue: &Arc<dyn DeferredQueue>) {
    let stored = enqueue(queue, queued(at(0), at(0))).await;
    let mut reused = queued(at(1), at(1));
    reused.id = stored.id;
    let batch = vec![
        queued(at(1), at(1)),
        queued_request(keyed_request("atomic-1"), at(1), at(1)),
        reused,
        queued(at(1), at(1)),
    ];
    match queue.enqueue_many(batch.clone()).await {
        Err(StoreError::Backend(_)) => {}
        other => panic!("expected a backend error for a reused id, found {other:?}"),
    }
    for new in [&batch[0], &batch[1], &batch[3]] {
        assert_eq!(queue.get(new.id).await.unwrap(), None, "rolled back");
    }
    let key = IdempotencyKey::new("atomic-1").unwrap();
    assert_eq!(queue.find_by_idempotency_key(&key).await.unwrap(), None);
    assert_eq!(get(queue, stored.id).await, stored);
    assert_eq!(queue.stats().await.unwrap().queued, 1);
    // The batch without the bad message goes in whole.
    let outcomes = queue
        .enqueue_many(vec![batch[0].clone(), batch[1].clone(), batch[3].clone()])
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Enqueued::Created(_))));
    assert_eq!(queue.stats().await.unwrap().queued, 4);
}
