//! Deferred-queue throughput on Postgres and SQLite, next to `pgbench` running plain
//! statements of the same shape with as many clients, and the time to drain a
//! 100,000-message backlog through the gateway with instant vendors. Enqueue and
//! claim+complete are measured one message per call and batched (`enqueue_many`,
//! `complete_many`: one transaction, one commit per batch).
//!
//! Not a criterion benchmark: these are throughputs of concurrent clients against a
//! server, measured over a fixed time. `cargo xtask bench` runs it and reads the JSON
//! it writes to `SMS_BENCH_OUT`.
//!
//! Environment:
//! - `SMS_BENCH_POSTGRES_URL` (else `SMS_TEST_POSTGRES_URL`, else
//!   `postgres://postgres@127.0.0.1:5432/postgres`); an unreachable server is reported
//!   as skipped. Every run uses its own schema and drops it afterwards.
//! - `SMS_BENCH_SECONDS` (default 3): length of each timed phase.
//! - `SMS_BENCH_DRAIN` (default 100000): backlog size of the drain phase.
//! - `SMS_BENCH_DRAIN_BATCH` (default: the gateway's `drain_batch`, 100): messages the
//!   drain claims per batch.
//! - `SMS_BENCH_DRAIN_CONCURRENCY_MAX` (default: the gateway's, 512): most drained sends
//!   in flight; 8 gives the drain's old fixed concurrency.
//! - `SMS_BENCH_DRAIN_CAP_S` (default 60): longest a drain runs; a slower drain is stopped
//!   and its time projected from its rate (reported with `drain_projected = 1`).
//! - `SMS_BENCH_MODE=drain-sqlite` or `drain-postgres` (`-random` appended for random
//!   ids): only the drain phase, on that store (for profiling it);
//!   `drain-sqlite-latent`: only the drain through a 100 ms vendor.
//! - `SMS_BENCH_MODE=prefill-sqlite` or `prefill-postgres` with `SMS_BENCH_PATH` (the
//!   SQLite file, or the Postgres schema) and `SMS_BENCH_COUNT`: only fills a queue
//!   with due messages (for the memory benchmark of `serve`) and exits.

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use sms_core::{
    Completion, DeferredQueue, FeeSchedule, MessageId, Money, NewMessage, OutboundSms, QueueReason,
    Receipt, SmsRequest, StoreError, SystemClock, UsageLedger, Vendor, VendorError, VendorId,
};
use sms_failover::{FailoverConfig, Gateway, VendorEntry};
use sms_limit::InProcessLimiter;
use sms_store::postgres::{PgConfig, PgStore};
use sms_store::sqlite::SqliteStore;

