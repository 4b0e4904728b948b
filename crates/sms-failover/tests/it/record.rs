//! A message sent at once, without a key, is recorded for status look-ups after the
//! send; a store that is briefly unreachable must not lose that record.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{
    AttemptFailure, DeferredQueue, Enqueued, IdempotencyKey, Lease, LeaseToken, MessageId,
    MessageStatus, NewMessage, QueueStats, StoreError, StoredMessage, VendorId,
};
use sms_failover::{Gateway, SendOutcome, VendorEntry};

use crate::support::*;

/// A `MemoryQueue` whose first `failures` inserts fail as if the database were down.
struct FlakyInserts {
    inner: MemoryQueue,
    failures: usize,
    calls: AtomicUsize,
    /// When set, every insert waits for a permit (a store that takes its time).
    gate: Option<Arc<tokio::sync::Semaphore>>,
    /// How many of the next writes of an outcome (`complete`, `dead`) fail as if the
    /// database were down.
    outcome_failures: AtomicUsize,
}

impl FlakyInserts {
    fn outcome_write(&self) -> Result<(), StoreError> {
        let left = self.outcome_failures.load(Ordering::SeqCst);
        if left > 0 {
            self.outcome_failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::unavailable("connection reset by peer"));
        }
        Ok(())
    }
}

#[async_trait]
impl DeferredQueue for FlakyInserts {
    async fn enqueue(&self, message: NewMessage) -> Result<Enqueued, StoreError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(StoreError::unavailable("connection reset by peer"));
        }
        self.inner.enqueue(message).await
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
        self.outcome_write()?;
        self.inner.complete(id, token, vendor, now).await
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
        self.outcome_write()?;
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
    async fn renew(
        &self,
        id: MessageId,
        token: LeaseToken,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.inner.renew(id, token, lease_for, now).await
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
}

#[tokio::test(start_paused = true)]
async fn a_direct_send_is_recorded_once_the_store_answers_again() {
    let queue = Arc::new(FlakyInserts {
        inner: MemoryQueue::new(),
        failures: 3,
        calls: AtomicUsize::new(0),
        gate: None,
        outcome_failures: AtomicUsize::new(0),
    });
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: FakeVendor::new("aliyun"),
            fees: flat(45_000),
        }],
        Arc::new(AllowAll::default()),
        queue.clone(),
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .unwrap();
    let SendOutcome::Sent { id, .. } = gateway.send(request()).await.unwrap() else {
        panic!("sent at once");
    };
    // While the store is down, a look-up still finds the message, from memory.
    assert!(queue.get(id).await.unwrap().is_none());
    let seen = gateway.message(id).await.unwrap().expect("found at once");
    assert_eq!((seen.status, seen.id), (MessageStatus::Sent, id));
    // Paused time: sleeping lets the recorder's back-off elapse at once.
    for _ in 0..100 {
        if queue.get(id).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stored = queue
        .get(id)
        .await
        .unwrap()
        .expect("recorded after the outage");
    assert_eq!(stored.status, MessageStatus::Sent);
    assert_eq!(
        queue.calls.load(Ordering::SeqCst),
        4,
        "three failures, one success"
    );
    assert_eq!(
        gateway.message(id).await.unwrap(),
        Some(stored),
        "the same, from the store"
    );
}

fn gateway_over(queue: Arc<FlakyInserts>) -> Arc<Gateway> {
    Arc::new(
        Gateway::builder(
            vec![VendorEntry {
                vendor: FakeVendor::new("aliyun"),
                fees: flat(45_000),
            }],
            Arc::new(AllowAll::default()),
            queue,
            Arc::new(MemoryLedger::new()),
        )
        .clock(Arc::new(ManualClock::new(start())))
        .config(config())
        .build()
        .unwrap(),
    )
}

