//! Fault scenarios on the real binary: `kill -9` during a drain, Redis and Postgres
//! "stopped" (a TCP proxy in between is cut, the shared servers are never touched), and
//! two instances sharing one Postgres schema and one Redis prefix.
//!
//! The promise under test: every accepted message (200 or 202) is delivered (it is in
//! the vendors' delivery log, written outside the gateway process) or is visibly dead
//! or expired; the gateway sends a message twice only where a crash or a timeout made
//! the outcome unknown, and never more often than the messages leased at the crash.
//!
//! These tests take tens of seconds each and load the machine, so they are ignored by
//! the plain test run and run one at a time by `cargo xtask chaos` (which `cargo xtask
//! ci` runs after the tests). Each prints one `chaos-figures {...}` line with the figures
//! quoted in docs/RELIABILITY.md.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::outcomes::{
    bounded, count, deliveries, figures, load, message, outcome, queue_stats, tail, wait_settled,
};
use crate::proxy::{Proxy, host_port};
use crate::server::{Backends, Server, drop_schema, shared_backends};

// ---------------------------------------------------------------------------------
// Crash: kill -9 during the drain.

/// A backlog builds because the global limit is low and the cheapest vendor is down;
/// leases are short so the restarted gateway takes over the killed one's messages soon.
const CRASH: &str = r#"
[failover]
attempt_timeout_ms = 1000
cooldown_s = 600
[queue]
backoff_base_ms = 50
backoff_max_s = 1
drain_interval_ms = 100
drain_batch = 8
lease_s = 3
[limit]
global_per_second = 25
recipient_windows = []
[vendors.aliyun]
order = 0
simulation = { latency_ms = 1, outage = true }
[vendors.tencent]
order = 1
simulation = { latency_ms = 15, jitter_ms = 10 }
"#;

const CRASH_MESSAGES: usize = 200;

async fn crash_during_drain(backends: &Backends, name: &str) {
    let mut server = Server::start(backends, CRASH).await;
    let bodies = (0..CRASH_MESSAGES)
        .map(|i| message(&format!("+86138{i:08}")))
        .collect();
    let load = load(&server, bodies, 16).await;
    assert!(
        load.refused.is_empty(),
        "nothing is refused under load: {load:?}"
    );
    assert!(
        load.queued_total() > CRASH_MESSAGES / 2,
        "a backlog builds: {load:?}"
    );

    // Wait until the drain is under way, read how many messages are leased, kill -9.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (before_kill, leased_at_kill) = loop {
        let stats = queue_stats(&server).await.expect("queue stats");
        let drained = count(&stats, "sent") as usize;
        if drained > load.sent + 20 && count(&stats, "queued") > 0 {
            let leased = count(&stats, "leased");
            server.kill9();
            break (stats, leased);
        }
        assert!(
            Instant::now() < deadline,
            "the drain never got going: {stats}\n{}",
            tail(&server.log())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_at = Instant::now();
    server.restart(backends).await;
    let settled = wait_settled(&server, Duration::from_secs(90)).await;
    let recovered_s = killed_at.elapsed().as_secs_f64();

    let result = outcome(&server, &load.accepted, &[server.deliveries_path()]).await;
    figures(
        name,
        json!({
            "http_200": load.sent, "http_202": load.queued, "queue_before_kill": before_kill,
            "leased_at_kill": leased_at_kill, "queue_settled": settled,
            "settled_after_kill_s": (recovered_s * 10.0).round() / 10.0, "outcome": result,
        }),
    );
    assert!(
        result.lost.is_empty(),
        "accepted messages lost: {:?}",
        result.lost
    );
    assert_eq!(result.accepted, CRASH_MESSAGES);
    // A duplicate needs a message that was delivered but not yet marked sent when the
    // process died: such a message was leased then. The count is read a moment before
    // the kill, so one more batch may have been claimed in between.
    let bound = leased_at_kill as usize + 8;
    assert!(
        result.duplicates <= bound,
        "{} duplicates, more than the {bound} messages that can have been leased at the kill",
        result.duplicates
    );
    // Each of them was claimed again after its lease lapsed, and says so.
    assert_eq!(
        result.duplicates, result.duplicates_flagged,
        "every message sent again after the kill is flagged may_duplicate"
    );
    drop(server);
}

#[tokio::test]
#[ignore = "fault scenario: run by cargo xtask chaos"]
async fn kill_9_during_the_drain_loses_nothing_on_sqlite() {
    crash_during_drain(&Backends::Embedded, "crash_sqlite").await;
}

#[tokio::test]
#[ignore = "fault scenario: run by cargo xtask chaos"]
async fn kill_9_during_the_drain_loses_nothing_on_postgres_and_redis() {
    let Some(backends) = shared_backends().await else {
        return;
    };
    crash_during_drain(&backends, "crash_postgres_redis").await;
    drop_schema(&backends).await;
}

// ---------------------------------------------------------------------------------
// Redis and Postgres "stopped" behind a proxy.

const OUTAGES: &str = r#"
[failover]
attempt_timeout_ms = 1000
cooldown_s = 1
[queue]
backoff_base_ms = 50
backoff_max_s = 1
drain_interval_ms = 100
lease_s = 3
[limit]
global_per_second = 1000
recipient_windows = [{ limit = 1, window_s = 600 }]
[vendors.aliyun]
order = 0
simulation = { latency_ms = 1 }
[vendors.tencent]
order = 1
simulation = { latency_ms = 1 }
"#;

/// Number of Redis keys matching `pattern`, with a bare RESP `KEYS` over TCP.
async fn redis_keys(addr: &str, pattern: &str) -> usize {
    tokio::time::timeout(Duration::from_secs(30), redis_keys_unbounded(addr, pattern))
        .await
        .expect("Redis answered KEYS within 30 s")
}

async fn redis_keys_unbounded(addr: &str, pattern: &str) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting to Redis");
    let cmd = format!("*2\r\n$4\r\nKEYS\r\n${}\r\n{pattern}\r\n", pattern.len());
    s.write_all(cmd.as_bytes()).await.expect("KEYS");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.expect("reading KEYS");
        assert!(n > 0, "Redis closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            return head
                .strip_prefix('*')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected KEYS reply {head:?}"));
        }
    }
}

