//! The HTTP API (axum): messages, vendors, queue, metrics, health.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sms_core::{
    DeferredQueue, MessageId, MessageStatus, QueueReason, RawSmsRequest, SendError, SmsRequest,
    StoreError, StoredMessage, ValidationError, VendorId,
};
use sms_failover::{Gateway, SendOutcome};
use sms_providers::simulated::{SimulatedVendor, SimulationSettings};
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;

/// Longest deliver-by window a caller may ask for: a week.
const MAX_EXPIRES_IN_S: u64 = 7 * 24 * 3600;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The send path.
    pub gateway: Arc<Gateway>,
    /// The message store.
    pub queue: Arc<dyn DeferredQueue>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Accepted bearer tokens.
    pub tokens: Arc<Vec<String>>,
    /// Simulated vendors by name, for fault control.
    pub simulated: Arc<HashMap<String, Arc<SimulatedVendor>>>,
}

/// The router, with auth on everything but health, metrics and the API description.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    // Handlers get the state behind one `Arc`: a request clones it twice (auth and
    // handler), one reference count instead of one per field.
    let state = Arc::new(state);
    let protected = Router::new()
        .route("/v1/messages", post(post_message))
        .route("/v1/messages/{id}", get(get_message))
        .route("/v1/vendors", get(get_vendors))
        .route("/v1/vendors/{name}/disable", post(disable_vendor))
        .route("/v1/vendors/{name}/enable", post(enable_vendor))
        .route("/v1/vendors/{name}/simulation", put(put_simulation))
        .route("/v1/queue", get(get_queue))
        .route("/v1/queue/{id}/retry", post(retry_message))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .merge(protected)
        .layer(middleware::map_response(
            move |response: Response| async move { too_large_as_json(response, max_body_bytes) },
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// axum's own 413 for an over-long body is plain text; callers get the JSON error shape
/// every other refusal has.
fn too_large_as_json(response: Response, max_body_bytes: usize) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return response;
    }
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than {max_body_bytes} bytes (max_body_bytes)"),
        Some("body"),
    )
}

/// A JSON error: `{"error": {"code", "message", "field"?}}`.
fn error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    field: Option<&str>,
) -> Response {
    let mut body = json!({ "error": { "code": code, "message": message.into() } });
    if let Some(field) = field {
        body["error"]["field"] = json!(field);
    }
    (status, Json(body)).into_response()
}

fn invalid(e: &ValidationError) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        e.to_string(),
        Some(&e.field),
    )
}

fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::NotFound(id) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no message {id}"),
            None,
        ),
        StoreError::WrongStatus { .. } => {
            error(StatusCode::CONFLICT, "wrong_status", e.to_string(), None)
        }
        _ => {
            tracing::warn!(error = %e, "store error");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                e.to_string(),
                None,
            )
        }
    }
}

async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Every configured token is compared, in constant time, so timing tells nothing.
    let ok = presented.is_some_and(|p| {
        state.tokens.iter().fold(false, |found, t| {
            found | bool::from(t.as_bytes().ct_eq(p.as_bytes()))
        })
    });
    if ok {
        next.run(request).await
    } else {
        tracing::warn!(
            path = %request.uri().path(),
            had_token = presented.is_some(),
            "request refused: missing or unknown bearer token"
        );
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown bearer token",
            None,
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }
}

/// The body of `POST /v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    template: String,
    #[serde(default)]
    args: Vec<String>,
    recipients: Vec<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    expires_in_s: Option<u64>,
}

