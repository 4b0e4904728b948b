//! Writes that follow a send without holding it up: which recipients each vendor
//! accepted (for delivery receipts) and the clients' status events (for callbacks).
//!
//! Sends hand their records to one writer task per kind through a bounded channel, and
//! the writer stores what has gathered in one call. When the channel is full a send
//! waits for room: memory stays bounded and intake slows to what the store can write. A
//! batch the store refuses after a few tries is dropped with a warning.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sms_core::sync::lock;
use sms_core::{
    CallbackEvent, CallbackOutbox, DeliveryLog, DeliveryReport, ReportApplied, SentDelivery,
    StoreError,
};
use tokio::sync::{mpsc, oneshot};

use crate::backoff::retry_while_unavailable;

/// Records waiting for the writer at most, before a send waits for room.
const CAPACITY: usize = 8192;
/// Records written in one call at most.
const BATCH: usize = 512;
/// Tries of one batch while the store is unreachable: 100 ms doubling to 5 s.
const TRIES: u32 = 8;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where a writer stores its records.
#[async_trait]
pub(crate) trait BatchSink: Send + Sync + 'static {
    /// One record.
    type Record: Send + Sync + 'static;
    /// What the writer does, for logs ("recording …").
    const DOING: &'static str;
    /// What a dropped batch means, for the warning.
    const IF_LOST: &'static str;
    /// Stores `batch` in one call.
    async fn write(&self, batch: &[Self::Record]) -> Result<(), StoreError>;
}

/// Receipts kept before their sends, settled when the sends were recorded, waiting
/// for the gateway to take them into account.
pub(crate) type LateReceipts = Arc<Mutex<Vec<(DeliveryReport, ReportApplied)>>>;

/// Most late receipts kept for the gateway; beyond, they settle their sends but are
/// not taken into account (no event, no re-send), with a warning.
const LATE_MAX: usize = 65_536;

/// Sends as vendors accepted them, into the delivery log; the kept receipts a record
/// settles go to `late`.
pub(crate) struct Deliveries {
    pub(crate) log: Arc<dyn DeliveryLog>,
    pub(crate) late: LateReceipts,
}

#[async_trait]
impl BatchSink for Deliveries {
    type Record = SentDelivery;
    const DOING: &'static str = "recording which recipients vendors accepted";
    const IF_LOST: &'static str = "their receipts will be kept as unmatched";
    async fn write(&self, batch: &[SentDelivery]) -> Result<(), StoreError> {
        let settled = self.log.record_sent(batch).await?;
        if !settled.is_empty() {
            let mut late = lock(&self.late);
            let room = LATE_MAX.saturating_sub(late.len());
            if settled.len() > room {
                tracing::warn!(
                    dropped = settled.len() - room,
                    "receipts that came before their sends are settled but not acted on: too many wait"
                );
            }
            late.extend(settled.into_iter().take(room));
        }
        Ok(())
    }
}

/// Status events, into the callback outbox.
pub(crate) struct Outbox(pub(crate) Arc<dyn CallbackOutbox>);

#[async_trait]
impl BatchSink for Outbox {
    type Record = CallbackEvent;
    const DOING: &'static str = "storing status events for callbacks";
    const IF_LOST: &'static str = "their clients will not hear of these changes";
    async fn write(&self, batch: &[CallbackEvent]) -> Result<(), StoreError> {
        self.0.enqueue(batch).await
    }
}

enum Item<R> {
    Record(R),
    /// Answered once every record sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// The writer of one kind of record; started with the first record.
pub(crate) struct BatchWriter<S: BatchSink> {
    sink: Arc<S>,
    writer: OnceLock<mpsc::Sender<Item<S::Record>>>,
}

impl<S: BatchSink> BatchWriter<S> {
    pub(crate) fn new(sink: S) -> Self {
        Self {
            sink: Arc::new(sink),
            writer: OnceLock::new(),
        }
    }

    /// The channel to the writer, starting the writer on first use (inside the runtime
    /// the gateway runs on).
    fn writer(&self) -> &mpsc::Sender<Item<S::Record>> {
        self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(CAPACITY);
            tokio::spawn(write(Arc::clone(&self.sink), rx));
            tx
        })
    }

    /// Hands `records` to the writer, waiting for room when it is behind.
    pub(crate) async fn record(&self, records: Vec<S::Record>) {
        let writer = self.writer();
        for record in records {
            if writer.send(Item::Record(record)).await.is_err() {
                tracing::error!(
                    doing = S::DOING,
                    "a batch writer has stopped; records are lost"
                );
                return;
            }
        }
    }

    /// Waits until every record handed over so far is written (or given up on).
    pub(crate) async fn flush(&self) {
        let Some(writer) = self.writer.get() else {
            return;
        };
        let (done, written) = oneshot::channel();
        if writer.send(Item::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// The writer task: stores what has gathered, a batch at a time, until every sender is
/// gone.
async fn write<S: BatchSink>(sink: Arc<S>, mut rx: mpsc::Receiver<Item<S::Record>>) {
    let mut items = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut items, BATCH).await > 0 {
        let mut flushed = Vec::new();
        for item in items.drain(..) {
            match item {
                Item::Record(record) => batch.push(record),
                Item::Flush(done) => flushed.push(done),
            }
        }
        if !batch.is_empty() {
            let result = retry_while_unavailable(TRIES, RETRY_FIRST, RETRY_MAX, S::DOING, || {
                sink.write(&batch)
            })
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, records = batch.len(), doing = S::DOING, "could not write a batch; {}", S::IF_LOST);
            }
            batch.clear();
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}
