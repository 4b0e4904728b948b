//! The contract of `DeferredQueue` and `UsageLedger`, written once and run against every
//! backend by [`store_contract!`]: the in-memory fake, SQLite and Postgres must all pass
//! the same cases.
//!
//! Times are whole seconds after a fixed start, so backends that keep microseconds
//! return exactly what was written.
//!
//! Defects of the original design (see the project notes) these cases would have caught:
//! - 2, resends from concurrent drains: `concurrent_claimers_never_share_a_message`, the
//!   lease cases, and the 10,000-message drain in `drain.rs`;
//! - 3, send-then-delete not atomic: a sender that dies leaves a lease that lapses and
//!   is claimed again (`a_lapsed_lease_is_claimed_again_…`), and its late outcome is
//!   refused instead of overwriting the new holder's;
//! - 4, endless retries: `dead_messages_are_kept_and_never_claimed`, backoff in
//!   `fail_requeues_with_backoff_…`;
//! - 7, late delivery: expiry is stored and `expire` takes a message out for good;
//! - 13, usage counted per request, per instance, never per period: the ledger cases;
//! - 14, `###` and `;` separators: `arguments_and_recipients_round_trip_exactly`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sms_core::{
    AttemptFailure, BillingPeriod, Completion, Enqueued, IdempotencyKey, InitialState, Lease,
    LeaseToken, MessageId, MessageStatus, NewMessage, QueueReason, SmsRequest, StoreError,
    StoredMessage, VendorId,
};

use crate::support::{TestStore, at, keyed_request, queued, queued_request};

/// Expands to one `#[tokio::test]` per contract case, each getting a fresh store from
/// `$factory` (an async fn returning `Option<TestStore>`; `None` means skipped).
macro_rules! store_contract {
    ($factory:path) => {
        store_contract!(@cases $factory;
            enqueue_then_get_returns_the_stored_message,
            unknown_ids_and_keys_are_absent,
            same_idempotency_key_twice_returns_existing_and_stores_one_row,
            concurrent_enqueues_with_one_key_store_one_row,
            messages_without_key_never_collide,
            reusing_a_message_id_is_an_error,
            claim_takes_oldest_due_first_up_to_the_limit,
            claim_breaks_due_time_ties_by_id,
            claim_with_limit_zero_claims_nothing,
            messages_are_not_claimable_before_their_due_time,
            every_claim_counts_one_attempt,
            complete_marks_sent_and_records_the_vendor,
            fail_requeues_with_backoff_and_keeps_the_failure,
            dead_messages_are_kept_and_never_claimed,
            expire_marks_the_message_expired,
            release_requeues_now_without_counting_the_attempt,
            retry_requeues_dead_and_expired_messages_only,
            a_lapsed_lease_is_claimed_again_and_the_old_token_is_refused,
            a_lapsed_lease_not_yet_reclaimed_still_accepts_its_token,
            updates_of_unknown_messages_are_not_found,
            enqueue_leased_is_claimable_only_after_its_lease,
            enqueue_sent_records_the_vendor_and_is_never_claimed,
            list_returns_one_status_oldest_first_up_to_the_limit,
            stats_count_every_status,
            purge_sent_removes_only_old_sent_messages,
            purge_sent_works_through_more_than_one_batch,
            arguments_and_recipients_round_trip_exactly,
            concurrent_claimers_never_share_a_message,
            ledger_add_returns_the_running_total,
            ledger_periods_and_vendors_are_separate,
            ledger_increments_from_50_concurrent_tasks_sum_exactly,
            enqueue_many_stores_every_message_and_answers_created_in_order,
            enqueue_many_answers_existing_for_known_and_repeated_keys,
            enqueue_many_of_nothing_stores_nothing,
            enqueue_many_round_trips_arguments_and_recipients_exactly,
            enqueue_answers_equal_what_get_returns_at_the_stored_precision,
            concurrent_enqueue_many_with_shared_keys_store_each_key_once,
            complete_many_marks_every_message_sent_with_its_vendor,
            complete_many_refuses_a_wrong_token_for_that_message_only,
            complete_many_answers_unknown_ids_like_complete,
            complete_many_of_nothing_changes_nothing,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(store) = $factory().await {
                    $crate::contract::$case(&store).await;
                }
            }
        )*
    };
}

/// Cases only durable stores pass: a batch is one transaction, so a failing message
/// leaves none of its batch stored. (The in-memory fake stores one by one.)
macro_rules! durable_store_contract {
    ($factory:path) => {
        store_contract!(@cases $factory;
            enqueue_many_stores_nothing_when_one_message_fails,
        );
    };
}

const LEASE: Duration = Duration::from_secs(30);

fn vendor(name: &str) -> VendorId {
    VendorId::new(name).unwrap()
}

fn failure(vendor_name: Option<&str>, error: &str, may_duplicate: bool) -> AttemptFailure {
    AttemptFailure {
        vendor: vendor_name.map(vendor),
        error: error.to_owned(),
        may_duplicate,
    }
}

fn created(outcome: Enqueued) -> StoredMessage {
    match outcome {
        Enqueued::Created(m) => m,
        Enqueued::Existing(m) => panic!("expected a new row, found existing {}", m.id),
    }
}

async fn enqueue(s: &TestStore, m: NewMessage) -> StoredMessage {
    created(s.queue.enqueue(m).await.unwrap())
}

