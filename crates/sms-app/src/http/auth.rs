//! The bearer-token check in front of every `/v1` route: API tokens may do anything,
//! operator tokens only read (`GET`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// Lets the request through when it carries `Authorization: Bearer <token>` with a
/// configured API token, or with an operator token on a `GET`; refuses a change asked
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
    // Every configured token is compared, in constant time, so timing tells nothing.
    let known = |tokens: &[String]| {
        presented.is_some_and(|p| {
            tokens.iter().fold(false, |found, t| {
                found | bool::from(t.as_bytes().ct_eq(p.as_bytes()))
            })
        })
    };
    let api = known(&state.tokens);
    let operator = known(&state.operator_tokens);
    if api || (operator && request.method() == Method::GET) {
        Ok(next.run(request).await)
    } else if operator {
        tracing::warn!(
            path = %request.uri().path(),
            method = %request.method(),
            "request refused: a read-only operator token asked for a change"
        );
        Err(ApiError::ReadOnlyToken)
    } else {
        tracing::warn!(
            path = %request.uri().path(),
            had_token = presented.is_some(),
            "request refused: missing or unknown bearer token"
        );
        Err(ApiError::Unauthorized)
    }
}