/// Clients of every concurrent phase, and of the `pgbench` baselines.
const CLIENTS: usize = 8;
/// Messages claimed per claim by each worker of the claim+complete phases.
const CLAIM_BATCH: u32 = 10;
/// Messages per `enqueue_many` call of the batched enqueue phase.
const ENQUEUE_BATCH: u64 = 100;
/// Queued messages put in place before the claim+complete phase.
const CLAIMABLE: u64 = 200_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn postgres_url() -> String {
    std::env::var("SMS_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("SMS_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn request(n: u64) -> SmsRequest {
    let recipient = format!("+86138{:08}", n % 100_000_000);
    SmsRequest::new("login", ["123456"], [recipient]).expect("a valid request")
}

/// A vendor that accepts everything at once.
struct InstantVendor(VendorId);

#[async_trait]
impl Vendor for InstantVendor {
    fn id(&self) -> VendorId {
        self.0.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        Ok(Receipt {
            vendor_message_id: sms.id.to_string(),
            billed_messages: sms.request.recipients().len() as u64,
            reported_billed: None,
            recipient_ids: Vec::new(),
        })
    }
}

/// A vendor that answers like a real one: after 100 ms, give or take 20 ms.
struct LatentVendor(VendorId);

#[async_trait]
impl Vendor for LatentVendor {
    fn id(&self) -> VendorId {
        self.0.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        let micros = 80_000 + rand::random::<u64>() % 40_000;
        tokio::time::sleep(Duration::from_micros(micros)).await;
        Ok(Receipt {
            vendor_message_id: sms.id.to_string(),
            billed_messages: sms.request.recipients().len() as u64,
            reported_billed: None,
            recipient_ids: Vec::new(),
        })
    }
}

/// The global limit of the drain with vendor latency: the gateway's default, 3,000/s.
const LATENT_DRAIN_LIMIT: u32 = 3_000;

struct FlatFee;

impl FeeSchedule for FlatFee {
    fn price_at(&self, _billed_volume: u64) -> Money {
        "0.04".parse().expect("a valid price")
    }
}

/// Runs `clients` copies of `op` in a loop for `seconds`; returns operations per second
/// (`op` answers how many operations it did).
async fn rate<F, Fut>(clients: usize, seconds: f64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u64> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = client as u64 * 1_000_000_000;
                while Instant::now() < deadline {
                    let n = op(i).await;
                    done.fetch_add(n, Ordering::Relaxed);
                    i += 1;
                    if n == 0 {
                        break;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a benchmark task panicked");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn new_message(n: u64) -> NewMessage {
    NewMessage::queued(
        MessageId::new(),
        request(n),
        QueueReason::VendorFailed,
        10,
        Utc::now(),
    )
}

/// Enqueue one by one from 1 and 8 clients, in batches from 1 client, then
/// claim+complete with 8 workers completing one by one, then completing each claim's
/// messages in one batch.
async fn queue_rates(queue: Arc<dyn DeferredQueue>, seconds: f64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let q = queue.clone();
    let one = rate(1, seconds, move |i| {
        let q = q.clone();
        async move {
            q.enqueue(new_message(i)).await.expect("enqueue");
            1
        }
    })
    .await;
    out.push(("enqueue_1_per_s".to_owned(), one));
    let q = queue.clone();
    let many = rate(CLIENTS, seconds, move |i| {
        let q = q.clone();
        async move {
            q.enqueue(new_message(i)).await.expect("enqueue");
            1
        }
    })
    .await;
    out.push((format!("enqueue_{CLIENTS}_per_s"), many));
    let q = queue.clone();
    let batched = rate(1, seconds, move |i| {
        let q = q.clone();
        async move {
            let batch = (0..ENQUEUE_BATCH)
                .map(|k| new_message(i * ENQUEUE_BATCH + k))
                .collect();
            let stored = q.enqueue_many(batch).await.expect("enqueue_many");
            stored.len() as u64
        }
    })
    .await;
    out.push(("enqueue_many_1_per_s".to_owned(), batched));
    out.extend(claim_complete(queue.clone(), seconds, "claim_complete", false).await);
    out.extend(claim_complete(queue, seconds, "claim_complete_many", true).await);
    out
}

/// `CLIENTS` workers that claim `CLAIM_BATCH` messages and complete them, one by one or
/// with one `complete_many`, until `seconds` pass or the queue runs dry. Fields
/// `{name}_{CLIENTS}_per_s` (messages completed per second), `{name}_lease_lost` and
/// `{name}_claimed_twice`.
async fn claim_complete(
    q: Arc<dyn DeferredQueue>,
    seconds: f64,
    name: &str,
    batched: bool,
) -> Vec<(String, f64)> {
    let vendor = VendorId::new("instant").expect("a vendor id");
    // A message handed to two claimers at once, or a completion refused, would be a
    // correctness bug of the store, not a speed figure: count both and report them.
    let lost = Arc::new(AtomicU64::new(0));
    let twice = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let (lost_in, twice_in) = (lost.clone(), twice.clone());
    let claimed = rate(CLIENTS, seconds, move |i| {
        let (q, vendor) = (q.clone(), vendor.clone());
        let (lost, twice, seen) = (lost_in.clone(), twice_in.clone(), seen.clone());
        async move {
            let owner = format!("bench-{}", i / 1_000_000_000);
            let batch = q
                .claim(&owner, Utc::now(), Duration::from_secs(60), CLAIM_BATCH)
                .await
                .expect("claim");
            let completions: Vec<Completion> = batch
                .iter()
                .map(|m| Completion {
                    id: m.id,
                    token: m
                        .lease
                        .as_ref()
                        .expect("a claimed message has a lease")
                        .token,
                    vendor: vendor.clone(),
                    at: Utc::now(),
                })
                .collect();
            let results = if batched {
                q.complete_many(&completions).await.expect("complete_many")
            } else {
                let mut results = Vec::with_capacity(completions.len());
                for c in &completions {
                    results.push(q.complete(c.id, c.token, &c.vendor, Utc::now()).await);
                }
                results
            };
            let mut done = 0;
            for result in results {
                match result {
                    Ok(()) => done += 1,
                    Err(StoreError::LeaseLost(_)) => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("complete: {e}"),
                }
            }
            let claimed_twice = {
                let mut seen = seen.lock().expect("not poisoned");
                batch.iter().filter(|m| !seen.insert(m.id)).count()
            };
            twice.fetch_add(claimed_twice as u64, Ordering::Relaxed);
            // An empty batch ends the worker: the queue ran dry.
            if batch.is_empty() { 0 } else { done.max(1) }
        }
    })
    .await;
    vec![
        (format!("{name}_{CLIENTS}_per_s"), claimed),
        (
            format!("{name}_lease_lost"),
            lost.load(Ordering::Relaxed) as f64,
        ),
        (
            format!("{name}_claimed_twice"),
            twice.load(Ordering::Relaxed) as f64,
        ),
    ]
}

/// Drains `count` due messages through a gateway with an instant vendor; seconds taken,
/// and whether that time is projected from a run stopped at `SMS_BENCH_DRAIN_CAP_S`.
async fn drain_time<S>(store: Arc<S>, count: u64) -> (f64, bool)
where
    S: DeferredQueue + UsageLedger + 'static,
{
    let vendor = Arc::new(InstantVendor(VendorId::new("instant").expect("id")));
    let limiter = InProcessLimiter::new(1_000_000, Duration::from_secs(1)).expect("limiter");
    drain_time_with(store, count, vendor, Arc::new(limiter)).await
}

/// [`drain_time`] with a vendor that answers in 100 ms ± 20 ms, under the default
/// global limit.
async fn latent_drain_time<S>(store: Arc<S>, count: u64) -> (f64, bool)
where
    S: DeferredQueue + UsageLedger + 'static,
{
    let vendor = Arc::new(LatentVendor(VendorId::new("latent").expect("id")));
    let limiter =
        InProcessLimiter::new(LATENT_DRAIN_LIMIT, Duration::from_secs(1)).expect("limiter");
    drain_time_with(store, count, vendor, Arc::new(limiter)).await
}

async fn drain_time_with<S>(
    store: Arc<S>,
    count: u64,
    vendor: Arc<dyn Vendor>,
    limiter: Arc<dyn sms_core::RateLimiter>,
) -> (f64, bool)
where
    S: DeferredQueue + UsageLedger + 'static,
{
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor,
            fees: Arc::new(FlatFee),
        }],
        limiter,
        store.clone(),
        store.clone(),
    )
    .clock(Arc::new(SystemClock))
    .config(FailoverConfig {
        instance_id: "bench-drain".to_owned(),
        drain_batch: env_or(
            "SMS_BENCH_DRAIN_BATCH",
            FailoverConfig::default().drain_batch,
        ),
        drain_concurrency_max: env_or(
            "SMS_BENCH_DRAIN_CONCURRENCY_MAX",
            FailoverConfig::default().drain_concurrency_max,
        ),
        ..FailoverConfig::default()
    })
    .build()
    .expect("a gateway");
    gateway.init().await.expect("init");
    let cap = Duration::from_secs_f64(env_or("SMS_BENCH_DRAIN_CAP_S", 60.0));
    let started = Instant::now();
    let mut sent = 0;
    loop {
        let report = gateway.drain_once().await.expect("drain");
        sent += report.sent as u64;
        if report.claimed == 0 {
            break;
        }
        if started.elapsed() > cap {
            // Bounded run: the rest would go at the same rate.
            let seconds = started.elapsed().as_secs_f64();
            eprintln!("drain stopped after {seconds:.0} s with {sent} of {count} sent; projecting");
            return (seconds * count as f64 / sent.max(1) as f64, true);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(sent, count, "every backlog message is sent once");
    (seconds, false)
}

/// Which ids a filled queue's messages get.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// As the gateway makes them: UUIDv7, one message per millisecond in the order they
    /// were queued, each due 30 s after it was made. A backlog left by an outage looks
    /// like this, and the drain claims it in about the order it was written.
    Gateway,
    /// Random UUIDv4 (which the gateway never makes), all made and due at one instant:
    /// the claim order (due time, then id) is unrelated to where rows lie in the file.
    /// Kept as the worst case.
    Random,
}

/// Milliseconds since 1970 of the first message of a fill of `count`: one per
/// millisecond, the last made a minute ago, so every one is due (30 s after it was made).
fn first_made_ms(count: u64) -> i64 {
    Utc::now().timestamp_millis() - 60_000 - count as i64
}

/// SQL that fills the Postgres `messages` table with `count` due messages.
fn postgres_fill(count: u64, ids: Ids) -> String {
    let (id, made, due) = match ids {
        Ids::Gateway => (
            "(lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex((random() * 4095)::int), 3, '0') \
             || to_hex(8 + (random() * 3)::int) || lpad(to_hex((random() * 4095)::int), 3, '0') \
             || lpad(to_hex((random() * 281474976710655)::bigint), 12, '0'))::uuid",
            "to_timestamp(ms / 1000.0)",
            "to_timestamp((ms + 30000) / 1000.0)",
        ),
        Ids::Random => ("gen_random_uuid()", "now()", "now() - interval '1 minute'"),
    };
    let first = first_made_ms(count);
    format!(
        "INSERT INTO messages (id, template, args, recipients, status, reason, attempts, \
         max_attempts, next_attempt_at, created_at, updated_at) \
         SELECT {id}, 'login', ARRAY['123456'], \
         ARRAY['+86139' || lpad(i::text, 8, '0')], 'queued', 'vendor_failed', 1, 10, \
         {due}, {made}, {made} \
         FROM (SELECT i, {first}::bigint + i AS ms FROM generate_series(1, {count}) AS i) AS n"
    )
}

/// Fills the SQLite `messages` table at `path` with `count` due messages.
fn sqlite_fill(path: &Path, count: u64, ids: Ids) {
    let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    let (id, made, due) = match ids {
        Ids::Gateway => (
            "printf('%08x-%04x-7%03x-%04x-%012x', ms >> 16, ms & 65535, \
             abs(random()) % 4096, 32768 + abs(random()) % 16384, \
             abs(random()) % 281474976710656)"
                .to_owned(),
            "ms * 1000".to_owned(),
            "(ms + 30000) * 1000".to_owned(),
        ),
        Ids::Random => {
            let now_us = Utc::now().timestamp_micros() - 60_000_000;
            (
                "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || \
                 substr(lower(hex(randomblob(2))), 2) || '-8' || \
                 substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))"
                    .to_owned(),
                now_us.to_string(),
                now_us.to_string(),
            )
        }
    };
    let first = first_made_ms(count);
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
         INSERT INTO messages (id, template, args, recipients, status, reason, attempts, \
         max_attempts, next_attempt_at, created_at, updated_at) \
         SELECT {id}, 'login', '[\"123456\"]', json_array(printf('+86139%08d', i)), \
         'queued', 'vendor_failed', 1, 10, {due}, {made}, {made} \
         FROM (SELECT i, {first} + i AS ms FROM n)"
    ))
    .expect("fill the SQLite queue");
}

