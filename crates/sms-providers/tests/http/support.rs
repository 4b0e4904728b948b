//! Starting a sandbox and building messages.

use chrono::Utc;
use sms_core::{MessageId, OutboundSms, SmsRequest, VendorTemplate};
use sms_providers::http::sign::{
    TC3_CONTENT_TYPE, Tc3Input, aliyun_canonical_query, aliyun_signature, aliyun_timestamp,
    percent_encode, tc3_sign,
};
use sms_providers::sandbox::{SandboxConfig, SandboxHandle, serve};
use tokio::net::TcpListener;

/// A sandbox with the default credentials on an ephemeral loopback port.
pub async fn start() -> SandboxHandle {
    start_with(SandboxConfig::default()).await
}

/// A sandbox with `config` on an ephemeral loopback port.
pub async fn start_with(config: SandboxConfig) -> SandboxHandle {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    serve(listener, config).await.expect("sandbox starts")
}

/// A message with `args` to `recipients`, passed through as template `SMS_123` (no
/// catalogue: the vendor gets the caller's template name, no text is known).
pub fn sms<A: AsRef<str>>(args: &[&str], recipients: &[A]) -> OutboundSms {
    let recipients: Vec<&str> = recipients.iter().map(AsRef::as_ref).collect();
    OutboundSms::pass_through(
        MessageId::new(),
        SmsRequest::new("SMS_123", args.iter().copied(), recipients).expect("valid request"),
    )
}

/// `sms` as a catalogue maps it: the vendor's template `id` with Aliyun's variable
/// `params`, an optional signature of the template's own, and the rendered `text`.
pub fn mapped(
    sms: OutboundSms,
    id: &str,
    params: &[&str],
    sign_name: Option<&str>,
    text: Option<String>,
) -> OutboundSms {
    OutboundSms {
        template: VendorTemplate {
            id: id.to_owned(),
            params: params.iter().map(|p| (*p).to_owned()).collect(),
            sign_name: sign_name.map(str::to_owned),
        },
        text,
        ..sms
    }
}

/// `count` distinct mainland mobile numbers.
pub fn mobiles(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("+86139{i:08}")).collect()
}

/// A loopback address where nothing listens (bound, then released).
pub async fn dead_base_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/")
}

/// Calls Aliyun's `action` on `sandbox` with `params`, signed by hand with the default
/// credentials and a fresh nonce: the HTTP status and the JSON answer.
pub async fn aliyun_call(
    sandbox: &SandboxHandle,
    action: &str,
    params: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let timestamp = aliyun_timestamp(Utc::now());
    let nonce = format!("{:032x}", rand::random::<u128>());
    let mut all: Vec<(&str, &str)> = vec![
        ("AccessKeyId", "sandbox-aliyun-id"),
        ("Action", action),
        ("Format", "JSON"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", &nonce),
        ("SignatureVersion", "1.0"),
        ("Timestamp", &timestamp),
        ("Version", "2017-05-25"),
    ];
    all.extend_from_slice(params);
    let signature = aliyun_signature("POST", &all, "sandbox-aliyun-secret");
    let body = format!(
        "{}&Signature={}",
        aliyun_canonical_query(&all),
        percent_encode(&signature)
    );
    let r = reqwest::Client::new()
        .post(format!("{}/", sandbox.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Calls Tencent's `action` on `sandbox` with the JSON `payload`, signed by hand with the
/// default credentials: the JSON answer (Tencent answers errors with HTTP 200 too).
pub async fn tencent_call(
    sandbox: &SandboxHandle,
    action: &str,
    payload: &str,
) -> serde_json::Value {
    let host = sandbox.local_addr().to_string();
    let timestamp = Utc::now().timestamp();
    let signed = tc3_sign(&Tc3Input {
        secret_id: "AKIDsandbox",
        secret_key: "sandbox-tencent-key",
        service: "sms",
        host: &host,
        timestamp,
        payload,
    });
    let r = reqwest::Client::new()
        .post(format!("{}/", sandbox.base_url()))
        .header("content-type", TC3_CONTENT_TYPE)
        .header("authorization", signed.authorization)
        .header("x-tc-action", action)
        .header("x-tc-version", "2021-01-11")
        .header("x-tc-region", "ap-guangzhou")
        .header("x-tc-timestamp", timestamp.to_string())
        .body(payload.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "Tencent answers errors with HTTP 200 too");
    r.json().await.unwrap()
}
