//! `ApiError`: every refusal the API gives, and the one JSON shape it has on the wire.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sms_core::{MessageId, SendError, StoreError, ValidationError};
use utoipa::ToSchema;

/// Why a request was refused. Each variant fixes the status, the machine-readable
/// `code` and, where one field is at fault, the `field` of the answer.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed; `field` names the part at fault when one is.
    InvalidRequest {
        /// The field as the caller wrote it (`recipients[1]`, `body`).
        field: Option<String>,
        /// What was wrong, and what was expected.
        message: String,
    },
    /// 401: no bearer token, or one that is not configured.
    Unauthorized,
    /// 403: a read-only operator token asked for a change.
    ReadOnlyToken,
    /// 403: the client's allow-list does not hold the template.
    TemplateNotAllowed {
        /// The client, by name.
        client: String,
        /// The template it asked for.
        template: String,
    },
    /// 402: a monthly spend cap (the client's or the deployment's) is reached.
    SpendCapReached(String),
    /// 404: no message has this id.
    MessageNotFound(MessageId),
    /// 404: the number is not on the blocklist.
    NotBlocked(String),
    /// 404: the vendor named in the path does not exist (or is not simulated).
    UnknownVendor(String),
    /// 404: no receipt endpoint at this address (no such vendor, none configured for
    /// it, or a wrong secret: the same answer, so that the address reveals nothing).
    NoReceiptEndpoint,
    /// 409: the operation does not apply to the message in its current status.
    WrongStatus(String),
    /// 409: the idempotency key was used before for a different message.
    IdempotencyConflict,
    /// 413: the body is over the configured limit.
    PayloadTooLarge {
        /// The limit, in bytes.
        max_body_bytes: usize,
    },
    /// 415: the body is declared as something other than JSON.
    UnsupportedMediaType,
    /// 422: a vendor refused the message for good.
    Rejected(String),
    /// 422: a recipient is on the blocklist.
    RecipientBlocked {
        /// The recipient's field (`recipients[2]`).
        field: String,
        /// Which number (masked) and why it is blocked.
        message: String,
    },
    /// 422: the message's deliver-by time passed before it could go out.
    Expired(String),
    /// 422: a message stored earlier under the same idempotency key is dead or expired:
    /// a retry must not read as a success.
    PreviouslyFailed(String),
    /// 429: a recipient is over its per-recipient limit.
    RecipientLimited {
        /// Which recipient (masked) and which limit.
        message: String,
        /// When the next message to the recipient would be allowed.
        retry_after: Duration,
    },
    /// 429: the vendor's per-number limit refused a recipient; another vendor is not
    /// tried, as that would get around the limit.
    RecipientRefused {
        /// Which vendor, its code and its words.
        message: String,
        /// When the vendor's window lets the next message through.
        retry_after: Duration,
    },
    /// 429: the client is over its own `per_second` or `per_day` limit.
    ClientLimited {
        /// Which client and which limit.
        message: String,
        /// When the limit lets the request through.
        retry_after: Duration,
    },
    /// 503: the message could neither be sent nor stored, or no vendor can take it.
    Unavailable(String),
    /// 503: the store failed while reading or changing a message.
    StorageUnavailable(String),
    /// 503: the store does not answer, so the instance should get no traffic.
    NotReady(String),
    /// 504: the vendor timed out and the policy is to report it.
    TimedOut(String),
}

