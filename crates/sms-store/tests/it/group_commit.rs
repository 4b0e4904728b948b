//! `GroupCommit`: the contract over both stores, and what the wrapper adds: concurrent
//! calls share writes, each keeps its own answer, and a refused batch fails only the rows
//! that fail alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sms_core::testing::MemoryQueue;
use sms_core::testing::store_contract::ContractStore;
use sms_core::testing::store_contract::fixtures::{at, keyed_request, queued_request, request};
use sms_core::{
    AttemptFailure, DeferredQueue, Enqueued, IdempotencyKey, InitialState, Lease, LeaseToken,
    MessageId, MessageStatus, NewMessage, QueueStats, StoreError, StoredMessage, VendorId,
};
use sms_store::GroupCommit;
use sms_store::sqlite::SqliteStore;

use crate::support::pg_store;

async fn sqlite_group_commit() -> Option<ContractStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("gateway.db"))
            .await
            .unwrap(),
    );
    let queue = Arc::new(GroupCommit::new(store.clone(), 64, Duration::ZERO));
    Some(ContractStore::split(queue, store).keeping(dir))
}

async fn postgres_group_commit() -> Option<ContractStore> {
    let (store, guard) = pg_store().await?;
    let store = Arc::new(store);
    // With the wait `serve` gives Postgres.
    let queue = Arc::new(GroupCommit::new(
        store.clone(),
        64,
        Duration::from_millis(1),
    ));
    Some(ContractStore::split(queue, store).keeping(guard))
}

mod over_sqlite {
    use super::*;
    sms_core::store_contract_tests!(sqlite_group_commit);
    sms_core::store_contract_atomic_batch_tests!(sqlite_group_commit);
}

mod over_postgres {
    use super::*;
    sms_core::store_contract_tests!(postgres_group_commit);
    sms_core::store_contract_atomic_batch_tests!(postgres_group_commit);
}

/// How `Recording` answers a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Batches {
    Written,
    /// Refused as a whole, as a store refuses a batch one bad row spoils.
    Refused,
    /// The store cannot be reached, for batches and single rows alike.
    Unreachable,
}

/// A memory queue whose writes take `delay` and are counted.
struct Recording {
    inner: MemoryQueue,
    delay: Duration,
    batches: Batches,
    single_writes: AtomicUsize,
    batch_writes: AtomicUsize,
}

impl Recording {
    fn new(delay: Duration, batches: Batches) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryQueue::new(),
            delay,
            batches,
            single_writes: AtomicUsize::new(0),
            batch_writes: AtomicUsize::new(0),
        })
    }

    async fn write(&self, counter: &AtomicUsize) -> Result<(), StoreError> {
        counter.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if self.batches == Batches::Unreachable {
            return Err(StoreError::unavailable("connection refused"));
        }
        Ok(())
    }

    async fn write_batch(&self) -> Result<(), StoreError> {
        self.write(&self.batch_writes).await?;
        if self.batches == Batches::Refused {
            return Err(StoreError::backend("a row of the batch broke a constraint"));
        }
        Ok(())
    }

    fn writes(&self) -> (usize, usize) {
        (
            self.single_writes.load(Ordering::SeqCst),
            self.batch_writes.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl DeferredQueue for Recording {
    async fn enqueue(&self, message: NewMessage) -> Result<Enqueued, StoreError> {
        self.write(&self.single_writes).await?;
        self.inner.enqueue(message).await
    }
    async fn enqueue_many(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
        self.write_batch().await?;
        self.inner.enqueue_many(messages).await
    }
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.claim(owner, now, lease_for, limit).await
    }
    async fn complete(
        &self,
        id: MessageId,
        token: LeaseToken,
        vendor: &VendorId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(&self.single_writes).await?;
        self.inner.complete(id, token, vendor, now).await
    }
    async fn complete_many(
        &self,
        completions: &[sms_core::Completion],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.write_batch().await?;
        self.inner.complete_many(completions).await
    }
    async fn fail(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner
            .fail(id, token, failure, next_attempt_at, now)
            .await
    }
    async fn dead(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.dead(id, token, failure, now).await
    }
    async fn expire(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.expire(id, token, now).await
    }
    async fn release(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.release(id, token, now).await
    }
    async fn retry(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        self.inner.retry(id, now).await
    }
    async fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.inner.get(id).await
    }
    async fn find_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.inner.find_by_idempotency_key(key).await
    }
    async fn list(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.list(status, limit).await
    }
    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.inner.stats().await
    }
    async fn purge_sent(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.inner.purge_sent(before, limit).await
    }
}

/// `count` keyed messages with keys `{prefix}-0`, `{prefix}-1`, …
fn keyed_messages(prefix: &str, count: usize) -> Vec<NewMessage> {
    (0..count)
        .map(|i| queued_request(keyed_request(&format!("{prefix}-{i}")), at(0), at(0)))
        .collect()
}

