//! The sandbox itself: its control endpoint, its delivery log, and the checks a
//! hand-made request meets (replayed nonce, stale timestamp).

use chrono::{Duration as ChronoDuration, Utc};
use sms_core::Vendor;
use sms_providers::http::AliyunVendor;
use sms_providers::http::sign::{
    aliyun_canonical_query, aliyun_signature, aliyun_timestamp, percent_encode,
};
use sms_providers::sandbox::{Delivery, FaultControls, SandboxConfig, SandboxVendor};

use crate::support::{sms, start, start_with};

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
    let params = [
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
    let mut aliyun_config = sandbox.aliyun_config();
    // Aliyun's variables are named; names in alphabetical order make the sandbox's
    // name-ordered record comparable.
    aliyun_config.template_params.insert(
        "SMS_123".into(),
        ["a", "b", "c", "d", "e", "f"].map(String::from).to_vec(),
    );
    AliyunVendor::new(aliyun_config)
        .unwrap()
        .send(&message)
        .await
        .unwrap();
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 3);
    for d in delivered {
        assert_eq!(d.args, args, "{}", d.vendor);
    }
    sandbox.stop().await.unwrap();
}
