//! The status of a stored message, read when a guarded update changed nothing, to
//! tell the caller why: the message is gone, or it is in another status.

use deadpool_postgres::Object;
use sms_core::{MessageId, MessageStatus, StoreError};

use super::error::pg_error;
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