/// Finds `pgbench` on the path or in Debian's versioned directories.
fn pgbench() -> Option<String> {
    if Command::new("pgbench").arg("--version").output().is_ok() {
        return Some("pgbench".to_owned());
    }
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().map(|p| p.display().to_string())
}

/// Runs one `pgbench` script with `CLIENTS` clients for `seconds`; transactions/s.
fn run_pgbench(bin: &str, url: &str, script: &str, seconds: f64) -> Result<f64, String> {
    let file = std::env::temp_dir().join(format!(
        "sms-bench-{}-{:08x}.sql",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&file, script).map_err(|e| e.to_string())?;
    let output = Command::new(bin)
        .args(["-n", "-M", "prepared", "-c"])
        .arg(CLIENTS.to_string())
        .args(["-j", "2", "-T"])
        .arg(format!("{}", seconds.ceil() as u64))
        .arg("-f")
        .arg(&file)
        .arg(url)
        .output()
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&file);
    let output = output?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no tps line in pgbench output: {stdout}"))
}

fn json_fields(fields: &[(String, f64)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v:.1}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn postgres_part(seconds: f64, drain: u64) -> String {
    let url = postgres_url();
    let schema = format!("sms_bench_{:08x}", rand::random::<u32>());
    let config = PgConfig {
        pool_size: 16,
        ..PgConfig::with_url(url.clone()).schema(schema.clone())
    };
    let store = match PgStore::connect(config).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            return format!(
                "\"skipped\":\"postgres: cannot connect: {}\"",
                e.to_string().replace('"', "'")
            );
        }
    };
    let client = store.pool().get().await.expect("a pooled connection");
    let mut fields = Vec::new();
    client
        .batch_execute(&postgres_fill(CLAIMABLE, Ids::Gateway))
        .await
        .expect("fill");
    fields.extend(queue_rates(store.clone(), seconds).await);
    eprintln!("postgres queue: {fields:?}");

    // Baselines: the same row shape, the same indexes and constraints, written by plain
    // statements (no lease checks, no JSON, no pool) with as many clients.
    let mut notes = Vec::new();
    match pgbench() {
        None => notes
            .push("skipped pgbench: not installed (apt-get install postgresql-client)".to_owned()),
        Some(bin) => {
            client
                .batch_execute(&format!(
                    "CREATE TABLE baseline (LIKE messages INCLUDING ALL); \
                     INSERT INTO baseline (id, template, args, recipients, status, reason, \
                     attempts, max_attempts, next_attempt_at, created_at, updated_at) \
                     SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, \
                     'login', ARRAY['123456'], ARRAY['+86139' || lpad(i::text, 8, '0')], \
                     'queued', 'vendor_failed', 1, 10, now(), now(), now() \
                     FROM generate_series(1, {CLAIMABLE}) AS i; ANALYZE baseline;"
                ))
                .await
                .expect("baseline table");
            let insert = format!(
                "INSERT INTO {schema}.baseline (id, template, args, recipients, status, reason, \
                 attempts, max_attempts, next_attempt_at, created_at, updated_at) VALUES \
                 (gen_random_uuid(), 'login', ARRAY['123456'], ARRAY['+8613800138000'], \
                 'queued', 'vendor_failed', 0, 10, now(), now(), now());\n"
            );
            let update = format!(
                "\\set i random(1, {CLAIMABLE})\n\
                 UPDATE {schema}.baseline SET status = 'sent', last_vendor = 'instant', \
                 updated_at = now() WHERE id = ('00000000-0000-4000-8000-' || \
                 lpad(:i::text, 12, '0'))::uuid;\n"
            );
            for (name, script) in [
                (format!("pgbench_insert_{CLIENTS}_per_s"), insert),
                (format!("pgbench_update_{CLIENTS}_per_s"), update),
            ] {
                match run_pgbench(&bin, &url, &script, seconds) {
                    Ok(tps) => fields.push((name, tps)),
                    Err(e) => notes.push(format!("{name}: {e}")),
                }
            }
        }
    }

    client
        .batch_execute("DROP TABLE IF EXISTS baseline")
        .await
        .expect("drop the baseline table");
    for (ids, name) in [
        (Ids::Gateway, "drain_backlog"),
        (Ids::Random, "drain_backlog_random_ids"),
    ] {
        client
            .batch_execute(&format!(
                "TRUNCATE messages; {}; ANALYZE messages;",
                postgres_fill(drain, ids)
            ))
            .await
            .expect("backlog");
        let (drained, projected) = drain_time(store.clone(), drain).await;
        fields.push((format!("{name}_s"), drained));
        fields.push((format!("{name}_projected"), f64::from(u8::from(projected))));
    }
    eprintln!("postgres: {fields:?}");
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop the benchmark schema");
    let notes = notes
        .iter()
        .map(|n| format!("\"{}\"", n.replace(['"', '\n'], " ")))
        .collect::<Vec<_>>()
        .join(",");
    format!("{},\"notes\":[{notes}]", json_fields(&fields))
}

