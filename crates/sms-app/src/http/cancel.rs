//! `DELETE /v1/messages/{id}`: cancels a message that has not gone out yet (scheduled,
//! or waiting in the queue for a retry). With status callbacks on, its endpoint gets a
//! `cancelled` event.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use sms_core::{MessageStatus, StoreError};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::messages::{MessageView, parse_id};
use crate::config::clients::Client;

/// Cancel a message that has not been sent
#[utoipa::path(
    delete,
    path = "/v1/messages/{id}",
    params(("id" = String, Path, format = Uuid, description = "The message's id")),
    responses(
        (status = 200, description = "Cancelled: it will never be sent", body = MessageView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "A read-only token asked for a change", body = ErrorBody),
        (status = 404, description = "No such message (or another client's)", body = ErrorBody),
        (status = 409, description = "Being sent now, or already sent, dead, expired or cancelled (`wrong_status`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(super) async fn cancel_message(
    State(state): State<Arc<AppState>>,
    client: Option<Extension<Arc<Client>>>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = parse_id(&id)?;
    // A named client cancels only its own messages; another's is as if absent.
    if let Some(Extension(client)) = &client
        && client.name.is_some()
    {
        let message = state.gateway.message(id).await?;
        if message.is_none_or(|m| !client.may_see(m.request.client())) {
            return Err(ApiError::MessageNotFound(id));
        }
    }
    match state.gateway.cancel(id).await {
        Ok(m) => {
            tracing::info!(%id, "message cancelled");
            Ok(Json(m.into()))
        }
        Err(StoreError::WrongStatus { status, .. }) => Err(ApiError::WrongStatus(match status {
            MessageStatus::Leased => {
                format!("message {id} is being sent now and can no longer be cancelled")
            }
            status => {
                format!("message {id} is {status}; only a message not yet sent can be cancelled")
            }
        })),
        Err(e) => Err(e.into()),
    }
}
