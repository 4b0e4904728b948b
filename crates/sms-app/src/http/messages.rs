//! `POST /v1/messages` and `GET /v1/messages/{id}`: decoding a request, sending it, and
//! the two answers a caller can get (accepted now, or a stored message's status).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sms_core::{
    ClientId, DeliveryState, MAX_SCHEDULE_AHEAD, MessageId, MessageStatus, Priority, QueueReason,
    RawSmsRequest, RecipientDelivery, SendError, SmsRequest, StoredMessage, Templates,
    ValidationError, VendorId,
};
use sms_failover::SendOutcome;
use tracing::field::{Empty, display};
use tracing::{Instrument, Span};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::schemas::{
    MAX_EXPIRES_IN_S, args_schema, callback_url_schema, expires_in_s_schema,
    idempotency_key_schema, priority_schema, recipients_schema, send_at_schema, template_schema,
};
use super::{AppState, admission};
use crate::config::clients::Client;
use crate::openapi::{message_status_schema, queue_reason_schema};

/// The body of `POST /v1/messages`.
// The fields are described by their schema functions below, which take their bounds
// from the constants validation uses, so the document states the limits enforced.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewMessage)]
pub(super) struct PostMessage {
    #[schema(schema_with = template_schema)]
    template: String,
    #[serde(default)]
    #[schema(schema_with = args_schema)]
    args: Vec<String>,
    #[schema(schema_with = recipients_schema)]
    recipients: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = idempotency_key_schema)]
    idempotency_key: Option<String>,
    #[serde(default)]
    #[schema(schema_with = expires_in_s_schema)]
    expires_in_s: Option<u64>,
    #[serde(default)]
    #[schema(schema_with = callback_url_schema)]
    callback_url: Option<String>,
    #[serde(default)]
    #[schema(schema_with = priority_schema)]
    priority: Option<Priority>,
    #[serde(default)]
    #[schema(schema_with = send_at_schema)]
    send_at: Option<String>,
}

/// How far in the past a `send_at` may be and still mean "now": clocks differ a little.
const SEND_AT_SLACK_S: i64 = 60;

/// `send_at`: an RFC 3339 time no further ahead than 35 days, and before the deliver-by
/// time; one up to a minute past means now.
fn parse_send_at(
    raw: &str,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    past: Past,
) -> Result<DateTime<Utc>, ValidationError> {
    const FIELD: &str = "send_at";
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|e| {
            ValidationError::new(
                FIELD,
                format!("expected an RFC 3339 time such as 2026-12-24T08:00:00+08:00: {e}"),
            )
        })?
        .with_timezone(&Utc);
    if at > now + MAX_SCHEDULE_AHEAD {
        return Err(ValidationError::new(
            FIELD,
            format!(
                "expected at most {} days ahead, found {at}",
                MAX_SCHEDULE_AHEAD.num_days()
            ),
        ));
    }
    if past == Past::Refused && at < now - chrono::Duration::seconds(SEND_AT_SLACK_S) {
        return Err(ValidationError::new(
            FIELD,
            format!("expected a time ahead, found {at}, which has passed"),
        ));
    }
    if let Some(expires_at) = expires_at
        && at >= expires_at
    {
        return Err(ValidationError::new(
            FIELD,
            format!("expected a time before the deliver-by time {expires_at}, found {at}"),
        ));
    }
    Ok(at)
}

/// Decodes and validates a request body; every error names the field.
#[cfg(test)]
fn decode_message(body: &[u8], now: DateTime<Utc>) -> Result<SmsRequest, ValidationError> {
    decode_for(body, now, &Templates::default())
}

/// Whether a `send_at` that has passed is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Past {
    /// A new message cannot be scheduled in the past.
    Refused,
    /// The retry of a keyed message accepted while its `send_at` was ahead.
    Allowed,
}

/// Decodes and validates a request body; a request that names no priority takes its
/// template's from `templates`.
pub fn decode_for(
    body: &[u8],
    now: DateTime<Utc>,
    templates: &Templates,
) -> Result<SmsRequest, ValidationError> {
    decode_with(body, now, templates, Past::Refused)
}

