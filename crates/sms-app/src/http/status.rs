//! The status page at `/` and the switch timeline it shows.
//!
//! The page is static HTML, CSS and JavaScript built into the binary: it shows nothing
//! by itself, and fetches everything it shows from the API with a bearer token the
//! operator types in (kept in the browser's local storage).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ErrorBody;
use crate::activity::Minute;
use crate::switch_log::Switch;

/// The page, built into the binary.
const PAGE: &str = include_str!("status.html");

/// How far back the timeline goes.
const TIMELINE_HOURS: i64 = 24;

/// Status page
#[utoipa::path(
    get,
    path = "/",
    responses((status = 200, description = "The status page (its data needs a token)", body = String, content_type = "text/html"))
)]
pub(super) async fn status_page() -> Html<&'static str> {
    Html(PAGE)
}

/// The switches of the last day.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Switches {
    /// Oldest first.
    switches: Vec<Switch>,
}

/// Switches of the current vendor in the last 24 h
#[utoipa::path(
    get,
    path = "/v1/switches",
    responses(
        (status = 200, description = "Switches, oldest first", body = Switches),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    )
)]
pub(super) async fn get_switches(State(state): State<Arc<AppState>>) -> Json<Switches> {
    let since = chrono::Utc::now() - chrono::Duration::hours(TIMELINE_HOURS);
    Json(Switches {
        switches: state.metrics.switch_log().since(since),
    })
}

/// The last hour, minute by minute.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ActivityView {
    /// Sixty minutes, oldest first, the current one last.
    minutes: Vec<Minute>,
}

/// Sends and outcomes per minute over the last hour
#[utoipa::path(
    get,
    path = "/v1/activity",
    responses(
        (status = 200, description = "Sixty minutes, oldest first", body = ActivityView),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    )
)]
pub(super) async fn get_activity(State(state): State<Arc<AppState>>) -> Json<ActivityView> {
    Json(ActivityView {
        minutes: state.metrics.activity().last_hour(chrono::Utc::now()),
    })
}
