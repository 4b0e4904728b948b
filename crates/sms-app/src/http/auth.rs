//! The bearer-token check in front of every `/v1` route: clients' tokens (named clients
//! and `api_tokens`) may do anything, operator tokens only read (`GET`). A client's
//! request carries its `Client` on, for the checks that depend on who sends.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::config::clients::digest;

/// Lets the request through when it carries `Authorization: Bearer <token>` with a
/// client's token, or with an operator token on a `GET`; refuses a change asked
/// with an operator token with 403, and anything else with 401. The token is never
/// logged.
pub(super) async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Clients are looked up by the SHA-256 of the token: the lookup's timing can tell
    // nothing about a token without a preimage of its digest.
    let client = presented.and_then(|p| state.clients.get(&digest(p)).cloned());
    // Every operator token is compared, in constant time, so timing tells nothing.
    let operator = presented.is_some_and(|p| {
        state.operator_tokens.iter().fold(false, |found, t| {
            found | bool::from(t.as_bytes().ct_eq(p.as_bytes()))
        })
    });
    let had_token = presented.is_some();
    let mut request = request;
    if let Some(client) = client {
        request.extensions_mut().insert(client);
        Ok(next.run(request).await)
    } else if operator && request.method() == Method::GET {
        Ok(next.run(request).await)
    } else if operator {
        tracing::warn!(
            path = %masked_path(request.uri().path()),
            method = %request.method(),
            "request refused: a read-only operator token asked for a change"
        );
        Err(ApiError::ReadOnlyToken)
    } else {
        tracing::warn!(
            path = %masked_path(request.uri().path()),
            had_token,
            "request refused: missing or unknown bearer token"
        );
        Err(ApiError::Unauthorized)
    }
}

/// `path` with every segment that reads as a phone number masked
/// (`/v1/blocklist/+8613800138000` → `/v1/blocklist/+86138****8000`), for logs.
fn masked_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let digits = segment.bytes().filter(u8::is_ascii_digit).count();
            match sms_core::PhoneNumber::parse(segment) {
                Ok(number) if digits >= 7 && !segment.contains('-') => number.masked(),
                _ if digits >= 7 && segment.starts_with('+') => "+***".to_owned(),
                _ => segment.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::masked_path;

    #[test]
    fn numbers_in_a_logged_path_are_masked_and_ids_are_not() {
        let masked = masked_path("/v1/blocklist/+8613800138000");
        assert!(masked.starts_with("/v1/blocklist/+86"), "{masked}");
        assert!(!masked.contains("13800138000"), "{masked}");
        let id = "/v1/messages/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(masked_path(id), id);
        assert_eq!(
            masked_path("/v1/vendors/aliyun/disable"),
            "/v1/vendors/aliyun/disable"
        );
    }
}
