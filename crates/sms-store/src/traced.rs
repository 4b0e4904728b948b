//! A queue that opens a `tracing` span around each call, for trace export.
//!
//! Writes are `queue_write` spans and look-ups `queue_read` spans, each named by `op`
//! (the method) with the message id, or the row count of a batch, and the error when
//! there is one. The spans are at `debug` level: with no subscriber that wants them,
//! each call costs one cached check.
//!
//! Wrapped outside [`GroupCommit`](crate::GroupCommit), a span lasts as long as its
//! caller waits, the shared commit included, and belongs to the caller's trace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sms_core::{
    AttemptFailure, ClientId, Completion, DeferredQueue, Enqueued, IdempotencyKey, Lease,
    LeaseToken, MessageId, MessageStatus, NewMessage, PhoneNumber, QueueStats, StoreError,
    StoredMessage, VendorId,
};
use tracing::field::{Empty, display};
use tracing::{Instrument, Span, debug_span};

/// Any queue, with a span around each call. See the module docs.
pub struct TracedQueue {
    inner: Arc<dyn DeferredQueue>,
}

impl TracedQueue {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn DeferredQueue>) -> Self {
        Self { inner }
    }
}

/// A write of one message.
fn write(op: &'static str, id: MessageId) -> Span {
    debug_span!("queue_write", op, message_id = %id, error = Empty)
}

/// A write of several rows at once.
fn write_rows(op: &'static str, rows: usize) -> Span {
    debug_span!("queue_write", op, rows, error = Empty)
}

/// A look-up.
fn read(op: &'static str) -> Span {
    debug_span!("queue_read", op, message_id = Empty, error = Empty)
}

/// Runs `call` inside `span` and records its error, if any, on the span.
async fn traced<T>(
    span: Span,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let result = call.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("error", display(e));
    }
    result
}

#[async_trait]
impl DeferredQueue for TracedQueue {
    async fn enqueue(&self, message: NewMessage) -> Result<Enqueued, StoreError> {
        traced(write("enqueue", message.id), self.inner.enqueue(message)).await
    }

    async fn enqueue_many(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
        let span = write_rows("enqueue_many", messages.len());
        traced(span, self.inner.enqueue_many(messages)).await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let span = debug_span!(
            "queue_write",
            op = "claim",
            limit,
            rows = Empty,
            error = Empty
        );
        let claimed = traced(span.clone(), self.inner.claim(owner, now, lease_for, limit)).await;
        if let Ok(messages) = &claimed {
            span.record("rows", messages.len());
        }
        claimed
    }

    async fn claim_lanes(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
        normal_min: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let span = debug_span!(
            "queue_write",
            // One operation for dashboards, with or without a share kept for normal ones.
            op = "claim",
            limit,
            normal_min,
            rows = Empty,
            error = Empty
        );
        let claimed = traced(
            span.clone(),
            self.inner
                .claim_lanes(owner, now, lease_for, limit, normal_min),
        )
        .await;
        if let Ok(messages) = &claimed {
            span.record("rows", messages.len());
        }
        claimed
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        traced(read("next_due"), self.inner.next_due()).await
    }

    async fn cancel(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        traced(write("cancel", id), self.inner.cancel(id, now)).await
    }

    async fn complete(
        &self,
        id: MessageId,
        token: LeaseToken,
        vendor: &VendorId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        traced(
            write("complete", id),
            self.inner.complete(id, token, vendor, now),
        )
        .await
    }

    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        traced(
            write_rows("complete_many", completions.len()),
            self.inner.complete_many(completions),
        )
        .await
    }

    async fn fail(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        traced(
            write("fail", id),
            self.inner.fail(id, token, failure, next_attempt_at, now),
        )
        .await
    }

    async fn dead(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        traced(write("dead", id), self.inner.dead(id, token, failure, now)).await
    }

    async fn expire(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        traced(write("expire", id), self.inner.expire(id, token, now)).await
    }

    async fn release(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        traced(write("release", id), self.inner.release(id, token, now)).await
    }

    async fn defer(
        &self,
        id: MessageId,
        token: LeaseToken,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        traced(write("defer", id), self.inner.defer(id, token, due_at, now)).await
    }

    async fn renew(
        &self,
        id: MessageId,
        token: LeaseToken,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        traced(
            write("renew", id),
            self.inner.renew(id, token, lease_for, now),
        )
        .await
    }

    async fn narrow(
        &self,
        id: MessageId,
        token: LeaseToken,
        sent: &[PhoneNumber],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        traced(write("narrow", id), self.inner.narrow(id, token, sent, now)).await
    }

    async fn retry(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        traced(write("retry", id), self.inner.retry(id, now)).await
    }

    async fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let span = read("get");
        span.record("message_id", display(id));
        traced(span, self.inner.get(id)).await
    }

    async fn find_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let span = read("find_by_idempotency_key");
        let found = traced(span.clone(), self.inner.find_by_idempotency_key(key)).await;
        if let Ok(Some(message)) = &found {
            span.record("message_id", display(message.id));
        }
        found
    }

    async fn list(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        traced(read("list"), self.inner.list(status, limit)).await
    }

    async fn list_for_client(
        &self,
        client: &ClientId,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        traced(
            read("list_for_client"),
            self.inner.list_for_client(client, status, limit),
        )
        .await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        traced(read("stats"), self.inner.stats()).await
    }

    async fn purge_sent(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let span = debug_span!(
            "queue_write",
            op = "purge_sent",
            limit,
            rows = Empty,
            error = Empty
        );
        let purged = traced(span.clone(), self.inner.purge_sent(before, limit)).await;
        if let Ok(rows) = &purged {
            span.record("rows", rows);
        }
        purged
    }
}
