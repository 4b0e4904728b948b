//! Clients, quotas, spend caps and priority lanes over HTTP: one client's flood does
//! not hold back another's codes, and a code is not held behind queued bulk.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::server::{Backends, Server, drop_schema, shared_backends};

const SHOP_TOKEN: &str = "shop-token-0123456789";
const AUTH_TOKEN: &str = "auth-token-0123456789";

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

async fn post_as(server: &Server, token: &str, body: Value) -> (StatusCode, Value, Duration) {
    let began = Instant::now();
    let r = server
        .client
        .post(server.url("/v1/messages"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = r.status();
    (status, r.json().await.expect("JSON"), began.elapsed())
}

#[tokio::test]
async fn one_clients_flood_neither_delays_nor_refuses_anothers_codes() {
    let config = format!(
        r#"
[clients.shop]
token_sha256 = ["{shop}"]
per_second = 20
monthly_spend_cap = "1.20"
[clients.auth]
token_sha256 = ["{auth}"]
[vendors.aliyun]
order = 0
simulation = {{ latency_ms = 50 }}
[limit]
recipient_windows = []
"#,
        shop = digest(SHOP_TOKEN),
        auth = digest(AUTH_TOKEN),
    );
    let server = Server::start(&Backends::Embedded, &config).await;
    // The shop floods from 8 tasks for 3 s: over its per_second at once, and over its
    // spend cap (about 40 notices) after 2 s.
    let flood = {
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let (client, url) = (server.client.clone(), server.url("/v1/messages"));
            tasks.push(tokio::spawn(async move {
                let mut codes = Vec::new();
                let until = Instant::now() + Duration::from_secs(3);
                for i in 0u32.. {
                    if Instant::now() >= until {
                        break;
                    }
                    let r = client
                        .post(&url)
                        .bearer_auth(SHOP_TOKEN)
                        .json(&json!({
                            "template": "SMS_NOTICE", "args": ["sale"],
                            "recipients": [format!("+86139{t:02}{i:06}")]
                        }))
                        .send()
                        .await
                        .expect("POST");
                    let status = r.status();
                    let body: Value = r.json().await.expect("JSON");
                    codes.push((status, body["error"]["code"].as_str().map(str::to_owned)));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                codes
            }));
        }
        tasks
    };
    // Meanwhile the other client sends one login code every 100 ms.
    let mut code_answers = Vec::new();
    for i in 0..30u32 {
        let (status, body, took) = post_as(
            &server,
            AUTH_TOKEN,
            json!({
                "template": "SMS_LOGIN", "args": ["123456"], "priority": "high",
                "recipients": [format!("+86138{i:08}")]
            }),
        )
        .await;
        code_answers.push((status, body, took));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut shop = Vec::new();
    for task in flood {
        shop.extend(task.await.expect("flood task"));
    }
    let sent = shop.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let limited = shop
        .iter()
        .filter(|(s, c)| {
            *s == StatusCode::TOO_MANY_REQUESTS && c.as_deref() == Some("client_limited")
        })
        .count();
    let capped = shop
        .iter()
        .filter(|(s, c)| {
            *s == StatusCode::PAYMENT_REQUIRED && c.as_deref() == Some("spend_cap_reached")
        })
        .count();
    eprintln!("shop: {sent} sent, {limited} over per_second, {capped} over the spend cap");
    assert!(limited > 0, "the flood is over the shop's per_second");
    assert!(capped > 0, "the flood reaches the shop's spend cap");
    assert_eq!(
        sent + limited + capped,
        shop.len(),
        "every shop request was sent or refused by its own limits: {shop:?}"
    );
    let slowest = code_answers.iter().map(|(_, _, t)| *t).max().unwrap();
    for (status, body, _) in &code_answers {
        assert_eq!(*status, StatusCode::OK, "a login code was refused: {body}");
        assert_eq!(body["status"], "sent", "{body}");
    }
    eprintln!("auth: 30 codes sent, slowest answer {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a code waited {slowest:?} behind the flood"
    );
    // The metrics tell the two clients apart.
    let metrics = server.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("sms_client_sends_total{client=\"auth\",outcome=\"ok\"} 30"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sms_client_spend_cap_micros{client=\"shop\"} 1200000"),
        "{metrics}"
    );
    // And so does the message listing.
    let sent_ids: Vec<&str> = code_answers
        .iter()
        .map(|(_, b, _)| b["id"].as_str().unwrap())
        .collect();
    let listed: Value = server
        .get("/v1/messages?client=auth&status=sent&limit=100")
        .await
        .json()
        .await
        .expect("JSON");
    let listed = listed["messages"].as_array().expect("messages");
    assert_eq!(listed.len(), 30, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|m| m["client"] == "auth" && m["priority"] == "high")
    );
    assert!(
        listed
            .iter()
            .all(|m| sent_ids.contains(&m["id"].as_str().unwrap()))
    );
}

/// Queues 1,000 recipients of bulk behind the global limit, then sends one code; it is
/// delivered within a second.
async fn a_code_passes_queued_bulk(backends: &Backends) {
    let config = r#"
[vendors.aliyun]
order = 0
simulation = { latency_ms = 50 }
[limit]
global_per_second = 100
recipient_windows = []
"#;
    let server = Server::start(backends, config).await;
    // 20 notices of 50 recipients each: 1,000 recipients, ten seconds at the limit.
    let mut queued = 0;
    for m in 0..20u32 {
        let recipients: Vec<String> = (0..50u32).map(|r| format!("+86137{m:03}{r:05}")).collect();
        let r = server
            .post(
                "/v1/messages",
                json!({ "template": "SMS_NOTICE", "args": ["sale"], "recipients": recipients }),
            )
            .await;
        let status = r.status();
        let body: Value = r.json().await.expect("JSON");
        assert!(status.is_success(), "{body}");
        if body["status"] == "queued" {
            queued += 50;
        }
    }
    assert!(
        queued >= 800,
        "most of the bulk waits in the queue: {queued}"
    );
    // The code comes while the drain sends the bulk at the limit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent_lines = || {
        std::fs::read_to_string(server.deliveries_path())
            .unwrap_or_default()
            .lines()
            .count()
    };
    while sent_lines() < 200 {
        assert!(Instant::now() < deadline, "the bulk is not being drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let posted = Utc::now();
    let r = server
        .post(
            "/v1/messages",
            json!({ "template": "SMS_LOGIN", "args": ["123456"], "priority": "high",
                    "recipients": ["+8613600000001"] }),
        )
        .await;
    let body: Value = r.json().await.expect("JSON");
    let id = body["id"].as_str().expect("an id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    let at = loop {
        if let Some(at) = server.delivered_at(&id).first() {
            break *at;
        }
        assert!(
            Instant::now() < deadline,
            "the code was not delivered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = (at - posted).to_std().unwrap_or_default();
    let stats: Value = server.get("/v1/queue").await.json().await.expect("JSON");
    eprintln!("code delivered {took:?} after it was posted, with the queue at {stats}");
    assert!(
        stats["queued"].as_u64().unwrap_or(0) + stats["leased"].as_u64().unwrap_or(0) > 0,
        "bulk still waits when the code is through: {stats}"
    );
    assert!(took < Duration::from_secs(1), "the code took {took:?}");
}

#[tokio::test]
async fn a_code_passes_a_thousand_queued_recipients_on_sqlite() {
    a_code_passes_queued_bulk(&Backends::Embedded).await;
}

#[tokio::test]
async fn a_code_passes_a_thousand_queued_recipients_on_postgres() {
    let Some(backends) = shared_backends().await else {
        return;
    };
    a_code_passes_queued_bulk(&backends).await;
    drop_schema(&backends).await;
}

/// A message the shop scheduled before it reached its spend cap does not go out at its
/// `send_at` once the cap is reached: it stays queued, unattempted, while the shop's
/// live sends are refused with 402.
#[tokio::test]
async fn a_scheduled_message_waits_once_its_clients_spend_cap_is_reached() {
    let config = format!(
        r#"
[clients.shop]
token_sha256 = ["{shop}"]
monthly_spend_cap = "0.20"
[vendors.aliyun]
order = 0
simulation = {{ latency_ms = 1, per_number_limits = false }}
[limit]
recipient_windows = []
[queue]
drain_interval_ms = 100
"#,
        shop = digest(SHOP_TOKEN),
    );
    let server = Server::start(&Backends::Embedded, &config).await;
    // Far enough ahead for the sends below to reach the cap first on a slow machine.
    let send_at = Utc::now() + chrono::Duration::seconds(4);
    let (status, scheduled, _) = post_as(
        &server,
        SHOP_TOKEN,
        json!({"template": "SMS_NOTICE", "args": ["sale"], "recipients": ["+8613700000001"],
               "send_at": send_at.to_rfc3339()}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{scheduled}");
    let id = scheduled["id"].as_str().unwrap().to_owned();
    let mut sent = 0;
    for i in 0..100u32 {
        let (status, _, _) = post_as(
            &server,
            SHOP_TOKEN,
            json!({"template": "SMS_NOTICE", "args": ["sale"],
                   "recipients": [format!("+86137001{i:05}")]}),
        )
        .await;
        if status == StatusCode::PAYMENT_REQUIRED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        sent += 1;
    }
    assert!(sent > 0 && sent < 100, "the cap was reached after {sent}");
    assert!(
        Utc::now() < send_at,
        "the cap must be reached before the send_at"
    );
    // 1.5 s past its send_at, through several drain ticks.
    let past = (send_at - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(1500);
    tokio::time::sleep(past).await;
    let held: Value = server
        .client
        .get(server.url(&format!("/v1/messages/{id}")))
        .bearer_auth(SHOP_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(held["status"], "queued", "{held}");
    assert_eq!(held["attempts"], 0, "{held}");
    assert!(
        server.log().contains("a spend cap is reached"),
        "the wait is logged"
    );
    server.stop();
}
