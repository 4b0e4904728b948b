//! Four instances sharing one vendor health through the board in Redis, under steady
//! load: a vendor outage, an operator's switch-off and a Redis cut.
//!
//! What a deployment of several instances promises about vendor health:
//! - a vendor that goes down is charged by every instance's failures together, so the
//!   deployment sends about N failed attempts to it before all instances switch (not N
//!   per instance), and they switch within a second of each other;
//! - a vendor an operator disables on one instance is out of rotation on every instance
//!   within a second;
//! - when Redis is unreachable each instance says it decides alone and keeps sending,
//!   and when Redis is back they all share the board again within seconds and agree on
//!   the vendor;
//! - through all of it, every accepted message is delivered once (or is visibly dead or
//!   expired), as in the other fault scenarios.
//!
//! Redis is reached through a [`Proxy`] so it can be cut without touching the server;
//! Postgres is reached directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::with_urls;
use crate::outcomes::{bounded, deliveries, figures, message, outcome, tail, wait_settled};
use crate::proxy::{Proxy, host_port};
use crate::server::{Backends, Server, TOKEN, drop_schema, shared_backends};

/// Failures in a row that switch vendor.
const N: u64 = 3;
const INSTANCES: usize = 4;

const CONFIG: &str = r#"
[failover]
consecutive_failures = 3
cooldown_s = 600
attempt_timeout_ms = 1000
[queue]
backoff_base_ms = 50
backoff_max_s = 1
drain_interval_ms = 100
drain_batch = 10
lease_s = 5
[limit]
global_per_second = 1000
instances = 4
recipient_windows = []
[vendors.aliyun]
order = 0
simulation = { latency_ms = 5 }
[vendors.tencent]
order = 1
simulation = { latency_ms = 5 }
[vendors.cloopen]
order = 2
simulation = { latency_ms = 5 }
"#;

/// One answer to a send.
#[derive(Debug)]
struct Answer {
    /// When the answer came.
    at: Instant,
    status: StatusCode,
    /// The message id, when accepted.
    id: Option<String>,
    /// The error code, when refused.
    error: String,
}

/// Sends one message every 20 ms to `server`, each to a fresh number, until `stop`.
fn sender(server: Arc<Server>, tag: usize, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Answer>> {
    tokio::spawn(async move {
        let mut answers = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut n = 0u32;
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            n += 1;
            let body = message(&format!("+8613{tag}{n:08}"));
            let r = bounded(
                &server,
                "POST /v1/messages",
                server.post("/v1/messages", body),
            )
            .await;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            answers.push(Answer {
                at: Instant::now(),
                status,
                id: body["id"].as_str().map(str::to_owned),
                error: body["error"]["code"].as_str().unwrap_or("").to_owned(),
            });
        }
        answers
    })
}

/// `GET /v1/vendors`.
async fn vendors(server: &Server) -> Value {
    let r = bounded(server, "GET /v1/vendors", server.get("/v1/vendors")).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("vendors json")
}

/// `GET /v1/vendors` on every instance at once, with the instant each answered.
async fn vendors_all(servers: &[Arc<Server>]) -> Vec<(Instant, Value)> {
    join_all(servers.iter().map(|s| async move {
        let v = vendors(s).await;
        (Instant::now(), v)
    }))
    .await
}

