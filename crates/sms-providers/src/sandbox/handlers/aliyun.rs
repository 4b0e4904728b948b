//! Aliyun's RPC API on one route: form or query, HMAC-SHA1 signature, JSON answer.
//! `SendSms` here; `QuerySendDetails` in [`query`], behind the same checks.

mod query;

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDateTime, Utc};
use serde_json::json;
use sms_core::PhoneNumber;

use super::{after_latency, deliverable, outage, parse_form, within};
use crate::http::sign::aliyun_signature;
use crate::rules::{Outgoing, TemplateArgs};
use crate::sandbox::{Delivery, Fate, SandboxState, SandboxVendor};

/// Aliyun refuses a `Timestamp` further than this from its clock.
const ALIYUN_MAX_SKEW_S: i64 = 15 * 60;

fn aliyun_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    (
        status,
        Json(json!({
            "Code": code,
            "Message": message,
            "RequestId": request_id,
            "HostId": "dysmsapi.aliyuncs.com",
        })),
    )
        .into_response()
}

/// A number as Aliyun takes it, if deliverable: mainland mobiles as 11 national digits,
/// others with their country code, digits only.
fn aliyun_recipient(number: &str) -> Option<PhoneNumber> {
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let e164 = if number.len() == 11 && number.starts_with('1') {
        format!("+86{number}")
    } else {
        format!("+{number}")
    };
    deliverable(&e164)
}

pub(super) async fn aliyun_send(state: &SandboxState, method: &str, raw: &str) -> Response {
    const VENDOR: SandboxVendor = SandboxVendor::Aliyun;
    if state.faults(VENDOR).outage {
        return outage();
    }
    let response = aliyun_answer(state, method, raw);
    after_latency(state, VENDOR, response).await
}

