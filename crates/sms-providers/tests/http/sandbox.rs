//! The sandbox itself: its control endpoint, its delivery log, the checks a hand-made
//! request meets (replayed nonce, stale timestamp), and the vendors' own rules on each
//! route (approved templates, signatures and parameters, per-number limits, `Fee`) in
//! each vendor's answer.

use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{Value, json};
use sms_core::{MessageId, OutboundSms, SmsRequest, Templates, Vendor, VendorError, VendorId};
use sms_providers::http::sign::{
    TC3_CONTENT_TYPE, Tc3Input, aliyun_canonical_query, aliyun_signature, aliyun_timestamp,
    cloopen_authorization, cloopen_sig, cloopen_timestamp, percent_encode, tc3_sign,
};
use sms_providers::http::{AliyunVendor, CloopenVendor, TencentVendor};
use sms_providers::sandbox::{
    Delivery, FaultControls, SandboxConfig, SandboxHandle, SandboxVendor,
};

use crate::support::{mapped, sms, start, start_with};

#[tokio::test]
async fn faults_are_set_and_read_over_the_control_endpoint() {
    let sandbox = start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/_control/tencent", sandbox.base_url());
    let r = client
        .put(&url)
        .body(r#"{"throttle_rate": 0.5, "latency_ms": 10}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let expected = FaultControls {
        throttle_rate: 0.5,
        latency_ms: 10,
        ..FaultControls::default()
    };
    assert_eq!(sandbox.faults(SandboxVendor::Tencent), expected);
    let read: FaultControls = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(read, expected);
    // Other vendors are untouched.
    assert_eq!(
        sandbox.faults(SandboxVendor::Aliyun),
        FaultControls::default()
    );
    let bad_rate = client
        .put(&url)
        .body(r#"{"error_rate": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_rate.status(), 400);
    let unknown_field = client
        .put(&url)
        .body(r#"{"eror_rate": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_field.status(), 400);
    let unknown_vendor = client
        .put(format!("{}/_control/twilio", sandbox.base_url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_vendor.status(), 404);
    // The refused updates changed nothing.
    assert_eq!(sandbox.faults(SandboxVendor::Tencent), expected);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn deliveries_are_appended_to_the_json_lines_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.jsonl");
    let sandbox = start_with(SandboxConfig {
        delivery_log: Some(path.clone()),
        ..SandboxConfig::default()
    })
    .await;
    let message = sms(&["42"], &["+8613800138000", "+8613800138001"]);
    AliyunVendor::new(sandbox.aliyun_config())
        .unwrap()
        .send(&message)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Delivery> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a delivery"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].vendor, "aliyun");
    assert_eq!(lines[1].recipient, "+8613800138001");
    assert_eq!(
        lines[0].reference.as_deref(),
        Some(message.id.to_string().as_str())
    );
    assert_eq!(lines, sandbox.deliveries());
    // The same list is served over HTTP, for runs outside a test.
    let served: Vec<Delivery> = reqwest::get(format!("{}/_deliveries", sandbox.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, lines);
    sandbox.stop().await.unwrap();
}

/// A form body signed by hand, the way a client other than ours would.
fn aliyun_form(timestamp: &str, nonce: &str, secret: &str) -> String {
    aliyun_form_with(timestamp, nonce, secret, &[])
}

/// [`aliyun_form`] with some parameters replaced or added.
fn aliyun_form_with(
    timestamp: &str,
    nonce: &str,
    secret: &str,
    changes: &[(&'static str, &str)],
) -> String {
    let mut params = vec![
        ("AccessKeyId", "sandbox-aliyun-id"),
        ("Action", "SendSms"),
        ("Format", "JSON"),
        ("PhoneNumbers", "13800138000"),
        ("RegionId", "cn-hangzhou"),
        ("SignName", "测试"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", nonce),
        ("SignatureVersion", "1.0"),
        ("TemplateCode", "SMS_1"),
        ("Timestamp", timestamp),
        ("Version", "2017-05-25"),
    ];
    for &(key, value) in changes {
        match params.iter_mut().find(|(k, _)| *k == key) {
            Some(param) => param.1 = value,
            None => params.push((key, value)),
        }
    }
    let signature = aliyun_signature("POST", &params, secret);
    format!(
        "{}&Signature={}",
        aliyun_canonical_query(&params),
        percent_encode(&signature)
    )
}

async fn post_form(base_url: &str, body: String) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{base_url}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn aliyun_refuses_a_replayed_nonce_and_a_stale_timestamp() {
    let sandbox = start().await;
    let now = aliyun_timestamp(Utc::now());
    let body = aliyun_form(&now, "nonce-1", "sandbox-aliyun-secret");
    let (status, first) = post_form(&sandbox.base_url(), body.clone()).await;
    assert_eq!(
        (status, first["Code"].as_str()),
        (200, Some("OK")),
        "{first}"
    );
    let (status, replay) = post_form(&sandbox.base_url(), body).await;
    assert_eq!(
        (status, replay["Code"].as_str()),
        (400, Some("SignatureNonceUsed")),
        "{replay}"
    );
    let stale = aliyun_timestamp(Utc::now() - ChronoDuration::hours(1));
    let (status, old) = post_form(
        &sandbox.base_url(),
        aliyun_form(&stale, "nonce-2", "sandbox-aliyun-secret"),
    )
    .await;
    assert_eq!(
        (status, old["Code"].as_str()),
        (400, Some("InvalidTimeStamp.Expired")),
        "{old}"
    );
    assert_eq!(sandbox.deliveries().len(), 1);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn tencent_refuses_a_request_without_a_valid_authorization() {
    let sandbox = start().await;
    let r = reqwest::Client::new()
        .post(format!("{}/", sandbox.base_url()))
        .header("content-type", "application/json; charset=utf-8")
        .header("x-tc-action", "SendSms")
        .header("x-tc-timestamp", Utc::now().timestamp().to_string())
        .header("authorization", "Bearer nope")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["Response"]["Error"]["Code"].as_str(),
        Some("AuthFailure.InvalidAuthorization"),
        "{body}"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn aliyun_verifies_the_method_that_was_signed() {
    let sandbox = start().await;
    let now = aliyun_timestamp(Utc::now());
    let signed_for_post = aliyun_form(&now, "nonce-get-1", "sandbox-aliyun-secret");
    let r = reqwest::Client::new()
        .get(format!("{}/?{signed_for_post}", sandbox.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["Code"].as_str(),
        Some("SignatureDoesNotMatch"),
        "{body}"
    );
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn tencent_refuses_a_signature_older_than_five_minutes() {
    use sms_providers::http::sign::{TC3_CONTENT_TYPE, Tc3Input, tc3_sign};
    let sandbox = start().await;
    let host = sandbox.local_addr().to_string();
    let stale = Utc::now().timestamp() - 600;
    let payload =
        r#"{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400000000","TemplateId":"1"}"#;
    let signed = tc3_sign(&Tc3Input {
        secret_id: "AKIDsandbox",
        secret_key: "sandbox-tencent-key",
        service: "sms",
        host: &host,
        timestamp: stale,
        payload,
    });
    let r = reqwest::Client::new()
        .post(format!("{}/", sandbox.base_url()))
        .header("content-type", TC3_CONTENT_TYPE)
        .header("authorization", signed.authorization)
        .header("x-tc-action", "SendSms")
        .header("x-tc-version", "2021-01-11")
        .header("x-tc-region", "ap-guangzhou")
        .header("x-tc-timestamp", stale.to_string())
        .body(payload)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["Response"]["Error"]["Code"].as_str(),
        Some("AuthFailure.SignatureExpire"),
        "{body}"
    );
    sandbox.stop().await.unwrap();
}

/// Arguments joined with a separator would split or merge when an argument holds it, and
/// arguments passed through a map would lose their order. Every vendor must deliver the
/// arguments intact and in order, whatever they contain.
#[tokio::test]
async fn arguments_reach_every_vendor_intact_and_in_order() {
    use sms_providers::http::{CloopenVendor, TencentVendor};
    let sandbox = start().await;
    let args = [
        "z-last-alphabetically",
        "a###b",
        "x;y,z",
        "",
        "\"quoted\"",
        "验证码 😀",
    ];
    let message = sms(&args, &["+8613800138000"]);
    TencentVendor::new(sandbox.tencent_config())
        .unwrap()
        .send(&message)
        .await
        .unwrap();
    CloopenVendor::new(sandbox.cloopen_config())
        .unwrap()
        .send(&message)
        .await
        .unwrap();
    // Aliyun's variables are named; names in alphabetical order make the sandbox's
    // name-ordered record comparable (it approves any template, so it knows no order).
    let named = mapped(
        message,
        "SMS_123",
        &["a", "b", "c", "d", "e", "f"],
        None,
        None,
    );
    AliyunVendor::new(sandbox.aliyun_config())
        .unwrap()
        .send(&named)
        .await
        .unwrap();
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 3);
    for d in delivered {
        assert_eq!(d.args, args, "{}", d.vendor);
    }
    sandbox.stop().await.unwrap();
}

/// The gateway's catalogue, which the sandbox's routes approve.
fn catalogue() -> Templates {
    serde_json::from_value(json!({
        "login_code": {
            "text": "您的验证码是{1}，{2}分钟内有效。",
            "vendors": {
                // Template order differs from name order, to see which one is kept.
                "aliyun": {"id": "SMS_1", "params": ["vcode", "minutes"]},
                "tencent": {"id": "1001"},
                "cloopen": {"id": "9001"},
            }
        }
    }))
    .unwrap()
}

async fn start_strict() -> SandboxHandle {
    start_with(SandboxConfig {
        templates: catalogue(),
        ..SandboxConfig::default()
    })
    .await
}

/// `login_code` as the gateway hands it to `vendor`.
fn login_code(vendor: &str, args: &[&str], recipients: &[&str]) -> OutboundSms {
    let request = SmsRequest::new("login_code", args.iter().copied(), recipients).unwrap();
    catalogue()
        .outbound(MessageId::new(), &request, &VendorId::new(vendor).unwrap())
        .unwrap()
}

fn adapter(sandbox: &SandboxHandle, vendor: &str) -> Box<dyn Vendor> {
    match vendor {
        "aliyun" => Box::new(AliyunVendor::new(sandbox.aliyun_config()).unwrap()),
        "tencent" => Box::new(TencentVendor::new(sandbox.tencent_config()).unwrap()),
        _ => Box::new(CloopenVendor::new(sandbox.cloopen_config()).unwrap()),
    }
}

fn code_of(result: Result<sms_core::Receipt, VendorError>) -> (String, String) {
    match result {
        Err(VendorError::Misconfigured { code, .. }) => ("misconfigured".into(), code),
        Err(VendorError::RecipientRefused { code, .. }) => ("recipient_refused".into(), code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// What production sees: the real adapters against each route, each refusal in the
/// kind and code the vendor's answer maps to.
#[tokio::test]
async fn each_route_refuses_what_its_vendor_has_not_approved_and_numbers_over_a_limit() {
    let sandbox = start_strict().await;
    // (vendor, unknown template, signature, wrong count, second send within the window)
    let cases = [
        (
            "aliyun",
            "isv.SMS_TEMPLATE_ILLEGAL",
            Some("isv.SMS_SIGNATURE_ILLEGAL"),
            "isv.TEMPLATE_MISSING_PARAMETERS",
            "isv.BUSINESS_LIMIT_CONTROL",
        ),
        (
            "tencent",
            "FailedOperation.TemplateIncorrectOrUnapproved",
            Some("FailedOperation.SignatureIncorrectOrUnapproved"),
            "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
            "LimitExceeded.PhoneNumberThirtySecondLimit",
        ),
        ("cloopen", "160032", None, "160032", "160038"),
    ];
    for (vendor, template, signature, count, limit) in cases {
        let client = adapter(&sandbox, vendor);
        let ok = login_code(vendor, &["1234", "5"], &["+8613800138000"]);
        let misconfigured = |code: &str| ("misconfigured".to_owned(), code.to_owned());
        let mut unknown = ok.clone();
        unknown.template.id = "404".into();
        assert_eq!(
            code_of(client.send(&unknown).await),
            misconfigured(template)
        );
        let mut unsigned = ok.clone();
        unsigned.template.sign_name = Some("未批准".into());
        if let Some(code) = signature {
            assert_eq!(code_of(client.send(&unsigned).await), misconfigured(code));
        }
        let short = login_code(vendor, &["1234"], &["+8613800138000"]);
        assert_eq!(code_of(client.send(&short).await), misconfigured(count));
        // None of the refused sends counted against the number.
        client.send(&ok).await.unwrap();
        let again = client.send(&ok).await;
        assert_eq!(code_of(again), ("recipient_refused".into(), limit.into()));
    }
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 3);
    // Aliyun's named arguments are recorded in the approved template's order.
    assert_eq!(delivered[0].vendor, "aliyun");
    assert_eq!(delivered[0].args, ["1234", "5"]);
    assert_eq!(delivered[0].template, "SMS_1");
    sandbox.stop().await.unwrap();
}

async fn post_tencent(sandbox: &SandboxHandle, payload: &Value) -> Value {
    let host = sandbox.local_addr().to_string();
    let timestamp = Utc::now().timestamp();
    let payload = payload.to_string();
    let signed = tc3_sign(&Tc3Input {
        secret_id: "AKIDsandbox",
        secret_key: "sandbox-tencent-key",
        service: "sms",
        host: &host,
        timestamp,
        payload: &payload,
    });
    let r = reqwest::Client::new()
        .post(format!("{}/", sandbox.base_url()))
        .header("content-type", TC3_CONTENT_TYPE)
        .header("authorization", signed.authorization)
        .header("x-tc-action", "SendSms")
        .header("x-tc-version", "2021-01-11")
        .header("x-tc-region", "ap-guangzhou")
        .header("x-tc-timestamp", timestamp.to_string())
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "Tencent answers errors with HTTP 200 too");
    r.json().await.unwrap()
}

fn tencent_body(numbers: &[&str], template: &str, sign: &str, params: &[&str]) -> Value {
    json!({
        "PhoneNumberSet": numbers,
        "SmsSdkAppId": "1400000000",
        "TemplateId": template,
        "SignName": sign,
        "TemplateParamSet": params,
    })
}

#[tokio::test]
async fn tencent_answers_each_number_with_its_code_and_fee() {
    let sandbox = start_strict().await;
    // 【Sandbox】 (9) + 您的验证码是 (6) + 47 + ，5分钟内有效。 (8) = 70: one segment; one
    // more character makes two, as Tencent bills mainland numbers.
    let (fits, over) = ("1".repeat(47), "1".repeat(48));
    let answer = post_tencent(
        &sandbox,
        &tencent_body(&["+8613800138000"], "1001", "Sandbox", &[&fits, "5"]),
    )
    .await;
    let status = &answer["Response"]["SendStatusSet"][0];
    assert_eq!(
        (status["Code"].as_str(), status["Fee"].as_u64()),
        (Some("Ok"), Some(1)),
        "{answer}"
    );
    // One number just had this content, the other not: each is answered on its own.
    let answer = post_tencent(
        &sandbox,
        &tencent_body(
            &["+8613800138001", "+8613800138000"],
            "1001",
            "Sandbox",
            &[&fits, "5"],
        ),
    )
    .await;
    let statuses = &answer["Response"]["SendStatusSet"];
    assert_eq!(statuses[0]["Code"], "Ok", "{answer}");
    assert_eq!(
        statuses[1]["Code"],
        "LimitExceeded.PhoneNumberThirtySecondLimit"
    );
    assert_eq!(statuses[1]["Fee"], 0);
    assert_eq!(statuses[1]["PhoneNumber"], "+8613800138000");
    let answer = post_tencent(
        &sandbox,
        &tencent_body(&["+8613800138002"], "1001", "Sandbox", &[&over, "5"]),
    )
    .await;
    assert_eq!(answer["Response"]["SendStatusSet"][0]["Fee"], 2, "{answer}");
    // Template and signature problems are the request's: `Response.Error`.
    for (template, sign, code) in [
        (
            "1002",
            "Sandbox",
            "FailedOperation.TemplateIncorrectOrUnapproved",
        ),
        (
            "1001",
            "Other",
            "FailedOperation.SignatureIncorrectOrUnapproved",
        ),
    ] {
        let answer = post_tencent(
            &sandbox,
            &tencent_body(&["+8613800138003"], template, sign, &["1", "5"]),
        )
        .await;
        assert_eq!(answer["Response"]["Error"]["Code"], code, "{answer}");
        assert!(answer["Response"]["SendStatusSet"].is_null(), "{answer}");
    }
    assert_eq!(sandbox.deliveries().len(), 3);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn tencents_fee_reaches_the_receipt_as_its_own_count() {
    let sandbox = start_strict().await;
    let long = "码".repeat(100);
    let sms = login_code("tencent", &[&long, "5"], &["+8613800138000"]);
    let receipt = adapter(&sandbox, "tencent").send(&sms).await.unwrap();
    // 9 + 6 + 100 + 8 = 123 characters: two segments, counted alike on both sides.
    assert_eq!(receipt.reported_billed, Some(2));
    assert_eq!(receipt.billed_messages, 2);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn aliyun_answers_its_checks_in_its_code_and_message_shape() {
    let sandbox = start_strict().await;
    let now = aliyun_timestamp(Utc::now());
    let secret = "sandbox-aliyun-secret";
    let template = [("TemplateCode", "SMS_1"), ("SignName", "Sandbox")];
    type Change<'a> = &'a [(&'static str, &'a str)];
    let cases: [(&str, Change<'_>, &str); 3] = [
        (
            "n1",
            &[("TemplateCode", "SMS_2")],
            "isv.SMS_TEMPLATE_ILLEGAL",
        ),
        ("n2", &[("SignName", "Other")], "isv.SMS_SIGNATURE_ILLEGAL"),
        (
            "n3",
            &[("TemplateParam", r#"{"vcode":"1","minutes":"5","x":"y"}"#)],
            "isv.TEMPLATE_PARAMS_ILLEGAL",
        ),
    ];
    for (nonce, change, code) in cases {
        let changes: Vec<(&'static str, &str)> = template.iter().chain(change).copied().collect();
        let (status, answer) = post_form(
            &sandbox.base_url(),
            aliyun_form_with(&now, nonce, secret, &changes),
        )
        .await;
        assert_eq!(
            (status, answer["Code"].as_str()),
            (200, Some(code)),
            "{answer}"
        );
        assert!(answer["Message"].is_string() && answer["RequestId"].is_string());
    }
    let ok: Vec<(&'static str, &str)> = template
        .iter()
        .copied()
        .chain([("TemplateParam", r#"{"minutes":"5","vcode":"1234"}"#)])
        .collect();
    let (_, answer) = post_form(
        &sandbox.base_url(),
        aliyun_form_with(&now, "n4", secret, &ok),
    )
    .await;
    assert_eq!(answer["Code"], "OK", "{answer}");
    let (_, answer) = post_form(
        &sandbox.base_url(),
        aliyun_form_with(&now, "n5", secret, &ok),
    )
    .await;
    assert_eq!(answer["Code"], "isv.BUSINESS_LIMIT_CONTROL", "{answer}");
    assert_eq!(answer["Message"], "触发分钟级流控Permits:1");
    assert_eq!(sandbox.deliveries()[0].args, ["1234", "5"]);
    sandbox.stop().await.unwrap();
}

async fn post_cloopen(sandbox: &SandboxHandle, body: &Value) -> Value {
    let sid = "sandboxaccountsid";
    let timestamp = cloopen_timestamp(Utc::now());
    let sig = cloopen_sig(sid, "sandbox-cloopen-token", &timestamp);
    reqwest::Client::new()
        .post(format!(
            "{}/2013-12-26/Accounts/{sid}/SMS/TemplateSMS?sig={sig}",
            sandbox.base_url()
        ))
        .header("authorization", cloopen_authorization(sid, &timestamp))
        .header("content-type", "application/json;charset=utf-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn cloopen_answers_its_checks_in_its_status_code_shape() {
    let sandbox = start_strict().await;
    let body = |to: &str, template: &str, datas: &[&str]| json!({"to": to, "appId": "sandboxapp", "templateId": template, "datas": datas});
    for request in [
        body("13800138000", "9002", &["1", "5"]),
        body("13800138000", "9001", &["1"]),
    ] {
        let answer = post_cloopen(&sandbox, &request).await;
        assert_eq!(answer["statusCode"], "160032", "{answer}");
        assert!(answer["statusMsg"].is_string());
    }
    let ok = post_cloopen(&sandbox, &body("13800138000", "9001", &["1", "5"])).await;
    assert_eq!(ok["statusCode"], "000000", "{ok}");
    // One number within its minute stops the whole request.
    let answer = post_cloopen(
        &sandbox,
        &body("13800138001,13800138000", "9001", &["2", "5"]),
    )
    .await;
    assert_eq!(answer["statusCode"], "160038", "{answer}");
    assert_eq!(sandbox.deliveries().len(), 1);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn per_number_limits_can_be_switched_off_and_an_empty_catalogue_approves_anything() {
    let sandbox = start_with(SandboxConfig {
        per_number_limits: false,
        ..SandboxConfig::default()
    })
    .await;
    for vendor in ["aliyun", "tencent", "cloopen"] {
        let client = adapter(&sandbox, vendor);
        let any = sms(&["1", "2", "3"], &["+8613800138000"]);
        for _ in 0..3 {
            if let Err(e) = client.send(&any).await {
                panic!("{vendor}: {e:?}");
            }
        }
    }
    assert_eq!(sandbox.deliveries().len(), 9);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn windows_are_on_by_default_and_refuse_the_recipient_for_the_window() {
    let sandbox = start().await;
    let client = adapter(&sandbox, "aliyun");
    let any = sms(&["1"], &["+8613800138000"]);
    client.send(&any).await.unwrap();
    match client.send(&any).await {
        Err(VendorError::RecipientRefused { retry_after, .. }) => {
            assert_eq!(retry_after, Duration::from_secs(60))
        }
        other => panic!("expected RecipientRefused, got {other:?}"),
    }
    sandbox.stop().await.unwrap();
}
