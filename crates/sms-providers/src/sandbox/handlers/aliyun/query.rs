//! Aliyun's `QuerySendDetails`: the records of the sends to one number on one date
//! (Beijing), optionally of one `BizId`, a page at a time.
//!
//! Reached past the same checks as `SendSms` (signature, timestamp, nonce, faults).
//! Then, in Aliyun's shapes: a missing `PhoneNumber`, `SendDate`, `PageSize` or
//! `CurrentPage` is HTTP 400 `Missing{Name}`; a `PhoneNumber` that is not one valid
//! number is `isv.MOBILE_NUMBER_ILLEGAL`; a `SendDate` not `yyyyMMdd`, a `PageSize`
//! outside 1 to 50 or a `CurrentPage` under 1 is `isv.INVALID_PARAMETERS`; the
//! throttling fault is `Throttling.User`. A record's `SendStatus` is 1 (waiting) until
//! its receipt is due, then 3 (delivered) or 2 (failed), as drawn when it was sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde_json::{Value, json};

use super::{aliyun_error, aliyun_recipient};
use crate::rules::vendor_text;
use crate::sandbox::statuses::SendStatus;
use crate::sandbox::{Fate, SandboxState, SandboxVendor};

/// Most records one page holds.
const MAX_PAGE_SIZE: u64 = 50;

pub(super) fn query_answer(
    state: &SandboxState,
    params: &[(String, String)],
    rid: &str,
) -> Response {
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    // Aliyun names the first missing one, in the documented order.
    let required = ["PhoneNumber", "SendDate", "PageSize", "CurrentPage"];
    if let Some(name) = required.into_iter().find(|name| get(name).is_none()) {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            &format!("Missing{name}"),
            &format!("{name} is mandatory for this action."),
            rid,
        );
    }
    let [number, send_date, page_size, current_page] =
        required.map(|name| get(name).unwrap_or_default());
    let ok_business = |code: &str, message: &str| aliyun_error(StatusCode::OK, code, message, rid);
    let Some(recipient) = aliyun_recipient(number) else {
        return ok_business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
    };
    let date = (send_date.len() == 8)
        .then(|| NaiveDate::parse_from_str(send_date, "%Y%m%d").ok())
        .flatten();
    let Some(date) = date else {
        return ok_business(
            "isv.INVALID_PARAMETERS",
            "参数异常: SendDate 格式为 yyyyMMdd",
        );
    };
    let page_size = page_size.parse::<u64>().ok();
    let Some(page_size) = page_size.filter(|n| (1..=MAX_PAGE_SIZE).contains(n)) else {
        return ok_business(
            "isv.INVALID_PARAMETERS",
            "参数异常: PageSize 取值范围为 1~50",
        );
    };
    let Some(current_page) = current_page.parse::<u64>().ok().filter(|&n| n >= 1) else {
        return ok_business("isv.INVALID_PARAMETERS", "参数异常: CurrentPage 至少为 1");
    };
    if state.draw(SandboxVendor::Aliyun) == Fate::Throttle {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "Throttling.User",
            "Request was denied due to user flow control.",
            rid,
        );
    }
    let records = state
        .statuses
        .aliyun_records(recipient.as_str(), get("BizId"), date);
    let total = records.len();
    let skip = usize::try_from((current_page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
    let now = Utc::now();
    let page: Vec<Value> = records
        .iter()
        .skip(skip)
        .take(page_size as usize)
        .map(|record| record_json(state, number, record, now))
        .collect();
    (
        StatusCode::OK,
        Json(json!({
            "Code": "OK",
            "Message": "OK",
            "RequestId": rid,
            "TotalCount": total,
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": page},
        })),
    )
        .into_response()
}

/// A time as Aliyun writes it: Beijing, `yyyy-MM-dd HH:mm:ss`.
fn beijing(at: DateTime<Utc>) -> String {
    let offset = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    at.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// One `SmsSendDetailDTO` at `now`, its number written as it was asked for.
fn record_json(
    state: &SandboxState,
    number: &str,
    record: &SendStatus,
    now: DateTime<Utc>,
) -> Value {
    let d = &record.delivery;
    let approved = state
        .route(SandboxVendor::Aliyun)
        .approvals
        .template(&d.template);
    let content = format!(
        "【{}】{}",
        d.sign_name.as_deref().unwrap_or_default(),
        vendor_text(approved, &d.args)
    );
    let (send_status, err_code, receive_date) = match (record.is_due(now), record.delivered) {
        (false, _) => (1, "", String::new()),
        (true, true) => (3, "DELIVERED", beijing(record.due_at)),
        (true, false) => (2, "UNDELIV", beijing(record.due_at)),
    };
    json!({
        "PhoneNum": number,
        "SendStatus": send_status,
        "ErrCode": err_code,
        "TemplateCode": d.template,
        "Content": content,
        "SendDate": beijing(d.time),
        "ReceiveDate": receive_date,
        "OutId": d.reference.clone().unwrap_or_default(),
    })
}