async fn sqlite_part(seconds: f64, drain: u64) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("queue.db");
    let store = Arc::new(SqliteStore::open(&path).await.expect("open SQLite"));
    {
        let path = path.clone();
        tokio::task::spawn_blocking(move || sqlite_fill(&path, CLAIMABLE, Ids::Gateway))
            .await
            .expect("fill");
    }
    let mut fields = queue_rates(store.clone(), seconds).await;
    drop(store);
    for (ids, name) in [
        (Ids::Gateway, "drain_backlog"),
        (Ids::Random, "drain_backlog_random_ids"),
    ] {
        let (drained, projected) = sqlite_drain(drain, ids).await;
        fields.push((format!("{name}_s"), drained));
        fields.push((format!("{name}_projected"), f64::from(u8::from(projected))));
    }
    // Real vendors answer in 50-300 ms: the drain is bound by the limit only if it keeps
    // enough sends in flight. Its baseline is the backlog at the limit's rate.
    let (drained, projected) = sqlite_drain_with_latency(drain).await;
    fields.push(("drain_backlog_100ms_vendor_s".into(), drained));
    fields.push((
        "drain_backlog_100ms_vendor_projected".into(),
        f64::from(u8::from(projected)),
    ));
    fields.push((
        "drain_backlog_limit_bound_s".into(),
        drain as f64 / f64::from(LATENT_DRAIN_LIMIT),
    ));
    eprintln!("sqlite: {fields:?}");
    json_fields(&fields)
}

