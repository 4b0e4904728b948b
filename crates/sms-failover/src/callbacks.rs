//! Status events for the clients' callbacks: each change of a message's status is
//! stored in the callback outbox, behind the send (see [`crate::batch`]), addressed to
//! the request's `callback_url` or the configured default. Messages with neither make
//! no events. Posting them is the dispatcher's work, not the send's, so a slow or dead
//! client endpoint never holds up a send.

use std::sync::Arc;

use sms_core::{CallbackOutbox, CallbackUrl, Clock, StatusEvent};

use crate::batch::{BatchWriter, Outbox};

/// Where status events go, and the writer that stores them.
pub(crate) struct StatusCallbacks {
    writer: BatchWriter<Outbox>,
    default_url: Option<CallbackUrl>,
    clock: Arc<dyn Clock>,
}

impl StatusCallbacks {
    pub(crate) fn new(
        outbox: Arc<dyn CallbackOutbox>,
        default_url: Option<CallbackUrl>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            writer: BatchWriter::new(Outbox(outbox)),
            default_url,
            clock,
        }
    }

    /// Where the events of a message whose own endpoint is `url` (if any) go: there,
    /// or to the default; none when neither is set.
    pub(crate) fn target(&self, url: Option<&CallbackUrl>) -> Option<CallbackUrl> {
        url.or(self.default_url.as_ref()).cloned()
    }

    /// Stores `events` for `url`.
    pub(crate) async fn record(
        &self,
        url: &CallbackUrl,
        events: impl IntoIterator<Item = StatusEvent>,
    ) {
        let now = self.clock.now();
        let events = events
            .into_iter()
            .map(|event| event.to_callback(url, now))
            .collect();
        self.writer.record(events).await;
    }

    /// Waits until every event handed over so far is stored.
    pub(crate) async fn flush(&self) {
        self.writer.flush().await;
    }
}
