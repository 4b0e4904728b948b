//! `GET /v1/messages`: the sends to one number, or one client's messages by status.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sms_core::{ClientId, MessageId, MessageStatus, PhoneNumber};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::messages::{MessageView, RecipientView};
use crate::config::clients::Client;

/// `GET /v1/messages`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SentToQuery {
    /// The number, in E.164 (`+8613800138000`).
    recipient: Option<String>,
    /// Instead of a number: the client whose messages to list (a named client may list
    /// only its own).
    client: Option<String>,
    /// With `client`: the status listed (`queued`, `leased`, `sent`, `dead`, `expired`,
    /// `cancelled`); default `queued`.
    status: Option<String>,
    /// The earliest send listed, RFC 3339; default 24 hours ago.
    since: Option<String>,
    /// The most sends listed, 1 to 500; default 50.
    limit: Option<u32>,
}

/// One send to the number asked about.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SentToView {
    /// The message.
    #[schema(value_type = String, format = Uuid)]
    id: MessageId,
    /// The recipient's part of it.
    #[serde(flatten)]
    delivery: RecipientView,
}

/// The sends to one number.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SentToList {
    /// Newest first.
    messages: Vec<SentToView>,
}

/// One client's messages in one status.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ClientMessages {
    /// Oldest first.
    messages: Vec<MessageView>,
}

/// The answer of `GET /v1/messages`: by number, or by client.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum Listing {
    /// The sends to one number.
    SentTo(SentToList),
    /// One client's messages.
    Client(ClientMessages),
}

/// Most sends one look-up lists.
const MAX_LISTED: u32 = 500;

/// The messages sent to one number, or one client's messages
#[utoipa::path(
    get,
    path = "/v1/messages",
    params(SentToQuery),
    responses(
        (status = 200, description = "The sends to the number since the time, newest first, numbers masked; or the client's messages in the status, oldest first", body = Listing),
        (status = 400, description = "Neither number nor client, a malformed number, client, status, time or limit, or another client's messages; `field` names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(super) async fn list_messages(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Arc<Client>>>,
    Query(query): Query<SentToQuery>,
) -> Result<Json<Listing>, ApiError> {
    let now = Utc::now();
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_LISTED).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("expected 1 to {MAX_LISTED}, found {limit}"),
        ));
    }
    if let (None, Some(client)) = (&query.recipient, &query.client) {
        let client = ClientId::new(client).map_err(ApiError::from)?;
        if let Some(Extension(caller)) = &caller
            && !caller.may_see(Some(&client))
            && let Some(own) = &caller.name
        {
            return Err(ApiError::invalid(
                "client",
                format!("client {own} may list only its own messages, not {client}'s"),
            ));
        }
        let status: MessageStatus = query
            .status
            .as_deref()
            .unwrap_or("queued")
            .parse()
            .map_err(ApiError::from)?;
        let messages = state.queue.list_for_client(&client, status, limit).await?;
        return Ok(Json(Listing::Client(ClientMessages {
            messages: messages.into_iter().map(MessageView::from).collect(),
        })));
    }
    if let Some(Extension(caller)) = &caller
        && let Some(own) = &caller.name
    {
        // The sends to a number cross clients: a named client lists its own messages.
        return Err(ApiError::invalid(
            "recipient",
            format!("client {own} lists its own messages with ?client={own}&status=…"),
        ));
    }
    let raw = query.recipient.ok_or_else(|| {
        ApiError::invalid(
            "recipient",
            "expected the number to look up, in E.164 (+8613800138000), or a client",
        )
    })?;
    let recipient =
        PhoneNumber::parse(&raw).map_err(|e| ApiError::invalid("recipient", e.to_string()))?;
    let since = match query.since {
        None => now - chrono::Duration::hours(24),
        Some(since) => DateTime::parse_from_rfc3339(&since)
            .map_err(|e| {
                ApiError::invalid(
                    "since",
                    format!("expected an RFC 3339 time such as 2026-12-05T08:00:00Z: {e}"),
                )
            })?
            .with_timezone(&Utc),
    };
    let sends = state.deliveries.sent_to(&recipient, since, limit).await?;
    Ok(Json(Listing::SentTo(SentToList {
        messages: sends
            .into_iter()
            .map(|(id, d)| SentToView {
                id,
                delivery: RecipientView::new(d, now, state.unknown_after),
            })
            .collect(),
    })))
}