fn decode_with(
    body: &[u8],
    now: DateTime<Utc>,
    templates: &Templates,
    past: Past,
) -> Result<SmsRequest, ValidationError> {
    // Tracking the path of every value costs time on each request; only a body that
    // fails is decoded again with it, to name the field.
    let parsed: PostMessage = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(_) => return Err(decode_error(body)),
    };
    let expires_at = match parsed.expires_in_s {
        None => None,
        Some(0) => {
            return Err(ValidationError::new(
                "expires_in_s",
                "expected at least 1 second, found 0",
            ));
        }
        Some(s) if s > MAX_EXPIRES_IN_S => {
            return Err(ValidationError::new(
                "expires_in_s",
                format!("expected at most {MAX_EXPIRES_IN_S}, found {s}"),
            ));
        }
        Some(s) => Some(now + chrono::Duration::seconds(s as i64)),
    };
    let send_at = parsed
        .send_at
        .as_deref()
        .map(|raw| parse_send_at(raw, now, expires_at, past))
        .transpose()?;
    let priority = parsed.priority.unwrap_or_else(|| {
        templates
            .get(&parsed.template)
            .map(|t| t.priority)
            .unwrap_or_default()
    });
    SmsRequest::try_from(RawSmsRequest {
        template: parsed.template,
        args: parsed.args,
        recipients: parsed.recipients,
        idempotency_key: parsed.idempotency_key,
        expires_at,
        callback_url: parsed.callback_url,
        resend: None,
        client: None,
        priority,
        send_at,
    })
}

/// Why `body` is not a message, naming the field at fault (`body` for the whole).
fn decode_error(body: &[u8]) -> ValidationError {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, PostMessage>(&mut de) {
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            ValidationError::new(field, e.into_inner().to_string())
        }
        // What is left after the message.
        Ok(_) => match de.end() {
            Err(e) => ValidationError::new("body", e.to_string()),
            Ok(()) => ValidationError::new("body", "not a valid message"),
        },
    }
}

/// A stored message's status, as `GET /v1/messages/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Message)]
pub(super) struct MessageView {
    /// The gateway's id for it.
    #[schema(value_type = String, format = Uuid)]
    id: MessageId,
    /// Where it is in its life.
    #[schema(schema_with = message_status_schema)]
    status: MessageStatus,
    /// Why it was queued.
    #[schema(schema_with = queue_reason_schema)]
    reason: QueueReason,
    /// Attempts made so far.
    attempts: u32,
    /// Attempts allowed before it is dead.
    max_attempts: u32,
    /// The vendor of the last attempt (or the one that delivered it).
    #[schema(value_type = Option<String>)]
    vendor: Option<VendorId>,
    /// The last attempt's error.
    last_error: Option<String>,
    /// An earlier attempt timed out, so the recipient may receive it twice.
    may_duplicate: bool,
    /// Not tried again before this time.
    next_attempt_at: DateTime<Utc>,
    /// The deliver-by time, if the caller gave one.
    expires_at: Option<DateTime<Utc>>,
    /// When it is to be sent, when scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    send_at: Option<DateTime<Utc>>,
    /// Its lane: `high` or `normal`.
    #[schema(value_type = String)]
    priority: Priority,
    /// The client that sent it, when a named one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    client: Option<ClientId>,
    /// When it was stored.
    created_at: DateTime<Utc>,
    /// When it last changed.
    updated_at: DateTime<Utc>,
    /// The undelivered message this one re-sends through another vendor, when it is a
    /// re-send.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid, nullable = false)]
    resend_of: Option<MessageId>,
    /// Each recipient a vendor accepted it for, and what its receipt said (only in
    /// `GET /v1/messages/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    recipients: Option<Vec<RecipientView>>,
}

/// One recipient of a message, as the vendor's receipts tell it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RecipientView {
    /// The number, masked.
    recipient: String,
    /// The vendor that accepted it.
    #[schema(value_type = String)]
    vendor: VendorId,
    /// The vendor's id for the send (Aliyun `BizId`, Tencent `SerialNo`, Cloopen
    /// `smsMessageSid`).
    vendor_message_id: String,
    /// `sent` (accepted, no receipt yet), `delivered`, `undelivered`, or `unknown` (no
    /// receipt within `receipts.unknown_after_s`).
    status: &'static str,
    /// The receipt's status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// The receipt's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// When the vendor accepted it.
    sent_at: DateTime<Utc>,
    /// When the handset got it, as the vendor says (when delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_at: Option<DateTime<Utc>>,
    /// When the gateway received the receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt_at: Option<DateTime<Utc>>,
    /// Segments the vendor billed for it, from the receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<u32>,
}

