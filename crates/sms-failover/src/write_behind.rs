//! Writes that a send does not wait for, gathered so that many sends share one commit.
//!
//! Two kinds of write leave the send path:
//! - **billed usage**: each delivery adds to its vendor's count in [`Health`] at once (so
//!   the next fee comparison sees it); the counts go to the shared [`UsageLedger`] at
//!   most [`USAGE_WRITE_DELAY`] later, one increment per vendor and period however many
//!   messages were billed. A failed write keeps the counts for the next one.
//! - **records of messages sent without a key**, for status look-ups: they go to the
//!   queue in one [`DeferredQueue::enqueue_many`] call per [`RECORD_WRITE_DELAY`] (in
//!   batches of [`RECORD_BATCH`]), however many sends added one meanwhile.
//!
//! A record stays in the buffer until its write has landed, so a look-up by id finds
//! a message in the buffer or in the store, never in neither ([`WriteBehind::pending`]).
//!
//! Usage, and records, each have at most one write in flight and at most one task
//! waiting to start the next. A write starts when the first item arrives after
//! the previous one began, so an idle gateway runs no task at all.
//! [`WriteBehind::flush`] writes everything pending now (shutdown, tests); a process
//! that dies loses at most the counts and records of its last write delay, and never a
//! message (those are stored before anybody is told "queued").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::sync::lock;
use sms_core::{
    DeferredQueue, InitialState, MessageId, MessageStatus, NewMessage, QueueReason, SmsRequest,
    StoreError, StoredMessage, UsageLedger, VendorId,
};

use crate::backoff::retry_while_unavailable;
use crate::health::Health;

/// Longest a billed count waits before it is written to the ledger.
pub(crate) const USAGE_WRITE_DELAY: Duration = Duration::from_millis(50);
/// Longest a record of a sent message waits before it is written.
pub(crate) const RECORD_WRITE_DELAY: Duration = Duration::from_millis(10);
/// Records written in one call at most.
const RECORD_BATCH: usize = 500;
/// Records kept while the store is unreachable; more are dropped (with a warning): the
/// messages are delivered, only their status look-up is lost.
const RECORD_BACKLOG_MAX: usize = 100_000;
/// Records in the buffer beyond which the sender that adds one waits for the next write
/// (while the store takes writes): memory stays bounded and intake slows to what the
/// store can record, instead of piling up under load. The batch being written stays in
/// the buffer, and two batches and a little more wait beside it: while one batch is
/// being written, the next fills up without holding anyone.
const RECORD_SOFT_MAX: usize = RECORD_BATCH + 1024;

/// Tries to write one batch of records while the store is unreachable: 250 ms,
/// doubling to 30 s, about two and a half minutes in all.
const RECORD_ATTEMPTS: u32 = 12;
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(250);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(30);

/// Clears a "write scheduled" flag when dropped: once the write has its writer lock
/// (from then on new items schedule the next write), or when the task is dropped with
/// its runtime before that, so a later item schedules a new write.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A message delivered at once, without an idempotency key, to be stored for look-ups.
#[derive(Clone)]
pub(crate) struct SentRecord {
    pub id: MessageId,
    pub request: SmsRequest,
    /// The index of the vendor that took it.
    pub vendor: usize,
    pub at: DateTime<Utc>,
    pub max_attempts: u32,
}

impl SentRecord {
    /// The message as the store will hold it once written.
    fn to_stored(&self, ids: &[VendorId]) -> StoredMessage {
        StoredMessage {
            id: self.id,
            request: self.request.clone(),
            status: MessageStatus::Sent,
            reason: QueueReason::Accepted,
            attempts: 1,
            max_attempts: self.max_attempts,
            next_attempt_at: self.at,
            lease: None,
            last_vendor: Some(ids[self.vendor].clone()),
            last_error: None,
            may_duplicate: false,
            pinned_vendor: None,
            created_at: self.at,
            updated_at: self.at,
        }
    }

