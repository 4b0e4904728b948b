//! Group commit: concurrent `enqueue` and `complete` calls share one write.
//!
//! A live send with an idempotency key stores its message before the vendor call and
//! marks it sent after. Alone, each of those is a commit of its own: an fsync on SQLite
//! (which syncs every commit by default) and a round trip plus a log flush on Postgres,
//! so a keyed send costs two commits while a keyless one costs none. [`GroupCommit`]
//! wraps any queue and hands those two calls to one writer task per kind. When free, the
//! writer takes every call waiting (up to `max_rows`) and writes them with one
//! [`DeferredQueue::enqueue_many`] or [`DeferredQueue::complete_many`]: one transaction,
//! one commit. Each caller still gets its own answer: created, or the message already
//! stored under its key (by an earlier call of the same batch, too); completed, or its
//! lease lost.
//!
//! While a write is in flight the next batch gathers, so batches grow with the load to
//! what one commit time lets gather. After taking the first waiting call, the writer can
//! also wait up to `wait` for more (or for `max_rows`) before it writes. With no wait an
//! idle writer writes a lone call at once, with the single-row method, and a caller with
//! no company pays no added latency: right for SQLite, whose commits are short, so that
//! waiting only idles its one writer. A store on a server (Postgres) pays a round trip
//! and a statement's fixed cost per write, and under load a wait of about a millisecond
//! doubles its batches and saves more than it costs.
//!
//! A batch the store refuses as a whole for a reason other than being unreachable is
//! written again one call at a time, so that one bad row fails alone. That needs a
//! store whose batches are all or nothing, as the SQLite and Postgres stores' are.
//! Every other method goes straight to the wrapped queue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sms_core::{
    AttemptFailure, ClientId, Completion, DeferredQueue, Enqueued, IdempotencyKey, Lease,
    LeaseToken, MessageId, MessageStatus, NewMessage, PhoneNumber, QueueStats, StoreError,
    StoredMessage, VendorId,
};
use tokio::sync::{mpsc, oneshot};

/// The default most rows one shared write holds.
pub const DEFAULT_MAX_ROWS: usize = 256;

/// A queue whose `enqueue` and `complete` calls are written in shared commits. See the
/// module docs.
pub struct GroupCommit {
    inner: Arc<dyn DeferredQueue>,
    enqueues: Writer<Enqueues>,
    completions: Writer<Completions>,
}

/// Where calls of one kind go: the writer task's queue, and the kind's single-row write
/// for when that task is gone.
struct Writer<B: Batch> {
    calls: mpsc::Sender<Call<B::Item, B::Answer>>,
    batch: B,
}

impl<B: Batch> Writer<B> {
    /// Starts the writer task of `batch`.
    fn start(batch: B, batching: Batching) -> Self {
        let (calls, taken) = mpsc::channel(batching.max_rows);
        tokio::spawn(write_batches(batch.clone(), taken, batching));
        Self { calls, batch }
    }

    /// Hands `item` to the writer task and waits for its answer; writes it alone when
    /// the task is gone (the runtime is shutting down).
    async fn write(&self, item: B::Item) -> Result<B::Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        match self.calls.send(Call { item, reply }).await {
            Ok(()) => answer.await.unwrap_or_else(|_| {
                // The writer took the call and stopped before answering: whether it
                // was written is unknown, as after a lost connection.
                Err(StoreError::unavailable(
                    "the group-commit writer stopped before answering",
                ))
            }),
            Err(mpsc::error::SendError(call)) => self.batch.one(call.item).await,
        }
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Wraps `inner`, writing at most `max_rows` calls (at least one) in one commit, and
    /// waiting up to `wait` after the first call of a batch for others to join it.
    /// Starts the two writer tasks, so it must be called within a tokio runtime; they
    /// end, after answering every call they took, when the wrapper is dropped.
    pub fn new(inner: Arc<dyn DeferredQueue>, max_rows: usize, wait: Duration) -> Self {
        let batching = Batching {
            max_rows: max_rows.max(1),
            wait,
        };
        Self {
            enqueues: Writer::start(Enqueues(inner.clone()), batching),
            completions: Writer::start(Completions(inner.clone()), batching),
            inner,
        }
    }
}

/// One caller's row and where its answer goes.
struct Call<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O, StoreError>>,
}

/// A kind of write the writer can batch.
#[async_trait]
trait Batch: Clone + Send + Sync + 'static {
    type Item: Clone + Send + 'static;
    type Answer: Send + 'static;
    /// Writes all of `items` in one commit: one answer per item, in order, or an error
    /// meaning nothing was written.
    async fn many(
        &self,
        items: Vec<Self::Item>,
    ) -> Result<Vec<Result<Self::Answer, StoreError>>, StoreError>;
    /// Writes one item.
    async fn one(&self, item: Self::Item) -> Result<Self::Answer, StoreError>;
}

