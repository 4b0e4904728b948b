//! What a client does with its own messages in the Postgres queue: list them by status,
//! and cancel one still queued.

use chrono::{DateTime, Utc};
use sms_core::{ClientId, MessageId, MessageStatus, StoreError, StoredMessage};

use super::PgStore;
use super::error::pg_error;
use super::row::message_from_row;
use super::statements::{CANCEL, LIST_FOR_CLIENT};
use super::status::change_status;

/// [`DeferredQueue::cancel`]: one guarded statement, [`CANCEL`]; when it changes
/// nothing, the message's status tells why.
///
/// [`DeferredQueue::cancel`]: sms_core::DeferredQueue::cancel
pub(super) async fn cancel(
    store: &PgStore,
    id: MessageId,
    now: DateTime<Utc>,
) -> Result<StoredMessage, StoreError> {
    change_status(store, CANCEL, id, now, "queued").await
}

/// [`DeferredQueue::list_for_client`]: one range of `messages_client_status_created`.
///
/// [`DeferredQueue::list_for_client`]: sms_core::DeferredQueue::list_for_client
pub(super) async fn list_for_client(
    store: &PgStore,
    client_id: &ClientId,
    status: MessageStatus,
    limit: u32,
) -> Result<Vec<StoredMessage>, StoreError> {
    store
        .timed(async {
            let client = store.client().await?;
            let stmt = client
                .prepare_cached(LIST_FOR_CLIENT)
                .await
                .map_err(pg_error)?;
            let rows = client
                .query(
                    &stmt,
                    &[&client_id.as_str(), &status.as_str(), &i64::from(limit)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(message_from_row).collect()
        })
        .await
}

impl PgStore {
    /// The plan Postgres chooses for [`DeferredQueue::list_for_client`] of `client` in
    /// `status`, one line per `EXPLAIN` row, for operators and tests. A healthy plan
    /// reads one range of `messages_client_status_created` in its order and sorts
    /// nothing.
    ///
    /// [`DeferredQueue::list_for_client`]: sms_core::DeferredQueue::list_for_client
    pub async fn explain_list_for_client(
        &self,
        client: &ClientId,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.explain(
            LIST_FOR_CLIENT,
            &[&client.as_str(), &status.as_str(), &i64::from(limit)],
        )
        .await
    }
}
