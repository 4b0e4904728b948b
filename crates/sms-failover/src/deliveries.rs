//! Records of which recipients each vendor accepted a message for, under the vendor's
//! id, written to the [`DeliveryLog`] behind the send so that delivery receipts find
//! their message.
//!
//! Sends hand their records to one writer task through a bounded channel, and the
//! writer records what has gathered in one call. When the channel is full a send waits
//! for room: memory stays bounded and intake slows to what the store can record. A
//! batch the store refuses after a few tries is dropped with a warning: the messages
//! went out, only their receipts will find nothing to settle (they are kept as
//! unmatched).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sms_core::{DeliveryLog, SentDelivery};
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

enum Item {
    Record(SentDelivery),
    /// Answered once every record sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// The writer of delivery records; started with the first record.
pub(crate) struct DeliveryRecorder {
    log: Arc<dyn DeliveryLog>,
    writer: OnceLock<mpsc::Sender<Item>>,
}

impl DeliveryRecorder {
    pub(crate) fn new(log: Arc<dyn DeliveryLog>) -> Self {
        Self {
            log,
            writer: OnceLock::new(),
        }
    }

    /// The channel to the writer, starting the writer on first use (inside the runtime
    /// the gateway runs on).
    fn writer(&self) -> &mpsc::Sender<Item> {
        self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(CAPACITY);
            tokio::spawn(write(Arc::clone(&self.log), rx));
            tx
        })
    }

    /// Hands `records` to the writer, waiting for room when it is behind.
    pub(crate) async fn record(&self, records: Vec<SentDelivery>) {
        let writer = self.writer();
        for record in records {
            if writer.send(Item::Record(record)).await.is_err() {
                tracing::error!("the delivery record writer has stopped; records are lost");
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

/// The writer task: records what has gathered, a batch at a time, until every sender
/// is gone.
async fn write(log: Arc<dyn DeliveryLog>, mut rx: mpsc::Receiver<Item>) {
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
            let result = retry_while_unavailable(
                TRIES,
                RETRY_FIRST,
                RETRY_MAX,
                "recording which recipients vendors accepted",
                || log.record_sent(&batch),
            )
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, records = batch.len(), "could not record deliveries; their receipts will be kept as unmatched");
            }
            batch.clear();
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}