/// Decodes and validates a request body; every error names the field.
pub fn decode_message(
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
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
    SmsRequest::try_from(RawSmsRequest {
        template: parsed.template,
        args: parsed.args,
        recipients: parsed.recipients,
        idempotency_key: parsed.idempotency_key,
        expires_at,
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

fn status_body(m: &StoredMessage) -> Value {
    json!({
        "id": m.id,
        "status": m.status,
        "reason": m.reason,
        "attempts": m.attempts,
        "max_attempts": m.max_attempts,
        "vendor": m.last_vendor,
        "last_error": m.last_error,
        "may_duplicate": m.may_duplicate,
        "next_attempt_at": m.next_attempt_at,
        "expires_at": m.request.expires_at(),
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    })
}

/// The answer to a message sent or queued now, written straight to JSON (no
/// intermediate map on the hot path).
#[derive(Serialize)]
struct Answer {
    id: MessageId,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    vendor: Option<VendorId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<QueueReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    may_duplicate: Option<bool>,
}

async fn post_message(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        if !ct.starts_with("application/json") {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected application/json",
                None,
            );
        }
    }
    let request = match decode_message(&body, chrono::Utc::now()) {
        Ok(r) => r,
        Err(e) => return invalid(&e),
    };
    // Kept only to tell a retry from a different message under the same key.
    let asked = request.idempotency_key().is_some().then(|| request.clone());
    match state.gateway.send(request).await {
        Ok(SendOutcome::Sent { id, vendor, .. }) => (
            StatusCode::OK,
            Json(Answer {
                id,
                status: "sent",
                vendor: Some(vendor),
                reason: None,
                may_duplicate: None,
            }),
        )
            .into_response(),
        Ok(SendOutcome::Queued {
            id,
            reason,
            may_duplicate,
        }) => (
            StatusCode::ACCEPTED,
            Json(Answer {
                id,
                status: "queued",
                vendor: None,
                reason: Some(reason),
                may_duplicate: Some(may_duplicate),
            }),
        )
            .into_response(),
        Ok(SendOutcome::Existing(m)) => {
            if let Some(asked) = &asked
                && !m.request.same_content(asked)
            {
                return error(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    "this idempotency key was used for a different message",
                    Some("idempotency_key"),
                );
            }
            let code = match m.status {
                MessageStatus::Queued | MessageStatus::Leased => StatusCode::ACCEPTED,
                _ => StatusCode::OK,
            };
            (code, Json(status_body(&m))).into_response()
        }
        Err(e) => send_error(e),
    }
}

fn send_error(e: SendError) -> Response {
    match &e {
        SendError::Invalid(v) => invalid(v),
        SendError::RecipientLimited { retry_after, .. } => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "recipient_limited",
                e.to_string(),
                Some("recipients"),
            );
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        SendError::Rejected { .. } => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            e.to_string(),
            None,
        ),
        SendError::Expired => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expired",
            e.to_string(),
            Some("expires_in_s"),
        ),
        SendError::TimedOut => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timed_out",
            e.to_string(),
            None,
        ),
        SendError::StorageUnavailable(_) | SendError::NoVendor(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
            None,
        ),
    }
}

fn parse_id(raw: &str) -> Result<MessageId, ValidationError> {
    raw.parse::<MessageId>()
}

async fn get_message(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return invalid(&e),
    };
    match state.queue.get(id).await {
        Ok(Some(m)) => Json(status_body(&m)).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no message {id}"),
            None,
        ),
        Err(e) => store_error(&e),
    }
}

async fn get_vendors(State(state): State<Arc<AppState>>) -> Response {
    let vendors: Vec<Value> = state
        .gateway
        .vendors()
        .into_iter()
        .map(|v| {
            json!({
                "id": v.id,
                "current": v.is_current,
                "disabled": v.disabled,
                "consecutive_failures": v.consecutive_failures,
                "cooling_down_until": v.cooling_down_until,
                "billed_this_period": v.billed_this_period,
                "price": v.price,
                "spend": v.spend,
                "simulated": state.simulated.contains_key(v.id.as_str()),
            })
        })
        .collect();
    Json(json!({ "current": state.gateway.current_vendor(), "vendors": vendors })).into_response()
}

fn vendor_id(name: &str) -> Result<VendorId, ValidationError> {
    VendorId::new(name)
}

async fn disable_vendor(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    toggle_vendor(&state, &name, false)
}

async fn enable_vendor(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    toggle_vendor(&state, &name, true)
}

fn toggle_vendor(state: &AppState, name: &str, enable: bool) -> Response {
    let id = match vendor_id(name) {
        Ok(id) => id,
        Err(e) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_vendor",
                e.to_string(),
                Some("name"),
            );
        }
    };
    let result = if enable {
        state.gateway.enable(&id)
    } else {
        state.gateway.disable(&id)
    };
    match result {
        Ok(()) => {
            tracing::info!(vendor = %id, enabled = enable, "operator changed vendor");
            Json(
                json!({ "id": id, "disabled": !enable, "current": state.gateway.current_vendor() }),
            )
            .into_response()
        }
        Err(e) => error(
            StatusCode::NOT_FOUND,
            "unknown_vendor",
            e.to_string(),
            Some("name"),
        ),
    }
}

async fn put_simulation(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Some(vendor) = state.simulated.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_vendor",
            format!("no simulated vendor {name:?}"),
            Some("name"),
        );
    };
    let mut de = serde_json::Deserializer::from_slice(&body);
    let settings: SimulationSettings = match serde_path_to_error::deserialize(&mut de) {
        Ok(s) => s,
        Err(e) => {
            let field = e.path().to_string();
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                e.into_inner().to_string(),
                Some(&field),
            );
        }
    };
    if let Err(e) = vendor.set_settings(settings.clone()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            e.to_string(),
            None,
        );
    }
    tracing::info!(vendor = %name, "simulation settings changed");
    Json(json!({ "id": name, "simulation": settings })).into_response()
}

async fn get_queue(State(state): State<Arc<AppState>>) -> Response {
    match state.queue.stats().await {
        Ok(stats) => Json(json!(stats)).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn retry_message(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return invalid(&e),
    };
    match state.queue.retry(id, chrono::Utc::now()).await {
        Ok(m) => {
            state.gateway.trigger_drain();
            (StatusCode::ACCEPTED, Json(status_body(&m))).into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.queue.stats()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            e.to_string(),
            None,
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "storage did not answer in 2 s",
            None,
        ),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state
        .metrics
        .render(&state.gateway, state.queue.as_ref())
        .await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
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