    fn to_message(&self, ids: &[VendorId]) -> NewMessage {
        let vendor = ids[self.vendor].clone();
        NewMessage {
            initial: InitialState::Sent {
                vendor: vendor.clone(),
            },
            attempts: 1,
            last_vendor: Some(vendor),
            ..NewMessage::queued(
                self.id,
                self.request.clone(),
                QueueReason::Accepted,
                self.max_attempts,
                self.at,
            )
        }
    }
}

/// The records waiting to be written, and the state of their write task.
struct RecordBuffer {
    buffer: Mutex<Vec<SentRecord>>,
    scheduled: AtomicBool,
    /// One records write at a time.
    writer: tokio::sync::Mutex<()>,
    /// Wakes the write task waiting out its delay: the buffer is full.
    wanted: tokio::sync::Notify,
}

/// The write-behind state a gateway shares with its write tasks.
pub(crate) struct WriteBehind {
    /// The gateway's health state, where billed usage waits for its ledger write.
    health: Arc<Mutex<Health>>,
    ids: Vec<VendorId>,
    ledger: Arc<dyn UsageLedger>,
    queue: Arc<dyn DeferredQueue>,
    records: RecordBuffer,
    usage_scheduled: AtomicBool,
    /// One ledger write at a time, so totals come back in order.
    usage_writer: tokio::sync::Mutex<()>,
    records_dropped: AtomicU64,
    /// The last records write failed; senders do not wait for room meanwhile.
    records_failing: AtomicBool,
    /// Signalled after every records write (and when one fails).
    records_written: tokio::sync::Notify,
}

impl WriteBehind {
    pub fn new(
        health: Arc<Mutex<Health>>,
        ids: Vec<VendorId>,
        ledger: Arc<dyn UsageLedger>,
        queue: Arc<dyn DeferredQueue>,
    ) -> Self {
        Self {
            health,
            ids,
            ledger,
            queue,
            records: RecordBuffer {
                buffer: Mutex::new(Vec::new()),
                scheduled: AtomicBool::new(false),
                writer: tokio::sync::Mutex::new(()),
                wanted: tokio::sync::Notify::new(),
            },
            usage_scheduled: AtomicBool::new(false),
            usage_writer: tokio::sync::Mutex::new(()),
            records_dropped: AtomicU64::new(0),
            records_failing: AtomicBool::new(false),
            records_written: tokio::sync::Notify::new(),
        }
    }

