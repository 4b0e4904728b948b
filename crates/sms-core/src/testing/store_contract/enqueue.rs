//! Storing a message: what `enqueue` keeps, idempotency keys, and every initial state.

use std::collections::HashSet;
use std::sync::Arc;

use crate::callback_url::CallbackUrl;
use crate::error::StoreError;
use crate::ids::{IdempotencyKey, MessageId};
use crate::queue::{
    DeferredQueue, Enqueued, InitialState, Lease, LeaseToken, MessageStatus, QueueReason,
};
use crate::request::{Resend, SmsRequest};

use super::fixtures::{at, keyed_request, queued, queued_request};
use super::support::{claim, claim_one, enqueue, get, ids, vendor};

/// `enqueue` keeps every field of a new message, and `get` and the key look-up return
/// exactly what it answered.
pub async fn enqueue_then_get_returns_the_stored_message(queue: &Arc<dyn DeferredQueue>) {
    let new = queued(at(0), at(5));
    let stored = enqueue(queue, new.clone()).await;
    assert_eq!(stored.id, new.id);
    assert_eq!(stored.request, new.request);
    assert_eq!(stored.status, MessageStatus::Queued);
    assert_eq!(stored.reason, QueueReason::RateLimited);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.max_attempts, 5);
    assert_eq!(stored.next_attempt_at, at(5));
    assert_eq!(stored.lease, None);
    assert_eq!(stored.last_vendor, None);
    assert_eq!(stored.last_error, None);
    assert!(!stored.may_duplicate);
    assert_eq!(stored.pinned_vendor, None);
    assert_eq!(stored.created_at, at(0));
    assert_eq!(stored.updated_at, at(0));
    assert_eq!(get(queue, new.id).await, stored);

    // Every field of a new message is kept, including a failed first attempt.
    let mut timed_out = queued_request(keyed_request("order-7"), at(1), at(61));
    timed_out.reason = QueueReason::TimedOut;
    timed_out.attempts = 1;
    timed_out.last_vendor = Some(vendor("aliyun"));
    timed_out.last_error = Some("timed out after 3 s".to_owned());
    timed_out.may_duplicate = true;
    let stored = enqueue(queue, timed_out.clone()).await;
    assert_eq!(stored.reason, QueueReason::TimedOut);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.last_vendor, Some(vendor("aliyun")));
    assert_eq!(stored.last_error.as_deref(), Some("timed out after 3 s"));
    assert!(stored.may_duplicate);
    let key = IdempotencyKey::new("order-7").unwrap();
    assert_eq!(
        queue.find_by_idempotency_key(&key).await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(get(queue, timed_out.id).await, stored);
}

/// Every queue reason is stored and read back as itself: by `get`, the key look-up,
/// `list` and a claim.
pub async fn every_reason_round_trips_through_enqueue_and_get(queue: &Arc<dyn DeferredQueue>) {
    let mut stored_ids = Vec::new();
    for (i, reason) in (0_i64..).zip(QueueReason::ALL) {
        let key = format!("reason-{reason}");
        let mut new = queued_request(keyed_request(&key), at(i), at(i));
        new.reason = reason;
        let stored = enqueue(queue, new.clone()).await;
        assert_eq!(stored.reason, reason);
        assert_eq!(get(queue, new.id).await.reason, reason, "{reason}");
        let key = IdempotencyKey::new(&key).unwrap();
        let found = queue.find_by_idempotency_key(&key).await.unwrap().unwrap();
        assert_eq!(found.reason, reason, "{reason}");
        stored_ids.push(new.id);
    }
    let listed = queue.list(MessageStatus::Queued, 100).await.unwrap();
    assert_eq!(ids(&listed), stored_ids);
    let reasons: Vec<QueueReason> = listed.iter().map(|m| m.reason).collect();
    assert_eq!(reasons, QueueReason::ALL);
    let claimed = claim(queue, "a", 100, 100).await;
    let reasons: Vec<QueueReason> = claimed.iter().map(|m| m.reason).collect();
    assert_eq!(reasons, QueueReason::ALL);
}