/// Enqueues every message at the same time through `queue`; the answers in order.
async fn enqueue_together(
    queue: &Arc<GroupCommit>,
    messages: Vec<NewMessage>,
) -> Vec<Result<Enqueued, StoreError>> {
    let tasks: Vec<_> = messages
        .into_iter()
        .map(|m| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.enqueue(m).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_keyed_enqueues_share_a_few_writes() {
    let store = Recording::new(Duration::from_millis(50), Batches::Written);
    let queue = Arc::new(GroupCommit::new(store.clone(), 256, Duration::ZERO));
    let messages = keyed_messages("shared", 50);
    let ids: Vec<MessageId> = messages.iter().map(|m| m.id).collect();

    let answers = enqueue_together(&queue, messages).await;

    for (answer, id) in answers.into_iter().zip(&ids) {
        match answer.unwrap() {
            Enqueued::Created(m) => assert_eq!(m.id, *id),
            other => panic!("expected a new row, got {other:?}"),
        }
        assert!(store.inner.get(*id).await.unwrap().is_some());
    }
    let (single, batches) = store.writes();
    // The first call is written alone; the others gather while it is in flight. Written
    // directly, they would have been 50 writes.
    assert!(
        single + batches <= 5,
        "{single} single and {batches} batch writes for 50 calls"
    );
    assert!(batches >= 1, "no batch was written");
}

#[tokio::test]
async fn a_lone_call_is_written_at_once_with_the_single_row_method() {
    let store = Recording::new(Duration::ZERO, Batches::Written);
    let queue = GroupCommit::new(store.clone(), 256, Duration::ZERO);
    let message = queued_request(keyed_request("alone"), at(0), at(0));
    let id = message.id;
    assert!(matches!(
        queue.enqueue(message).await.unwrap(),
        Enqueued::Created(m) if m.id == id
    ));
    assert_eq!(store.writes(), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_sent_by_ten_callers_at_once_is_stored_once() {
    let store = Recording::new(Duration::from_millis(50), Batches::Written);
    let queue = Arc::new(GroupCommit::new(store.clone(), 256, Duration::ZERO));
    let messages: Vec<NewMessage> = (0..10)
        .map(|_| queued_request(keyed_request("the-same-key"), at(0), at(0)))
        .collect();

    let answers = enqueue_together(&queue, messages).await;

    let created: Vec<MessageId> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(Enqueued::Created(m)) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "answers: {answers:?}");
    for answer in &answers {
        assert_eq!(answer.as_ref().unwrap().message().id, created[0]);
    }
    assert_eq!(store.inner.stats().await.unwrap().queued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completions_share_writes_and_a_lost_lease_fails_alone() {
    let store = Recording::new(Duration::from_millis(50), Batches::Written);
    let queue = Arc::new(GroupCommit::new(store.clone(), 256, Duration::ZERO));
    let vendor = VendorId::new("aliyun").unwrap();
    let mut leased = Vec::new();
    for _ in 0..20 {
        let token = LeaseToken::new();
        let message = NewMessage {
            initial: InitialState::Leased(Lease {
                owner: "test".to_owned(),
                token,
                expires_at: at(60),
            }),
            attempts: 1,
            ..queued_request(request(), at(0), at(0))
        };
        leased.push((message.id, token));
        store.inner.enqueue(message).await.unwrap();
    }
    // The fifth caller's lease is not its own any more.
    leased[4].1 = LeaseToken::new();

    let tasks: Vec<_> = leased
        .iter()
        .map(|&(id, token)| {
            let (queue, vendor) = (queue.clone(), vendor.clone());
            tokio::spawn(async move { queue.complete(id, token, &vendor, at(1)).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap();
        let status = store.inner.get(leased[i].0).await.unwrap().unwrap().status;
        if i == 4 {
            assert!(
                matches!(answer, Err(StoreError::LeaseLost(_))),
                "{answer:?}"
            );
            assert_eq!(status, MessageStatus::Leased);
        } else {
            answer.unwrap();
            assert_eq!(status, MessageStatus::Sent);
        }
    }
    let (single, batches) = store.writes();
    assert!(
        single + batches <= 5,
        "{single} single and {batches} batch writes for 20 completions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_batch_is_written_again_one_row_at_a_time() {
    let store = Recording::new(Duration::from_millis(20), Batches::Refused);
    let queue = Arc::new(GroupCommit::new(store.clone(), 256, Duration::ZERO));
    let messages = keyed_messages("refused", 20);
    let ids: Vec<MessageId> = messages.iter().map(|m| m.id).collect();

    let answers = enqueue_together(&queue, messages).await;

    for answer in answers {
        assert!(matches!(answer, Ok(Enqueued::Created(_))), "{answer:?}");
    }
    for id in ids {
        assert!(store.inner.get(id).await.unwrap().is_some());
    }
    let (single, batches) = store.writes();
    assert!(batches >= 1, "no batch was tried");
    assert_eq!(single, 20, "every row is written alone after the refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_store_fails_every_caller_and_stores_nothing() {
    let store = Recording::new(Duration::from_millis(20), Batches::Unreachable);
    let queue = Arc::new(GroupCommit::new(store.clone(), 256, Duration::ZERO));

    let answers = enqueue_together(&queue, keyed_messages("down", 20)).await;

    for answer in answers {
        assert!(
            matches!(&answer, Err(StoreError::Unavailable(e)) if e.to_string().contains("connection refused")),
            "{answer:?}"
        );
    }
    assert_eq!(store.inner.stats().await.unwrap(), QueueStats::default());
}

/// Five calls 10 ms apart through a queue whose batches wait `wait`; the writes made.
async fn five_calls_ten_ms_apart(wait: Duration) -> (usize, usize) {
    let store = Recording::new(Duration::ZERO, Batches::Written);
    let queue = Arc::new(GroupCommit::new(store.clone(), 256, wait));
    let tasks: Vec<_> = keyed_messages("spaced", 5)
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let queue = queue.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
                queue.enqueue(m).await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Ok(Enqueued::Created(_))));
    }
    store.writes()
}

#[tokio::test(start_paused = true)]
async fn with_a_wait_calls_arriving_within_it_share_one_write() {
    assert_eq!(
        five_calls_ten_ms_apart(Duration::from_millis(100)).await,
        (0, 1),
        "the first call and the four that joined it in one batch"
    );
    // Without a wait, each is written as it comes.
    assert_eq!(five_calls_ten_ms_apart(Duration::ZERO).await, (5, 0));
}
