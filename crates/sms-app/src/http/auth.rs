//! The bearer-token check in front of every `/v1` route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// Lets the request through when it carries `Authorization: Bearer <token>` with a
/// configured token; refuses it with 401 otherwise. The token is never logged.
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
    let ok = presented.is_some_and(|p| {
        state.tokens.iter().fold(false, |found, t| {
            found | bool::from(t.as_bytes().ct_eq(p.as_bytes()))
        })
    });
    if ok {
        Ok(next.run(request).await)
    } else {
        tracing::warn!(
            path = %request.uri().path(),
            had_token = presented.is_some(),
            "request refused: missing or unknown bearer token"
        );
        Err(ApiError::Unauthorized)
    }
}