/// An id or key never stored is absent, not an error.
pub async fn unknown_ids_and_keys_are_absent(queue: &Arc<dyn DeferredQueue>) {
    enqueue(queue, queued(at(0), at(0))).await;
    assert_eq!(queue.get(MessageId::new()).await.unwrap(), None);
    let key = IdempotencyKey::new("never-used").unwrap();
    assert_eq!(queue.find_by_idempotency_key(&key).await.unwrap(), None);
}

/// A second message with a stored key answers the first one and stores nothing.
pub async fn same_idempotency_key_twice_returns_existing_and_stores_one_row(
    queue: &Arc<dyn DeferredQueue>,
) {
    let first = queued_request(keyed_request("signup-42"), at(0), at(0));
    let stored = enqueue(queue, first.clone()).await;
    // A retry of the request: new id, same key.
    let again = queued_request(keyed_request("signup-42"), at(9), at(9));
    match queue.enqueue(again.clone()).await.unwrap() {
        Enqueued::Existing(existing) => assert_eq!(existing, stored),
        Enqueued::Created(m) => panic!("stored a second row {} for one key", m.id),
    }
    assert_eq!(queue.get(again.id).await.unwrap(), None);
    assert_eq!(queue.stats().await.unwrap().queued, 1);
}

/// Twenty enqueues racing with one key store one message, and all answer it.
pub async fn concurrent_enqueues_with_one_key_store_one_row(queue: &Arc<dyn DeferredQueue>) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let queue = Arc::clone(queue);
        tasks.push(tokio::spawn(async move {
            queue
                .enqueue(queued_request(keyed_request("race-1"), at(i), at(i)))
                .await
                .unwrap()
        }));
    }
    let mut created_ids = Vec::new();
    let mut seen_ids = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            Enqueued::Created(m) => {
                created_ids.push(m.id);
                seen_ids.insert(m.id);
            }
            Enqueued::Existing(m) => {
                seen_ids.insert(m.id);
            }
        }
    }
    assert_eq!(created_ids.len(), 1, "exactly one enqueue creates the row");
    assert_eq!(seen_ids.len(), 1, "every caller sees the same message");
    assert_eq!(queue.stats().await.unwrap().queued, 1);
}

/// Messages without a key are never taken for one another.
pub async fn messages_without_key_never_collide(queue: &Arc<dyn DeferredQueue>) {
    enqueue(queue, queued(at(0), at(0))).await;
    enqueue(queue, queued(at(0), at(0))).await;
    assert_eq!(queue.stats().await.unwrap().queued, 2);
}

/// A second message with a stored id is a backend error and stores nothing.
pub async fn reusing_a_message_id_is_an_error(queue: &Arc<dyn DeferredQueue>) {
    let m = queued(at(0), at(0));
    enqueue(queue, m.clone()).await;
    match queue.enqueue(m).await {
        Err(StoreError::Backend(_)) => {}
        other => panic!("expected a backend error for a reused id, found {other:?}"),
    }
    assert_eq!(queue.stats().await.unwrap().queued, 1);
}

/// A message stored leased (its sender is trying it) is claimable only once that
/// lease lapses.
pub async fn enqueue_leased_is_claimable_only_after_its_lease(queue: &Arc<dyn DeferredQueue>) {
    let lease = Lease {
        owner: "api-1".to_owned(),
        token: LeaseToken::new(),
        expires_at: at(30),
    };
    let mut new = queued_request(keyed_request("pay-9"), at(0), at(0));
    new.reason = QueueReason::Accepted;
    new.initial = InitialState::Leased(lease.clone());
    new.attempts = 1;
    let stored = enqueue(queue, new.clone()).await;
    assert_eq!(stored.status, MessageStatus::Leased);
    assert_eq!(stored.lease, Some(lease.clone()));
    assert_eq!(stored.attempts, 1);
    assert!(claim(queue, "drainer", 29, 10).await.is_empty());
    // The storing sender finishes its attempt under the lease it stored.
    queue
        .complete(new.id, lease.token, &vendor("aliyun"), at(1))
        .await
        .unwrap();
    assert_eq!(get(queue, new.id).await.status, MessageStatus::Sent);

    // A sender that died after storing: the drainer picks it up once the lease lapses.
    let orphan_lease = Lease {
        owner: "api-2".to_owned(),
        token: LeaseToken::new(),
        expires_at: at(30),
    };
    let mut orphan = queued(at(0), at(0));
    orphan.initial = InitialState::Leased(orphan_lease);
    orphan.attempts = 1;
    enqueue(queue, orphan.clone()).await;
    let rescued = claim(queue, "drainer", 30, 10).await;
    assert_eq!(ids(&rescued), [orphan.id]);
    assert_eq!(rescued[0].attempts, 2);
}