async fn get(s: &TestStore, id: MessageId) -> StoredMessage {
    s.queue.get(id).await.unwrap().expect("message is stored")
}

async fn claim(s: &TestStore, owner: &str, now_secs: i64, limit: u32) -> Vec<StoredMessage> {
    s.queue
        .claim(owner, at(now_secs), LEASE, limit)
        .await
        .unwrap()
}

async fn claim_one(s: &TestStore, now_secs: i64) -> StoredMessage {
    let mut claimed = claim(s, "drainer-a", now_secs, 1).await;
    assert_eq!(claimed.len(), 1, "expected one due message at +{now_secs}s");
    claimed.remove(0)
}

fn token(m: &StoredMessage) -> LeaseToken {
    m.lease.as_ref().expect("claimed message has a lease").token
}

fn ids(messages: &[StoredMessage]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

fn assert_lease_lost(result: Result<(), StoreError>, id: MessageId) {
    match result {
        Err(StoreError::LeaseLost(lost)) => assert_eq!(lost, id),
        other => panic!("expected LeaseLost({id}), found {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, id: MessageId) {
    match result {
        Err(StoreError::NotFound(missing)) => assert_eq!(missing, id),
        other => panic!("expected NotFound({id}), found {other:?}"),
    }
}

pub async fn enqueue_then_get_returns_the_stored_message(s: &TestStore) {
    let new = queued(at(0), at(5));
    let stored = enqueue(s, new.clone()).await;
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
    assert_eq!(stored.created_at, at(0));
    assert_eq!(stored.updated_at, at(0));
    assert_eq!(get(s, new.id).await, stored);

    // Every field of a new message is kept, including a failed first attempt.
    let mut timed_out = queued_request(keyed_request("order-7"), at(1), at(61));
    timed_out.reason = QueueReason::TimedOut;
    timed_out.attempts = 1;
    timed_out.last_vendor = Some(vendor("aliyun"));
    timed_out.last_error = Some("timed out after 3 s".to_owned());
    timed_out.may_duplicate = true;
    let stored = enqueue(s, timed_out.clone()).await;
    assert_eq!(stored.reason, QueueReason::TimedOut);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.last_vendor, Some(vendor("aliyun")));
    assert_eq!(stored.last_error.as_deref(), Some("timed out after 3 s"));
    assert!(stored.may_duplicate);
    let key = IdempotencyKey::new("order-7").unwrap();
    assert_eq!(
        s.queue.find_by_idempotency_key(&key).await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(get(s, timed_out.id).await, stored);
}

pub async fn unknown_ids_and_keys_are_absent(s: &TestStore) {
    enqueue(s, queued(at(0), at(0))).await;
    assert_eq!(s.queue.get(MessageId::new()).await.unwrap(), None);
    let key = IdempotencyKey::new("never-used").unwrap();
    assert_eq!(s.queue.find_by_idempotency_key(&key).await.unwrap(), None);
}

pub async fn same_idempotency_key_twice_returns_existing_and_stores_one_row(s: &TestStore) {
    let first = queued_request(keyed_request("signup-42"), at(0), at(0));
    let stored = enqueue(s, first.clone()).await;
    // A retry of the request: new id, same key.
    let again = queued_request(keyed_request("signup-42"), at(9), at(9));
    match s.queue.enqueue(again.clone()).await.unwrap() {
        Enqueued::Existing(existing) => assert_eq!(existing, stored),
        Enqueued::Created(m) => panic!("stored a second row {} for one key", m.id),
    }
    assert_eq!(s.queue.get(again.id).await.unwrap(), None);
    assert_eq!(s.queue.stats().await.unwrap().queued, 1);
}

pub async fn concurrent_enqueues_with_one_key_store_one_row(s: &TestStore) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let queue = s.queue.clone();
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
    assert_eq!(s.queue.stats().await.unwrap().queued, 1);
}

pub async fn messages_without_key_never_collide(s: &TestStore) {
    enqueue(s, queued(at(0), at(0))).await;
    enqueue(s, queued(at(0), at(0))).await;
    assert_eq!(s.queue.stats().await.unwrap().queued, 2);
}

pub async fn reusing_a_message_id_is_an_error(s: &TestStore) {
    let m = queued(at(0), at(0));
    enqueue(s, m.clone()).await;
    match s.queue.enqueue(m).await {
        Err(StoreError::Backend(_)) => {}
        other => panic!("expected a backend error for a reused id, found {other:?}"),
    }
    assert_eq!(s.queue.stats().await.unwrap().queued, 1);
}

pub async fn claim_takes_oldest_due_first_up_to_the_limit(s: &TestStore) {
    let mut by_due = Vec::new();
    for due in [5, 1, 3, 2, 4] {
        let m = enqueue(s, queued(at(0), at(due))).await;
        by_due.push((due, m.id));
    }
    by_due.sort();
    let expected: Vec<MessageId> = by_due.iter().map(|(_, id)| *id).collect();

    let first = claim(s, "drainer-a", 10, 3).await;
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
        assert_eq!(&get(s, m.id).await, m);
    }
    let second = claim(s, "drainer-b", 10, 3).await;
    assert_eq!(ids(&second), expected[3..]);
    assert_ne!(token(&second[0]), token_a, "every claim has a fresh token");
    assert!(claim(s, "drainer-c", 10, 3).await.is_empty());
    assert_eq!(s.queue.stats().await.unwrap().leased, 5);
}

pub async fn claim_breaks_due_time_ties_by_id(s: &TestStore) {
    let mut expected = Vec::new();
    for _ in 0..4 {
        expected.push(enqueue(s, queued(at(0), at(1))).await.id);
    }
    expected.sort();
    assert_eq!(ids(&claim(s, "a", 1, 10).await), expected);
}

pub async fn claim_with_limit_zero_claims_nothing(s: &TestStore) {
    enqueue(s, queued(at(0), at(0))).await;
    assert!(claim(s, "a", 1, 0).await.is_empty());
    assert_eq!(s.queue.stats().await.unwrap().queued, 1);
}

pub async fn messages_are_not_claimable_before_their_due_time(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(60))).await;
    assert!(claim(s, "a", 59, 10).await.is_empty());
    assert_eq!(get(s, m.id).await.status, MessageStatus::Queued);
    // Due exactly now counts as due.
    assert_eq!(ids(&claim(s, "a", 60, 10).await), [m.id]);
}