/// The body of every refusal: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What a refusal says: its kind, its reason and the field at fault.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable kind, e.g. `invalid_request`, `recipient_limited`.
    pub code: &'static str,
    /// What was wrong, and what was expected, for a person.
    pub message: String,
    /// The request field at fault (`recipients[1]`, `body`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The status, `code`, message and field at fault.
    fn parts(&self) -> (StatusCode, &'static str, String, Option<&str>) {
        match self {
            Self::InvalidRequest { field, message } => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                message.clone(),
                field.as_deref(),
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown bearer token".to_owned(),
                None,
            ),
            Self::ReadOnlyToken => (
                StatusCode::FORBIDDEN,
                "read_only_token",
                "this token may only read (GET); changes need an API token".to_owned(),
                None,
            ),
            Self::TemplateNotAllowed { client, template } => (
                StatusCode::FORBIDDEN,
                "template_not_allowed",
                format!(
                    "client {client} may not send template {template:?}: it is not in the \
                     client's templates"
                ),
                Some("template"),
            ),
            Self::SpendCapReached(message) => (
                StatusCode::PAYMENT_REQUIRED,
                "spend_cap_reached",
                message.clone(),
                None,
            ),
            Self::NotBlocked(message) => (
                StatusCode::NOT_FOUND,
                "not_blocked",
                message.clone(),
                Some("number"),
            ),
            Self::RecipientBlocked { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "recipient_blocked",
                message.clone(),
                Some(field.as_str()),
            ),
            Self::ClientLimited { message, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "client_limited",
                message.clone(),
                None,
            ),
            Self::MessageNotFound(id) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no message {id}"),
                None,
            ),
            Self::UnknownVendor(message) => (
                StatusCode::NOT_FOUND,
                "unknown_vendor",
                message.clone(),
                Some("name"),
            ),
            Self::NoReceiptEndpoint => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no receipt endpoint at this address".to_owned(),
                None,
            ),
            Self::WrongStatus(message) => {
                (StatusCode::CONFLICT, "wrong_status", message.clone(), None)
            }
            Self::IdempotencyConflict => (
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this idempotency key was used for a different message".to_owned(),
                Some("idempotency_key"),
            ),
            Self::PayloadTooLarge { max_body_bytes } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {max_body_bytes} bytes (max_body_bytes)"),
                Some("body"),
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected application/json".to_owned(),
                None,
            ),
            Self::Rejected(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                message.clone(),
                None,
            ),
            Self::Expired(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "expired",
                message.clone(),
                Some("expires_in_s"),
            ),
            Self::PreviouslyFailed(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "previously_failed",
                message.clone(),
                Some("idempotency_key"),
            ),
            Self::RecipientLimited { message, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "recipient_limited",
                message.clone(),
                Some("recipients"),
            ),
            Self::RecipientRefused { message, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "recipient_refused_by_vendor",
                message.clone(),
                Some("recipients"),
            ),
            Self::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message.clone(),
                None,
            ),
            Self::StorageUnavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                message.clone(),
                None,
            ),
            Self::NotReady(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                message.clone(),
                None,
            ),
            Self::TimedOut(message) => (
                StatusCode::GATEWAY_TIMEOUT,
                "timed_out",
                message.clone(),
                None,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = self.parts();
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                field: field.map(str::to_owned),
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RecipientLimited { retry_after, .. }
            | Self::RecipientRefused { retry_after, .. }
            | Self::ClientLimited { retry_after, .. } => {
                // Whole seconds, rounded up and at least 1: a client that waits exactly
                // this long must not be refused again.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::InvalidRequest {
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::MessageNotFound(id),
            StoreError::WrongStatus { .. } => Self::WrongStatus(e.to_string()),
            StoreError::Unavailable(_) | StoreError::LeaseLost(_) | StoreError::Backend(_) => {
                tracing::warn!(error = %e, "store error");
                Self::StorageUnavailable(e.to_string())
            }
        }
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Invalid(v) => v.into(),
            SendError::RecipientLimited { retry_after, .. } => Self::RecipientLimited {
                message: e.to_string(),
                retry_after,
            },
            SendError::RecipientRefused { retry_after, .. } => Self::RecipientRefused {
                message: e.to_string(),
                retry_after,
            },
            SendError::Rejected { .. } => Self::Rejected(e.to_string()),
            SendError::Expired => Self::Expired(e.to_string()),
            SendError::TimedOut => Self::TimedOut(e.to_string()),
            SendError::StorageUnavailable(_)
            | SendError::NoVendor(_)
            | SendError::LimitsUnavailable(_) => Self::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[tokio::test]
    async fn a_recipient_limit_rounds_retry_after_up_to_whole_seconds() {
        for (wait, header) in [
            (Duration::from_millis(1), "1"),
            (Duration::from_millis(1500), "2"),
            (Duration::from_secs(60), "60"),
            (Duration::ZERO, "1"),
        ] {
            let response = ApiError::RecipientLimited {
                message: "over".into(),
                retry_after: wait,
            }
            .into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], header, "{wait:?}");
            let body = body_of(response).await;
            assert_eq!(body["error"]["code"], "recipient_limited");
            assert_eq!(body["error"]["field"], "recipients");
        }
    }

    #[tokio::test]
    async fn a_vendors_per_number_refusal_is_a_429_with_the_vendors_window() {
        let e = ApiError::from(SendError::RecipientRefused {
            vendor: sms_core::VendorId::new("aliyun").unwrap(),
            code: "isv.BUSINESS_LIMIT_CONTROL".into(),
            message: "触发分钟级流控Permits:1".into(),
            retry_after: Duration::from_secs(60),
        });
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "60");
        let body = body_of(response).await;
        assert_eq!(body["error"]["code"], "recipient_refused_by_vendor");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("aliyun") && message.contains("isv.BUSINESS_LIMIT_CONTROL"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_error_without_a_field_has_no_field_key() {
        let response = ApiError::Unauthorized.into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = body_of(response).await;
        assert_eq!(
            body,
            serde_json::json!({ "error": {
                "code": "unauthorized", "message": "missing or unknown bearer token" } })
        );
    }

    #[test]
    fn a_validation_error_names_its_field() {
        let e = ApiError::from(ValidationError::new("recipients[1]", "not a number"));
        let (status, code, message, field) = e.parts();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code, "invalid_request");
        assert_eq!(message, "recipients[1]: not a number");
        assert_eq!(field, Some("recipients[1]"));
    }
}