impl RecipientView {
    /// `delivery` as shown at `now`: still without a receipt `unknown_after` after the
    /// send, it is `unknown`.
    pub(super) fn new(
        delivery: RecipientDelivery,
        now: DateTime<Utc>,
        unknown_after: chrono::Duration,
    ) -> Self {
        let status = match delivery.state {
            DeliveryState::Sent if now - delivery.sent_at >= unknown_after => "unknown",
            state => state.as_str(),
        };
        Self {
            recipient: delivery.recipient.masked(),
            vendor: delivery.vendor,
            vendor_message_id: delivery.vendor_message_id,
            status,
            code: delivery.code,
            description: delivery.description,
            sent_at: delivery.sent_at,
            delivered_at: (delivery.state == DeliveryState::Delivered)
                .then(|| delivery.reported_at.or(delivery.receipt_at))
                .flatten(),
            receipt_at: delivery.receipt_at,
            segments: delivery.segments,
        }
    }
}

impl From<StoredMessage> for MessageView {
    fn from(m: StoredMessage) -> Self {
        Self {
            expires_at: m.request.expires_at(),
            send_at: m.request.send_at(),
            priority: m.request.priority(),
            client: m.request.client().cloned(),
            id: m.id,
            status: m.status,
            reason: m.reason,
            attempts: m.attempts,
            max_attempts: m.max_attempts,
            vendor: m.last_vendor,
            last_error: m.last_error,
            may_duplicate: m.may_duplicate,
            next_attempt_at: m.next_attempt_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
            resend_of: m.request.resend().map(|r| r.of),
            recipients: None,
        }
    }
}

/// What became of a message sent or queued now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Outcome {
    /// A vendor accepted it.
    Sent,
    /// It is stored and will be sent later.
    Queued,
}

/// The answer to a message sent or queued now.
// Written straight to JSON, with no intermediate map on the hot path.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Accepted)]
pub(super) struct Answer {
    /// The gateway's id for it.
    #[schema(value_type = String, format = Uuid)]
    id: MessageId,
    /// Sent or queued.
    status: Outcome,
    /// The vendor that accepted it, when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    vendor: Option<VendorId>,
    /// Why it was queued, when queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = queue_reason_schema)]
    reason: Option<QueueReason>,
    /// When queued: an attempt timed out, so the recipient may receive it twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    may_duplicate: Option<bool>,
}

/// The answer to `POST /v1/messages`: a message accepted now, or, for a repeated
/// idempotency key, the message stored under it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum PostAnswer {
    /// Sent or queued now.
    New(Answer),
    /// Stored earlier under the same idempotency key.
    Existing(MessageView),
}