pub async fn every_claim_counts_one_attempt(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    for attempt in 1..=3 {
        let now = i64::from(attempt) * 100;
        let claimed = claim_one(s, now).await;
        assert_eq!(claimed.id, m.id);
        assert_eq!(claimed.attempts, attempt);
        s.queue
            .fail(
                m.id,
                token(&claimed),
                failure(Some("tencent"), "5xx", false),
                at(now),
                at(now),
            )
            .await
            .unwrap();
        assert_eq!(get(s, m.id).await.attempts, attempt);
    }
}

pub async fn complete_marks_sent_and_records_the_vendor(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 1).await;
    s.queue
        .complete(m.id, token(&claimed), &vendor("cloopen"), at(2))
        .await
        .unwrap();
    let sent = get(s, m.id).await;
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(sent.last_vendor, Some(vendor("cloopen")));
    assert_eq!(sent.lease, None);
    assert_eq!(sent.updated_at, at(2));
    assert_eq!(sent.attempts, 1);
    assert!(claim(s, "a", 10_000, 10).await.is_empty());
    // A duplicate completion (a retried call) is refused, not applied twice.
    assert_lease_lost(
        s.queue
            .complete(m.id, token(&claimed), &vendor("aliyun"), at(3))
            .await,
        m.id,
    );
    assert_eq!(get(s, m.id).await.last_vendor, Some(vendor("cloopen")));
}

pub async fn fail_requeues_with_backoff_and_keeps_the_failure(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 1).await;
    s.queue
        .fail(
            m.id,
            token(&claimed),
            failure(Some("aliyun"), "timed out", true),
            at(31),
            at(1),
        )
        .await
        .unwrap();
    let failed = get(s, m.id).await;
    assert_eq!(failed.status, MessageStatus::Queued);
    assert_eq!(failed.next_attempt_at, at(31));
    assert_eq!(failed.last_vendor, Some(vendor("aliyun")));
    assert_eq!(failed.last_error.as_deref(), Some("timed out"));
    assert!(failed.may_duplicate);
    assert_eq!(failed.lease, None);
    assert_eq!(failed.updated_at, at(1));
    // The backoff holds: not claimable a second early.
    assert!(claim(s, "a", 30, 10).await.is_empty());
    let again = claim_one(s, 31).await;
    assert_eq!(again.attempts, 2);
    // A failure before any vendor was tried keeps the last vendor, and a later clean
    // failure does not clear the "may have been delivered" flag.
    s.queue
        .fail(
            m.id,
            token(&again),
            failure(None, "no vendor", false),
            at(90),
            at(32),
        )
        .await
        .unwrap();
    let failed = get(s, m.id).await;
    assert_eq!(failed.last_vendor, Some(vendor("aliyun")));
    assert_eq!(failed.last_error.as_deref(), Some("no vendor"));
    assert!(failed.may_duplicate);
    // The old token is spent.
    assert_lease_lost(
        s.queue
            .fail(
                m.id,
                token(&again),
                failure(None, "x", false),
                at(99),
                at(33),
            )
            .await,
        m.id,
    );
}

pub async fn dead_messages_are_kept_and_never_claimed(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 1).await;
    s.queue
        .dead(
            m.id,
            token(&claimed),
            failure(Some("tencent"), "rejected: bad template", false),
            at(2),
        )
        .await
        .unwrap();
    let dead = get(s, m.id).await;
    assert_eq!(dead.status, MessageStatus::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("rejected: bad template"));
    assert_eq!(dead.last_vendor, Some(vendor("tencent")));
    assert_eq!(dead.lease, None);
    assert_eq!(dead.updated_at, at(2));
    assert!(claim(s, "a", 1_000_000, 10).await.is_empty());
    assert_eq!(
        ids(&s.queue.list(MessageStatus::Dead, 10).await.unwrap()),
        [m.id]
    );
    // Retention never removes dead messages.
    assert_eq!(s.queue.purge_sent(at(1_000_000), 100).await.unwrap(), 0);
    assert!(s.queue.get(m.id).await.unwrap().is_some());
}