/// Fills a new SQLite queue with `drain` due messages and drains it: [`drain_time`].
async fn sqlite_drain(drain: u64, ids: Ids) -> (f64, bool) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("backlog.db");
    let store = Arc::new(SqliteStore::open(&path).await.expect("open SQLite"));
    {
        let path = path.clone();
        tokio::task::spawn_blocking(move || sqlite_fill(&path, drain, ids))
            .await
            .expect("fill");
    }
    drain_time(store, drain).await
}

/// Fills a new SQLite queue with `drain` due messages and drains it through a vendor
/// with latency: [`latent_drain_time`].
async fn sqlite_drain_with_latency(drain: u64) -> (f64, bool) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("latent.db");
    let store = Arc::new(SqliteStore::open(&path).await.expect("open SQLite"));
    {
        let path = path.clone();
        tokio::task::spawn_blocking(move || sqlite_fill(&path, drain, Ids::Gateway))
            .await
            .expect("fill");
    }
    latent_drain_time(store, drain).await
}

/// Fills a queue in a new Postgres schema with `drain` due messages and drains it:
/// [`drain_time`]. The schema is dropped afterwards.
async fn postgres_drain(drain: u64, ids: Ids) -> (f64, bool) {
    let schema = format!("sms_bench_{:08x}", rand::random::<u32>());
    let config = PgConfig::with_url(postgres_url()).schema(schema.clone());
    let store = Arc::new(PgStore::connect(config).await.expect("connect to Postgres"));
    let client = store.pool().get().await.expect("a pooled connection");
    client
        .batch_execute(&format!("{}; ANALYZE messages;", postgres_fill(drain, ids)))
        .await
        .expect("backlog");
    let result = drain_time(store.clone(), drain).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop the benchmark schema");
    result
}

