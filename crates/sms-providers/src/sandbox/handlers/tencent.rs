//! Tencent Cloud's API 3.0 on one route: JSON body, TC3-HMAC-SHA256 authorization, JSON
//! answer. `SendSms` here; `PullSmsSendStatus` in [`pull`], behind the same checks.

mod pull;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{after_latency, deliverable, outage, within};
use crate::http::sign::{TC3_CONTENT_TYPE, Tc3Input, tc3_date, tc3_sign};
use crate::rules::{Outgoing, TemplateArgs, billed_for, vendor_text};
use crate::sandbox::{Delivery, Fate, SandboxState, SandboxVendor};

/// Tencent refuses an `X-TC-Timestamp` further than this from its clock.
const TENCENT_MAX_SKEW_S: i64 = 5 * 60;

fn tencent_error(code: &str, message: &str, request_id: &str) -> Response {
    // Tencent Cloud API 3.0 answers errors with HTTP 200 and `Response.Error`.
    (
        StatusCode::OK,
        Json(json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}})),
    )
        .into_response()
}

/// The parts of a TC3 `Authorization` header.
struct Tc3Authorization<'a> {
    secret_id: &'a str,
    date: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_tc3_authorization(header: &str) -> Option<Tc3Authorization<'_>> {
    let rest = header.strip_prefix("TC3-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let mut scope = credential?.split('/');
    let secret_id = scope.next()?;
    let date = scope.next()?;
    let service = scope.next()?;
    if scope.next()? != "tc3_request" {
        return None;
    }
    Some(Tc3Authorization {
        secret_id,
        date,
        service,
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TencentBody {
    #[serde(default)]
    phone_number_set: Vec<String>,
    #[serde(default)]
    sms_sdk_app_id: String,
    #[serde(default)]
    template_id: String,
    #[serde(default)]
    sign_name: String,
    #[serde(default)]
    template_param_set: Vec<String>,
    #[serde(default)]
    session_context: Option<String>,
}

pub(super) async fn tencent_send(
    state: &SandboxState,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    const VENDOR: SandboxVendor = SandboxVendor::Tencent;
    if state.faults(VENDOR).outage {
        return outage();
    }
    let response = tencent_answer(state, headers, body);
    after_latency(state, VENDOR, response).await
}

fn tencent_answer(state: &SandboxState, headers: &HeaderMap, body: &str) -> Response {
    let request_id = format!("sandbox-{}", state.next_id());
    let rid = request_id.as_str();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let Some(auth) = parse_tc3_authorization(header("authorization")) else {
        return tencent_error(
            "AuthFailure.InvalidAuthorization",
            "Authorization header is invalid.",
            rid,
        );
    };
    let creds = &state.config.tencent;
    if auth.secret_id != creds.secret_id {
        return tencent_error(
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found.",
            rid,
        );
    }
    let Ok(timestamp) = header("x-tc-timestamp").parse::<i64>() else {
        return tencent_error(
            "MissingParameter",
            "The request is missing a required parameter `Timestamp`.",
            rid,
        );
    };
    let at = DateTime::<Utc>::from_timestamp(timestamp, 0).unwrap_or_default();
    if !within(Utc::now(), at, TENCENT_MAX_SKEW_S) {
        return tencent_error("AuthFailure.SignatureExpire", "Signature expired.", rid);
    }
    // The sandbox verifies the header set the adapter signs (content-type and host)
    // with the values actually received.
    let signed = tc3_sign(&Tc3Input {
        secret_id: auth.secret_id,
        secret_key: creds.secret_key.expose(),
        service: auth.service,
        host: header("host"),
        timestamp,
        payload: body,
    });
    if auth.signed_headers != "content-type;host"
        || header("content-type") != TC3_CONTENT_TYPE
        || auth.service != "sms"
        || auth.date != tc3_date(timestamp)
        || auth.signature != signed.signature
    {
        return tencent_error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
            rid,
        );
    }
    let action = header("x-tc-action");
    if !matches!(action, "SendSms" | "PullSmsSendStatus") {
        return tencent_error("InvalidAction", "The action is not found.", rid);
    }
    if header("x-tc-version") != "2021-01-11" {
        return tencent_error("NoSuchVersion", "The version is not supported.", rid);
    }
    if header("x-tc-region").is_empty() {
        return tencent_error(
            "MissingParameter",
            "The request is missing a required parameter `Region`.",
            rid,
        );
    }
    if state.draw(SandboxVendor::Tencent) == Fate::Error {
        return tencent_error("InternalError.Timeout", "Internal error: timeout.", rid);
    }
    if action == "PullSmsSendStatus" {
        return pull::pull_answer(state, body, rid);
    }
    let Ok(request) = serde_json::from_str::<TencentBody>(body) else {
        return tencent_error(
            "InvalidParameter",
            "The body is not valid JSON of the expected shape.",
            rid,
        );
    };
    if request.sms_sdk_app_id != creds.sdk_app_id {
        return tencent_error(
            "InvalidParameterValue.SdkAppIdNotExist",
            "SdkAppId does not exist.",
            rid,
        );
    }
    if request.phone_number_set.is_empty() || request.template_id.is_empty() {
        return tencent_error(
            "MissingParameter",
            "PhoneNumberSet and TemplateId are required.",
            rid,
        );
    }
    if request.phone_number_set.len() > 200 {
        return tencent_error(
            "LimitExceeded.PhoneNumberCountLimit",
            "The number of phone numbers exceeds 200.",
            rid,
        );
    }
    let throttled = state.draw(SandboxVendor::Tencent) == Fate::Throttle;
    let route = state.route(SandboxVendor::Tencent);
    let sign_name = request.sign_name.as_str();
    let params = request.template_param_set.as_slice();
    let approved = match route.approvals.check(
        &request.template_id,
        sign_name,
        TemplateArgs::Positional(params),
    ) {
        Ok(approved) => approved,
        Err(refusal) => return tencent_error(refusal.code(), refusal.message(), rid),
    };
    // What `Fee` counts: the signed text the vendor sends.
    let text = vendor_text(approved, params);
    let now = Utc::now();
    let mut statuses = Vec::with_capacity(request.phone_number_set.len());
    let mut delivered = Vec::new();
    let session = &request.session_context;
    let failed = |number: &str, code: &str, message: &str| json!({"SerialNo": "", "PhoneNumber": number, "Fee": 0, "SessionContext": session, "Code": code, "Message": message, "IsoCode": ""});
    for number in &request.phone_number_set {
        if throttled {
            statuses.push(failed(
                number,
                "LimitExceeded.DeliveryFrequencyLimit",
                "the delivery frequency limit was hit",
            ));
            continue;
        }
        let Some(p) = deliverable(number).filter(|_| number.starts_with('+')) else {
            statuses.push(failed(
                number,
                "InvalidParameterValue.IncorrectPhoneNumber",
                "incorrect phone number",
            ));
            continue;
        };
        // Tencent answers each number on its own: one over its limit stops only itself.
        let admitted = if state.config.per_number_limits {
            route.limits.admit(&Outgoing {
                number: p.as_str(),
                signature: sign_name,
                template_id: &request.template_id,
                args: params,
            })
        } else {
            Ok(())
        };
        if let Err(refusal) = admitted {
            statuses.push(failed(number, refusal.code(), refusal.message()));
            continue;
        }
        let serial = format!("sandbox:{}", state.next_id());
        let fee = billed_for(sign_name, &text, &p);
        delivered.push(Delivery {
            vendor: "tencent".into(),
            recipient: p.as_str().to_owned(),
            vendor_message_id: serial.clone(),
            reference: request.session_context.clone(),
            template: request.template_id.clone(),
            sign_name: Some(sign_name.to_owned()),
            args: request.template_param_set.clone(),
            time: now,
        });
        statuses.push(json!({"SerialNo": serial, "PhoneNumber": number, "Fee": fee, "SessionContext": session, "Code": "Ok", "Message": "send success", "IsoCode": "CN"}));
    }
    state.record(delivered);
    (
        StatusCode::OK,
        Json(json!({"Response": {"SendStatusSet": statuses, "RequestId": rid}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc3_authorization_headers_parse() {
        let a = parse_tc3_authorization(
            "TC3-HMAC-SHA256 Credential=AKID/2019-02-25/sms/tc3_request, SignedHeaders=content-type;host, Signature=abc",
        )
        .unwrap();
        assert_eq!(a.secret_id, "AKID");
        assert_eq!(a.date, "2019-02-25");
        assert_eq!(a.service, "sms");
        assert_eq!(a.signed_headers, "content-type;host");
        assert_eq!(a.signature, "abc");
        assert!(parse_tc3_authorization("Bearer x").is_none());
        assert!(
            parse_tc3_authorization(
                "TC3-HMAC-SHA256 Credential=AKID/2019-02-25/sms/other, SignedHeaders=a, Signature=b"
            )
            .is_none()
        );
    }
}