pub async fn expire_marks_the_message_expired(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 1).await;
    s.queue.expire(m.id, token(&claimed), at(2)).await.unwrap();
    let expired = get(s, m.id).await;
    assert_eq!(expired.status, MessageStatus::Expired);
    assert_eq!(expired.lease, None);
    assert_eq!(expired.updated_at, at(2));
    assert!(claim(s, "a", 1_000_000, 10).await.is_empty());
    assert_lease_lost(s.queue.expire(m.id, token(&claimed), at(3)).await, m.id);
}

pub async fn release_requeues_now_without_counting_the_attempt(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 1).await;
    assert_eq!(claimed.attempts, 1);
    s.queue.release(m.id, token(&claimed), at(5)).await.unwrap();
    let released = get(s, m.id).await;
    assert_eq!(released.status, MessageStatus::Queued);
    assert_eq!(released.attempts, 0);
    assert_eq!(released.next_attempt_at, at(5));
    assert_eq!(released.lease, None);
    assert_eq!(claim_one(s, 5).await.attempts, 1);
    assert_lease_lost(s.queue.release(m.id, token(&claimed), at(6)).await, m.id);
}

pub async fn retry_requeues_dead_and_expired_messages_only(s: &TestStore) {
    let dead = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 1).await;
    s.queue
        .dead(
            dead.id,
            token(&claimed),
            failure(None, "out of attempts", false),
            at(2),
        )
        .await
        .unwrap();
    let retried = s.queue.retry(dead.id, at(100)).await.unwrap();
    assert_eq!(retried.status, MessageStatus::Queued);
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.reason, QueueReason::ManualRetry);
    assert_eq!(retried.next_attempt_at, at(100));
    assert_eq!(retried.updated_at, at(100));
    assert_eq!(retried.last_error.as_deref(), Some("out of attempts"));
    assert_eq!(get(s, dead.id).await, retried);
    let again = claim_one(s, 100).await;
    assert_eq!(again.attempts, 1);
    s.queue
        .complete(dead.id, token(&again), &vendor("aliyun"), at(101))
        .await
        .unwrap();

    let expired = enqueue(s, queued(at(0), at(200))).await;
    let claimed = claim_one(s, 200).await;
    assert_eq!(claimed.id, expired.id);
    s.queue
        .expire(expired.id, token(&claimed), at(201))
        .await
        .unwrap();
    assert_eq!(
        s.queue.retry(expired.id, at(300)).await.unwrap().status,
        MessageStatus::Queued
    );

    // Queued, leased and sent messages are not retried.
    match s.queue.retry(expired.id, at(301)).await {
        Err(StoreError::WrongStatus { id, status, .. }) => {
            assert_eq!(id, expired.id);
            assert_eq!(status, MessageStatus::Queued);
        }
        other => panic!("expected WrongStatus, found {other:?}"),
    }
    let unknown = MessageId::new();
    assert_not_found(s.queue.retry(unknown, at(301)).await, unknown);
}

pub async fn a_lapsed_lease_is_claimed_again_and_the_old_token_is_refused(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let first = claim(s, "crashed", 10, 1).await.remove(0);
    // The lease runs 30 s: still held a second before it lapses.
    assert!(claim(s, "rescuer", 39, 10).await.is_empty());
    let second = claim(s, "rescuer", 40, 10).await;
    assert_eq!(ids(&second), [m.id]);
    let second = &second[0];
    assert_eq!(second.attempts, 2);
    assert_eq!(second.lease.as_ref().unwrap().owner, "rescuer");
    assert_ne!(token(second), token(&first));

    // The stale holder wakes up: every change it tries is refused.
    let stale = token(&first);
    assert_lease_lost(
        s.queue
            .complete(m.id, stale, &vendor("aliyun"), at(41))
            .await,
        m.id,
    );
    assert_lease_lost(
        s.queue
            .fail(m.id, stale, failure(None, "x", false), at(41), at(41))
            .await,
        m.id,
    );
    assert_lease_lost(
        s.queue
            .dead(m.id, stale, failure(None, "x", false), at(41))
            .await,
        m.id,
    );
    assert_lease_lost(s.queue.expire(m.id, stale, at(41)).await, m.id);
    assert_lease_lost(s.queue.release(m.id, stale, at(41)).await, m.id);
    assert_eq!(
        get(s, m.id).await,
        *second,
        "refused updates change nothing"
    );

    s.queue
        .complete(m.id, token(second), &vendor("tencent"), at(42))
        .await
        .unwrap();
    assert_eq!(get(s, m.id).await.status, MessageStatus::Sent);
}

pub async fn a_lapsed_lease_not_yet_reclaimed_still_accepts_its_token(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 0).await;
    // Nobody claimed it after the lease lapsed, so the slow sender's outcome is kept.
    s.queue
        .complete(m.id, token(&claimed), &vendor("aliyun"), at(500))
        .await
        .unwrap();
    assert_eq!(get(s, m.id).await.status, MessageStatus::Sent);
}

pub async fn updates_of_unknown_messages_are_not_found(s: &TestStore) {
    let id = MessageId::new();
    let t = LeaseToken::new();
    assert_not_found(s.queue.complete(id, t, &vendor("aliyun"), at(0)).await, id);
    assert_not_found(
        s.queue
            .fail(id, t, failure(None, "x", false), at(0), at(0))
            .await,
        id,
    );
    assert_not_found(
        s.queue.dead(id, t, failure(None, "x", false), at(0)).await,
        id,
    );
    assert_not_found(s.queue.expire(id, t, at(0)).await, id);
    assert_not_found(s.queue.release(id, t, at(0)).await, id);
}

