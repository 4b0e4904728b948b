//! Trace export: `serve` with `[telemetry] otlp_endpoint` sends its spans to a collector
//! over OTLP/HTTP. A stand-in collector decodes what arrives; the spans of a live send
//! and of a drained one must be there, in their traces, with message ids and without
//! phone numbers. The export interval is a minute, so the spans only arrive because
//! `serve` sends what is left when it stops.

#![cfg(feature = "otlp")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::VENDORS;
use crate::server::{Backends, Server};

/// The bodies a stand-in collector received.
type Received = Arc<Mutex<Vec<Bytes>>>;

/// Serves `POST /v1/traces` on a free port, keeping each body; the collector's URL.
async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(|State(kept): State<Received>, body: Bytes| async move {
                kept.lock().unwrap().push(body);
                // An empty ExportTraceServiceResponse: everything accepted.
                StatusCode::OK
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}/v1/traces"), received)
}

/// The string, integer, float or boolean attributes of a span, as text.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => s.clone(),
                Any::IntValue(i) => i.to_string(),
                Any::DoubleValue(d) => d.to_string(),
                Any::BoolValue(b) => b.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

/// Every span in the bodies, and the service name they were filed under.
fn decode(bodies: &[Bytes]) -> (Vec<Span>, Vec<String>) {
    let mut spans = Vec::new();
    let mut services = Vec::new();
    for body in bodies {
        let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
        for resource_spans in request.resource_spans {
            for kv in resource_spans.resource.iter().flat_map(|r| &r.attributes) {
                if kv.key == "service.name"
                    && let Some(Any::StringValue(name)) =
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                {
                    services.push(name.clone());
                }
            }
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    (spans, services)
}

/// The one span named `name` whose attribute `key` is `value`.
fn find<'a>(spans: &'a [Span], name: &str, key: &str, value: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == name && attributes(s).get(key).map(String::as_str) == Some(value))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} span with {key} = {value}, found {}; spans: {:?}",
        found.len(),
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

/// The spans of `trace` named `name`.
fn named<'a>(spans: &'a [Span], trace: &[u8], name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace && s.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_live_and_drained_sends_reach_the_collector_without_phone_numbers() {
    let (endpoint, received) = collector().await;
    let config = format!(
        "{VENDORS}\n[limit]\nglobal_per_second = 1\nrecipient_windows = [{{ limit = 10, window_s = 60 }}]\n\
         [telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gateway-under-test\"\n\
         export_interval_ms = 60000\n"
    );
    let server = Server::start(&Backends::Embedded, &config).await;
    // Two numbers: the vendors allow one code a minute to each.
    let numbers = ["+8613912345678", "+8613987654321"];
    let send = |key: &str, number: &str| {
        json!({
            "template": "SMS_LOGIN",
            "args": ["4321"],
            "recipients": [number],
            "idempotency_key": key,
        })
    };

    // The first takes the one permit of this second and goes out; the second is over
    // the global limit, stored, and sent by the drain a second later.
    let live = server
        .post("/v1/messages", send("trace-live", numbers[0]))
        .await;
    assert_eq!(live.status(), StatusCode::OK);
    let live: Value = live.json().await.unwrap();
    let limited = server
        .post("/v1/messages", send("trace-limited", numbers[1]))
        .await;
    assert_eq!(limited.status(), StatusCode::ACCEPTED);
    let limited: Value = limited.json().await.unwrap();
    assert_eq!(limited["reason"], "rate_limited");
    let (live_id, drained_id) = (
        live["id"].as_str().unwrap().to_owned(),
        limited["id"].as_str().unwrap().to_owned(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let message: Value = server
            .get(&format!("/v1/messages/{drained_id}"))
            .await
            .json()
            .await
            .unwrap();
        if message["status"] == "sent" {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {message}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        received.lock().unwrap().is_empty(),
        "a minute's interval exported before the stop"
    );

    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "nothing exported at the stop");
    for (body, number) in bodies.iter().flat_map(|b| numbers.map(|n| (b, n))) {
        // Neither the number nor its national part, in any field.
        let national = &number[3..];
        assert!(
            !body
                .windows(national.len())
                .any(|w| w == national.as_bytes()),
            "{number} was exported"
        );
    }
    let (spans, services) = decode(&bodies);
    assert!(
        services.iter().all(|s| s == "gateway-under-test"),
        "{services:?}"
    );

    // The live send: intake, both limit checks, the vendor call and the queue writes
    // of a keyed message, all in one trace.
    let intake = find(&spans, "intake", "message_id", &live_id);
    let intake_attributes = attributes(intake);
    assert_eq!(intake_attributes["outcome"], "sent");
    assert_eq!(intake_attributes["template"], "SMS_LOGIN");
    assert_eq!(intake_attributes["recipients"], "1");
    let trace = intake.trace_id.as_slice();
    let limits: Vec<String> = named(&spans, trace, "limit_check")
        .iter()
        .map(|s| attributes(s)["limit"].clone())
        .collect();
    assert_eq!(limits, ["recipient", "global"], "limit checks in order");
    let call = find(&spans, "vendor_call", "message_id", &live_id);
    assert_eq!(call.trace_id, intake.trace_id);
    let call_attributes = attributes(call);
    assert_eq!(call_attributes["vendor"], "aliyun");
    assert_eq!(call_attributes["outcome"], "ok");
    assert_eq!(call_attributes["drained"], "false");
    let latency: f64 = call_attributes["latency_ms"].parse().unwrap();
    assert!(latency > 0.0 && latency < 5_000.0, "latency {latency}");
    let writes: Vec<String> = named(&spans, trace, "queue_write")
        .iter()
        .map(|s| attributes(s)["op"].clone())
        .collect();
    assert_eq!(writes, ["enqueue", "complete"], "the keyed send's writes");
    for write in named(&spans, trace, "queue_write") {
        assert_eq!(attributes(write)["message_id"], live_id);
    }

    // The limited one: its intake says queued and its global check was refused; its
    // attempt is a drained one, in the trace of a drain pass.
    let intake = find(&spans, "intake", "message_id", &drained_id);
    assert_eq!(attributes(intake)["outcome"], "queued");
    let refused: Vec<&Span> = named(&spans, &intake.trace_id, "limit_check")
        .into_iter()
        .filter(|s| attributes(s)["limit"] == "global")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(attributes(refused[0])["allowed"], "false");
    let drained = find(&spans, "drain_message", "message_id", &drained_id);
    let call = find(&spans, "vendor_call", "message_id", &drained_id);
    assert_eq!(
        call.parent_span_id, drained.span_id,
        "the call is the message's"
    );
    assert_eq!(attributes(call)["drained"], "true");
    assert_eq!(attributes(call)["outcome"], "ok");
    let pass = spans
        .iter()
        .find(|s| s.span_id == drained.parent_span_id)
        .expect("the drain pass's span");
    assert_eq!(pass.name, "drain");
    assert!(
        named(&spans, &pass.trace_id, "queue_write")
            .iter()
            .any(|s| attributes(s)["op"] == "claim"),
        "the pass's claim is in its trace"
    );
}