/// Sends `n` requests one after the other on a task; counts those answered.
fn send_many(gateway: &Arc<Gateway>, n: usize) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let answered = Arc::new(AtomicUsize::new(0));
    let task = {
        let (gateway, answered) = (gateway.clone(), answered.clone());
        tokio::spawn(async move {
            for _ in 0..n {
                let outcome = gateway.send(request()).await.unwrap();
                assert!(matches!(outcome, SendOutcome::Sent { .. }));
                answered.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    (answered, task)
}

#[tokio::test(start_paused = true)]
async fn records_a_slow_store_cannot_take_hold_senders_back_instead_of_piling_up() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let queue = Arc::new(FlakyInserts {
        inner: MemoryQueue::new(),
        failures: 0,
        calls: AtomicUsize::new(0),
        gate: Some(gate.clone()),
        outcome_failures: AtomicUsize::new(0),
    });
    let gateway = gateway_over(queue.clone());
    let (answered, task) = send_many(&gateway, 5_000);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The store took nothing: one buffer's worth waits, one batch is in the writer's
    // hands, and the sender is held.
    let held_at = answered.load(Ordering::SeqCst);
    assert!(
        (1_000..2_000).contains(&held_at),
        "{held_at} of 5000 answered while the store took nothing"
    );
    gate.add_permits(10_000);
    task.await.unwrap();
    gateway.flush().await.unwrap();
    assert_eq!(queue.stats().await.unwrap().get(MessageStatus::Sent), 5_000);
}

#[tokio::test(start_paused = true)]
async fn senders_are_not_held_while_the_store_is_unreachable() {
    let queue = Arc::new(FlakyInserts {
        inner: MemoryQueue::new(),
        failures: usize::MAX,
        calls: AtomicUsize::new(0),
        gate: None,
        outcome_failures: AtomicUsize::new(0),
    });
    let gateway = gateway_over(queue);
    let (answered, task) = send_many(&gateway, 5_000);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("every send answered while the store is down")
        .unwrap();
    assert_eq!(answered.load(Ordering::SeqCst), 5_000);
}

/// A gateway over `queue` whose only vendor follows `step`.
fn gateway_with(
    queue: Arc<FlakyInserts>,
    step: Step,
    config: sms_failover::FailoverConfig,
) -> Gateway {
    let vendor = FakeVendor::new("aliyun");
    vendor.always(step);
    Gateway::builder(
        vec![VendorEntry {
            vendor,
            fees: flat(45_000),
        }],
        Arc::new(AllowAll::default()),
        queue,
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config)
    .build()
    .unwrap()
}

fn flaky_outcomes(failures: usize) -> Arc<FlakyInserts> {
    Arc::new(FlakyInserts {
        inner: MemoryQueue::new(),
        failures: 0,
        calls: AtomicUsize::new(0),
        gate: None,
        outcome_failures: AtomicUsize::new(failures),
    })
}

#[tokio::test(start_paused = true)]
async fn a_keyed_delivery_is_marked_sent_though_the_first_writes_fail() {
    let queue = flaky_outcomes(2);
    let gateway = gateway_with(queue.clone(), Step::Ok(1), config());
    let keyed = request().with_idempotency_key(IdempotencyKey::new("k-sent").unwrap());
    let SendOutcome::Sent { id, .. } = gateway.send(keyed).await.unwrap() else {
        panic!("sent at once");
    };
    let stored = queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        stored.status,
        MessageStatus::Sent,
        "not left leased to be sent again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_reported_as_failed_is_dead_though_the_first_writes_fail() {
    let queue = flaky_outcomes(2);
    let config = sms_failover::FailoverConfig {
        on_timeout: sms_failover::TimeoutPolicy::Fail,
        ..config()
    };
    let gateway = gateway_with(queue.clone(), Step::Hang, config);
    let keyed = request().with_idempotency_key(IdempotencyKey::new("k-dead").unwrap());
    let e = gateway.send(keyed.clone()).await.unwrap_err();
    assert!(matches!(e, sms_core::SendError::TimedOut), "{e}");
    let stored = queue
        .find_by_idempotency_key(keyed.idempotency_key().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status,
        MessageStatus::Dead,
        "the caller was told it failed: no automatic resend"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_outcome_the_store_refuses_for_a_while_is_written_once_it_is_back() {
    // More failures than the quick retries: the write goes on in the background, the
    // message stays ours, and it ends sent or dead, never leased to be sent again.
    for (step, policy) in [
        (Step::Ok(1), sms_failover::TimeoutPolicy::Requeue),
        (Step::Hang, sms_failover::TimeoutPolicy::Fail),
    ] {
        let queue = flaky_outcomes(12);
        let config = sms_failover::FailoverConfig {
            on_timeout: policy,
            ..config()
        };
        let gateway = gateway_with(queue.clone(), step.clone(), config);
        let keyed = request().with_idempotency_key(IdempotencyKey::new("k-later").unwrap());
        let _ = gateway.send(keyed.clone()).await;
        let key = keyed.idempotency_key().unwrap();
        let status = || async {
            queue
                .find_by_idempotency_key(key)
                .await
                .unwrap()
                .unwrap()
                .status
        };
        assert_eq!(
            status().await,
            MessageStatus::Leased,
            "{step:?}: the store is still down"
        );
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        let want = match step {
            Step::Ok(_) => MessageStatus::Sent,
            _ => MessageStatus::Dead,
        };
        assert_eq!(status().await, want, "{step:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_drained_delivery_the_store_refuses_for_a_while_is_marked_sent_once_it_is_back() {
    // The drain's "sent" write fails past its quick retries: the message must not stay
    // leased, to be sent again when its lease lapses.
    let queue = flaky_outcomes(12);
    let gateway = gateway_with(queue.clone(), Step::Ok(1), config());
    let id = MessageId::new();
    let message = NewMessage::queued(
        id,
        request(),
        sms_core::QueueReason::RateLimited,
        10,
        start(),
    );
    queue.inner.enqueue(message).await.unwrap();
    let report = gateway.drain_once().await.unwrap();
    assert_eq!((report.claimed, report.sent), (1, 0), "{report:?}");
    assert_eq!(
        queue.get(id).await.unwrap().unwrap().status,
        MessageStatus::Leased
    );
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    assert_eq!(
        queue.get(id).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
}
