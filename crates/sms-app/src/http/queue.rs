//! `/v1/queue`: counts of stored messages, and re-queueing a dead or expired one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sms_core::{MessageStatus, QueueStats};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::messages::{MessageView, parse_id};
use crate::openapi::QueueCounts;
use crate::wire::{self, RetryRefused};

/// Messages by status, and the oldest queued one's age
#[utoipa::path(
    get,
    path = "/v1/queue",
    responses(
        (status = 200, description = "Counts", body = QueueCounts),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(super) async fn get_queue(
    State(state): State<Arc<AppState>>,
) -> Result<Json<QueueView>, ApiError> {
    let counts = state.queue.stats().await?;
    let oldest = state.queue.list(MessageStatus::Queued, 1).await?;
    Ok(Json(QueueView {
        counts,
        oldest_queued_at: oldest.first().map(|m| m.created_at),
    }))
}

/// Messages per status, and how long the oldest queued one has waited.
#[derive(Debug, Serialize)]
pub(super) struct QueueView {
    #[serde(flatten)]
    counts: QueueStats,
    /// When the oldest message still queued was accepted.
    oldest_queued_at: Option<DateTime<Utc>>,
}

/// Re-queue a dead or expired message
#[utoipa::path(
    post,
    path = "/v1/queue/{id}/retry",
    params(("id" = String, Path, format = Uuid, description = "The message's id")),
    responses(
        (status = 202, description = "Queued again", body = MessageView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "Not dead or expired, or past its deliver-by time", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(super) async fn retry_message(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let id = parse_id(&id)?;
    let m = match wire::retry_message(state.queue.as_ref(), id, chrono::Utc::now()).await {
        Ok(m) => m,
        Err(RetryRefused::Store(e)) => return Err(e.into()),
        Err(refused @ RetryRefused::PastDeadline { .. }) => {
            return Err(ApiError::WrongStatus(refused.to_string()));
        }
    };
    state.gateway.trigger_drain();
    Ok((StatusCode::ACCEPTED, Json(m.into())))
}
