//! Every endpoint, over HTTP, on both backends.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::{Backends, Server, TOKEN, drop_schema, shared_backends};

/// Three simulated vendors answering in 1 ms, quick retries, and a long cooldown (a
/// vendor that fails stays out): the API tests' and the status page test's setup.
pub const VENDORS: &str = r#"
[failover]
cooldown_s = 600
[queue]
backoff_base_ms = 50
backoff_max_s = 1
drain_interval_ms = 100
[vendors.aliyun]
order = 0
simulation = { latency_ms = 1 }
[vendors.tencent]
order = 1
simulation = { latency_ms = 1 }
[vendors.cloopen]
order = 2
simulation = { latency_ms = 1 }
"#;

fn message(recipient: &str) -> Value {
    json!({ "template": "SMS_LOGIN", "args": ["123456", "a###b;c"], "recipients": [recipient] })
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("JSON body")
}

/// `GET /v1/queue` once the counts hold still: records of messages sent without a key
/// are written behind the send (within milliseconds), and a comparison of counts must
/// not catch one landing.
async fn settled_counts(server: &Server) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = json_of(server.get("/v1/queue").await).await;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = json_of(server.get("/v1/queue").await).await;
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Polls `GET /v1/messages/{id}` until its status is `want`.
async fn wait_for_status(server: &Server, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = server.get(&format!("/v1/messages/{id}")).await;
        if r.status() == StatusCode::OK {
            let body = json_of(r).await;
            if body["status"] == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "message {id} never became {want}: {body}\n{}",
                server.log()
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "message {id} not found; log:\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exercise_every_endpoint(server: &Server) {
    // Open endpoints.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = server
            .client
            .get(server.url(path))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let openapi = json_of(
        server
            .client
            .get(server.url("/openapi.json"))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert!(openapi["paths"]["/v1/messages"]["post"].is_object());

    // Auth: missing or wrong token is 401, and the token never reaches the log.
    let r = server
        .client
        .post(server.url("/v1/messages"))
        .json(&message("+8613800000001"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = server
        .client
        .get(server.url("/v1/queue"))
        .bearer_auth("wrong-token-xyz")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A send goes out through the cheapest vendor.
    let r = server.post("/v1/messages", message("+8613800000001")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let sent = json_of(r).await;
    assert_eq!(sent["status"], "sent");
    assert_eq!(sent["vendor"], "aliyun");
    let id = sent["id"].as_str().expect("id").to_owned();
    let status = wait_for_status(server, &id, "sent").await;
    assert_eq!(status["vendor"], "aliyun");
    assert_eq!(server.deliveries_of(&id), 1);

    // The same recipient again within the window: 429 with Retry-After, nothing sent.
    let r = server
        .post("/v1/messages", message("+86 138 0000 0001"))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(json_of(r).await["error"]["code"], "recipient_limited");

    // Idempotency: same key and body → the first message; different body → 409.
    let mut keyed = message("+8613800000002");
    keyed["idempotency_key"] = json!("order-42");
    let first = json_of(server.post("/v1/messages", keyed.clone()).await).await;
    assert_eq!(first["status"], "sent", "{first}");
    let again = server.post("/v1/messages", keyed.clone()).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again = json_of(again).await;
    assert_eq!(again["id"], first["id"]);
    let mut changed = keyed.clone();
    changed["args"] = json!(["654321"]);
    let r = server.post("/v1/messages", changed).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(server.deliveries_of(first["id"].as_str().expect("id")), 1);

    // Bad input: 400 naming the field, 413 for a huge body; nothing stored.
    let before = settled_counts(server).await;
    let r = server
        .post(
            "/v1/messages",
            json!({ "template": "SMS_LOGIN", "recipients": ["abc"] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(r).await["error"]["field"], "recipients[0]");
    let r = server
        .post(
            "/v1/messages",
            json!({ "template": "SMS_LOGIN", "recipients": ["+8613800000003"], "args": [7] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(r).await["error"]["field"], "args[0]");
    let r = server
        .client
        .post(server.url("/v1/messages"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"template\": ")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let huge = json!({ "template": "SMS_LOGIN", "recipients": ["+8613800000004"], "args": ["x".repeat(20_000)] });
    let r = server.post("/v1/messages", huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let after = json_of(server.get("/v1/queue").await).await;
    assert_eq!(before, after, "bad requests must store nothing");
    let r = server.get("/v1/messages/not-a-uuid").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = server
        .get(&format!("/v1/messages/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Vendors: operator disable and enable.
    let vendors = json_of(server.get("/v1/vendors").await).await;
    assert_eq!(vendors["current"], "aliyun");
    assert_eq!(vendors["vendors"].as_array().expect("list").len(), 3);
    let r = server.post("/v1/vendors/aliyun/disable", json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(
        json_of(server.get("/v1/vendors").await).await["current"],
        "aliyun"
    );
    let r = server.post("/v1/vendors/aliyun/enable", json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = server.post("/v1/vendors/nobody/disable", json!({})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Simulation control: the current vendor goes down; sends are queued, the gateway
    // switches, and the queue drains through the next vendor.
    let current = json_of(server.get("/v1/vendors").await).await["current"]
        .as_str()
        .expect("current")
        .to_owned();
    let r = server
        .client
        .put(server.url(&format!("/v1/vendors/{current}/simulation")))
        .bearer_auth(TOKEN)
        .json(&json!({ "outage": true, "latency_ms": 1 }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let r = server
        .client
        .put(server.url(&format!("/v1/vendors/{current}/simulation")))
        .bearer_auth(TOKEN)
        .json(&json!({ "error_rate": 2.0 }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let mut queued = Vec::new();
    for i in 0..2 {
        let r = server
            .post("/v1/messages", message(&format!("+861390000000{i}")))
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "send {i} during outage");
        let body = json_of(r).await;
        assert_eq!(body["status"], "queued");
        assert_eq!(body["reason"], "vendor_failed");
        queued.push(body["id"].as_str().expect("id").to_owned());
    }
    let vendors = json_of(server.get("/v1/vendors").await).await;
    assert_ne!(
        vendors["current"],
        current.as_str(),
        "two failures switch vendor: {vendors}"
    );
    let r = server.post("/v1/messages", message("+8613900000009")).await;
    assert_eq!(r.status(), StatusCode::OK);
    for id in &queued {
        let m = wait_for_status(server, id, "sent").await;
        assert_ne!(m["vendor"], current.as_str());
        assert_eq!(server.deliveries_of(id), 1);
    }

    // Queue: counts; retry refuses a message that is not dead.
    let stats = json_of(server.get("/v1/queue").await).await;
    assert!(stats["sent"].as_u64().expect("sent") >= 4, "{stats}");
    let r = server
        .post(&format!("/v1/queue/{}/retry", queued[0]), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = server
        .post(
            &format!("/v1/queue/{}/retry", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Metrics saw it all.
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    // One switch when the operator disabled Aliyun, one when the outage hit.
    assert!(metrics.contains("sms_vendor_switches_total 2"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "sms_sends_total{{vendor=\"{current}\",outcome=\"transient\"}} 2"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("sms_queue_messages{status=\"sent\"}"),
        "{metrics}"
    );

    // Nothing secret or personal in the log.
    let log = server.log();
    assert!(
        !log.contains(TOKEN) && !log.contains("wrong-token-xyz"),
        "token in log"
    );
    assert!(
        !log.contains("13800000001") && !log.contains("13900000000"),
        "unmasked number in log"
    );
}

#[tokio::test]
async fn every_endpoint_on_embedded_defaults() {
    let server = Server::start(&Backends::Embedded, VENDORS).await;
    exercise_every_endpoint(&server).await;
    let status = server.stop();
    assert!(status.success(), "graceful stop: {status}");
}

#[tokio::test]
async fn every_endpoint_on_postgres_and_redis() {
    let Some(backends) = shared_backends().await else {
        return;
    };
    let server = Server::start(&backends, VENDORS).await;
    exercise_every_endpoint(&server).await;
    let status = server.stop();
    drop_schema(&backends).await;
    assert!(status.success(), "graceful stop: {status}");
}

/// Each operation `/openapi.json` describes is served at its method and path, and
/// answers with one of the statuses it documents.
#[tokio::test]
async fn every_documented_operation_is_served_with_a_documented_status() {
    let server = Server::start(&Backends::Embedded, VENDORS).await;
    let doc = json_of(
        server
            .client
            .get(server.url("/openapi.json"))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    let mut served = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let filled = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{name}", "aliyun");
        for (method, operation) in item.as_object().expect("path item") {
            let r = server
                .client
                .request(
                    method.to_uppercase().parse().expect("method"),
                    server.url(&filled),
                )
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = r.status();
            let text = r.text().await.expect("body");
            assert!(
                operation["responses"][status.as_str()].is_object(),
                "{method} {path}: {status} is not documented: {text}"
            );
            if !status.is_success() {
                let error: Value = serde_json::from_str(&text).expect("a JSON error");
                assert!(
                    error["error"]["code"].is_string(),
                    "{method} {path}: {text}"
                );
            }
            served += 1;
        }
    }
    assert!(served >= 12, "the document describes every route: {served}");
    let status = server.stop();
    assert!(status.success(), "graceful stop: {status}");
}

#[tokio::test]
async fn config_check_names_the_bad_key_and_hides_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[failover]\nconsecutive_failures = 0\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sms-app"))
        .args(["--config", bad.to_str().expect("utf8"), "config", "check"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failover.consecutive_failures"));
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "api_tokens = [\"sekrit-token-0123456789\"]\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sms-app"))
        .args(["--config", good.to_str().expect("utf8"), "config", "check"])
        .env("SMS_DATABASE_URL", "postgres://u:hunter2@db/x")
        .output()
        .expect("run");
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("consecutive_failures = 2"), "{shown}");
    assert!(
        !shown.contains("sekrit-token-0123456789") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_retry_of_a_dead_message_is_not_answered_as_a_success() {
    // Every vendor refuses the message for good, so the keyed message dies at once.
    let rejecting = r#"
[vendors.aliyun]
order = 0
simulation = { reject_rate = 1.0 }
"#;
    let server = Server::start(&Backends::Embedded, rejecting).await;
    let mut keyed = message("+8613800000901");
    keyed["idempotency_key"] = json!("dies-at-once");
    let first = server.post("/v1/messages", keyed.clone()).await;
    assert_eq!(first.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(first).await["error"]["code"], "rejected");

    // The client retries with the same key: a status it cannot take for "sent".
    let again = server.post("/v1/messages", keyed).await;
    assert_eq!(
        again.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        server.log()
    );
    let body = json_of(again).await;
    assert_eq!(body["error"]["code"], "previously_failed", "{body}");
    assert_eq!(body["error"]["field"], "idempotency_key", "{body}");
    let text = body["error"]["message"].as_str().expect("message");
    assert!(text.contains("dead"), "the stored status is named: {text}");
    assert!(server.stop().success());
}

#[tokio::test]
async fn an_expired_message_is_not_retried_only_to_expire_again() {
    // The only vendor is down, so the message waits in the queue until its deadline.
    let down = r#"
[queue]
backoff_base_ms = 50
backoff_max_s = 1
drain_interval_ms = 100
[vendors.aliyun]
order = 0
simulation = { outage = true }
"#;
    let server = Server::start(&Backends::Embedded, down).await;
    let mut short = message("+8613800000902");
    short["expires_in_s"] = json!(1);
    let r = server.post("/v1/messages", short).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", server.log());
    let id = json_of(r).await["id"].as_str().expect("id").to_owned();
    wait_for_status(&server, &id, "expired").await;

    let r = server
        .post(&format!("/v1/queue/{id}/retry"), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "{}", server.log());
    let body = json_of(r).await;
    let text = body["error"]["message"].as_str().expect("message");
    assert!(text.contains("deliver-by time"), "{body}");
    let m = json_of(server.get(&format!("/v1/messages/{id}")).await).await;
    assert_eq!(m["status"], "expired", "nothing changed: {m}");
    assert!(server.stop().success());
}

#[tokio::test]
async fn a_sent_message_is_found_by_its_id_at_once() {
    let server = Server::start(&Backends::Embedded, VENDORS).await;
    let mut not_found = 0;
    for i in 0..20 {
        let r = server
            .post("/v1/messages", message(&format!("+86138000010{i:02}")))
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{}", server.log());
        let id = json_of(r).await["id"].as_str().expect("id").to_owned();
        let r = server.get(&format!("/v1/messages/{id}")).await;
        if r.status() == StatusCode::NOT_FOUND {
            not_found += 1;
        } else {
            assert_eq!(json_of(r).await["status"], "sent");
        }
    }
    assert_eq!(
        not_found, 0,
        "read your writes: no 404 straight after a 200"
    );
    assert!(server.stop().success());
}

#[tokio::test]
async fn a_send_finishes_and_records_its_result_when_the_client_hangs_up() {
    let slow = r#"
[vendors.aliyun]
order = 0
simulation = { latency_ms = 400 }
"#;
    let server = Server::start(&Backends::Embedded, slow).await;
    let mut keyed = message("+8613800000903");
    keyed["idempotency_key"] = json!("hangs-up-1");
    // The client gives up long before the vendor answers.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let gone = impatient
        .post(server.url("/v1/messages"))
        .bearer_auth(TOKEN)
        .json(&keyed)
        .send()
        .await;
    assert!(gone.is_err(), "the client hung up: {gone:?}");

    // Its retry finds the message sent, once, not left leased to be sent again (it
    // would stay leased for the 30 s lease). A retry before the vendor has answered
    // finds it leased, changing nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = server.post("/v1/messages", keyed.clone()).await;
        if again.status() != StatusCode::ACCEPTED || Instant::now() > deadline {
            break again;
        }
    };
    assert_eq!(again.status(), StatusCode::OK, "{}", server.log());
    let body = json_of(again).await;
    assert_eq!(body["status"], "sent", "{body}");
    assert_eq!(server.deliveries_of(body["id"].as_str().expect("id")), 1);
    assert!(server.stop().success());
}

#[tokio::test]
async fn the_queue_answer_says_when_the_oldest_queued_message_was_accepted() {
    // The only vendor is down: what is accepted stays queued.
    let down = r#"
[queue]
backoff_base_ms = 60000
backoff_max_s = 600
[vendors.aliyun]
order = 0
simulation = { outage = true }
"#;
    let server = Server::start(&Backends::Embedded, down).await;
    let empty = json_of(server.get("/v1/queue").await).await;
    assert!(empty["oldest_queued_at"].is_null(), "{empty}");

    let r = server.post("/v1/messages", message("+8613800000903")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", server.log());
    let first = json_of(r).await["id"].as_str().expect("id").to_owned();
    let r = server.post("/v1/messages", message("+8613800000904")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", server.log());

    let accepted =
        json_of(server.get(&format!("/v1/messages/{first}")).await).await["created_at"].clone();
    let queue = json_of(server.get("/v1/queue").await).await;
    assert_eq!(queue["queued"], 2, "{queue}");
    assert_eq!(
        queue["oldest_queued_at"], accepted,
        "the first one's: {queue}"
    );
    assert!(server.stop().success());
}

#[tokio::test]
async fn an_operator_token_reads_everything_and_changes_nothing() {
    const OPERATOR: &str = "operator-read-only-7c2e";
    let server = Server::start(
        &Backends::Embedded,
        &format!("operator_tokens = [\"{OPERATOR}\"]\n{VENDORS}"),
    )
    .await;
    let as_operator = |method: reqwest::Method, path: &str| {
        server
            .client
            .request(method, server.url(path))
            .bearer_auth(OPERATOR)
    };
    for path in ["/v1/vendors", "/v1/queue", "/v1/switches", "/v1/activity"] {
        let r = as_operator(reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    }
    let changes = [
        (
            reqwest::Method::POST,
            "/v1/vendors/aliyun/disable",
            json!({}),
        ),
        (
            reqwest::Method::POST,
            "/v1/messages",
            message("+8613800000905"),
        ),
        (
            reqwest::Method::PUT,
            "/v1/vendors/aliyun/simulation",
            json!({ "outage": true }),
        ),
    ];
    for (method, path, body) in changes {
        let r = as_operator(method.clone(), path)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(json_of(r).await["error"]["code"], "read_only_token");
    }
    // Nothing changed: no vendor disabled, nothing sent or queued.
    let vendors = json_of(server.get("/v1/vendors").await).await;
    assert!(
        vendors["vendors"]
            .as_array()
            .expect("vendors")
            .iter()
            .all(|v| v["disabled"] == false),
        "{vendors}"
    );
    let queue = json_of(server.get("/v1/queue").await).await;
    assert_eq!(
        (queue["queued"].clone(), queue["sent"].clone()),
        (json!(0), json!(0))
    );
    // An API token still changes things.
    let r = server.post("/v1/vendors/aliyun/disable", json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(server.stop().success());
}
