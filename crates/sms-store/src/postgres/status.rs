//! The status of a stored message, read when a guarded update changed nothing, to
//! tell the caller why: the message is gone, or it is in another status.

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use sms_core::{MessageId, MessageStatus, StoreError, StoredMessage};

use super::PgStore;
use super::error::pg_error;
use super::row::message_from_row;
use super::statements::STATUS_OF;
use crate::codec;

/// The status of message `id`, or `None` when it is not stored.
pub(super) async fn current_status(
    client: &Object,
    id: MessageId,
) -> Result<Option<MessageStatus>, StoreError> {
    let stmt = client.prepare_cached(STATUS_OF).await.map_err(pg_error)?;
    let row = client
        .query_opt(&stmt, &[id.as_uuid()])
        .await
        .map_err(pg_error)?;
    row.map(|r| codec::status(r.try_get::<_, &str>(0).map_err(pg_error)?))
        .transpose()
}

/// Runs `sql`, a status change guarded by the status it needs (`$1` the id, `$2` now,
/// returning the row); when it changes nothing, the message's status tells why:
/// missing, or not `expected`.
pub(super) async fn change_status(
    store: &PgStore,
    sql: &str,
    id: MessageId,
    now: DateTime<Utc>,
    expected: &'static str,
) -> Result<StoredMessage, StoreError> {
    store
        .timed(async {
            let client = store.client().await?;
            let stmt = client.prepare_cached(sql).await.map_err(pg_error)?;
            if let Some(row) = client
                .query_opt(&stmt, &[id.as_uuid(), &now])
                .await
                .map_err(pg_error)?
            {
                return message_from_row(&row);
            }
            match current_status(&client, id).await? {
                None => Err(StoreError::NotFound(id)),
                Some(status) => Err(StoreError::WrongStatus {
                    id,
                    status,
                    expected,
                }),
            }
        })
        .await
}
