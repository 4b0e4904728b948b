//! The routes anyone may call: liveness, readiness, metrics and the API description.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use utoipa::openapi::OpenApi;

use super::AppState;
use super::error::{ApiError, ErrorBody};

/// Liveness
#[utoipa::path(
    get,
    path = "/healthz",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain"))
)]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness (storage answers)
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready: storage failed or did not answer in 2 s", body = ErrorBody),
    )
)]
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), state.queue.stats()).await {
        Ok(Ok(_)) => Ok("ready"),
        Ok(Err(e)) => Err(ApiError::NotReady(e.to_string())),
        Err(_) => Err(ApiError::NotReady(
            "storage did not answer in 2 s".to_owned(),
        )),
    }
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "Metrics", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"))
)]
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
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

/// The API description: this document
#[utoipa::path(
    get,
    path = "/openapi.json",
    responses((status = 200, description = "OpenAPI 3.1", body = Object))
)]
pub(super) async fn openapi_json(Extension(doc): Extension<Arc<OpenApi>>) -> Response {
    Json(doc.as_ref()).into_response()
}
