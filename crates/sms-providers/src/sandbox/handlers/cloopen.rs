//! Cloopen's TemplateSMS: JSON body, MD5 `sig` in the query, Base64 authorization.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{Shared, after_latency, deliverable, outage, parse_form, within};
use crate::http::sign::{cloopen_parse_authorization, cloopen_sig, cloopen_timestamp};
use crate::rules::{Outgoing, TemplateArgs};
use crate::sandbox::{Delivery, Fate, SandboxState, SandboxVendor};

/// A Cloopen `sig` is valid for 24 hours.
const CLOOPEN_MAX_SKEW_S: i64 = 24 * 3600;

fn cloopen_status(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"statusCode": code, "statusMsg": message})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloopenBody {
    #[serde(default)]
    to: String,
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    template_id: String,
    #[serde(default)]
    datas: Vec<String>,
}

pub(super) async fn cloopen_send(
    State(state): State<Shared>,
    Path(sid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    const VENDOR: SandboxVendor = SandboxVendor::Cloopen;
    if state.faults(VENDOR).outage {
        return outage();
    }
    let response = cloopen_answer(
        &state,
        &sid,
        query.as_deref().unwrap_or_default(),
        &headers,
        &body,
    );
    after_latency(&state, VENDOR, response).await
}

/// The 111xxx codes below are the sandbox's picks within Cloopen's request and
/// authentication family; the 160xxx codes are Cloopen's own.
fn cloopen_answer(
    state: &SandboxState,
    sid: &str,
    query: &str,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    let creds = &state.config.cloopen;
    let ok = StatusCode::OK;
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(cloopen_parse_authorization);
    let Some((auth_sid, timestamp)) = auth else {
        return cloopen_status(ok, "111101", "请求包头Authorization参数Base64解码失败");
    };
    if sid != creds.account_sid || auth_sid != sid {
        return cloopen_status(ok, "111141", "主账户不存在");
    }
    let at = NaiveDateTime::parse_from_str(&timestamp, "%Y%m%d%H%M%S")
        .ok()
        .and_then(|t| {
            t.and_local_timezone(chrono::FixedOffset::east_opt(8 * 3600)?)
                .single()
        })
        .map(|t| t.with_timezone(&Utc));
    let Some(at) = at else {
        return cloopen_status(ok, "111104", "请求包头Authorization参数解码后时间格式有误");
    };
    if !within(Utc::now(), at, CLOOPEN_MAX_SKEW_S) {
        return cloopen_status(ok, "111105", "请求包头Authorization参数解码后时间戳过期");
    }
    let sig = parse_form(query)
        .into_iter()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if sig != cloopen_sig(sid, creds.auth_token.expose(), &timestamp) {
        return cloopen_status(ok, "111109", "请求地址Sig校验失败");
    }
    if state.draw(SandboxVendor::Cloopen) == Fate::Error {
        return cloopen_status(StatusCode::INTERNAL_SERVER_ERROR, "172001", "网络错误");
    }
    let Ok(request) = serde_json::from_str::<CloopenBody>(body) else {
        return cloopen_status(ok, "111200", "请求包体格式有误");
    };
    if request.app_id != creds.app_id {
        return cloopen_status(ok, "111147", "应用不存在");
    }
    if request.template_id.is_empty() {
        return cloopen_status(ok, "160032", "短信模板无效");
    }
    let numbers: Vec<&str> = request.to.split(',').filter(|n| !n.is_empty()).collect();
    if numbers.is_empty() || numbers.len() > 100 {
        return cloopen_status(ok, "160044", "号码数量有误");
    }
    let mut recipients = Vec::with_capacity(numbers.len());
    for n in numbers {
        // Mainland mobiles as 11 national digits, others as 00 + country code.
        let e164 = if n.len() == 11 && n.starts_with('1') {
            Some(format!("+86{n}"))
        } else {
            n.strip_prefix("00").map(|rest| format!("+{rest}"))
        };
        match e164.as_deref().and_then(deliverable) {
            Some(p) if n.bytes().all(|b| b.is_ascii_digit()) => recipients.push(p),
            _ => return cloopen_status(ok, "160042", "号码格式有误"),
        }
    }
    if state.draw(SandboxVendor::Cloopen) == Fate::Throttle {
        // Too many requests for the account: Cloopen's own codes in this range are all
        // per number (160038–160041, from the rules below), so the fault is the HTTP
        // gateway's 429.
        return cloopen_status(StatusCode::TOO_MANY_REQUESTS, "429", "请求过于频繁");
    }
    let route = state.route(SandboxVendor::Cloopen);
    // Cloopen binds the signature to the template: there is none to check apart.
    if let Err(refusal) = route.approvals.check(
        &request.template_id,
        "",
        TemplateArgs::Positional(&request.datas),
    ) {
        return cloopen_status(ok, refusal.code(), refusal.message());
    }
    if state.config.per_number_limits {
        let outgoing: Vec<Outgoing<'_>> = recipients
            .iter()
            .map(|r| Outgoing {
                number: r.as_str(),
                signature: "",
                template_id: &request.template_id,
                args: &request.datas,
            })
            .collect();
        // Cloopen answers one code for the request: one number over its limit stops all.
        if let Err(refusal) = route.limits.admit_all(&outgoing) {
            return cloopen_status(ok, refusal.code(), refusal.message());
        }
    }
    let message_sid = format!("{:032x}", state.next_id());
    let now = Utc::now();
    state.record(
        recipients
            .iter()
            .map(|r| Delivery {
                vendor: "cloopen".into(),
                recipient: r.as_str().to_owned(),
                vendor_message_id: message_sid.clone(),
                reference: None,
                template: request.template_id.clone(),
                sign_name: None,
                args: request.datas.clone(),
                time: now,
            })
            .collect(),
    );
    (
        ok,
        Json(json!({
            "statusCode": "000000",
            "templateSMS": {"smsMessageSid": message_sid, "dateCreated": cloopen_timestamp(now)},
        })),
    )
        .into_response()
}