#[derive(Clone)]
struct Enqueues(Arc<dyn DeferredQueue>);

#[async_trait]
impl Batch for Enqueues {
    type Item = NewMessage;
    type Answer = Enqueued;
    async fn many(
        &self,
        items: Vec<NewMessage>,
    ) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        Ok(self
            .0
            .enqueue_many(items)
            .await?
            .into_iter()
            .map(Ok)
            .collect())
    }
    async fn one(&self, item: NewMessage) -> Result<Enqueued, StoreError> {
        self.0.enqueue(item).await
    }
}

#[derive(Clone)]
struct Completions(Arc<dyn DeferredQueue>);

#[async_trait]
impl Batch for Completions {
    type Item = Completion;
    type Answer = ();
    async fn many(
        &self,
        items: Vec<Completion>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.0.complete_many(&items).await
    }
    async fn one(&self, c: Completion) -> Result<(), StoreError> {
        self.0.complete(c.id, c.token, &c.vendor, c.at).await
    }
}

/// How a writer forms its batches.
#[derive(Debug, Clone, Copy)]
struct Batching {
    max_rows: usize,
    /// How long a batch waits, after its first call, for others.
    wait: Duration,
}

/// The writer: takes every waiting call (up to `max_rows`, waiting up to `wait` for
/// more), writes them together and answers each, until every sender is gone.
async fn write_batches<B: Batch>(
    batch: B,
    mut calls: mpsc::Receiver<Call<B::Item, B::Answer>>,
    batching: Batching,
) {
    let Batching { max_rows, wait } = batching;
    let mut taken = Vec::with_capacity(max_rows);
    while calls.recv_many(&mut taken, max_rows).await > 0 {
        if !wait.is_zero() && taken.len() < max_rows {
            // Whatever joins within `wait`; the senders being gone ends it early too.
            let _ = tokio::time::timeout(wait, async {
                while taken.len() < max_rows {
                    let room = max_rows - taken.len();
                    if calls.recv_many(&mut taken, room).await == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        let (items, replies): (Vec<_>, Vec<_>) =
            taken.drain(..).map(|call| (call.item, call.reply)).unzip();
        for (reply, answer) in replies.into_iter().zip(write(&batch, items).await) {
            // A caller that went away (its request was cancelled) needs no answer: its
            // row is written all the same, as a direct write in flight would be.
            let _ = reply.send(answer);
        }
    }
}

/// Writes `items` in one commit (a lone item with the single-row method); one answer
/// per item, in order.
async fn write<B: Batch>(batch: &B, items: Vec<B::Item>) -> Vec<Result<B::Answer, StoreError>> {
    let count = items.len();
    if count == 1 {
        let item = items.into_iter().next().expect("one item");
        return vec![batch.one(item).await];
    }
    let again = items.clone();
    match batch.many(items).await {
        Ok(answers) if answers.len() == count => answers,
        Ok(answers) => {
            let problem = format!("the store answered {} of {count} rows", answers.len());
            (0..count)
                .map(|_| Err(StoreError::backend(problem.clone())))
                .collect()
        }
        Err(StoreError::Unavailable(e)) => {
            // Every row would meet the same outage: each caller hears it now.
            let problem = e.to_string();
            (0..count)
                .map(|_| Err(StoreError::unavailable(problem.clone())))
                .collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, rows = count, "a shared write was refused; writing its rows one by one");
            let mut answers = Vec::with_capacity(count);
            for item in again {
                answers.push(batch.one(item).await);
            }
            answers
        }
    }
}

#[async_trait]
impl DeferredQueue for GroupCommit {
    async fn enqueue(&self, message: NewMessage) -> Result<Enqueued, StoreError> {
        self.enqueues.write(message).await
    }

    async fn enqueue_many(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
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

    async fn claim_lanes(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
        normal_min: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner
            .claim_lanes(owner, now, lease_for, limit, normal_min)
            .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.next_due().await
    }

    async fn cancel(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        self.inner.cancel(id, now).await
    }

    async fn complete(
        &self,
        id: MessageId,
        token: LeaseToken,
        vendor: &VendorId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let completion = Completion {
            id,
            token,
            vendor: vendor.clone(),
            at: now,
        };
        self.completions.write(completion).await
    }

    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
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

    async fn defer(
        &self,
        id: MessageId,
        token: LeaseToken,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.defer(id, token, due_at, now).await
    }

    async fn renew(
        &self,
        id: MessageId,
        token: LeaseToken,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.inner.renew(id, token, lease_for, now).await
    }

    async fn narrow(
        &self,
        id: MessageId,
        token: LeaseToken,
        sent: &[PhoneNumber],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.narrow(id, token, sent, now).await
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

    async fn list_for_client(
        &self,
        client: &ClientId,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.list_for_client(client, status, limit).await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.inner.stats().await
    }

    async fn purge_sent(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.inner.purge_sent(before, limit).await
    }
}
