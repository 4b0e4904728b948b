//! Status callbacks end to end: a client endpoint that fails its first three posts and
//! then takes every one gets each status event of its messages exactly once, signed,
//! although the gateway is restarted while events wait for a retry. A cancel and a
//! spend warning reach the deployment's default endpoint too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::server::{Backends, Server};

const CALLBACK_SECRET: &str = "callback-secret-0123456789abcdef-xyz";

/// What the client endpoint saw: each post's event id, signature header and body, and
/// whether it was taken.
#[derive(Default)]
struct Endpoint {
    posts: Mutex<Vec<Post>>,
}

#[derive(Clone, Debug)]
struct Post {
    event_id: String,
    signature: String,
    body: String,
    taken: bool,
    at: Instant,
}

impl Endpoint {
    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
    fn taken(&self) -> Vec<Post> {
        self.posts().into_iter().filter(|p| p.taken).collect()
    }
}

/// Starts the endpoint: the first `refused` posts get 503, every later one 204.
async fn client_endpoint(refused: usize) -> (Arc<Endpoint>, String) {
    let endpoint = Arc::new(Endpoint::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms/events", listener.local_addr().unwrap());
    let seen = endpoint.clone();
    let app = axum::Router::new().route(
        "/sms/events",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let mut posts = seen.posts.lock().unwrap();
                let taken = posts.len() >= refused;
                posts.push(Post {
                    event_id: header("x-sms-event-id"),
                    signature: header("x-sms-signature"),
                    body,
                    taken,
                    at: Instant::now(),
                });
                if taken {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, url)
}

/// Verifies a post as a client would: `t=<seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
fn signature_is_valid(post: &Post) -> bool {
    let Some((t, v1)) = post
        .signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(CALLBACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", post.body).as_bytes());
    let Ok(given) = hex::decode(v1) else {
        return false;
    };
    mac.verify_slice(&given).is_ok()
}

fn config() -> String {
    format!(
        r#"
[queue]
drain_interval_ms = 100
[vendors.aliyun]
order = 0
simulation = {{ latency_ms = 1, per_number_limits = false, receipt_delay_ms = 50 }}
[receipts]
secrets = {{ aliyun = "receipt-secret-0123456789-a" }}
[callbacks]
secret = "{CALLBACK_SECRET}"
first_retry_ms = 3000
max_retry_ms = 3000
allow_private_hosts = true
"#
    )
}

async fn waits_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn each_event_arrives_once_across_a_restart(backends: &Backends) {
    let (endpoint, url) = client_endpoint(3).await;
    let mut server = Server::start(backends, &config()).await;
    let mut ids = Vec::new();
    for number in ["+8613800000101", "+8613800000102"] {
        let r = server
            .post(
                "/v1/messages",
                json!({"template": "SMS_LOGIN", "args": ["123456"], "recipients": [number],
                       "callback_url": url}),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let sent: Value = r.json().await.unwrap();
        ids.push(sent["id"].as_str().unwrap().to_owned());
    }
    // Two events per message: sent, then delivered when the receipt comes. The first
    // three posts fail, and their retries are 1.5 to 3 s away: the restart comes first.
    waits_for("four posts", Duration::from_secs(10), || {
        endpoint.posts().len() >= 4
    })
    .await;
    let status = server.terminate();
    assert!(
        status.success(),
        "graceful stop: {status}\n{}",
        server.log()
    );
    let before_restart = endpoint.taken().len();
    assert!(
        before_restart < 4,
        "events must still wait at the restart: {:?}",
        endpoint.posts()
    );
    let restarted_at = Instant::now();
    server.restart(backends).await;
    waits_for("every event taken", Duration::from_secs(20), || {
        endpoint.taken().len() >= 4
    })
    .await;
    // Nothing more comes: a taken event is never posted again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let posts = endpoint.posts();
    let taken = endpoint.taken();
    assert_eq!(taken.len(), 4, "each event exactly once: {posts:#?}");
    assert!(
        taken.iter().any(|p| p.at > restarted_at),
        "the restarted gateway posted what waited"
    );
    let mut events: Vec<(String, String, String)> = Vec::new();
    for post in &posts {
        assert!(signature_is_valid(post), "bad signature: {post:?}");
        let body: Value = serde_json::from_str(&post.body).unwrap();
        assert_eq!(body["event_id"], post.event_id.as_str());
        if post.taken {
            events.push((
                body["message_id"].as_str().unwrap().to_owned(),
                body["status"].as_str().unwrap().to_owned(),
                post.event_id.clone(),
            ));
        }
    }
    events.sort();
    let mut expected = Vec::new();
    for id in &ids {
        expected.push((id.clone(), "delivered".to_owned()));
        expected.push((id.clone(), "sent".to_owned()));
    }
    expected.sort();
    let got: Vec<(String, String)> = events
        .iter()
        .map(|(m, s, _)| (m.clone(), s.clone()))
        .collect();
    assert_eq!(got, expected);
    let failed_then_taken = posts.iter().filter(|p| !p.taken).count();
    assert_eq!(failed_then_taken, 3);
    let status = server.stop();
    assert!(status.success(), "graceful stop: {status}");
}

#[tokio::test]
async fn each_event_arrives_once_across_a_restart_embedded() {
    each_event_arrives_once_across_a_restart(&Backends::Embedded).await;
}

#[tokio::test]
async fn each_event_arrives_once_across_a_restart_on_postgres() {
    let Some(backends) = crate::server::shared_backends().await else {
        return;
    };
    each_event_arrives_once_across_a_restart(&backends).await;
    crate::server::drop_schema(&backends).await;
}

#[tokio::test]
async fn a_callback_url_without_callbacks_configured_is_refused_and_nothing_is_sent() {
    let server = Server::start(&Backends::Embedded, crate::api::VENDORS).await;
    let r = server
        .post(
            "/v1/messages",
            json!({"template": "SMS_LOGIN", "args": ["1"], "recipients": ["+8613800000103"],
                   "callback_url": "https://app.example/events"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("callback_url"), "{body}");
    let r = server
        .post(
            "/v1/messages",
            json!({"template": "SMS_LOGIN", "args": ["1"], "recipients": ["+8613800000103"],
                   "callback_url": "ftp://app.example/events"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listed: Value = server
        .get("/v1/messages?recipient=%2B8613800000103")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["messages"], json!([]), "nothing was sent");
    server.stop();
}

#[tokio::test]
async fn a_callback_url_on_the_gateways_own_network_is_refused() {
    let config = format!(
        "{}\n[callbacks]\nsecret = \"{CALLBACK_SECRET}\"\n",
        crate::api::VENDORS
    );
    let server = Server::start(&Backends::Embedded, &config).await;
    for url in [
        "http://127.0.0.1:9/events",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/events",
        "http://[::1]/events",
    ] {
        let r = server
            .post(
                "/v1/messages",
                json!({"template": "SMS_LOGIN", "args": ["1"], "recipients": ["+8613800000104"],
                       "callback_url": url}),
            )
            .await;
        assert_eq!(r.status(), 400, "{url}");
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains("callback_url"), "{url}: {body}");
    }
    let r = server
        .post(
            "/v1/messages",
            json!({"template": "SMS_LOGIN", "args": ["1"], "recipients": ["+8613800000104"],
                   "callback_url": "https://app.example/events"}),
        )
        .await;
    assert_eq!(r.status(), 200, "a public host is accepted");
    server.stop();
}

/// With callbacks posted to a default address: a client's scheduled message that it
/// cancels tells `queued` then `cancelled`, and its spend passing half its cap tells one
/// `spend_warning` naming the client, the cap and the spend, however many sends follow.
#[tokio::test]
async fn a_cancel_and_a_spend_warning_reach_the_default_endpoint() {
    use sha2::Digest;
    const SHOP_TOKEN: &str = "shop-token-0123456789";
    let (endpoint, url) = client_endpoint(0).await;
    let config = format!(
        r#"
[clients.shop]
token_sha256 = ["{shop}"]
monthly_spend_cap = "0.50"
[spend]
warn_at = 0.5
[vendors.aliyun]
order = 0
simulation = {{ latency_ms = 1, per_number_limits = false }}
[limit]
recipient_windows = []
[callbacks]
secret = "{CALLBACK_SECRET}"
default_url = "{url}"
allow_private_hosts = true
"#,
        shop = hex::encode(Sha256::digest(SHOP_TOKEN.as_bytes())),
    );
    let server = Server::start(&Backends::Embedded, &config).await;
    let send = |body: Value| {
        server
            .client
            .post(server.url("/v1/messages"))
            .bearer_auth(SHOP_TOKEN)
            .json(&body)
            .send()
    };
    let send_at = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let r = send(json!({"template": "SMS_NOTICE", "args": ["sale"],
                        "recipients": ["+8613800000105"], "send_at": send_at}))
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let scheduled: Value = r.json().await.unwrap();
    let id = scheduled["id"].as_str().unwrap().to_owned();
    let r = server
        .client
        .delete(server.url(&format!("/v1/messages/{id}")))
        .bearer_auth(SHOP_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Sends until the cap refuses one: past half the cap on the way.
    let mut sent = 0;
    for i in 0..100 {
        let r = send(json!({"template": "SMS_NOTICE", "args": ["sale"],
                            "recipients": [format!("+86138001{i:05}")]}))
        .await
        .unwrap();
        if r.status() == 402 {
            break;
        }
        assert_eq!(r.status(), 200);
        sent += 1;
    }
    assert!(sent >= 2, "the cap refused too soon: {sent}");
    let events = || -> Vec<Value> {
        endpoint
            .taken()
            .iter()
            .map(|p| serde_json::from_str(&p.body).unwrap())
            .collect()
    };
    let status_of = |e: &Value| e["status"].as_str().unwrap_or_default().to_owned();
    waits_for(
        "the cancel and the warning",
        Duration::from_secs(10),
        || {
            let events = events();
            events.iter().any(|e| status_of(e) == "cancelled")
                && events.iter().any(|e| status_of(e) == "spend_warning")
        },
    )
    .await;
    // A few more syncs change nothing: one warning for the cap this month.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(endpoint.posts().iter().all(signature_is_valid));
    let events = events();
    // Posts run concurrently and may arrive in any order: a client orders by `at`.
    let at = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
    let mut of_scheduled: Vec<_> = events
        .iter()
        .filter(|e| e["message_id"] == id.as_str())
        .map(|e| (at(e), status_of(e)))
        .collect();
    of_scheduled.sort();
    let statuses: Vec<&str> = of_scheduled.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses, ["queued", "cancelled"]);
    let warnings: Vec<&Value> = events
        .iter()
        .filter(|e| status_of(e) == "spend_warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = warnings[0];
    assert_eq!(warning["scope"], "shop");
    assert_eq!(warning["cap"], "0.50");
    assert!(warning.get("message_id").is_none(), "{warning}");
    let spent: f64 = warning["spent"].as_str().unwrap().parse().unwrap();
    assert!((0.25..0.50).contains(&spent), "{warning}");
    server.stop();
}