/// A message stored sent records its vendor, is never claimed, and its key still
/// answers retries.
pub async fn enqueue_sent_records_the_vendor_and_is_never_claimed(queue: &Arc<dyn DeferredQueue>) {
    let mut new = queued_request(keyed_request("otp-1"), at(0), at(0));
    new.initial = InitialState::Sent {
        vendor: vendor("tencent"),
    };
    new.attempts = 1;
    let stored = enqueue(queue, new.clone()).await;
    assert_eq!(stored.status, MessageStatus::Sent);
    assert_eq!(stored.last_vendor, Some(vendor("tencent")));
    assert!(claim(queue, "a", 1_000, 10).await.is_empty());
    assert_eq!(queue.stats().await.unwrap().sent, 1);
    // Its key still answers retries of the request.
    let again = queued_request(keyed_request("otp-1"), at(5), at(5));
    assert!(matches!(
        queue.enqueue(again).await.unwrap(),
        Enqueued::Existing(m) if m.id == new.id
    ));
}

/// Arguments and recipients come back exactly, whatever text they hold, and so do the
/// callback URL and what makes a message a re-send, from a single enqueue and from a
/// batch alike.
pub async fn arguments_and_recipients_round_trip_exactly(queue: &Arc<dyn DeferredQueue>) {
    // Separators a joined-string encoding would break (`###`, `;`), quotes, escapes,
    // and text that looks like JSON, SQL or an array literal.
    let args = [
        "a###b",
        "x;y;z",
        "",
        "###",
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
    let request = SmsRequest::new("SMS_123456", args, recipients)
        .unwrap()
        .with_idempotency_key(IdempotencyKey::new("round-trip:1").unwrap())
        .with_expiry(at(3_600))
        .with_callback_url(hook("https://app.example/sms-events?tenant=7&q=%E9%AA%8C"))
        .with_resend(Resend {
            of: MessageId::new(),
            avoid: vendor("aliyun"),
        });
    let stored = enqueue(queue, queued_request(request.clone(), at(0), at(0))).await;
    assert_eq!(stored.request, request);
    assert_eq!(get(queue, stored.id).await.request, request);
    assert_eq!(get(queue, stored.id).await.request.args(), args);
    let by_key = queue
        .find_by_idempotency_key(request.idempotency_key().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_key.request, request);
    let claimed = claim_one(queue, 0).await;
    assert_eq!(claimed.request, request);

    // A batch keeps each message's URL and re-send, or its lack of them.
    let with_url = SmsRequest::new("login_code", ["1"], ["+8613800138000"])
        .unwrap()
        .with_callback_url(hook("http://127.0.0.1:9000/e"))
        .with_resend(Resend {
            of: stored.id,
            avoid: vendor("tencent-cloud_2"),
        });
    let without_url = SmsRequest::new("login_code", ["2"], ["+8613800138000"]).unwrap();
    let batch = vec![
        queued_request(with_url.clone(), at(0), at(0)),
        queued_request(without_url.clone(), at(0), at(0)),
    ];
    let outcomes = queue.enqueue_many(batch.clone()).await.unwrap();
    for (outcome, request) in outcomes.iter().zip([&with_url, &without_url]) {
        let Enqueued::Created(m) = outcome else {
            panic!("expected a new message, found {outcome:?}");
        };
        assert_eq!(&m.request, request);
        assert_eq!(&get(queue, m.id).await.request, request);
    }
    assert_eq!(get(queue, batch[1].id).await.request.callback_url(), None);
    assert_eq!(get(queue, batch[1].id).await.request.resend(), None);

    // One empty argument stays one; none stay none.
    for args in [vec![""], vec![]] {
        let request = SmsRequest::new("login_code", args.clone(), ["+8613800138000"]).unwrap();
        let stored = enqueue(queue, queued_request(request, at(0), at(0))).await;
        assert_eq!(get(queue, stored.id).await.request.args(), args);
    }
}

fn hook(url: &str) -> CallbackUrl {
    CallbackUrl::new(url).expect("a valid callback URL")
}