pub async fn enqueue_leased_is_claimable_only_after_its_lease(s: &TestStore) {
    let lease = Lease {
        owner: "api-1".to_owned(),
        token: LeaseToken::new(),
        expires_at: at(30),
    };
    let mut new = queued_request(keyed_request("pay-9"), at(0), at(0));
    new.reason = QueueReason::Accepted;
    new.initial = InitialState::Leased(lease.clone());
    new.attempts = 1;
    let stored = enqueue(s, new.clone()).await;
    assert_eq!(stored.status, MessageStatus::Leased);
    assert_eq!(stored.lease, Some(lease.clone()));
    assert_eq!(stored.attempts, 1);
    assert!(claim(s, "drainer", 29, 10).await.is_empty());
    // The storing sender finishes its attempt under the lease it stored.
    s.queue
        .complete(new.id, lease.token, &vendor("aliyun"), at(1))
        .await
        .unwrap();
    assert_eq!(get(s, new.id).await.status, MessageStatus::Sent);

    // A sender that died after storing: the drainer picks it up once the lease lapses.
    let orphan_lease = Lease {
        owner: "api-2".to_owned(),
        token: LeaseToken::new(),
        expires_at: at(30),
    };
    let mut orphan = queued(at(0), at(0));
    orphan.initial = InitialState::Leased(orphan_lease);
    orphan.attempts = 1;
    enqueue(s, orphan.clone()).await;
    let rescued = claim(s, "drainer", 30, 10).await;
    assert_eq!(ids(&rescued), [orphan.id]);
    assert_eq!(rescued[0].attempts, 2);
}

pub async fn enqueue_sent_records_the_vendor_and_is_never_claimed(s: &TestStore) {
    let mut new = queued_request(keyed_request("otp-1"), at(0), at(0));
    new.initial = InitialState::Sent {
        vendor: vendor("tencent"),
    };
    new.attempts = 1;
    let stored = enqueue(s, new.clone()).await;
    assert_eq!(stored.status, MessageStatus::Sent);
    assert_eq!(stored.last_vendor, Some(vendor("tencent")));
    assert!(claim(s, "a", 1_000, 10).await.is_empty());
    assert_eq!(s.queue.stats().await.unwrap().sent, 1);
    // Its key still answers retries of the request.
    let again = queued_request(keyed_request("otp-1"), at(5), at(5));
    assert!(matches!(
        s.queue.enqueue(again).await.unwrap(),
        Enqueued::Existing(m) if m.id == new.id
    ));
}

