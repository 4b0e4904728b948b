//! `GET /v1/vendors` on several instances: with Redis, the shared vendor health and what
//! each instance believes; an operator's disable through one instance reaches the
//! other; without Redis, no `deployment` at all.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Backends, Server, drop_schema, shared_backends};

const VENDORS: &str = r#"
[vendors.aliyun]
order = 0
simulation = { latency_ms = 1 }
[vendors.tencent]
order = 1
simulation = { latency_ms = 1 }
"#;

async fn vendors(server: &Server) -> Value {
    server.get("/v1/vendors").await.json().await.expect("JSON")
}

/// Polls `GET /v1/vendors` on `server` until `done` holds, for up to 5 s.
async fn wait_for(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let body = vendors(server).await;
        if done(&body) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}: {body}\n{}",
            crate::outcomes::tail(&server.log())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_instances_on_redis_show_one_deployment_and_share_a_disable() {
    let Some(backends) = shared_backends().await else {
        return;
    };
    let a = Server::start(&backends, VENDORS).await;
    let b = Server::start(&backends, VENDORS).await;
    wait_for(&a, "both instances in a's view", |v| {
        let d = &v["deployment"];
        d["shared"] == json!(true)
            && d["instances"].as_array().is_some_and(|i| i.len() == 2)
            && d["instances"][0]["instance"] == d["instance"]
            && d["board"]["current"] == v["current"]
    })
    .await;
    let r = b.post("/v1/vendors/aliyun/disable", json!({})).await;
    assert!(r.status().is_success(), "{}", r.status());
    let took = wait_for(&a, "a to leave the vendor b disabled", |v| {
        v["current"] == json!("tencent") && v["vendors"][0]["disabled"] == json!(true)
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let board = &vendors(&a).await["deployment"]["board"];
    assert_eq!(
        board["vendors"]["aliyun"]["disabled"],
        json!(true),
        "{board}"
    );
    assert_eq!(board["last_switch"]["to"], json!("tencent"), "{board}");
    drop((a, b));
    drop_schema(&backends).await;
}

#[tokio::test]
async fn a_lone_instance_without_redis_shows_no_deployment() {
    let server = Server::start(&Backends::Embedded, VENDORS).await;
    let body = vendors(&server).await;
    assert!(body.get("deployment").is_none(), "{body}");
    assert_eq!(body["current"], json!("aliyun"));
}
