use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use sms_core::testing::{ManualClock, MemoryOutbox};
use sms_core::{CallbackCounts, CallbackStatus, CallbackUrl, MessageId, StatusEvent};

use super::*;

const SECRET: &str = "whsec-test-key-0123456789abcdef0123";

#[test]
fn the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex() {
    // Computed independently (Python's hmac module) for this key, time and body.
    assert_eq!(
        sign(b"whsec-test-key", 1_767_225_600, r#"{"event_id":"e1"}"#),
        "t=1767225600,v1=e588120f74297ac12e3f06fe1daea2d99662bee82f8ae515177917752fbf8fbd"
    );
}

/// A client endpoint that fails its first `failures` posts, then takes every post;
/// it keeps each post's event id, signature and body.
#[derive(Default)]
struct Endpoint {
    failures: usize,
    posts: Mutex<Vec<(String, String, String)>>,
}

async fn serve(endpoint: Arc<Endpoint>) -> CallbackUrl {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let endpoint = endpoint.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let mut posts = endpoint.posts.lock().unwrap();
                posts.push((header(EVENT_ID_HEADER), header(SIGNATURE_HEADER), body));
                if posts.len() <= endpoint.failures {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    CallbackUrl::new(&format!("http://{addr}/events")).unwrap()
}

fn dispatcher(outbox: Arc<MemoryOutbox>, clock: Arc<ManualClock>) -> Dispatcher {
    let config = CallbacksConfig {
        secret: Some(crate::config::Secret::new(SECRET)),
        first_retry_ms: 1_000,
        max_retry_ms: 1_000,
        allow_private_hosts: true,
        ..CallbacksConfig::default()
    };
    Dispatcher::new(outbox, SECRET, config, "test".into(), clock, None).unwrap()
}

#[tokio::test]
async fn a_failing_endpoint_gets_the_same_signed_event_until_it_takes_it_once() {
    let endpoint = Arc::new(Endpoint {
        failures: 3,
        ..Endpoint::default()
    });
    let url = serve(endpoint.clone()).await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let outbox = Arc::new(MemoryOutbox::new());
    let event = StatusEvent::new(MessageId::new(), CallbackStatus::Sent, clock.now());
    outbox
        .enqueue(&[event.to_callback(&url, clock.now())])
        .await
        .unwrap();
    let dispatcher = dispatcher(outbox.clone(), clock.clone());

    for _ in 0..6 {
        dispatcher.pass().await.unwrap();
        // Past any retry delay (at most a second here).
        clock.advance(Duration::from_secs(2));
    }
    let posts = endpoint.posts.lock().unwrap().clone();
    assert_eq!(
        posts.len(),
        4,
        "three failures, then one post taken, then none"
    );
    let body = serde_json::to_string(&event).unwrap();
    for (id, signature, posted) in &posts {
        assert_eq!(*id, event.event_id.to_string());
        assert_eq!(*posted, body, "every attempt carries the same bytes");
        let t: i64 = signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("t=<seconds>");
        assert_eq!(*signature, sign(SECRET.as_bytes(), t, &body));
    }
    assert_eq!(
        outbox.counts().await.unwrap(),
        CallbackCounts {
            delivered: 1,
            ..CallbackCounts::default()
        }
    );
}

#[tokio::test]
async fn an_event_past_its_retry_horizon_is_kept_as_failed() {
    let endpoint = Arc::new(Endpoint {
        failures: usize::MAX,
        ..Endpoint::default()
    });
    let url = serve(endpoint.clone()).await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let outbox = Arc::new(MemoryOutbox::new());
    let made = clock.now() - chrono::Duration::seconds(24 * 3600);
    let event = StatusEvent::new(MessageId::new(), CallbackStatus::Delivered, made);
    outbox
        .enqueue(&[event.to_callback(&url, made)])
        .await
        .unwrap();
    let dispatcher = dispatcher(outbox.clone(), clock.clone());
    dispatcher.pass().await.unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(dispatcher.pass().await.unwrap(), 0, "never posted again");
    assert_eq!(endpoint.posts.lock().unwrap().len(), 1);
    assert_eq!(outbox.counts().await.unwrap().failed, 1);
}

#[test]
fn configuration_errors_name_their_key() {
    let ok = CallbacksConfig {
        secret: Some(crate::config::Secret::new(SECRET)),
        ..CallbacksConfig::default()
    };
    assert!(ok.validate().is_ok());
    let cases = [
        (
            CallbacksConfig {
                secret: Some(crate::config::Secret::new("short")),
                ..ok.clone()
            },
            "callbacks.secret",
        ),
        (
            CallbacksConfig {
                secret: None,
                default_url: Some("https://app.example/e".into()),
                ..ok.clone()
            },
            "callbacks.default_url",
        ),
        (
            CallbacksConfig {
                default_url: Some("ftp://app.example/e".into()),
                ..ok.clone()
            },
            "callbacks.default_url",
        ),
        (
            CallbacksConfig {
                default_url: Some("http://127.0.0.1:9000/e".into()),
                ..ok.clone()
            },
            "callbacks.default_url",
        ),
        (
            CallbacksConfig {
                retry_for_s: 3600,
                ..ok.clone()
            },
            "callbacks.retry_for_s",
        ),
        (
            CallbacksConfig {
                concurrency: 0,
                ..ok.clone()
            },
            "callbacks.concurrency",
        ),
    ];
    for (config, key) in cases {
        let e = config.validate().unwrap_err().to_string();
        assert!(e.starts_with(key), "{key}: {e}");
    }
}

/// An endpoint that takes every post after `delay`, keeping when each arrived.
async fn serve_slow(delay: Duration, seen: Arc<Mutex<Vec<std::time::Instant>>>) -> CallbackUrl {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(std::time::Instant::now());
                tokio::time::sleep(delay).await;
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    CallbackUrl::new(&format!("http://{addr}/events")).unwrap()
}

#[tokio::test]
async fn a_slow_endpoint_holds_only_its_own_slots() {
    let (slow_seen, fast_seen) = (Arc::default(), Arc::default());
    let slow = serve_slow(Duration::from_secs(3), Arc::clone(&slow_seen)).await;
    let fast = serve_slow(Duration::ZERO, Arc::clone(&fast_seen)).await;
    let clock: Arc<dyn Clock> = Arc::new(sms_core::SystemClock);
    let outbox = Arc::new(MemoryOutbox::new());
    let made = clock.now() - chrono::Duration::seconds(1);
    let event = |url: &CallbackUrl| {
        StatusEvent::new(MessageId::new(), CallbackStatus::Sent, made).to_callback(url, made)
    };
    // The slow endpoint's events are the oldest, so they are claimed first.
    let mut events: Vec<_> = (0..2).map(|_| event(&slow)).collect();
    events.extend((0..6).map(|_| event(&fast)));
    outbox.enqueue(&events).await.unwrap();
    let config = CallbacksConfig {
        secret: Some(crate::config::Secret::new(SECRET)),
        concurrency: 4,
        allow_private_hosts: true,
        ..CallbacksConfig::default()
    };
    let dispatcher =
        Dispatcher::new(outbox.clone(), SECRET, config, "t".into(), clock, None).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let started = std::time::Instant::now();
    let task = tokio::spawn(dispatcher.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fast_posts = fast_seen.lock().unwrap().clone();
    assert_eq!(
        fast_posts.len(),
        6,
        "the fast endpoint got all its events meanwhile"
    );
    assert!(
        fast_posts
            .iter()
            .all(|at| at.duration_since(started) < Duration::from_secs(1))
    );
    assert_eq!(slow_seen.lock().unwrap().len(), 2);
    assert_eq!(
        outbox.counts().await.unwrap().delivered,
        6,
        "the slow posts are still out"
    );
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        outbox.counts().await.unwrap().delivered,
        8,
        "a stop lets the posts in flight finish and records them"
    );
}

#[tokio::test]
async fn without_allow_private_hosts_a_loopback_endpoint_gets_no_post() {
    let endpoint = Arc::new(Endpoint::default());
    let url = serve(endpoint.clone()).await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let outbox = Arc::new(MemoryOutbox::new());
    let event = StatusEvent::new(MessageId::new(), CallbackStatus::Sent, clock.now());
    outbox
        .enqueue(&[event.to_callback(&url, clock.now())])
        .await
        .unwrap();
    let config = CallbacksConfig {
        secret: Some(crate::config::Secret::new(SECRET)),
        ..CallbacksConfig::default()
    };
    let dispatcher =
        Dispatcher::new(outbox.clone(), SECRET, config, "t".into(), clock, None).unwrap();
    dispatcher.pass().await.unwrap();
    assert!(
        endpoint.posts.lock().unwrap().is_empty(),
        "nothing reached 127.0.0.1"
    );
    assert_eq!(
        outbox.counts().await.unwrap().pending,
        1,
        "kept for a retry"
    );
}