pub async fn list_returns_one_status_oldest_first_up_to_the_limit(s: &TestStore) {
    let mut queued_ids = Vec::new();
    for created in [3, 1, 2] {
        queued_ids.push((created, enqueue(s, queued(at(created), at(1_000))).await.id));
    }
    queued_ids.sort();
    let dead = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 5).await;
    assert_eq!(claimed.id, dead.id);
    s.queue
        .dead(dead.id, token(&claimed), failure(None, "x", false), at(6))
        .await
        .unwrap();

    let oldest_two = s.queue.list(MessageStatus::Queued, 2).await.unwrap();
    assert_eq!(ids(&oldest_two), [queued_ids[0].1, queued_ids[1].1]);
    let all = s.queue.list(MessageStatus::Queued, 100).await.unwrap();
    assert_eq!(
        ids(&all),
        queued_ids.iter().map(|(_, id)| *id).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&s.queue.list(MessageStatus::Dead, 100).await.unwrap()),
        [dead.id]
    );
    assert!(
        s.queue
            .list(MessageStatus::Sent, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.queue
            .list(MessageStatus::Queued, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn stats_count_every_status(s: &TestStore) {
    assert_eq!(s.queue.stats().await.unwrap(), Default::default());
    // Five due at once, claimed in creation order (ties broken by id, which grows).
    let mut messages = Vec::new();
    for _ in 0..6 {
        messages.push(enqueue(s, queued(at(0), at(0))).await);
    }
    let claimed = claim(s, "a", 1, 4).await;
    let [sent, dead, expired, _leased] = &claimed[..] else {
        panic!("expected four claimed messages");
    };
    s.queue
        .complete(sent.id, token(sent), &vendor("aliyun"), at(2))
        .await
        .unwrap();
    s.queue
        .dead(dead.id, token(dead), failure(None, "x", false), at(2))
        .await
        .unwrap();
    s.queue
        .expire(expired.id, token(expired), at(2))
        .await
        .unwrap();
    let stats = s.queue.stats().await.unwrap();
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
        let listed = s.queue.list(status, 100).await.unwrap().len() as u64;
        assert_eq!(stats.get(status), listed, "{status}");
    }
}

pub async fn purge_sent_removes_only_old_sent_messages(s: &TestStore) {
    // Five messages sent at +1 … +5 s.
    let mut sent = Vec::new();
    for i in 1..=5 {
        let m = enqueue(
            s,
            queued_request(keyed_request(&format!("k{i}")), at(0), at(0)),
        )
        .await;
        let claimed = claim_one(s, i).await;
        assert_eq!(claimed.id, m.id);
        s.queue
            .complete(m.id, token(&claimed), &vendor("aliyun"), at(i))
            .await
            .unwrap();
        sent.push(m.id);
    }
    let waiting = enqueue(s, queued(at(0), at(10_000))).await;

    // Sent before +4 s: three of them, removed at most two per call.
    assert_eq!(s.queue.purge_sent(at(4), 2).await.unwrap(), 2);
    assert_eq!(s.queue.purge_sent(at(4), 10).await.unwrap(), 1);
    assert_eq!(s.queue.purge_sent(at(4), 10).await.unwrap(), 0);
    for (i, id) in sent.iter().enumerate() {
        assert_eq!(
            s.queue.get(*id).await.unwrap().is_some(),
            i >= 3,
            "message sent at +{}s",
            i + 1
        );
    }
    assert!(s.queue.get(waiting.id).await.unwrap().is_some());
    assert_eq!(s.queue.stats().await.unwrap().sent, 2);
    // A purged message's key is free again.
    let key = IdempotencyKey::new("k1").unwrap();
    assert_eq!(s.queue.find_by_idempotency_key(&key).await.unwrap(), None);
    enqueue(s, queued_request(keyed_request("k1"), at(20), at(20))).await;
}

pub async fn purge_sent_works_through_more_than_one_batch(s: &TestStore) {
    const SENT: usize = 1_050;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let queue = s.queue.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..SENT / 10 {
                queue.enqueue(queued(at(0), at(0))).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let claimed = s.queue.claim("a", at(1), LEASE, SENT as u32).await.unwrap();
    assert_eq!(claimed.len(), SENT);
    for m in &claimed {
        s.queue
            .complete(m.id, token(m), &vendor("aliyun"), at(2))
            .await
            .unwrap();
    }
    assert_eq!(s.queue.purge_sent(at(3), 1_040).await.unwrap(), 1_040);
    assert_eq!(s.queue.stats().await.unwrap().sent, 10);
    assert_eq!(s.queue.purge_sent(at(3), 1_040).await.unwrap(), 10);
}

pub async fn arguments_and_recipients_round_trip_exactly(s: &TestStore) {
    // Everything the original `###` / `;` encoding broke, and then some.
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
        .with_expiry(at(3_600));
    let stored = enqueue(s, queued_request(request.clone(), at(0), at(0))).await;
    assert_eq!(stored.request, request);
    assert_eq!(get(s, stored.id).await.request, request);
    assert_eq!(get(s, stored.id).await.request.args(), args);
    let claimed = claim_one(s, 0).await;
    assert_eq!(claimed.request, request);

    // One empty argument stays one; none stay none.
    for args in [vec![""], vec![]] {
        let request = SmsRequest::new("login_code", args.clone(), ["+8613800138000"]).unwrap();
        let stored = enqueue(s, queued_request(request, at(0), at(0))).await;
        assert_eq!(get(s, stored.id).await.request.args(), args);
    }
}

pub async fn concurrent_claimers_never_share_a_message(s: &TestStore) {
    const MESSAGES: usize = 200;
    for _ in 0..MESSAGES {
        enqueue(s, queued(at(0), at(0))).await;
    }
    let mut claimers = Vec::new();
    for c in 0..8 {
        let queue = s.queue.clone();
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

fn period(label: &str) -> BillingPeriod {
    BillingPeriod::from_label(label)
}

pub async fn ledger_add_returns_the_running_total(s: &TestStore) {
    let aliyun = vendor("aliyun");
    let march = period("2026-03");
    assert!(s.ledger.totals(&march).await.unwrap().is_empty());
    assert_eq!(s.ledger.add(&aliyun, &march, 3).await.unwrap(), 3);
    assert_eq!(s.ledger.add(&aliyun, &march, 5).await.unwrap(), 8);
    // Counted per billed message: one request to 1000 numbers adds 1000.
    assert_eq!(s.ledger.add(&aliyun, &march, 1_000).await.unwrap(), 1_008);
    assert_eq!(
        s.ledger.totals(&march).await.unwrap().get(&aliyun),
        Some(&1_008)
    );
}

pub async fn ledger_periods_and_vendors_are_separate(s: &TestStore) {
    let (aliyun, tencent) = (vendor("aliyun"), vendor("tencent"));
    let (march, april) = (period("2026-03"), period("2026-04"));
    s.ledger.add(&aliyun, &march, 10).await.unwrap();
    s.ledger.add(&tencent, &march, 20).await.unwrap();
    // A new period starts from zero.
    assert_eq!(s.ledger.add(&aliyun, &april, 1).await.unwrap(), 1);
    let totals = s.ledger.totals(&march).await.unwrap();
    assert_eq!(totals.len(), 2);
    assert_eq!(totals[&aliyun], 10);
    assert_eq!(totals[&tencent], 20);
    let totals = s.ledger.totals(&april).await.unwrap();
    assert_eq!(totals.into_iter().collect::<Vec<_>>(), [(aliyun, 1)]);
    assert!(
        s.ledger
            .totals(&period("2026-05"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn ledger_increments_from_50_concurrent_tasks_sum_exactly(s: &TestStore) {
    let cloopen = vendor("cloopen");
    let march = period("2026-03");
    let mut tasks = Vec::new();
    for task in 0..50_u64 {
        let ledger = Arc::clone(&s.ledger);
        let (vendor, period) = (cloopen.clone(), march.clone());
        tasks.push(tokio::spawn(async move {
            let mut totals = Vec::new();
            for _ in 0..10 {
                totals.push(ledger.add(&vendor, &period, task % 7 + 1).await.unwrap());
            }
            totals
        }));
    }
    let mut running_totals = Vec::new();
    for task in tasks {
        running_totals.extend(task.await.unwrap());
    }
    let expected: u64 = (0..50_u64).map(|t| (t % 7 + 1) * 10).sum();
    assert_eq!(s.ledger.totals(&march).await.unwrap()[&cloopen], expected);
    // Each add saw its own total: no two increments were applied as one.
    let distinct: HashSet<_> = running_totals.iter().collect();
    assert_eq!(distinct.len(), running_totals.len());
    assert_eq!(running_totals.iter().max(), Some(&expected));
}

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
        created_at: new.created_at,
        updated_at: new.created_at,
    }
}

fn existing(outcome: &Enqueued) -> &StoredMessage {
    match outcome {
        Enqueued::Existing(m) => m,
        Enqueued::Created(m) => panic!("expected an existing row, found new {}", m.id),
    }
}

fn completion(m: &StoredMessage, vendor_name: &str, now_secs: i64) -> Completion {
    Completion {
        id: m.id,
        token: token(m),
        vendor: vendor(vendor_name),
        at: at(now_secs),
    }
}

pub async fn enqueue_many_stores_every_message_and_answers_created_in_order(s: &TestStore) {
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

    let outcomes = s.queue.enqueue_many(batch.clone()).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    for (new, outcome) in batch.iter().zip(outcomes) {
        let stored = created(outcome);
        assert_eq!(stored, as_stored(new), "answer for {}", new.id);
        assert_eq!(get(s, new.id).await, stored, "stored {}", new.id);
    }
    let stats = s.queue.stats().await.unwrap();
    assert_eq!((stats.queued, stats.leased, stats.sent), (6, 1, 1));
    // Stored like any message: claimable oldest due first (the lapsed lease at +30 s,
    // the timed-out one at +61 s, then the queued ones due at +96 … +100 s).
    let claimed = claim(s, "a", 100, 10).await;
    let by_due: Vec<MessageId> = [7, 3, 6, 5, 4, 2, 1].iter().map(|&i| batch[i].id).collect();
    assert_eq!(ids(&claimed), by_due);
}

pub async fn enqueue_many_answers_existing_for_known_and_repeated_keys(s: &TestStore) {
    let known = enqueue(s, queued_request(keyed_request("known-1"), at(0), at(0))).await;
    let batch = vec![
        queued_request(keyed_request("known-1"), at(5), at(5)),
        queued_request(keyed_request("dup-1"), at(6), at(6)),
        queued(at(7), at(7)),
        // A retry inside the same batch: same key, new id, other times.
        queued_request(keyed_request("dup-1"), at(8), at(9)),
        queued_request(keyed_request("known-1"), at(9), at(9)),
    ];
    let outcomes = s.queue.enqueue_many(batch.clone()).await.unwrap();
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
        assert_eq!(s.queue.get(skipped.id).await.unwrap(), None);
    }
    let key = IdempotencyKey::new("dup-1").unwrap();
    assert_eq!(
        s.queue.find_by_idempotency_key(&key).await.unwrap(),
        Some(first_dup)
    );
    assert_eq!(s.queue.stats().await.unwrap().queued, 3);
}

pub async fn enqueue_many_round_trips_arguments_and_recipients_exactly(s: &TestStore) {
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
    let outcomes = s.queue.enqueue_many(batch.clone()).await.unwrap();
    for ((new, request), outcome) in batch.iter().zip(&requests).zip(outcomes) {
        assert_eq!(&created(outcome).request, request);
        assert_eq!(&get(s, new.id).await.request, request);
    }
    assert_eq!(get(s, batch[0].id).await.request.args(), tricky);
    assert!(get(s, batch[1].id).await.request.args().is_empty());
    assert_eq!(get(s, batch[2].id).await.request.args(), [""]);
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

/// A store may keep coarser times than it is given; `enqueue` and `enqueue_many` then
/// answer with the times as stored, so their answer is exactly what `get` returns.
pub async fn enqueue_answers_equal_what_get_returns_at_the_stored_precision(s: &TestStore) {
    let batch = odd_messages("precision-many");
    let outcomes = s.queue.enqueue_many(batch.clone()).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    for (new, outcome) in batch.iter().zip(outcomes) {
        let answer = created(outcome);
        assert_eq!(
            answer,
            get(s, new.id).await,
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
        let answer = enqueue(s, new.clone()).await;
        assert_eq!(
            answer,
            get(s, new.id).await,
            "enqueue answer for {}",
            new.id
        );
    }
    // A conflicting key answers the stored message, as `get` returns it too.
    let again = odd_messages("precision-many");
    let outcomes = s.queue.enqueue_many(again[..2].to_vec()).await.unwrap();
    for (first, outcome) in batch.iter().zip(&outcomes) {
        assert_eq!(existing(outcome), &get(s, first.id).await);
    }
}

pub async fn enqueue_many_of_nothing_stores_nothing(s: &TestStore) {
    assert!(s.queue.enqueue_many(Vec::new()).await.unwrap().is_empty());
    assert_eq!(s.queue.stats().await.unwrap(), Default::default());
}

pub async fn concurrent_enqueue_many_with_shared_keys_store_each_key_once(s: &TestStore) {
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
            let queue = s.queue.clone();
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
    assert_eq!(
        s.queue.stats().await.unwrap().queued,
        (ROUNDS * KEYS) as u64
    );
}

pub async fn complete_many_marks_every_message_sent_with_its_vendor(s: &TestStore) {
    for _ in 0..4 {
        enqueue(s, queued(at(0), at(0))).await;
    }
    let claimed = claim(s, "drainer-a", 1, 10).await;
    assert_eq!(claimed.len(), 4);
    let vendors = ["cloopen", "aliyun", "tencent", "aliyun"];
    let completions: Vec<Completion> = claimed
        .iter()
        .zip(vendors)
        .enumerate()
        .map(|(i, (m, v))| completion(m, v, 2 + i as i64))
        .collect();
    let results = s.queue.complete_many(&completions).await.unwrap();
    assert_eq!(results.len(), 4);
    for ((m, c), result) in claimed.iter().zip(&completions).zip(results) {
        result.unwrap_or_else(|e| panic!("completing {}: {e}", m.id));
        let sent = get(s, m.id).await;
        assert_eq!(sent.status, MessageStatus::Sent);
        assert_eq!(sent.last_vendor, Some(c.vendor.clone()));
        assert_eq!(sent.lease, None);
        assert_eq!(sent.updated_at, c.at);
        assert_eq!(sent.attempts, 1);
    }
    assert_eq!(s.queue.stats().await.unwrap().sent, 4);
    assert!(claim(s, "a", 10_000, 10).await.is_empty());
}

pub async fn complete_many_refuses_a_wrong_token_for_that_message_only(s: &TestStore) {
    for _ in 0..3 {
        enqueue(s, queued(at(0), at(0))).await;
    }
    let claimed = claim(s, "drainer-a", 1, 10).await;
    let [a, b, c] = &claimed[..] else {
        panic!("expected three claimed messages");
    };
    let mut wrong = completion(b, "tencent", 2);
    wrong.token = LeaseToken::new();
    let results = s
        .queue
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
    assert_eq!(get(s, a.id).await.last_vendor, Some(vendor("aliyun")));
    assert_eq!(get(s, c.id).await.status, MessageStatus::Sent);
    assert_eq!(
        &get(s, b.id).await,
        b,
        "the refused message keeps its lease, unchanged"
    );

    // Completed already (a retried call): refused, not applied twice; the same message
    // twice in one batch is done once, as one-by-one completions would.
    let results = s
        .queue
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
    assert_eq!(get(s, a.id).await.last_vendor, Some(vendor("aliyun")));
    let b_sent = get(s, b.id).await;
    assert_eq!(b_sent.last_vendor, Some(vendor("tencent")));
    assert_eq!(b_sent.updated_at, at(3));
    assert_eq!(s.queue.stats().await.unwrap().sent, 3);
}

pub async fn complete_many_answers_unknown_ids_like_complete(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 1).await;
    let unknown = MessageId::new();
    assert_not_found(
        s.queue
            .complete(unknown, LeaseToken::new(), &vendor("aliyun"), at(2))
            .await,
        unknown,
    );
    let results = s
        .queue
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
    assert_eq!(get(s, m.id).await.status, MessageStatus::Sent);
    assert_eq!(s.queue.get(unknown).await.unwrap(), None);
}

pub async fn complete_many_of_nothing_changes_nothing(s: &TestStore) {
    let m = enqueue(s, queued(at(0), at(0))).await;
    let claimed = claim_one(s, 1).await;
    assert!(s.queue.complete_many(&[]).await.unwrap().is_empty());
    assert_eq!(get(s, m.id).await, claimed);
}

/// Durable stores only (see [`durable_store_contract!`]).
pub async fn enqueue_many_stores_nothing_when_one_message_fails(s: &TestStore) {
    let stored = enqueue(s, queued(at(0), at(0))).await;
    let mut reused = queued(at(1), at(1));
    reused.id = stored.id;
    let batch = vec![
        queued(at(1), at(1)),
        queued_request(keyed_request("atomic-1"), at(1), at(1)),
        reused,
        queued(at(1), at(1)),
    ];
    match s.queue.enqueue_many(batch.clone()).await {
        Err(StoreError::Backend(_)) => {}
        other => panic!("expected a backend error for a reused id, found {other:?}"),
    }
    for new in [&batch[0], &batch[1], &batch[3]] {
        assert_eq!(s.queue.get(new.id).await.unwrap(), None, "rolled back");
    }
    let key = IdempotencyKey::new("atomic-1").unwrap();
    assert_eq!(s.queue.find_by_idempotency_key(&key).await.unwrap(), None);
    assert_eq!(get(s, stored.id).await, stored);
    assert_eq!(s.queue.stats().await.unwrap().queued, 1);
    // The batch without the bad message goes in whole.
    let outcomes = s
        .queue
        .enqueue_many(vec![batch[0].clone(), batch[1].clone(), batch[3].clone()])
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Enqueued::Created(_))));
    assert_eq!(s.queue.stats().await.unwrap().queued, 4);
}