/// Send a message (or queue it when it cannot go out now)
#[utoipa::path(
    post,
    path = "/v1/messages",
    request_body = PostMessage,
    responses(
        (status = 200, description = "Sent (or sent earlier under the same idempotency key)", body = PostAnswer),
        (status = 202, description = "Queued (or queued earlier under the same idempotency key)", body = PostAnswer),
        (status = 400, description = "Invalid request; `field` names the problem", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 402, description = "A monthly spend cap, the client's or the deployment's, is reached (`spend_cap_reached`)", body = ErrorBody),
        (status = 403, description = "The client may not send this template (`template_not_allowed`), or a read-only token asked for a change", body = ErrorBody),
        (status = 409, description = "Idempotency key reused for a different message", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes", body = ErrorBody),
        (status = 415, description = "Body declared as something other than JSON", body = ErrorBody),
        (status = 422, description = "Rejected by the vendor, already expired, a recipient on the blocklist (`recipient_blocked`), or stored earlier under the same idempotency key and dead, expired or cancelled (`previously_failed`)", body = ErrorBody),
        (status = 429, description = "A recipient is over its per-recipient limit, or the client over its own `per_second` or `per_day` limit (`client_limited`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the request may go through"))),
        (status = 503, description = "Could neither send nor queue", body = ErrorBody),
        (status = 504, description = "Timed out and the policy is to report it", body = ErrorBody),
    )
)]
pub(super) async fn post_message(
    State(state): State<Arc<AppState>>,
    client: Option<Extension<Arc<Client>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<PostAnswer>), ApiError> {
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        && !ct.starts_with("application/json")
    {
        return Err(ApiError::UnsupportedMediaType);
    }
    let now = Utc::now();
    let templates = state.gateway.templates();
    let request = match decode_for(&body, now, templates) {
        Ok(request) => request,
        // A keyed request whose `send_at` has passed since it was first accepted is a
        // retry: the message stored under its key answers it, as for any keyed retry.
        Err(e) if e.field == "send_at" => match decode_with(&body, now, templates, Past::Allowed) {
            Ok(late) if stored_under_key(&state, &late).await? => late,
            _ => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    if let Some(Extension(client)) = &client
        && !client.may_send(request.template().as_str())
    {
        tracing::warn!(
            client = client.label(),
            template = request.template().as_str(),
            "request refused: the client may not send this template"
        );
        return Err(ApiError::TemplateNotAllowed {
            client: client.label().to_owned(),
            template: request.template().as_str().to_owned(),
        });
    }
    if let Some(url) = request.callback_url() {
        let refusal = match &state.callbacks {
            None => Some(
                "this gateway sends no status callbacks (callbacks.secret is not configured)"
                    .to_owned(),
            ),
            Some(callbacks) if !callbacks.allow_private_hosts => {
                crate::callback_guard::refusal(url)
            }
            Some(_) => None,
        };
        if let Some(problem) = refusal {
            return Err(ValidationError::new("callback_url", problem).into());
        }
    }
    let client = client.map(|Extension(c)| c);
    let taken = admission::admit(&state, client.as_deref(), &request).await?;
    let request = match client.as_ref().and_then(|c| c.name.clone()) {
        Some(name) => request.with_client(name),
        None => request,
    };
    // Kept only to tell a retry from a different message under the same key.
    let asked = request.idempotency_key().is_some().then(|| request.clone());
    // The send runs on its own task: a client that hangs up drops this handler, and a
    // send cut off mid-call would leave a keyed message leased, to be sent again
    // unflagged when its lease lapses. Started, it finishes and records its result.
    let gateway = Arc::clone(&state.gateway);
    let intake = tracing::debug_span!(
        "intake",
        template = request.template().as_str(),
        recipients = request.recipients().len(),
        keyed = request.idempotency_key().is_some(),
        message_id = Empty,
        outcome = Empty,
    );
    let sent = tokio::spawn(async move { gateway.send(request).await }.instrument(intake.clone()))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the send task failed: {e}")))?;
    record_intake(&intake, &sent);
    if !matches!(
        sent,
        Ok(SendOutcome::Sent { .. } | SendOutcome::Queued { .. })
    ) {
        // Refused, or answered by an earlier message: this request took nothing.
        taken.give_back(&state).await;
    }
    let (status, answer) = match sent? {
        SendOutcome::Sent { id, vendor, .. } => (
            StatusCode::OK,
            Answer {
                id,
                status: Outcome::Sent,
                vendor: Some(vendor),
                reason: None,
                may_duplicate: None,
            },
        ),
        SendOutcome::Queued {
            id,
            reason,
            may_duplicate,
        } => (
            StatusCode::ACCEPTED,
            Answer {
                id,
                status: Outcome::Queued,
                vendor: None,
                reason: Some(reason),
                may_duplicate: Some(may_duplicate),
            },
        ),
        SendOutcome::Existing(m) => {
            // A key names one message of one client: another client's message, or
            // other content, under it is a conflict.
            if let Some(asked) = &asked
                && (!m.request.same_content(asked) || m.request.client() != asked.client())
            {
                return Err(ApiError::IdempotencyConflict);
            }
            let status = match m.status {
                MessageStatus::Queued | MessageStatus::Leased => StatusCode::ACCEPTED,
                MessageStatus::Sent => StatusCode::OK,
                // A client that reads only status codes must not take these for sent.
                MessageStatus::Dead | MessageStatus::Expired | MessageStatus::Cancelled => {
                    return Err(ApiError::PreviouslyFailed(format!(
                        "message {} stored earlier under this idempotency key is {}{}; \
                         send it again with a new key (or, unless it was cancelled, retry \
                         it with POST /v1/queue/{}/retry)",
                        m.id,
                        m.status,
                        m.last_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default(),
                        m.id
                    )));
                }
            };
            return Ok((status, Json(PostAnswer::Existing(m.into()))));
        }
    };
    Ok((status, Json(PostAnswer::New(answer))))
}

/// Whether a message is stored under `request`'s idempotency key.
async fn stored_under_key(state: &AppState, request: &SmsRequest) -> Result<bool, ApiError> {
    let Some(key) = request.idempotency_key() else {
        return Ok(false);
    };
    Ok(state.queue.find_by_idempotency_key(key).await?.is_some())
}

/// Notes on the intake span which message the request became and how it went.
fn record_intake(span: &Span, sent: &Result<SendOutcome, SendError>) {
    let (id, outcome) = match sent {
        Ok(SendOutcome::Sent { id, .. }) => (Some(*id), "sent"),
        Ok(SendOutcome::Queued { id, .. }) => (Some(*id), "queued"),
        Ok(SendOutcome::Existing(m)) => (Some(m.id), "existing"),
        Err(_) => (None, "refused"),
    };
    if let Some(id) = id {
        span.record("message_id", display(id));
    }
    span.record("outcome", outcome);
}

/// A message id from the path.
pub(super) fn parse_id(raw: &str) -> Result<MessageId, ApiError> {
    Ok(raw.parse::<MessageId>()?)
}

/// A message's status
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    params(("id" = String, Path, format = Uuid, description = "The message's id")),
    responses(
        (status = 200, description = "The message", body = MessageView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(super) async fn get_message(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Arc<Client>>>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = parse_id(&id)?;
    let Some(message) = state.gateway.message(id).await? else {
        return Err(ApiError::MessageNotFound(id));
    };
    // A named client sees only its own messages; another's is as if absent.
    if let Some(Extension(caller)) = &caller
        && !caller.may_see(message.request.client())
    {
        return Err(ApiError::MessageNotFound(id));
    }
    let deliveries = state.deliveries.deliveries(id).await?;
    let now = Utc::now();
    let mut view = MessageView::from(message);
    view.recipients = Some(
        deliveries
            .into_iter()
            .map(|d| RecipientView::new(d, now, state.unknown_after))
            .collect(),
    );
    Ok(Json(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn decoder_names_the_bad_field() {
        let cases: [(&str, &str); 8] = [
            (
                r#"{"template":"t","recipients":["+8613800138000"],"args":[1]}"#,
                "args[0]",
            ),
            (
                r#"{"template":"t","recipients":"+8613800138000"}"#,
                "recipients",
            ),
            (r#"{"recipients":["+8613800138000"]}"#, "body"),
            (
                r#"{"template":"t","recipients":["+8613800138000","bad"]}"#,
                "recipients[1]",
            ),
            (
                r#"{"template":"t","recipients":["+8613800138000"],"expires_in_s":0}"#,
                "expires_in_s",
            ),
            (
                r#"{"template":"t","recipients":["+8613800138000"],"extra":1}"#,
                "extra",
            ),
            (
                r#"{"template":"","recipients":["+8613800138000"]}"#,
                "template",
            ),
            (
                r#"{"template":"t","recipients":["+8613800138000"]} trailing"#,
                "body",
            ),
        ];
        for (body, field) in cases {
            let e = decode_message(body.as_bytes(), now()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
        assert!(decode_message(b"not json", now()).is_err());
    }

    #[test]
    fn decoder_accepts_a_full_request() {
        let body = r#"{"template":"login","args":["123456","a###b;c"],"recipients":["+86 138 0013 8000"],
                       "idempotency_key":"k-1","expires_in_s":300}"#;
        let t = now();
        let r = decode_message(body.as_bytes(), t).unwrap();
        assert_eq!(r.args(), ["123456", "a###b;c"]);
        assert_eq!(r.recipients()[0].as_str(), "+8613800138000");
        assert_eq!(r.expires_at(), Some(t + chrono::Duration::seconds(300)));
    }
}
