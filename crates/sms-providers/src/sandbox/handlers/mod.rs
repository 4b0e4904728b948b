//! The sandbox's routes: one module per vendor protocol, the control endpoints here.
//!
//! Each vendor module checks a request as strictly as the real API does (signature,
//! clock skew, parameters, recipients, then the approved templates and the per-number
//! limits of [`crate::rules`]) and answers in that vendor's format; the helpers they
//! share (latency, outage, recipient and form parsing) live here.

mod aliyun;
mod cloopen;
mod tencent;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;
use serde_json::json;
use sms_core::PhoneNumber;
use sms_core::sync::lock;

use super::{FaultControls, SandboxState, SandboxVendor};
use crate::http::is_mainland_mobile;
use aliyun::aliyun_send;
use cloopen::cloopen_send;
use tencent::tencent_send;

type Shared = Arc<SandboxState>;

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", post(root_post).get(aliyun_get))
        .route(
            "/2013-12-26/Accounts/{sid}/SMS/TemplateSMS",
            post(cloopen_send),
        )
        .route("/_control/{vendor}", put(put_control).get(get_control))
        .route("/_deliveries", get(list_deliveries))
        .with_state(state)
}

/// Waits the vendor's configured latency, then answers.
async fn after_latency(
    state: &SandboxState,
    vendor: SandboxVendor,
    response: Response,
) -> Response {
    let latency = state.latency(vendor);
    if latency > Duration::ZERO {
        tokio::time::sleep(latency).await;
    }
    response
}

fn outage() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
}

/// A recipient as E.164, if the sandbox accepts it as a deliverable number: valid E.164
/// and, for +86, a mobile.
fn deliverable(e164: &str) -> Option<PhoneNumber> {
    let number = PhoneNumber::parse(e164).ok()?;
    if number.digits().starts_with("86") && !is_mainland_mobile(&number) {
        return None;
    }
    Some(number)
}

/// Decodes `application/x-www-form-urlencoded` text (also a query string).
fn parse_form(raw: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

fn within(now: DateTime<Utc>, at: DateTime<Utc>, max_skew_s: i64) -> bool {
    (now - at).num_seconds().abs() <= max_skew_s
}

async fn root_post(State(state): State<Shared>, headers: HeaderMap, body: String) -> Response {
    if headers.contains_key("x-tc-action") {
        tencent_send(&state, &headers, &body).await
    } else {
        aliyun_send(&state, "POST", &body).await
    }
}

async fn aliyun_get(State(state): State<Shared>, RawQuery(query): RawQuery) -> Response {
    aliyun_send(&state, "GET", query.as_deref().unwrap_or_default()).await
}

async fn put_control(
    State(state): State<Shared>,
    Path(vendor): Path<String>,
    body: String,
) -> Response {
    let vendor = match vendor.parse::<SandboxVendor>() {
        Ok(v) => v,
        Err(e) => {
            return (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response();
        }
    };
    let faults = match serde_json::from_str::<FaultControls>(&body) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("expected fault controls as JSON: {e}")})),
            )
                .into_response();
        }
    };
    if let Err(e) = faults.validate() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response();
    }
    lock(&state.faults)[vendor.index()] = faults;
    (StatusCode::OK, Json(faults)).into_response()
}

async fn get_control(State(state): State<Shared>, Path(vendor): Path<String>) -> Response {
    match vendor.parse::<SandboxVendor>() {
        Ok(v) => (StatusCode::OK, Json(state.faults(v))).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn list_deliveries(State(state): State<Shared>) -> Response {
    let deliveries = lock(&state.deliveries).clone();
    (StatusCode::OK, Json(deliveries)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent_escapes() {
        let p = parse_form("a=x+y&b=%E9%AA%8C%2A&c&=v");
        assert_eq!(p[0], ("a".into(), "x y".into()));
        assert_eq!(p[1], ("b".into(), "验*".into()));
        assert_eq!(p[2], ("c".into(), String::new()));
        assert_eq!(p[3], (String::new(), "v".into()));
    }

    #[test]
    fn landlines_in_china_are_not_deliverable() {
        assert!(deliverable("+8613800138000").is_some());
        assert!(deliverable("+862012345678").is_none());
        assert!(deliverable("+14155550100").is_some());
        assert!(deliverable("+1").is_none());
    }
}