fn with_urls(backends: &Backends, database_url: String, redis_url: String) -> Backends {
    let Backends::Shared {
        schema, key_prefix, ..
    } = backends
    else {
        unreachable!("shared backends")
    };
    Backends::Shared {
        database_url,
        redis_url,
        schema: schema.clone(),
        key_prefix: key_prefix.clone(),
    }
}

#[tokio::test]
#[ignore = "fault scenario: run by cargo xtask chaos"]
async fn redis_and_postgres_outages_keep_sending_and_lose_nothing() {
    let Some(real) = shared_backends().await else {
        return;
    };
    let Backends::Shared {
        database_url,
        redis_url,
        key_prefix,
        ..
    } = &real
    else {
        unreachable!()
    };
    let pg_addr = host_port(database_url, 5432);
    let redis_addr = host_port(redis_url, 6379);
    let pg = Proxy::start(&pg_addr).await;
    let redis = Proxy::start(&redis_addr).await;
    let proxied = with_urls(
        &real,
        pg.rewrite(database_url, &pg_addr),
        redis.rewrite(redis_url, &redis_addr),
    );
    let server = Server::start(&proxied, OUTAGES).await;
    let mut accepted = Vec::new();
    let mut n = 0u32;
    let mut next = || {
        n += 1;
        format!("+86139{n:08}")
    };

    // Before: one send to a number Redis will remember for 10 minutes.
    let remembered = next();
    let first = load(&server, vec![message(&remembered)], 1).await;
    assert_eq!(first.sent, 1, "{first:?}");
    accepted.extend(first.accepted);
    let keys_before = redis_keys(&redis_addr, &format!("{key_prefix}limit:*")).await;
    assert!(keys_before > 0, "the limiters keep their state in Redis");

    eprintln!("outage scenario: redis down");
    // Redis down: fail_open, so sending goes on at this instance's share.
    redis.down();
    let bodies = (0..30).map(|_| message(&next())).collect();
    let during_redis = load(&server, bodies, 6).await;
    accepted.extend(during_redis.accepted.iter().cloned());
    assert_eq!(
        during_redis.sent, 30,
        "fail_open: every send goes out while Redis is down: {during_redis:?}"
    );

    eprintln!("outage scenario: redis up");
    // Redis back: poll with fresh numbers until the limiter writes to Redis again.
    redis.up();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(30);
    loop {
        let r = load(&server, vec![message(&next())], 1).await;
        accepted.extend(r.accepted);
        if redis_keys(&redis_addr, &format!("{key_prefix}limit:*")).await > keys_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limiters never used Redis again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let redis_recovered_s = back.elapsed().as_secs_f64();
    // The number sent before the outage is known only to Redis: refusing it again shows
    // the shared per-recipient window is in force again.
    let again = load(&server, vec![message(&remembered)], 1).await;
    assert_eq!(
        again.refused.get("429 recipient_limited"),
        Some(&1),
        "shared limits resume after Redis is back: {again:?}"
    );

    eprintln!("outage scenario: pg down");
    // Postgres down: direct sends go on; what needs the store gets 503 with a reason.
    pg.down();
    let bodies = (0..20).map(|_| message(&next())).collect();
    let during_pg = load(&server, bodies, 4).await;
    accepted.extend(during_pg.accepted.iter().cloned());
    assert_eq!(
        during_pg.sent, 20,
        "direct sends need no database: {during_pg:?}"
    );
    let mut keyed = message(&next());
    keyed["idempotency_key"] = json!("needs-the-store-1");
    let r = bounded(
        &server,
        "POST with a key",
        server.post("/v1/messages", keyed),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "503 names the reason: {body}"
    );
    let pg_503_reason = body["error"].clone();
    eprintln!("outage scenario: vendors down");
    // Every vendor down: the send must be queued, and the queue is unreachable.
    for v in ["aliyun", "tencent"] {
        let r = server
            .client
            .put(server.url(&format!("/v1/vendors/{v}/simulation")))
            .bearer_auth(crate::server::TOKEN)
            .json(&json!({ "outage": true, "latency_ms": 1 }))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let vendors_down = load(&server, (0..4).map(|_| message(&next())).collect(), 1).await;
    accepted.extend(vendors_down.accepted.iter().cloned());
    assert!(
        vendors_down.refused.keys().all(|k| k.starts_with("503")),
        "a send that needs the queue while Postgres is down is a 503: {vendors_down:?}"
    );
    assert!(queue_stats(&server).await.is_none(), "GET /v1/queue is 503");

    eprintln!("outage scenario: pg up");
    // Postgres back: the queue answers again; the vendors come back too.
    pg.up();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    while queue_stats(&server).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the queue never came back\n{}",
            tail(&server.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pg_recovered_s = back.elapsed().as_secs_f64();
    eprintln!("outage scenario: queue back");
    // With every vendor still down the queue takes the messages now.
    let queued_after = load(&server, (0..5).map(|_| message(&next())).collect(), 1).await;
    accepted.extend(queued_after.accepted.iter().cloned());
    assert_eq!(
        queued_after.accepted.len(),
        5,
        "the queue resumes: {queued_after:?}"
    );
    for v in ["aliyun", "tencent"] {
        let r = server
            .client
            .put(server.url(&format!("/v1/vendors/{v}/simulation")))
            .bearer_auth(crate::server::TOKEN)
            .json(&json!({ "latency_ms": 1 }))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let settled = wait_settled(&server, Duration::from_secs(60)).await;
    let result = outcome(&server, &accepted, &[server.deliveries_path()]).await;
    // Direct sends during the outage were delivered while their records could not be
    // written; the gateway writes them once Postgres answers again.
    let deadline = Instant::now() + Duration::from_secs(90);
    let unrecorded = loop {
        let mut unrecorded = 0;
        for id in &during_pg.accepted {
            let r = bounded(&server, "GET", server.get(&format!("/v1/messages/{id}"))).await;
            if r.status() == StatusCode::NOT_FOUND {
                unrecorded += 1;
            }
        }
        if unrecorded == 0 || Instant::now() > deadline {
            break unrecorded;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    figures(
        "redis_postgres_outage",
        json!({
            "during_redis_outage": { "http_200": during_redis.sent, "refused": during_redis.refused },
            "redis_recovered_s": (redis_recovered_s * 10.0).round() / 10.0,
            "during_postgres_outage": { "http_200": during_pg.sent, "refused": during_pg.refused,
                "queue_needed_refused": vendors_down.refused, "reason": pg_503_reason,
                "delivered_but_not_recorded": unrecorded },
            "postgres_recovered_s": (pg_recovered_s * 10.0).round() / 10.0,
            "queue_settled": settled, "outcome": result,
        }),
    );
    assert!(result.lost.is_empty(), "lost: {:?}", result.lost);
    assert_eq!(result.duplicates, 0);
    assert_eq!(
        unrecorded, 0,
        "messages sent during the Postgres outage can be looked up once it is back"
    );
    drop(server);
    drop_schema(&real).await;
}

// ---------------------------------------------------------------------------------
// Two instances, one Postgres schema, one Redis prefix.

const TWO: &str = r#"
[failover]
attempt_timeout_ms = 1000
cooldown_s = 600
[queue]
backoff_base_ms = 50
backoff_max_s = 1
drain_interval_ms = 100
drain_batch = 10
lease_s = 5
[limit]
global_per_second = 20
instances = 2
recipient_windows = []
[vendors.aliyun]
order = 0
simulation = { latency_ms = 1, outage = true }
[vendors.tencent]
order = 1
simulation = { latency_ms = 5, jitter_ms = 10 }
"#;

#[tokio::test]
#[ignore = "fault scenario: run by cargo xtask chaos"]
async fn two_instances_share_the_global_limit_and_never_send_twice() {
    let Some(backends) = shared_backends().await else {
        return;
    };
    let a = Server::start(&backends, TWO).await;
    let b = Server::start(&backends, TWO).await;
    let per_instance = 100;
    let bodies = |tag: u32| -> Vec<Value> {
        (0..per_instance)
            .map(|i| message(&format!("+86137{tag}{i:07}")))
            .collect()
    };
    let started = Instant::now();
    let (la, lb) = tokio::join!(load(&a, bodies(1), 10), load(&b, bodies(2), 10));
    let burst_s = started.elapsed().as_secs_f64();
    for l in [&la, &lb] {
        assert!(l.refused.is_empty(), "{l:?}");
    }
    // Direct sends each took a permit of the shared 20/s window: over the burst, both
    // instances together cannot have sent more than 20 per started second.
    let direct = la.sent + lb.sent;
    let allowed = 20 * (burst_s.ceil() as usize + 1);
    assert!(
        direct <= allowed,
        "{direct} direct sends in {burst_s:.1}s: the global limit of 20/s did not hold"
    );
    let mut accepted = la.accepted.clone();
    accepted.extend(lb.accepted.iter().cloned());

    let settled = wait_settled(&a, Duration::from_secs(90)).await;
    let logs = [a.deliveries_path(), b.deliveries_path()];
    let result = outcome(&a, &accepted, &logs).await;
    // The busiest second of deliveries, over both logs.
    let mut times: Vec<i64> = logs
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|r| {
                    r["at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.timestamp_millis())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    times.sort_unstable();
    let busiest = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + 1000)
                .count()
        })
        .max()
        .unwrap_or(0);
    // 200 permits at most 20 in any 1 s window need at least 9 s between the first and
    // the last; a delivery follows its permit after a short lag (1 s allowed here).
    // Slowness only lengthens the span: this fails only if the limit leaked.
    let span_s = match (times.first(), times.last()) {
        (Some(first), Some(last)) => (last - first) as f64 / 1000.0,
        _ => 0.0,
    };
    let min_span_s = (times.len() as f64 - 20.0) / 20.0 - 1.0;
    let per_log: Vec<usize> = logs
        .iter()
        .map(|p| deliveries(std::slice::from_ref(p)).values().sum())
        .collect();
    figures(
        "two_instances",
        json!({
            "http_200": direct, "http_202": la.queued_total() + lb.queued_total(),
            "burst_s": (burst_s * 10.0).round() / 10.0, "busiest_second_deliveries": busiest,
            "delivery_span_s": (span_s * 10.0).round() / 10.0, "min_span_s": min_span_s,
            "deliveries_per_instance": per_log, "queue_settled": settled, "outcome": result,
        }),
    );
    assert!(result.lost.is_empty(), "lost: {:?}", result.lost);
    assert!(
        span_s >= min_span_s,
        "{} deliveries within {span_s:.1}s: the shared limit of 20/s leaked",
        times.len()
    );
    assert_eq!(
        result.duplicates - result.duplicates_flagged,
        0,
        "no message is sent by both drainers"
    );
    assert!(
        per_log.iter().all(|n| *n > 0),
        "both instances delivered: {per_log:?}"
    );
    drop((a, b));
    drop_schema(&backends).await;
}

mod health;