async fn prefill(mode: &str) {
    let target = std::env::var("SMS_BENCH_PATH").expect("SMS_BENCH_PATH");
    let count: u64 = env_or("SMS_BENCH_COUNT", 1_000_000);
    let started = Instant::now();
    if mode == "prefill-sqlite" {
        drop(SqliteStore::open(&target).await.expect("open SQLite"));
        sqlite_fill(Path::new(&target), count, Ids::Gateway);
    } else {
        let config = PgConfig::with_url(postgres_url()).schema(target.clone());
        let store = PgStore::connect(config).await.expect("connect to Postgres");
        let client = store.pool().get().await.expect("a pooled connection");
        client
            .batch_execute(&format!(
                "{}; ANALYZE messages;",
                postgres_fill(count, Ids::Gateway)
            ))
            .await
            .expect("fill the Postgres queue");
    }
    eprintln!(
        "{mode}: {count} messages in {target} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mode = std::env::var("SMS_BENCH_MODE").unwrap_or_default();
    if mode.starts_with("prefill-") {
        runtime.block_on(prefill(&mode));
        return;
    }
    if let Some(rest) = mode.strip_prefix("drain-") {
        // Only one drain (for profiling it): `drain-sqlite` or `drain-postgres`, with
        // `-random` for random ids.
        if rest == "sqlite-latent" {
            let drain: u64 = env_or("SMS_BENCH_DRAIN", 100_000);
            let (seconds, projected) = runtime.block_on(sqlite_drain_with_latency(drain));
            let bound = drain as f64 / f64::from(LATENT_DRAIN_LIMIT);
            println!(
                "sqlite drain of {drain} through a 100 ms vendor: {seconds:.2} s{} (limit-bound {bound:.2} s, {:.2}x)",
                if projected { " (projected)" } else { "" },
                bound / seconds
            );
            return;
        }
        let (backend, ids) = match rest.strip_suffix("-random") {
            Some(backend) => (backend, Ids::Random),
            None => (rest, Ids::Gateway),
        };
        let drain: u64 = env_or("SMS_BENCH_DRAIN", 100_000);
        let (seconds, _) = match backend {
            "sqlite" => runtime.block_on(sqlite_drain(drain, ids)),
            "postgres" => runtime.block_on(postgres_drain(drain, ids)),
            other => panic!("SMS_BENCH_MODE: unknown backend {other:?} in drain-{rest}"),
        };
        println!("{backend} drain of {drain}: {seconds:.2} s");
        return;
    }
    let seconds: f64 = env_or("SMS_BENCH_SECONDS", 3.0);
    let drain: u64 = env_or("SMS_BENCH_DRAIN", 100_000);
    let json = runtime.block_on(async {
        let sqlite = sqlite_part(seconds, drain).await;
        let postgres = postgres_part(seconds, drain).await;
        format!(
            "{{\"clients\":{CLIENTS},\"claim_batch\":{CLAIM_BATCH},\"enqueue_batch\":{ENQUEUE_BATCH},\"backlog\":{drain},\"sqlite\":{{{sqlite}}},\"postgres\":{{{postgres}}}}}"
        )
    });
    println!("{json}");
    if let Ok(path) = std::env::var("SMS_BENCH_OUT") {
        if let Err(e) = std::fs::write(&path, &json) {
            eprintln!("could not write {path}: {e}");
        }
    }
}
