//! Scheduled sends over HTTP: stored, sent when due even across a restart, and never
//! sent once cancelled.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{Backends, Server, drop_schema, shared_backends};

const CONFIG: &str = r#"
[vendors.aliyun]
order = 0
simulation = { latency_ms = 50 }
"#;

async fn schedule(server: &Server, to: &str, send_at: DateTime<Utc>) -> String {
    let r = server
        .post(
            "/v1/messages",
            json!({ "template": "SMS_NOTICE", "args": ["x"], "recipients": [to],
                    "send_at": send_at.to_rfc3339_opts(SecondsFormat::Millis, true) }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["status"], "queued", "{body}");
    assert_eq!(body["reason"], "scheduled", "{body}");
    body["id"].as_str().expect("an id").to_owned()
}

async fn scheduled_across_a_restart(backends: &Backends) {
    let mut server = Server::start(backends, CONFIG).await;
    let send_at = Utc::now() + chrono::Duration::seconds(4);
    let kept = schedule(&server, "+8613500000001", send_at).await;
    let cancelled = schedule(&server, "+8613500000002", send_at).await;
    let r = server
        .client
        .delete(server.url(&format!("/v1/messages/{cancelled}")))
        .bearer_auth(crate::server::TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["status"], "cancelled", "{body}");
    // A second cancel finds it final.
    let r = server
        .client
        .delete(server.url(&format!("/v1/messages/{cancelled}")))
        .bearer_auth(crate::server::TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let view: Value = server
        .get(&format!("/v1/messages/{kept}"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(view["status"], "queued", "{view}");
    assert!(view["send_at"].is_string(), "{view}");
    server.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart(backends).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let at = loop {
        if let Some(at) = server.delivered_at(&kept).first() {
            break *at;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled message was not sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let late = at - send_at;
    eprintln!("sent {} ms after its send_at", late.num_milliseconds());
    assert!(at >= send_at, "sent before its time: {at} < {send_at}");
    assert!(
        late < chrono::Duration::seconds(1),
        "sent {} ms late",
        late.num_milliseconds()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        server.delivered_at(&cancelled).is_empty(),
        "a cancelled message was sent"
    );
    let view: Value = server
        .get(&format!("/v1/messages/{cancelled}"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(view["status"], "cancelled", "{view}");
}

#[tokio::test]
async fn a_scheduled_message_goes_out_on_time_after_a_restart_on_sqlite() {
    scheduled_across_a_restart(&Backends::Embedded).await;
}

#[tokio::test]
async fn a_scheduled_message_goes_out_on_time_after_a_restart_on_postgres() {
    let Some(backends) = shared_backends().await else {
        return;
    };
    scheduled_across_a_restart(&backends).await;
    drop_schema(&backends).await;
}

#[tokio::test]
async fn a_bad_send_at_is_refused_naming_the_field() {
    let server = Server::start(&Backends::Embedded, CONFIG).await;
    for (send_at, problem) in [
        ("tomorrow".to_owned(), "RFC 3339"),
        (
            (Utc::now() + chrono::Duration::days(36)).to_rfc3339(),
            "at most 35 days ahead",
        ),
        (
            (Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
            "has passed",
        ),
    ] {
        let r = server
            .post(
                "/v1/messages",
                json!({ "template": "SMS_NOTICE", "recipients": ["+8613500000003"],
                        "send_at": send_at }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.expect("JSON");
        assert_eq!(body["error"]["field"], "send_at", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(problem), "{message}");
    }
}

/// A keyed request retried after its `send_at` has passed (here: accepted 55 s after
/// its time, within the minute that still means now, and retried 6 s later) is
/// answered by the message stored under its key, not refused for the time. The same
/// time under a key nobody used is still refused, naming `send_at`.
#[tokio::test]
async fn a_keyed_retry_after_send_at_passed_gets_the_stored_message() {
    let server = Server::start(&Backends::Embedded, CONFIG).await;
    // 5 s of margin on each side of the minute, for a slow machine.
    let send_at =
        (Utc::now() - chrono::Duration::seconds(55)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let body = |key: &str| {
        json!({ "template": "SMS_NOTICE", "args": ["x"], "recipients": ["+8613500000004"],
                "send_at": send_at, "idempotency_key": key })
    };
    let r = server.post("/v1/messages", body("notice-7")).await;
    assert!(r.status().is_success(), "{}", r.status());
    let first: Value = r.json().await.expect("JSON");
    let id = first["id"].as_str().expect("an id").to_owned();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = server.post("/v1/messages", body("notice-7")).await;
    let status = r.status();
    let again: Value = r.json().await.expect("JSON");
    assert!(status.is_success(), "{status}: {again}");
    assert_eq!(again["id"], id.as_str(), "{again}");
    let r = server.post("/v1/messages", body("notice-8")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let refused: Value = r.json().await.expect("JSON");
    assert_eq!(refused["error"]["field"], "send_at", "{refused}");
}