    /// Makes sure a ledger write follows usage just added to [`Health`].
    pub fn usage_added(self: &Arc<Self>) {
        if set_if_clear(&self.usage_scheduled) {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let scheduled = ClearOnDrop(&this.usage_scheduled);
                tokio::time::sleep(USAGE_WRITE_DELAY).await;
                let _one_writer = this.usage_writer.lock().await;
                // From here on, usage added schedules the next write.
                drop(scheduled);
                // A failed write was logged; its counts wait for the next one.
                let _ = this.write_usage_now().await;
            });
        }
    }

    /// Queues a record of a delivered message for the next records write. Returns
    /// whether the buffer is over its soft limit: the sender should then
    /// [`WriteBehind::wait_for_room`] (the record is queued either way).
    pub fn record(self: &Arc<Self>, message: SentRecord) -> bool {
        let full = {
            let mut records = lock(&self.records.buffer);
            if records.len() >= RECORD_BACKLOG_MAX {
                drop(records);
                let dropped = self.records_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(id = %message.id, dropped, "the store is unreachable and too many delivered messages wait to be recorded; this one will not be found by its id");
                }
                return false;
            }
            records.push(message);
            records.len() > RECORD_SOFT_MAX
        };
        self.schedule_records_write();
        full
    }

    /// Starts a records write task unless one is scheduled.
    fn schedule_records_write(self: &Arc<Self>) {
        if set_if_clear(&self.records.scheduled) {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let records = &this.records;
                let scheduled = ClearOnDrop(&records.scheduled);
                tokio::select! {
                    _ = tokio::time::sleep(RECORD_WRITE_DELAY) => {}
                    _ = records.wanted.notified() => {}
                }
                let _one_writer = records.writer.lock().await;
                // From here on, records added schedule the next write.
                drop(scheduled);
                this.write_records_now().await;
            });
        }
    }

    /// Waits while the records buffer is over its soft limit and the store takes writes.
    pub async fn wait_for_room(self: &Arc<Self>) {
        loop {
            // The write task may have gone with the runtime that ran it (a sender on
            // another runtime): make sure one is coming, and that it does not wait out
            // its delay, before waiting for it.
            self.schedule_records_write();
            self.records.wanted.notify_one();
            let written = self.records_written.notified();
            let mut written = std::pin::pin!(written);
            written.as_mut().enable();
            let over = lock(&self.records.buffer).len() > RECORD_SOFT_MAX;
            if !over || self.records_failing.load(Ordering::Acquire) {
                return;
            }
            // Bounded, so a write task lost with its runtime is noticed and replaced.
            let _ = tokio::time::timeout(RECORD_WRITE_DELAY * 5, written).await;
        }
    }

    /// Writes every count and record pending now, and waits for writes in flight.
    /// Returns the first error; what failed stays pending (counts) or is retried by
    /// this call a few times (records).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let usage = {
            let _one_writer = self.usage_writer.lock().await;
            self.write_usage_now().await
        };
        {
            let _one_writer = self.records.writer.lock().await;
            self.write_records_now().await;
        }
        usage
    }

    /// One ledger write of everything pending, by the holder of `usage_writer`.
    /// Returns the first error; the counts that failed wait for the next write.
    async fn write_usage_now(&self) -> Result<(), StoreError> {
        let deltas = lock(&self.health).usage.take_unwritten();
        let mut first_error = None;
        for delta in deltas {
            let vendor = &self.ids[delta.idx];
            let result = self.ledger.add(vendor, &delta.period, delta.messages).await;
            match result {
                Ok(total) => lock(&self.health).usage.written(&delta, total),
                Err(e) => {
                    tracing::warn!(%vendor, messages = delta.messages, error = %e, "could not record billed usage; keeping it for the next write");
                    first_error.get_or_insert(e);
                    lock(&self.health).usage.not_written(delta);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes the pending records in batches, retrying a batch while the store is
    /// unreachable; the caller holds the records' writer lock.
    async fn write_records_now(&self) {
        loop {
            // Copies (each shares its request): the records stay in the buffer, where
            // look-ups find them, until the write has landed.
            let batch: Vec<SentRecord> = {
                let buffer = lock(&self.records.buffer);
                let n = buffer.len().min(RECORD_BATCH);
                buffer[..n].to_vec()
            };
            if batch.is_empty() {
                return;
            }
            self.write_record_batch(&batch).await;
            // The one writer (this caller holds the writer lock) takes from the front
            // and senders only push at the back, so the batch is still the front.
            lock(&self.records.buffer).drain(..batch.len());
        }
    }

    /// A delivered message still waiting for its record to be written, as the store
    /// will hold it.
    pub fn pending(&self, id: MessageId) -> Option<StoredMessage> {
        lock(&self.records.buffer)
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.to_stored(&self.ids))
    }

    /// Writes one batch; each try builds the messages afresh from the records (which
    /// share their requests), so nothing is copied twice.
    async fn write_record_batch(&self, batch: &[SentRecord]) {
        let result = retry_while_unavailable(
            RECORD_ATTEMPTS,
            RECORD_RETRY_FIRST,
            RECORD_RETRY_MAX,
            "recording delivered messages",
            || async move {
                let messages = batch.iter().map(|r| r.to_message(&self.ids)).collect();
                let result = self.queue.enqueue_many(messages).await;
                self.records_failing
                    .store(result.is_err(), Ordering::Release);
                self.records_written.notify_waiters();
                result
            },
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(messages = batch.len(), error = %e, "delivered, but could not record the messages for look-ups");
        }
    }
}

/// Sets `flag`; true when it was clear (the caller starts the work it stands for).
fn set_if_clear(flag: &AtomicBool) -> bool {
    !flag.swap(true, Ordering::AcqRel)
}
