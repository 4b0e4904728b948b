//! The gateway with the three real HTTP adapters against a sandbox as strict as the real
//! vendors: each approves only its own template ids and signature, limits how often one
//! number gets a message, and bills per segment.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sms_providers::sandbox::Delivery;

use crate::real_vendors::{Sandbox, free_port, sandbox_vendors, start_sandbox};
use crate::server::{Backends, Server};

/// Three real vendors with their own signatures, and templates mapped to each; the
/// sandbox approves exactly this. `limit` is the gateway's `[limit]` table.
fn gateway_config(base: &str, limit: &str) -> String {
    let vendors = sandbox_vendors(base, ["阿里云测试", "腾讯云测试"]);
    format!(
        r#"{vendors}
[limit]
{limit}

[templates.login_code]
text = "您的验证码是{{1}}，5分钟内有效。"
vendors.aliyun = {{ id = "SMS_154950909", params = ["code"] }}
vendors.tencent = {{ id = "1860001" }}
vendors.cloopen = {{ id = "9001", sign_name = "容联云测试" }}

[templates.long_notice]
text = "{{1}}"
vendors.aliyun = {{ id = "SMS_154950910", params = ["body"] }}
"#
    )
}

/// A sandbox and a gateway on one configuration.
async fn start(limit: &str) -> (tempfile::TempDir, Sandbox, Server) {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let config = gateway_config(&format!("http://127.0.0.1:{port}"), limit);
    let sandbox = start_sandbox(dir.path(), port, Some(&config)).await;
    let server = Server::start(&Backends::Embedded, &config).await;
    (dir, sandbox, server)
}

fn deliveries(dir: &tempfile::TempDir) -> Vec<Delivery> {
    std::fs::read_to_string(dir.path().join("sandbox.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a delivery"))
        .collect()
}

fn login(code: &str, to: &str) -> Value {
    json!({ "template": "login_code", "args": [code], "recipients": [to] })
}

async fn vendors(server: &Server) -> Value {
    server.get("/v1/vendors").await.json().await.expect("json")
}

async fn wait_sent(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m: Value = server
            .get(&format!("/v1/messages/{id}"))
            .await
            .json()
            .await
            .unwrap_or(Value::Null);
        if m["status"] == "sent" {
            return m;
        }
        assert_ne!(m["status"], "dead", "{m}\n{}", server.log());
        assert!(
            Instant::now() < deadline,
            "message {id} not sent: {m}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failover_reaches_the_backup_with_its_own_template_parameters_and_signature() {
    let (dir, sandbox, server) = start("").await;
    let r = server
        .post("/v1/messages", login("111111", "+8613800000301"))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", server.log());

    let r = reqwest::Client::new()
        .put(format!("{}/_control/aliyun", sandbox.base))
        .json(&json!({ "outage": true }))
        .send()
        .await
        .expect("control");
    assert!(r.status().is_success());

    let mut ids = Vec::new();
    for i in 0..8 {
        let r = server
            .post(
                "/v1/messages",
                login(&format!("2222{i:02}"), &format!("+86138000004{i:02}")),
            )
            .await;
        let code = r.status();
        let body: Value = r.json().await.expect("json");
        assert!(
            code == StatusCode::OK || code == StatusCode::ACCEPTED,
            "no message is rejected: {code} {body}\n{}",
            server.log()
        );
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let m = wait_sent(&server, id).await;
        assert_eq!(m["vendor"], "tencent", "{m}");
    }
    let delivered = deliveries(&dir);
    let aliyun: Vec<&Delivery> = delivered.iter().filter(|d| d.vendor == "aliyun").collect();
    assert_eq!(aliyun.len(), 1);
    assert_eq!(aliyun[0].template, "SMS_154950909");
    assert_eq!(aliyun[0].args, ["111111"]);
    assert_eq!(aliyun[0].sign_name.as_deref(), Some("阿里云测试"));
    let tencent: Vec<&Delivery> = delivered.iter().filter(|d| d.vendor == "tencent").collect();
    assert_eq!(tencent.len(), 8, "one delivery per message: {delivered:?}");
    for (i, d) in tencent.iter().enumerate() {
        assert_eq!(d.template, "1860001");
        assert_eq!(d.sign_name.as_deref(), Some("腾讯云测试"));
        assert!(d.args[0].starts_with("2222"), "{d:?} ({i})");
    }
    let stats: Value = server.get("/v1/queue").await.json().await.expect("json");
    assert_eq!(stats["dead"], 0, "{stats}");
    assert!(server.stop().success());
}

#[tokio::test]
async fn a_vendors_per_number_limit_is_answered_without_a_switch_or_another_vendor() {
    // The gateway's own recipient windows are off, so the vendor's limit is met.
    let (dir, _sandbox, server) = start("recipient_windows = []").await;
    let to = "+8613800000501";
    let r = server.post("/v1/messages", login("123456", to)).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", server.log());

    let r = server.post("/v1/messages", login("654321", to)).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        server.log()
    );
    assert_eq!(r.headers()["retry-after"], "60");
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["error"]["code"], "recipient_refused_by_vendor",
        "{body}"
    );
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("isv.BUSINESS_LIMIT_CONTROL"), "{message}");

    // A keyed request is stored first: it waits for the window, pinned to aliyun.
    let keyed = json!({
        "template": "login_code", "args": ["777777"], "recipients": [to],
        "idempotency_key": "per-number-1",
    });
    let r = server.post("/v1/messages", keyed).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", server.log());
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["reason"], "recipient_refused", "{body}");

    let v = vendors(&server).await;
    assert_eq!(v["current"], "aliyun", "no switch: {v}");
    assert_eq!(v["vendors"][0]["consecutive_failures"], 0, "{v}");
    let to_number: Vec<Delivery> = deliveries(&dir)
        .into_iter()
        .filter(|d| d.recipient == to)
        .collect();
    assert_eq!(to_number.len(), 1, "{to_number:?}");
    assert_eq!(to_number[0].vendor, "aliyun");
    assert!(server.stop().success());
}

#[tokio::test]
async fn a_hundred_character_chinese_message_bills_two() {
    let (_dir, _sandbox, server) = start("").await;
    let billed = |v: &Value| {
        v["vendors"][0]["billed_this_period"]
            .as_u64()
            .expect("billed")
    };
    let before = billed(&vendors(&server).await);
    // 【阿里云测试】 is 7 characters; with 93 more the text is 100.
    let body = "验".repeat(93);
    let r = server
        .post(
            "/v1/messages",
            json!({ "template": "long_notice", "args": [body], "recipients": ["+8613800000601"] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", server.log());
    assert_eq!(billed(&vendors(&server).await) - before, 2);
    // And in the ledger, which the gateway writes within milliseconds.
    let store = sms_store::sqlite::SqliteStore::open(server.dir.path().join("gateway.db"))
        .await
        .expect("the gateway's store");
    let period = sms_core::BillingPeriod::containing(
        chrono::Utc::now(),
        chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8"),
    );
    let aliyun = sms_core::VendorId::new("aliyun").expect("a name");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let totals = sms_core::UsageLedger::totals(&store, &period)
            .await
            .expect("totals");
        if totals.get(&aliyun).copied() == Some(before + 2) {
            break;
        }
        assert!(Instant::now() < deadline, "ledger: {totals:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.stop().success());
}