/// Polls every instance every 10 ms until `holds` is true of each, and returns, per
/// instance, the first instant it held (`None`: not within `within`), with the last
/// answers read.
async fn first_instants(
    servers: Vec<Arc<Server>>,
    within: Duration,
    holds: impl Fn(&Value) -> bool,
) -> (Vec<Option<Instant>>, Vec<Value>) {
    let deadline = Instant::now() + within;
    let mut first = vec![None; servers.len()];
    loop {
        let answers = vendors_all(&servers).await;
        for (i, (at, v)) in answers.iter().enumerate() {
            if first[i].is_none() && holds(v) {
                first[i] = Some(*at);
            }
        }
        if first.iter().all(Option::is_some) || Instant::now() > deadline {
            return (first, answers.into_iter().map(|(_, v)| v).collect());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The latest of `instants` after `from`, in milliseconds; panics with `what` and the
/// state read when an instance never got there.
fn latest_ms(instants: &[Option<Instant>], from: Instant, what: &str, last: &[Value]) -> u64 {
    let all: Vec<Instant> = instants.iter().flatten().copied().collect();
    assert_eq!(
        all.len(),
        instants.len(),
        "{what}: not every instance got there: {instants:?}\nlast read: {}",
        json!(last)
    );
    let latest = all.into_iter().max().expect("instances");
    latest.saturating_duration_since(from).as_millis() as u64
}

/// Sets vendor `vendor`'s simulated faults on `server`.
async fn simulate(server: &Server, vendor: &str, settings: Value) {
    let r = bounded(
        server,
        "PUT simulation",
        server
            .client
            .put(server.url(&format!("/v1/vendors/{vendor}/simulation")))
            .bearer_auth(TOKEN)
            .json(&settings)
            .send(),
    )
    .await
    .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
}

/// Attempts on `vendor` that did not end `ok`, from this instance's `/metrics`.
async fn failed_sends(server: &Server, vendor: &str) -> u64 {
    let text = bounded(
        server,
        "GET /metrics",
        server.client.get(server.url("/metrics")).send(),
    )
    .await
    .expect("GET /metrics")
    .text()
    .await
    .expect("metrics text");
    let mut failed = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("sms_sends_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if labels.contains(&format!("vendor=\"{vendor}\"")) && !labels.contains("outcome=\"ok\"") {
            failed += value.trim().parse::<f64>().expect("a counter value");
        }
    }
    failed as u64
}

/// The `vendors[]` entry for `vendor` in a `GET /v1/vendors` answer.
fn entry<'a>(view: &'a Value, vendor: &str) -> &'a Value {
    view["vendors"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["id"] == vendor))
        .unwrap_or(&Value::Null)
}

fn logs(servers: &[Arc<Server>]) -> String {
    servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("--- instance {i}\n{}", tail(&s.log())))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
