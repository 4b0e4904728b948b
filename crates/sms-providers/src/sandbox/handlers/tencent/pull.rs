//! Tencent Cloud's `PullSmsSendStatus`: the next statuses of the application's queue,
//! each handed out once, once due.
//!
//! Reached past the same checks as `SendSms` (signature, timestamp, version, region,
//! faults). Then, in Tencent's codes: a body that is not a JSON object, or a parameter
//! of the wrong type, is `InvalidParameter`; a missing `SmsSdkAppId` or `Limit` is
//! `MissingParameter`; a `Limit` outside 1 to 100 is
//! `InvalidParameterValue.LimitVerifyFail`; an `SmsSdkAppId` other than the route's is
//! `InvalidParameterValue.SdkAppIdNotExist`; the throttling fault is
//! `RequestLimitExceeded`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::tencent_error;
use crate::sandbox::statuses::SendStatus;
use crate::sandbox::{Fate, SandboxState, SandboxVendor};

/// Most statuses one call hands out.
const MAX_LIMIT: i64 = 100;

pub(super) fn pull_answer(state: &SandboxState, body: &str, rid: &str) -> Response {
    let Ok(Value::Object(request)) = serde_json::from_str::<Value>(body) else {
        return tencent_error("InvalidParameter", "The body is not a JSON object.", rid);
    };
    let Some(app_id) = request.get("SmsSdkAppId") else {
        return tencent_error(
            "MissingParameter",
            "The request is missing a required parameter `SmsSdkAppId`.",
            rid,
        );
    };
    let Some(app_id) = app_id.as_str() else {
        return tencent_error(
            "InvalidParameter",
            "The parameter `SmsSdkAppId` must be a string.",
            rid,
        );
    };
    let Some(limit) = request.get("Limit") else {
        return tencent_error(
            "MissingParameter",
            "The request is missing a required parameter `Limit`.",
            rid,
        );
    };
    let Some(limit) = limit.as_i64() else {
        return tencent_error(
            "InvalidParameter",
            "The parameter `Limit` must be an integer.",
            rid,
        );
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        return tencent_error(
            "InvalidParameterValue.LimitVerifyFail",
            &format!("Limit must be from 1 to {MAX_LIMIT}, found {limit}."),
            rid,
        );
    }
    if app_id != state.config.tencent.sdk_app_id {
        return tencent_error(
            "InvalidParameterValue.SdkAppIdNotExist",
            "SdkAppId does not exist.",
            rid,
        );
    }
    if state.draw(SandboxVendor::Tencent) == Fate::Throttle {
        return tencent_error(
            "RequestLimitExceeded",
            "The number of requests exceeds the frequency limit.",
            rid,
        );
    }
    let limit = usize::try_from(limit).unwrap_or_default();
    let taken = state.statuses.take_due_tencent(Utc::now(), limit);
    let set: Vec<Value> = taken.iter().map(status_json).collect();
    (
        StatusCode::OK,
        Json(json!({"Response": {"PullSmsSendStatusSet": set, "RequestId": rid}})),
    )
        .into_response()
}

/// One entry of `PullSmsSendStatusSet`, as Tencent writes it.
fn status_json(status: &SendStatus) -> Value {
    let d = &status.delivery;
    let (country_code, subscriber) = match d.recipient.strip_prefix("+86") {
        Some(mobile) => ("86", mobile),
        None => ("", d.recipient.trim_start_matches('+')),
    };
    json!({
        "UserReceiveTime": status.due_at.timestamp(),
        "CountryCode": country_code,
        "SubscriberNumber": subscriber,
        "PhoneNumber": d.recipient,
        "SerialNo": d.vendor_message_id,
        "ReportStatus": if status.delivered { "SUCCESS" } else { "FAIL" },
        "Description": if status.delivered { "DELIVRD" } else { "UNDELIV" },
        "SessionContext": d.reference.clone().unwrap_or_default(),
    })
}
