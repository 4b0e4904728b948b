//! Delivery receipts over HTTP, one test per vendor format: a message goes out through
//! the vendor, the vendor's receipt push (in its documented format) settles it, and
//! `GET /v1/messages/{id}` shows the recipient delivered or not. The same push again
//! changes nothing; a push for an id the gateway never sent is answered (so that the
//! vendor stops) and counted as kept; a wrong secret is 404 and a body that is not a
//! receipt 400, neither changing anything.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::VENDORS;
use crate::server::{Backends, Server};

const SECRET: &str = "receipt-secret-0123456789";
/// What a send the sandbox settles on its own may read when first seen.
const SETTLED: &[&str] = &["sent", "delivered"];

/// The three simulated vendors, each with a receipt secret.
fn config() -> String {
    format!(
        "{VENDORS}\n[receipts]\nsecrets = {{ aliyun = \"{SECRET}-a\", tencent = \"{SECRET}-t\", \
         cloopen = \"{SECRET}-c\" }}\n"
    )
}

/// Sends to `number` through `vendor` (the others disabled); the message id and the
/// vendor's id for the send, once recorded. `settled` are the statuses the recipient
/// may already have when first read: `["sent"]` where only the test pushes receipts,
/// also `"delivered"` where a sandbox settles sends on its own and may be quicker
/// than the first read.
async fn send_through(
    server: &Server,
    vendor: &str,
    number: &str,
    settled: &[&str],
) -> (String, String) {
    for other in ["aliyun", "tencent", "cloopen"] {
        let action = if other == vendor { "enable" } else { "disable" };
        let r = server
            .post(&format!("/v1/vendors/{other}/{action}"), json!({}))
            .await;
        assert!(r.status().is_success(), "{action} {other}: {}", r.status());
    }
    let r = server
        .post(
            "/v1/messages",
            json!({"template": "SMS_LOGIN", "args": ["123456"], "recipients": [number]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let sent: Value = r.json().await.unwrap();
    assert_eq!(sent["vendor"], vendor);
    let id = sent["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let message = message(server, &id).await;
        if let Some(recipient) = message["recipients"].as_array().and_then(|r| r.first()) {
            let status = recipient["status"].as_str().unwrap_or_default();
            assert!(settled.contains(&status), "{recipient}");
            assert_eq!(recipient["vendor"], vendor);
            let masked = recipient["recipient"].as_str().unwrap();
            assert!(
                masked.contains('*') && !masked.contains(&number[3..]),
                "{masked}"
            );
            return (
                id,
                recipient["vendor_message_id"].as_str().unwrap().to_owned(),
            );
        }
        assert!(Instant::now() < deadline, "send not recorded: {message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn message(server: &Server, id: &str) -> Value {
    server
        .get(&format!("/v1/messages/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// Pushes `body` to `vendor`'s receipt address with `secret`, as the vendor would
/// (no bearer token).
async fn push(server: &Server, vendor: &str, secret: &str, body: String) -> reqwest::Response {
    server
        .client
        .post(server.url(&format!("/v1/receipts/{vendor}/{secret}")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// What `/metrics` says now.
async fn metrics(server: &Server) -> String {
    server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `sms_receipts_total` count for these labels.
async fn receipts_counted(server: &Server, vendor: &str, outcome: &str) -> u64 {
    metrics(server)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("sms_receipts_total{")
                && l.contains(&format!("vendor=\"{vendor}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs the common checks for one vendor: `receipt(vendor_id)` is its push settling the
/// send; `ack` is what its answer must contain; `state` what the recipient becomes.
async fn settles_once(
    vendor: &str,
    number: &str,
    receipt: impl Fn(&str) -> String,
    ack: &str,
    state: &str,
    code: &str,
) {
    let server = Server::start(&Backends::Embedded, &config()).await;
    let secret = format!("{SECRET}-{}", &vendor[..1]);
    let (id, vendor_id) = send_through(&server, vendor, number, &["sent"]).await;

    // A wrong secret, another vendor's secret, and a body that is no receipt change
    // nothing.
    assert_eq!(
        push(
            &server,
            vendor,
            "wrong-secret-0123456789",
            receipt(&vendor_id)
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    let others = if vendor == "aliyun" {
        "tencent"
    } else {
        "aliyun"
    };
    let other_secret = format!("{SECRET}-{}", &others[..1]);
    assert_eq!(
        push(&server, vendor, &other_secret, receipt(&vendor_id))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let bad = push(&server, vendor, &secret, "{not json".into()).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let error: Value = bad.json().await.unwrap();
    assert_eq!(error["error"]["field"], "body", "{error}");
    assert_eq!(
        message(&server, &id).await["recipients"][0]["status"],
        "sent"
    );

    // The receipt settles the recipient; the answer is what the vendor expects.
    let r = push(&server, vendor, &secret, receipt(&vendor_id)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer = r.text().await.unwrap();
    assert!(answer.contains(ack), "{answer}");
    let settled = message(&server, &id).await["recipients"][0].clone();
    assert_eq!(settled["status"], state, "{settled}");
    assert_eq!(settled["code"], code, "{settled}");
    assert!(settled["receipt_at"].is_string(), "{settled}");
    assert_eq!(receipts_counted(&server, vendor, "applied").await, 1);
    let text = metrics(&server).await;
    let rate = if state == "delivered" { "1.0" } else { "0.0" };
    assert!(
        text.contains(&format!("sms_delivery_rate{{vendor=\"{vendor}\"}} {rate}")),
        "{text}"
    );

    // The same push again: answered the same, nothing changes.
    let again = push(&server, vendor, &secret, receipt(&vendor_id)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.text().await.unwrap().contains(ack));
    assert_eq!(message(&server, &id).await["recipients"][0], settled);
    assert_eq!(receipts_counted(&server, vendor, "duplicate").await, 1);

    // An id this gateway never sent: answered, so that the vendor stops, and kept.
    let unknown = push(&server, vendor, &secret, receipt("no-such-send-id")).await;
    assert_eq!(unknown.status(), StatusCode::OK);
    assert_eq!(receipts_counted(&server, vendor, "kept").await, 1);
    assert_eq!(message(&server, &id).await["recipients"][0], settled);
}

#[tokio::test]
async fn aliyun_sms_reports_settle_the_recipient_once() {
    settles_once(
        "aliyun",
        "+8613800001001",
        |biz_id| {
            json!([{
                "phone_number": "13800001001",
                "send_time": "2026-12-05 10:00:00",
                "report_time": "2026-12-05 10:00:05",
                "success": true,
                "err_code": "DELIVERED",
                "err_msg": "用户接收成功",
                "sms_size": "1",
                "biz_id": biz_id,
                "out_id": "",
            }])
            .to_string()
        },
        "\"code\":0",
        "delivered",
        "DELIVERED",
    )
    .await;
}

#[tokio::test]
async fn tencent_status_callbacks_settle_the_recipient_once() {
    settles_once(
        "tencent",
        "+8613800001002",
        |sid| {
            json!([{
                "user_receive_time": "2026-12-05 10:00:05",
                "nationcode": "86",
                "mobile": "13800001002",
                "report_status": "FAIL",
                "errmsg": "MK:0001",
                "description": "用户手机号空号",
                "sid": sid,
            }])
            .to_string()
        },
        "\"result\":0",
        "undelivered",
        "MK:0001",
    )
    .await;
}

#[tokio::test]
async fn cloopen_status_reports_settle_the_recipient_once() {
    settles_once(
        "cloopen",
        "+8613800001003",
        |sid| {
            json!({"Request": {
                "action": "SMSArrived",
                "smsType": "1",
                "apiVersion": "2013-12-26",
                "content": sid,
                "fromNum": "13800001003",
                "dateSent": "20261205100000",
                "deliverCode": "DELIVRD",
                "recvTime": "20261205100005",
                "status": "0",
                "reqId": "",
            }})
            .to_string()
        },
        "000000",
        "delivered",
        "DELIVRD",
    )
    .await;
}

#[tokio::test]
async fn a_vendor_without_a_secret_has_no_receipt_endpoint() {
    let server = Server::start(&Backends::Embedded, VENDORS).await;
    let r = push(&server, "aliyun", SECRET, "[]".into()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_sends_to_one_number_are_listed_newest_first_and_masked() {
    let config = "[vendors.aliyun]\nsimulation = { latency_ms = 1, per_number_limits = false }\n\
                  [limit]\nrecipient_windows = [{ limit = 10, window_s = 60 }]\n";
    let server = Server::start(&Backends::Embedded, config).await;
    let number = "+8613800001009";
    let mut ids = Vec::new();
    for code in ["111111", "222222"] {
        let r = server
            .post(
                "/v1/messages",
                json!({"template": "SMS_LOGIN", "args": [code], "recipients": [number, "+8613800001010"]}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let sent: Value = r.json().await.unwrap();
        ids.push(sent["id"].as_str().unwrap().to_owned());
    }
    let path = "/v1/messages?recipient=%2B8613800001009";
    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let r = server.get(path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let listed: Value = r.json().await.unwrap();
        if listed["messages"].as_array().unwrap().len() == 2 {
            break listed;
        }
        assert!(Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let messages = listed["messages"].as_array().unwrap();
    let listed_ids: Vec<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        listed_ids,
        [ids[1].as_str(), ids[0].as_str()],
        "newest first"
    );
    for m in messages {
        assert_eq!(m["status"], "sent");
        assert_eq!(m["vendor"], "aliyun");
        assert_eq!(m["recipient"], "+86138****1009");
    }
    assert!(!listed.to_string().contains("13800001009"), "{listed}");
    let one: Value = server
        .get(&format!("{path}&limit=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["messages"].as_array().unwrap().len(), 1);
    let later: Value = server
        .get(&format!("{path}&since=2999-01-01T00:00:00Z"))
        .await
        .json()
        .await
        .unwrap();
    assert!(later["messages"].as_array().unwrap().is_empty());

    for (query, field) in [
        ("", "recipient"),
        ("?recipient=13800001009", "recipient"),
        ("?recipient=%2B8613800001009&since=yesterday", "since"),
        ("?recipient=%2B8613800001009&limit=0", "limit"),
        ("?recipient=%2B8613800001009&limit=501", "limit"),
    ] {
        let r = server.get(&format!("/v1/messages{query}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"]["field"], field, "{query}: {error}");
    }
}

#[tokio::test]
async fn serve_switches_away_from_a_vendor_whose_receipts_say_undelivered() {
    let config = format!(
        "[failover]\ncooldown_s = 600\nreceipt_window = 50\n\
         [vendors.aliyun]\norder = 0\nsimulation = {{ latency_ms = 1, per_number_limits = false, delivery_rate = 0.3, receipt_delay_ms = 20 }}\n\
         [vendors.tencent]\norder = 1\nsimulation = {{ latency_ms = 1, per_number_limits = false, receipt_delay_ms = 20 }}\n\
         [limit]\nrecipient_windows = [{{ limit = 10, window_s = 60 }}]\n\
         [receipts]\nsecrets = {{ aliyun = \"{SECRET}-a\", tencent = \"{SECRET}-t\" }}\n"
    );
    let server = Server::start(&Backends::Embedded, &config).await;
    let mut first = None;
    for i in 0..80 {
        let r = server
            .post(
                "/v1/messages",
                json!({"template": "SMS_LOGIN", "args": ["123456"], "recipients": [format!("+86139{i:08}")]}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let sent: Value = r.json().await.unwrap();
        first.get_or_insert(sent["id"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let vendors = loop {
        let vendors: Value = server.get("/v1/vendors").await.json().await.unwrap();
        if vendors["current"] == "tencent" {
            break vendors;
        }
        assert!(
            Instant::now() < deadline,
            "no switch on receipts: {vendors}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let aliyun = &vendors["vendors"][0];
    assert_eq!(aliyun["id"], "aliyun");
    assert!(aliyun["cooling_down_until"].is_string(), "{aliyun}");
    // Receipts come 20 ms after the send, and a little more on their way in.
    let p50 = aliyun["receipt_latency_ms"]["p50"]
        .as_u64()
        .expect("latency");
    assert!((20..2_000).contains(&p50), "{aliyun}");
    assert!(
        metrics(&server)
            .await
            .contains("sms_receipt_latency_seconds_count{vendor=\"aliyun\"}"),
        "the histogram has aliyun's receipts"
    );
    let switches: Value = server.get("/v1/switches").await.json().await.unwrap();
    let reason = switches.to_string();
    assert!(reason.contains("delivery rate"), "{reason}");
    // The first message's recipient has its receipt.
    let message = message(&server, first.as_deref().unwrap()).await;
    let status = message["recipients"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        ["delivered", "undelivered"].contains(&status.as_str()),
        "{message}"
    );
}

/// The real adapters against the sandbox, which pushes each vendor's receipts to the
/// gateway's receipt endpoints in that vendor's format, as the vendors do.
#[tokio::test]
async fn the_sandbox_pushes_receipts_that_settle_sends_through_the_real_adapters() {
    use crate::real_vendors::{free_port, sandbox_vendors, start_sandbox_with};

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gateway = format!(
        "{}\n[limit]\nrecipient_windows = [{{ limit = 10, window_s = 60 }}]\n\
         [receipts]\nsecrets = {{ aliyun = \"{SECRET}-a\", tencent = \"{SECRET}-t\", \
         cloopen = \"{SECRET}-c\" }}\n",
        sandbox_vendors(&format!("http://127.0.0.1:{port}"), ["Test", "Test"])
    );
    let server = Server::start(&Backends::Embedded, &gateway).await;
    let receipts = format!(
        "[receipts]\ndelay_ms = 50\ndelivery_rate = 1.0\n\
         aliyun = \"{base}/v1/receipts/aliyun/{SECRET}-a\"\n\
         tencent = \"{base}/v1/receipts/tencent/{SECRET}-t\"\n\
         cloopen = \"{base}/v1/receipts/cloopen/{SECRET}-c\"\n",
        base = server.base
    );
    let _sandbox = start_sandbox_with(dir.path(), port, None, Some(&receipts)).await;
    for (i, vendor) in ["aliyun", "tencent", "cloopen"].into_iter().enumerate() {
        let (id, _) = send_through(&server, vendor, &format!("+86138000020{i:02}"), SETTLED).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let recipient = message(&server, &id).await["recipients"][0].clone();
            if recipient["status"] == "delivered" {
                assert!(recipient["delivered_at"].is_string(), "{recipient}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{vendor}: no receipt settled {id}: {recipient}\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            receipts_counted(&server, vendor, "applied").await,
            1,
            "{vendor}"
        );
    }
}

/// Vendors without a receipt secret (so without push) are asked for their receipts:
/// the real Aliyun and Tencent adapters pull from the sandbox (`QuerySendDetails`,
/// `PullSmsSendStatus`), and every send is settled once, as pushes would settle it.
/// Cloopen offers no pull: its send stays `sent`.
#[tokio::test]
async fn vendors_without_push_are_pulled_and_their_sends_settled_once() {
    use crate::real_vendors::{free_port, sandbox_vendors, start_sandbox_with};

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gateway = format!(
        "{}\n[limit]\nrecipient_windows = [{{ limit = 10, window_s = 60 }}]\n\
         [receipts]\npull_interval_s = 1\n",
        sandbox_vendors(&format!("http://127.0.0.1:{port}"), ["Test", "Test"])
    );
    let server = Server::start(&Backends::Embedded, &gateway).await;
    let settings = "[receipts]\ndelay_ms = 50\ndelivery_rate = 1.0\n";
    let _sandbox = start_sandbox_with(dir.path(), port, None, Some(settings)).await;
    let mut sent = Vec::new();
    for (i, vendor) in ["aliyun", "tencent", "cloopen"].into_iter().enumerate() {
        let (id, _) =
            send_through(&server, vendor, &format!("+86138000030{i:02}"), &["sent"]).await;
        sent.push((vendor, id));
    }
    // Sends are asked about from 5 s after them, every second.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (vendor, id) in &sent[..2] {
        loop {
            let recipient = message(&server, id).await["recipients"][0].clone();
            if recipient["status"] == "delivered" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{vendor}: no pulled receipt settled {id}: {recipient}\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // More passes change nothing: each send was settled once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for vendor in ["aliyun", "tencent"] {
        assert_eq!(
            receipts_counted(&server, vendor, "applied").await,
            1,
            "{vendor}"
        );
    }
    let (_, cloopen) = &sent[2];
    assert_eq!(
        message(&server, cloopen).await["recipients"][0]["status"],
        "sent"
    );
}