fn aliyun_answer(state: &SandboxState, method: &str, raw: &str) -> Response {
    let request_id = format!("sandbox-{}", state.next_id());
    let rid = request_id.as_str();
    let params = parse_form(raw);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let Some(signature) = get("Signature") else {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "MissingSignature",
            "Signature is mandatory for this action.",
            rid,
        );
    };
    let creds = &state.config.aliyun;
    if get("AccessKeyId") != Some(creds.access_key_id.as_str()) {
        return aliyun_error(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
            rid,
        );
    }
    let timestamp = get("Timestamp")
        .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%SZ").ok())
        .map(|t| t.and_utc());
    let Some(timestamp) = timestamp else {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
            rid,
        );
    };
    if !within(Utc::now(), timestamp, ALIYUN_MAX_SKEW_S) {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
            rid,
        );
    }
    let unsigned: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected = aliyun_signature(method, &unsigned, creds.access_key_secret.expose());
    if expected != signature {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
            rid,
        );
    }
    let nonce_window = Duration::from_secs(ALIYUN_MAX_SKEW_S as u64);
    if !state.fresh_nonce(
        get("SignatureNonce").unwrap_or_default(),
        Utc::now(),
        nonce_window,
    ) {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
            rid,
        );
    }
    let action = get("Action");
    if !matches!(action, Some("SendSms" | "QuerySendDetails"))
        || get("Version") != Some("2017-05-25")
    {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
            rid,
        );
    }
    if state.draw(SandboxVendor::Aliyun) == Fate::Error {
        return aliyun_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The request processing has failed due to some unknown error.",
            rid,
        );
    }
    if action == Some("QuerySendDetails") {
        return query::query_answer(state, &params, rid);
    }
    let ok_business = |code: &str, message: &str| aliyun_error(StatusCode::OK, code, message, rid);
    let numbers: Vec<&str> = get("PhoneNumbers")
        .unwrap_or_default()
        .split(',')
        .filter(|n| !n.is_empty())
        .collect();
    if numbers.is_empty() {
        return ok_business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
    }
    if numbers.len() > 1000 {
        return ok_business("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制");
    }
    let mut recipients = Vec::with_capacity(numbers.len());
    for n in numbers {
        match aliyun_recipient(n) {
            Some(p) => recipients.push(p),
            None => return ok_business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"),
        }
    }
    let sign_name = get("SignName").unwrap_or_default();
    if sign_name.is_empty() {
        return ok_business("isv.SMS_SIGNATURE_ILLEGAL", "短信签名不合法");
    }
    let template = get("TemplateCode").unwrap_or_default();
    if template.is_empty() {
        return ok_business("isv.SMS_TEMPLATE_ILLEGAL", "短信模板不合法");
    }
    // Variables in name order: a JSON object's keys carry no order of their own.
    let variables: Vec<(String, String)> = match get("TemplateParam") {
        None => Vec::new(),
        Some(json) => {
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) {
                Ok(map) => {
                    let mut pairs: Vec<(String, String)> = map
                        .into_iter()
                        .map(|(k, v)| {
                            let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                            (k, value)
                        })
                        .collect();
                    pairs.sort_by(|a, b| a.0.cmp(&b.0));
                    pairs
                }
                Err(_) => {
                    return ok_business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值");
                }
            }
        }
    };
    if state.draw(SandboxVendor::Aliyun) == Fate::Throttle {
        // The API's own flow control, which limits the account, not one number: the
        // per-number limits answer `isv.BUSINESS_LIMIT_CONTROL` from the rules below.
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "Throttling.User",
            "Request was denied due to user flow control.",
            rid,
        );
    }
    let route = state.route(SandboxVendor::Aliyun);
    let approved = match route
        .approvals
        .check(template, sign_name, TemplateArgs::Named(&variables))
    {
        Ok(approved) => approved,
        Err(refusal) => return ok_business(refusal.code(), refusal.message()),
    };
    if state.config.per_number_limits {
        let outgoing: Vec<Outgoing<'_>> = recipients
            .iter()
            .map(|r| Outgoing {
                number: r.as_str(),
                signature: sign_name,
                template_id: template,
                args: &[],
            })
            .collect();
        // Aliyun answers one code for the request: one number over its limit stops all.
        if let Err(refusal) = route.limits.admit_all(&outgoing) {
            return ok_business(refusal.code(), refusal.message());
        }
    }
    // The arguments in the approved template's order when it names its variables.
    let args: Vec<String> = match approved.filter(|t| !t.params.is_empty()) {
        Some(t) => t
            .params
            .iter()
            .filter_map(|p| variables.iter().find(|(n, _)| n == p))
            .map(|(_, v)| v.clone())
            .collect(),
        None => variables.into_iter().map(|(_, v)| v).collect(),
    };
    let biz_id = format!("{}^0", state.next_id());
    let now = Utc::now();
    state.record(
        recipients
            .iter()
            .map(|r| Delivery {
                vendor: "aliyun".into(),
                recipient: r.as_str().to_owned(),
                vendor_message_id: biz_id.clone(),
                reference: get("OutId").map(str::to_owned),
                template: template.to_owned(),
                sign_name: Some(sign_name.to_owned()),
                args: args.clone(),
                time: now,
            })
            .collect(),
    );
    (
        StatusCode::OK,
        Json(json!({"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": rid})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the text, a form the adapter encodes decodes to the same parameters,
        /// so the sandbox recomputes the very signature the adapter sent.
        #[test]
        fn any_signed_form_decodes_to_what_was_signed(value in "\\PC{0,30}", key in "[A-Za-z]{1,8}") {
            use crate::http::sign::{aliyun_canonical_query, percent_encode};
            let params = vec![(key.clone(), value.clone()), ("SignatureNonce".to_owned(), "n".to_owned())];
            let signature = aliyun_signature("POST", &params, "secret");
            let body = format!("{}&Signature={}", aliyun_canonical_query(&params), percent_encode(&signature));
            let decoded = parse_form(&body);
            let (signed, sig): (Vec<_>, Vec<_>) = decoded.into_iter().partition(|(k, _)| k != "Signature");
            proptest::prop_assert_eq!(&sig[0].1, &signature);
            proptest::prop_assert_eq!(aliyun_signature("POST", &signed, "secret"), signature);
        }
    }
}
