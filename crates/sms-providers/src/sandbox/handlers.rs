//! The sandbox's routes: one handler per vendor protocol, and the control endpoint.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, NaiveDateTime, Utc};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::json;
use sms_core::PhoneNumber;
use sms_core::sync::lock;

use super::{Delivery, Fate, FaultControls, SandboxState, SandboxVendor};
use crate::http::is_mainland_mobile;
use crate::http::sign::{
    TC3_CONTENT_TYPE, Tc3Input, aliyun_signature, cloopen_parse_authorization, cloopen_sig,
    cloopen_timestamp, tc3_date, tc3_sign,
};

type Shared = Arc<SandboxState>;

/// Aliyun refuses a `Timestamp` further than this from its clock.
const ALIYUN_MAX_SKEW_S: i64 = 15 * 60;
/// Tencent refuses an `X-TC-Timestamp` further than this from its clock.
const TENCENT_MAX_SKEW_S: i64 = 5 * 60;
/// A Cloopen `sig` is valid for 24 hours.
const CLOOPEN_MAX_SKEW_S: i64 = 24 * 3600;

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

// ---------------------------------------------------------------- Aliyun

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

async fn aliyun_send(state: &SandboxState, method: &str, raw: &str) -> Response {
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
    if get("Action") != Some("SendSms") || get("Version") != Some("2017-05-25") {
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
        // Mainland mobiles come as 11 national digits, others with their country code.
        let e164 = if n.len() == 11 && n.starts_with('1') {
            format!("+86{n}")
        } else {
            format!("+{n}")
        };
        match deliverable(&e164) {
            Some(p) if n.bytes().all(|b| b.is_ascii_digit()) => recipients.push(p),
            _ => return ok_business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"),
        }
    }
    if get("SignName").unwrap_or_default().is_empty() {
        return ok_business("isv.SMS_SIGNATURE_ILLEGAL", "短信签名不合法");
    }
    let template = get("TemplateCode").unwrap_or_default();
    if template.is_empty() {
        return ok_business("isv.SMS_TEMPLATE_ILLEGAL", "短信模板不合法");
    }
    let args = match get("TemplateParam") {
        None => Vec::new(),
        Some(json) => {
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) {
                Ok(map) => map
                    .values()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect(),
                Err(_) => {
                    return ok_business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值");
                }
            }
        }
    };
    if state.draw(SandboxVendor::Aliyun) == Fate::Throttle {
        return ok_business("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1");
    }
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

// ---------------------------------------------------------------- Tencent

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
    template_param_set: Vec<String>,
    #[serde(default)]
    session_context: Option<String>,
}

async fn tencent_send(state: &SandboxState, headers: &HeaderMap, body: &str) -> Response {
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
    if header("x-tc-action") != "SendSms" {
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
    // Billed segments: a rough model of a 70-character SMS, so adapters read `Fee`
    // rather than assume one.
    let chars: usize = request
        .template_param_set
        .iter()
        .map(|a| a.chars().count())
        .sum();
    let fee = chars.div_ceil(70).max(1) as u64;
    let now = Utc::now();
    let mut statuses = Vec::with_capacity(request.phone_number_set.len());
    let mut delivered = Vec::new();
    for number in &request.phone_number_set {
        let status = if throttled {
            json!({"SerialNo": "", "PhoneNumber": number, "Fee": 0, "SessionContext": request.session_context, "Code": "LimitExceeded.DeliveryFrequencyLimit", "Message": "the delivery frequency limit was hit", "IsoCode": ""})
        } else if let Some(p) = deliverable(number).filter(|_| number.starts_with('+')) {
            let serial = format!("sandbox:{}", state.next_id());
            delivered.push(Delivery {
                vendor: "tencent".into(),
                recipient: p.as_str().to_owned(),
                vendor_message_id: serial.clone(),
                reference: request.session_context.clone(),
                template: request.template_id.clone(),
                args: request.template_param_set.clone(),
                time: now,
            });
            json!({"SerialNo": serial, "PhoneNumber": number, "Fee": fee, "SessionContext": request.session_context, "Code": "Ok", "Message": "send success", "IsoCode": "CN"})
        } else {
            json!({"SerialNo": "", "PhoneNumber": number, "Fee": 0, "SessionContext": request.session_context, "Code": "InvalidParameterValue.IncorrectPhoneNumber", "Message": "incorrect phone number", "IsoCode": ""})
        };
        statuses.push(status);
    }
    state.record(delivered);
    (
        StatusCode::OK,
        Json(json!({"Response": {"SendStatusSet": statuses, "RequestId": rid}})),
    )
        .into_response()
}

// ---------------------------------------------------------------- Cloopen

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

async fn cloopen_send(
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
/// authentication family; 160038 and 160042 are Cloopen's own.
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
        return cloopen_status(ok, "160038", "短信验证码发送过频繁");
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

// ---------------------------------------------------------------- control

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

    #[test]
    fn landlines_in_china_are_not_deliverable() {
        assert!(deliverable("+8613800138000").is_some());
        assert!(deliverable("+862012345678").is_none());
        assert!(deliverable("+14155550100").is_some());
        assert!(deliverable("+1").is_none());
    }

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