#[ignore = "fault scenario: run by cargo xtask chaos"]
async fn four_instances_share_one_vendor_health() {
    let Some(real) = shared_backends().await else {
        return;
    };
    let Backends::Shared {
        database_url,
        redis_url,
        ..
    } = &real
    else {
        unreachable!()
    };
    let test_started = Instant::now();
    let redis_addr = host_port(redis_url, 6379);
    let proxy = Proxy::start(&redis_addr).await;
    let backends = with_urls(
        &real,
        database_url.clone(),
        proxy.rewrite(redis_url, &redis_addr),
    );
    let servers: Vec<Arc<Server>> =
        join_all((0..INSTANCES).map(|_| Server::start(&backends, CONFIG)))
            .await
            .into_iter()
            .map(Arc::new)
            .collect();

    // Every instance starts on the same vendor: the cheapest by the fee schedules.
    let start = vendors_all(&servers).await;
    let downed = start[0].1["current"]
        .as_str()
        .expect("current vendor")
        .to_owned();
    for (i, (_, v)) in start.iter().enumerate() {
        assert_eq!(v["current"], downed.as_str(), "instance {i} agrees: {v}");
        assert_eq!(v["deployment"]["shared"], true, "instance {i} shares: {v}");
    }
    eprintln!("shared health: 4 instances up, current vendor {downed}");

    // 1. Steady load on every instance, kept up through phases 2 to 4.
    eprintln!("shared health: steady load");
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| sender(Arc::clone(s), i, Arc::clone(&stop)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. The current vendor goes down everywhere at once.
    eprintln!("shared health: {downed} goes down");
    let watcher = {
        let downed = downed.clone();
        tokio::spawn(first_instants(
            servers.clone(),
            Duration::from_secs(10),
            move |v| v["current"] != downed.as_str(),
        ))
    };
    join_all(
        servers
            .iter()
            .map(|s| simulate(s, &downed, json!({ "outage": true, "latency_ms": 1 }))),
    )
    .await;
    let (switched, last) = watcher.await.expect("watcher");
    let earliest = switched.iter().flatten().min().copied();
    let latest = latest_ms(
        &switched,
        earliest.unwrap_or_else(Instant::now),
        "switch away from the downed vendor",
        &last,
    );
    let switch_spread_ms = latest;
    eprintln!("shared health: all switched within {switch_spread_ms} ms of each other");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_before_switch: u64 = join_all(servers.iter().map(|s| failed_sends(s, &downed)))
        .await
        .into_iter()
        .sum();
    eprintln!(
        "shared health: {failed_before_switch} failed sends to {downed} in all (N = {N}, \
         {} instances)",
        INSTANCES
    );
    assert!(
        switch_spread_ms <= 1000,
        "the last instance switched {switch_spread_ms} ms after the first\n{}",
        logs(&servers)
    );
    assert!(
        failed_before_switch <= N + INSTANCES as u64,
        "{failed_before_switch} failed sends to {downed} before every instance switched: \
         more than N + {INSTANCES} = {}\n{}",
        N + INSTANCES as u64,
        logs(&servers)
    );
    // A switch needs N failures charged: fewer counted means the metrics were misread.
    assert!(
        failed_before_switch >= N,
        "only {failed_before_switch} failed sends to {downed} in /metrics"
    );

    // 3. An operator disables the vendor now current, on instance 0 only.
    let second = vendors(&servers[0]).await["current"]
        .as_str()
        .expect("current")
        .to_owned();
    assert_ne!(second, downed);
    eprintln!("shared health: disabling {second} through instance 0");
    let disabled_at = Instant::now();
    let r = bounded(
        &servers[0],
        "POST disable",
        servers[0].post(&format!("/v1/vendors/{second}/disable"), json!({})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (out, last) = {
        let (downed, second) = (downed.clone(), second.clone());
        first_instants(servers.clone(), Duration::from_secs(5), move |v| {
            v["current"] != downed.as_str()
                && v["current"] != second.as_str()
                && entry(v, &second)["disabled"] == true
        })
        .await
    };
    let disable_propagation_ms = latest_ms(&out, disabled_at, "disable propagated", &last);
    let third = last[0]["current"].as_str().expect("current").to_owned();
    eprintln!(
        "shared health: {second} out of rotation everywhere after {disable_propagation_ms} ms, \
         now on {third}"
    );
    assert!(
        disable_propagation_ms <= 1000,
        "disabling {second} took {disable_propagation_ms} ms to reach every instance\n{}",
        logs(&servers)
    );

    // 4. Redis cut: each instance decides alone and keeps sending; then Redis is back.
    eprintln!("shared health: redis cut");
    proxy.down();
    let cut_at = Instant::now();
    let (apart, last) = first_instants(servers.clone(), Duration::from_secs(5), |v| {
        v["deployment"]["shared"] == false
    })
    .await;
    let redis_cut_detected_ms = latest_ms(&apart, cut_at, "shared: false", &last);
    eprintln!("shared health: every instance apart after {redis_cut_detected_ms} ms");
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("shared health: redis back");
    proxy.up();
    let back_at = Instant::now();
    let (joined, last) = first_instants(servers.clone(), Duration::from_secs(10), |v| {
        v["deployment"]["shared"] == true
    })
    .await;
    let rejoin_ms = latest_ms(&joined, back_at, "shared: true again", &last);
    eprintln!("shared health: every instance shares the board again after {rejoin_ms} ms");
    assert!(
        rejoin_ms <= 5000,
        "rejoining took {rejoin_ms} ms\n{}",
        logs(&servers)
    );
    // Reports are written every half second: wait for every instance's to be fresh.
    let deadline = Instant::now() + Duration::from_secs(3);
    let after = loop {
        let views = vendors_all(&servers).await;
        let agree = views.iter().all(|(_, v)| v["current"] == third.as_str());
        let listed = views[0].1["deployment"]["instances"]
            .as_array()
            .map_or(0, Vec::len);
        if (agree && listed == INSTANCES) || Instant::now() > deadline {
            break views;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (i, (_, v)) in after.iter().enumerate() {
        assert_eq!(
            v["current"],
            third.as_str(),
            "instance {i} agrees after rejoining: {v}"
        );
    }
    let listed = after[0].1["deployment"]["instances"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        listed, INSTANCES,
        "instance 0 lists every instance: {}",
        after[0].1["deployment"]
    );

    // 5. Stop the load; account for every accepted message.
    eprintln!("shared health: stopping the load");
    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for s in senders {
        answers.push(s.await.expect("sender"));
    }
    let (mut http_200, mut http_202) = (0, 0);
    let mut refused: HashMap<String, usize> = HashMap::new();
    let mut accepted = Vec::new();
    let mut during_cut = Vec::new();
    for (i, list) in answers.iter().enumerate() {
        let (mut sent, mut refused_5xx) = (0, 0);
        for a in list {
            match a.status {
                StatusCode::OK | StatusCode::ACCEPTED => {
                    accepted.push(a.id.clone().expect("accepted answers carry an id"));
                    if a.status == StatusCode::OK {
                        http_200 += 1;
                    } else {
                        http_202 += 1;
                    }
                }
                other => {
                    *refused
                        .entry(format!("{} {}", other.as_u16(), a.error))
                        .or_default() += 1;
                }
            }
            let apart_since = apart[i].expect("apart");
            if a.at > apart_since && a.at < back_at {
                if a.status == StatusCode::OK {
                    sent += 1;
                }
                if a.status.is_server_error() {
                    refused_5xx += 1;
                }
            }
        }
        during_cut.push(json!({ "http_200": sent, "http_5xx": refused_5xx }));
        assert!(
            sent > 0,
            "instance {i} sent nothing while Redis was cut\n{}",
            tail(&servers[i].log())
        );
        assert_eq!(
            refused_5xx,
            0,
            "instance {i} refused sends with 5xx while Redis was cut\n{}",
            tail(&servers[i].log())
        );
    }
    let settled = wait_settled(&servers[0], Duration::from_secs(60)).await;
    let paths: Vec<_> = servers.iter().map(|s| s.deliveries_path()).collect();
    let result = outcome(&servers[0], &accepted, &paths).await;
    let per_log: Vec<usize> = paths
        .iter()
        .map(|p| deliveries(std::slice::from_ref(p)).values().sum())
        .collect();

    // 6. The figures.
    let wall_s = test_started.elapsed().as_secs_f64();
    figures(
        "shared_health",
        json!({
            "instances": INSTANCES, "n": N, "vendors": [downed, second, third],
            "failed_sends_before_switch": failed_before_switch,
            "switch_spread_ms": switch_spread_ms,
            "disable_propagation_ms": disable_propagation_ms,
            "redis_cut_detected_ms": redis_cut_detected_ms, "rejoin_ms": rejoin_ms,
            "during_redis_cut": during_cut, "http_200": http_200, "http_202": http_202,
            "refused": refused, "deliveries_per_instance": per_log, "queue_settled": settled,
            "outcome": result, "wall_s": (wall_s * 10.0).round() / 10.0,
        }),
    );
    assert!(result.lost.is_empty(), "lost: {:?}", result.lost);
    assert_eq!(
        result.duplicates, 0,
        "no message is sent twice: this scenario has no timeouts and no crash"
    );
    drop(servers);
    drop(proxy);
    drop_schema(&real).await;
}
