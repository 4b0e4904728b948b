//! `/v1/blocklist/{number}`: numbers that asked never to get messages, or that an
//! operator blocked. Requests naming one are refused; numbers are masked in every
//! answer and log.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sms_core::{BlockReason, PhoneNumber};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};

/// The body of `POST /v1/blocklist/{number}` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockBody {
    /// `opted_out` (the number's owner asked) or `operator` (the default).
    #[schema(value_type = Option<String>)]
    reason: Option<BlockReason>,
}

/// A blocked number, masked.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BlockedView {
    /// The number, masked.
    number: String,
    /// `opted_out` or `operator`.
    #[schema(value_type = String)]
    reason: BlockReason,
    /// Since when it is blocked.
    since: DateTime<Utc>,
}

fn parse_number(raw: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(raw).map_err(|e| ApiError::invalid("number", e.to_string()))
}

/// Block a number
#[utoipa::path(
    post,
    path = "/v1/blocklist/{number}",
    params(("number" = String, Path, description = "The number, in E.164 (+8613800138000)")),
    request_body(content = Option<BlockBody>, description = "Why; default operator"),
    responses(
        (status = 201, description = "Blocked now", body = BlockedView),
        (status = 200, description = "Blocked already; the entry stays as it was", body = BlockedView),
        (status = 400, description = "Not a phone number, or a bad reason", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "A read-only token asked for a change", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(super) async fn block_number(
    State(state): State<Arc<AppState>>,
    Path(number): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<BlockedView>), ApiError> {
    let number = parse_number(&number)?;
    let asked: BlockBody = if body.iter().all(u8::is_ascii_whitespace) {
        BlockBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("reason", e.to_string()))?
    };
    let reason = asked.reason.unwrap_or(BlockReason::Operator);
    let added = state.blocklist.block(&number, reason, Utc::now()).await?;
    let entry = state
        .blocklist
        .entry(&number)
        .await?
        .ok_or_else(|| ApiError::StorageUnavailable("the entry just written is gone".into()))?;
    if added {
        tracing::info!(number = %number.masked(), %reason, "number blocked");
    }
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(BlockedView {
            number: entry.number.masked(),
            reason: entry.reason,
            since: entry.since,
        }),
    ))
}

/// Whether a number is blocked
#[utoipa::path(
    get,
    path = "/v1/blocklist/{number}",
    params(("number" = String, Path, description = "The number, in E.164")),
    responses(
        (status = 200, description = "Blocked", body = BlockedView),
        (status = 400, description = "Not a phone number", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "Not blocked (`not_blocked`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(super) async fn get_blocked(
    State(state): State<Arc<AppState>>,
    Path(number): Path<String>,
) -> Result<Json<BlockedView>, ApiError> {
    let number = parse_number(&number)?;
    match state.blocklist.entry(&number).await? {
        Some(entry) => Ok(Json(BlockedView {
            number: entry.number.masked(),
            reason: entry.reason,
            since: entry.since,
        })),
        None => Err(ApiError::NotBlocked(format!(
            "{} is not on the blocklist",
            number.masked()
        ))),
    }
}

/// Unblock a number
#[utoipa::path(
    delete,
    path = "/v1/blocklist/{number}",
    params(("number" = String, Path, description = "The number, in E.164")),
    responses(
        (status = 204, description = "Unblocked: messages to it are accepted again"),
        (status = 400, description = "Not a phone number", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "A read-only token asked for a change", body = ErrorBody),
        (status = 404, description = "Not blocked (`not_blocked`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(super) async fn unblock_number(
    State(state): State<Arc<AppState>>,
    Path(number): Path<String>,
) -> Result<StatusCode, ApiError> {
    let number = parse_number(&number)?;
    if state.blocklist.unblock(&number).await? {
        tracing::info!(number = %number.masked(), "number unblocked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotBlocked(format!(
            "{} is not on the blocklist",
            number.masked()
        )))
    }
}
