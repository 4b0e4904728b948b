//! `cargo xtask bench`: every benchmark of issue 8, each figure next to a baseline
//! measured in the same run, on loopback only, each phase bounded in time.
//!
//! Phases (a phase whose tool or server is missing prints `skipped: …` and the rest go on):
//!
//! 1. send path (criterion, `sms-failover/benches/send_path.rs`): `Gateway::send` over an
//!    instant vendor vs the vendor called directly; 2 threads vs 1;
//! 2. limiters: in-process vs `governor` (criterion, `sms-limit/benches/limiter.rs`);
//!    the Redis limiter with 64 tasks (`sms-limit/benches/redis_limiter.rs`) vs
//!    `redis-benchmark -c 64` running `EVALSHA` of the same script;
//! 3. queue (`sms-store/benches/queue.rs`): enqueue, claim+complete and a 100,000-message
//!    drain on SQLite and Postgres, vs `pgbench` with plain INSERT and UPDATE;
//! 4. HTTP: `wrk` with 64 connections against `sms-app serve` (embedded defaults, then
//!    Postgres + Redis) vs the axum hello-world of `sms-app/examples/hello.rs`: each
//!    server warmed up for 3 s, then the median of 3 runs of 10 s, hello-world and
//!    embedded `serve` taking turns; every run sends to recipients no run used before;
//! 5. memory: peak RSS of `serve` under that load, and with 1,000,000 messages waiting.
//!
//! Output: a table on stdout, `target/bench/summary.json`, raw outputs under
//! `target/bench/`. `docs/BENCHMARKS.md` is written by hand from them.

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo_bin, root};

/// Connections of the HTTP load, and tasks of the Redis limiter run.
const CONCURRENCY: u32 = 64;
/// Length of one measured `wrk` run.
const HTTP_SECONDS: u32 = 10;
/// Measured `wrk` runs per server; the figures are their medians. The hello-world and
/// the embedded `serve` run by turns, so a slow spell of the machine hits both.
const HTTP_ROUNDS: u64 = 3;
/// Length of the `wrk` run that warms a server up before it is measured (its first
/// seconds grow the allocator's heap, the database file and the limiter's tables).
const WARMUP_SECONDS: u32 = 3;
/// Recipients each `wrk` run may use: every run starts at its own multiple of this, so
/// no run repeats a recipient of an earlier one. The script numbers 10,000,000 per
/// `wrk` thread before it wraps, enough for the 12 runs of the phase; one run of 10 s
/// sends well under 500,000 per thread on 2 cores.
const NUMBERS_PER_RUN: u64 = 500_000;
/// Messages waiting in the queue for the memory benchmark.
const BACKLOG: u64 = 1_000_000;
/// Port of `serve` and of the hello-world baseline.
const SERVE_PORT: u16 = 18_080;
const HELLO_PORT: u16 = 18_081;
const TOKEN: &str = "bench-token";

/// One line of the table: a figure, its baseline and (when both exist) their ratio.
struct Row {
    name: String,
    value: Option<f64>,
    unit: &'static str,
    baseline_name: String,
    baseline: Option<f64>,
    /// `value / baseline` when higher is better, `baseline / value` when lower is.
    higher_is_better: bool,
    target: String,
    note: String,
}

impl Row {
    fn new(name: impl Into<String>, value: Option<f64>, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            baseline_name: String::new(),
            baseline: None,
            higher_is_better: true,
            target: String::new(),
            note: String::new(),
        }
    }

    fn baseline(mut self, name: impl Into<String>, value: Option<f64>) -> Self {
        self.baseline_name = name.into();
        self.baseline = value;
        self
    }

    fn lower_is_better(mut self) -> Self {
        self.higher_is_better = false;
        self
    }

    fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn ratio(&self) -> Option<f64> {
        let (v, b) = (self.value?, self.baseline?);
        if v <= 0.0 || b <= 0.0 {
            return None;
        }
        Some(if self.higher_is_better { v / b } else { b / v })
    }
}

/// Collects rows and skip notices as the phases go.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    skipped: Vec<String>,
}

impl Report {
    fn skip(&mut self, what: impl Into<String>) {
        let what = what.into();
        println!("skipped: {what}");
        self.skipped.push(what);
    }
}

/// One phase: adds rows (or skip notices) to the report; writes raw outputs to the dir.
type Phase = fn(&mut Report, &Path) -> Result<()>;

/// Runs every phase, prints the table and writes `target/bench/summary.json`.
pub fn run() -> Result<()> {
    let started = Instant::now();
    let out = root().join("target/bench");
    fs::create_dir_all(&out).context("creating target/bench")?;
    let mut report = Report::default();
    let phases: [(&str, Phase); 5] = [
        ("send path", send_path),
        ("limiters", limiters),
        ("queue", queue),
        ("http and memory", http),
        ("memory with a backlog", backlog),
    ];
    // `SMS_BENCH_ONLY=http,queue` runs the phases whose names contain one of the words
    // (while working on one figure); the default is every phase.
    let only = std::env::var("SMS_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| {
        only.trim().is_empty()
            || only
                .split(',')
                .any(|word| !word.trim().is_empty() && name.contains(word.trim()))
    };
    for (name, phase) in phases {
        if !wanted(name) {
            report.skip(format!("{name}: not in SMS_BENCH_ONLY={only}"));
            continue;
        }
        eprintln!("xtask: == bench: {name} ==");
        let phase_started = Instant::now();
        if let Err(e) = phase(&mut report, &out) {
            report.skip(format!("{name}: {e:#}"));
        }
        eprintln!(
            "xtask: {name} took {:.0} s",
            phase_started.elapsed().as_secs_f64()
        );
    }
    let table = table(&report);
    println!("\n{table}");
    let json = summary_json(&report, started.elapsed());
    fs::write(out.join("summary.json"), json).context("writing summary.json")?;
    fs::write(out.join("summary.md"), &table).context("writing summary.md")?;
    println!(
        "whole run: {:.0} s; summary in target/bench/summary.json",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (as `.ci/run` does),
/// else `target/` in the workspace.
fn build_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

// ---------------------------------------------------------------- phases

fn send_path(report: &mut Report, _out: &Path) -> Result<()> {
    cargo_quiet(
        &["bench", "-p", "sms-failover", "--bench", "send_path"],
        &[],
    )?;
    let ns = |name: &str| criterion_median_ns("send_path", name);
    let (gateway, direct) = (ns("gateway"), ns("vendor_direct"));
    let overhead = gateway.zip(direct).map(|(g, d)| g - d);
    report.rows.push(
        Row::new("send: Gateway::send (ns/send)", gateway, "ns")
            .baseline("vendor called directly", direct)
            .lower_is_better(),
    );
    report.rows.push(
        Row::new(
            "send: Gateway::send, records kept in the in-memory queue (ns/send)",
            ns("gateway_memory_queue"),
            "ns",
        )
        .baseline("vendor called directly", direct)
        .lower_is_better(),
    );
    report.rows.push(
        Row::new("send: overhead over the vendor (ns/send)", overhead, "ns")
            .baseline("target", Some(200.0))
            .lower_is_better()
            .target("≤ 200 ns"),
    );
    let scaling = |prefix: &str| {
        let one = ns(&format!("{prefix}_threads_1"))?;
        let two = ns(&format!("{prefix}_threads_2"))?;
        Some(one / two)
    };
    report.rows.push(
        Row::new(
            "send: throughput 2 threads / 1 thread",
            scaling("gateway"),
            "×",
        )
        .baseline("same for the vendor alone", scaling("vendor_direct"))
        .target("≥ 1.8×"),
    );
    Ok(())
}

fn limiters(report: &mut Report, out: &Path) -> Result<()> {
    cargo_quiet(&["bench", "-p", "sms-limit", "--bench", "limiter"], &[])?;
    report.rows.push(
        Row::new(
            "limit: in-process decision (ns)",
            criterion_median_ns("limiter", "in_process"),
            "ns",
        )
        .baseline(
            "governor, same rate",
            criterion_median_ns("limiter", "governor"),
        )
        .lower_is_better(),
    );

    let redis_url = env_or(
        "SMS_BENCH_REDIS_URL",
        "SMS_TEST_REDIS_URL",
        "redis://127.0.0.1:6379",
    );
    let result = out.join("redis_limiter.json");
    let _ = fs::remove_file(&result);
    cargo_quiet(
        &["bench", "-p", "sms-limit", "--bench", "redis_limiter"],
        &[
            ("SMS_BENCH_REDIS_URL", redis_url.as_str()),
            ("SMS_BENCH_CONCURRENCY", &CONCURRENCY.to_string()),
            ("SMS_BENCH_OUT", &result.display().to_string()),
        ],
    )?;
    let json = fs::read_to_string(&result).unwrap_or_default();
    if let Some(reason) = json_string(&json, "skipped") {
        report.skip(reason);
        return Ok(());
    }
    let ours = json_number(&json, &["decisions_per_s"]);
    let baseline = match redis_benchmark_evalsha(&redis_url, &json) {
        Ok(rps) => Some(rps),
        Err(e) => {
            report.skip(format!("redis-benchmark baseline: {e:#}"));
            None
        }
    };
    report.rows.push(
        Row::new(
            format!("limit: Redis limiter, {CONCURRENCY} tasks (decisions/s)"),
            ours,
            "/s",
        )
        .baseline(
            format!("redis-benchmark -c {CONCURRENCY} EVALSHA"),
            baseline,
        )
        .target("≥ 0.8×"),
    );
    Ok(())
}

/// `redis-benchmark` running `EVALSHA` of the limiter's own script (read from its
/// source) with the arguments the limiter benchmark used.
fn redis_benchmark_evalsha(url: &str, limiter_json: &str) -> Result<f64> {
    for tool in ["redis-benchmark", "redis-cli"] {
        if !tool_exists(tool) {
            bail!("{tool} not installed (apt-get install redis-tools)");
        }
    }
    let source = fs::read_to_string(root().join("crates/sms-limit/src/redis.rs"))?;
    let start = "const GLOBAL_SCRIPT: &str = r\"";
    let begin = source.find(start).context("GLOBAL_SCRIPT not found")? + start.len();
    let len = source[begin..]
        .find("\";")
        .context("end of GLOBAL_SCRIPT")?;
    let script = &source[begin..begin + len];
    let (host, port) = redis_host_port(url);
    let load = Command::new("redis-cli")
        .args(["-h", &host, "-p", &port, "script", "load", script])
        .output()?;
    let sha = String::from_utf8_lossy(&load.stdout).trim().to_owned();
    if !load.status.success() || sha.len() != 40 {
        bail!("SCRIPT LOAD failed: {sha}");
    }
    let limit = json_number(limiter_json, &["limit"]).unwrap_or(1e9);
    let window = json_number(limiter_json, &["window_us"]).unwrap_or(1e6);
    let key = format!("sms-bench-rb-{}:limit:{{global}}", std::process::id());
    let requests = json_number(limiter_json, &["decisions"]).unwrap_or(100_000.0);
    let output = Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port, "-c", &CONCURRENCY.to_string()])
        .args(["-n", &format!("{}", requests.max(10_000.0) as u64)])
        .args(["--csv", "evalsha", &sha, "2", &key, &format!("{key}:seq")])
        .args([
            format!("{limit:.0}"),
            format!("{window:.0}"),
            "1".to_owned(),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let _ = Command::new("redis-cli")
        .args(["-h", &host, "-p", &port, "del", &key, &format!("{key}:seq")])
        .output();
    // CSV: a header line, then `"<command>","<rps>",…`.
    text.lines()
        .filter(|l| l.starts_with("\"evalsha") || l.starts_with("\"EVALSHA"))
        .filter_map(|l| l.split("\",\"").nth(1))
        .filter_map(|v| v.trim_matches('"').parse::<f64>().ok())
        .next_back()
        .with_context(|| format!("no rate in redis-benchmark output: {text}"))
}

fn queue(report: &mut Report, out: &Path) -> Result<()> {
    let result = out.join("queue.json");
    let _ = fs::remove_file(&result);
    let pg_url = env_or(
        "SMS_BENCH_POSTGRES_URL",
        "SMS_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    cargo_quiet(
        &["bench", "-p", "sms-store", "--bench", "queue"],
        &[
            ("SMS_BENCH_POSTGRES_URL", pg_url.as_str()),
            ("SMS_BENCH_OUT", &result.display().to_string()),
        ],
    )?;
    let json = fs::read_to_string(&result).context("the queue benchmark wrote no result")?;
    let pg = |key: &str| json_number(&json, &["\"postgres\"", key]);
    let lite = |key: &str| json_number(&json, &["\"sqlite\"", key]);
    if let Some(reason) = json_string(&json, "skipped") {
        report.skip(reason);
    }
    for note in json_notes(&json) {
        report.skip(note);
    }
    report.rows.push(
        Row::new(
            "queue pg: enqueue, 1 client (msg/s)",
            pg("enqueue_1_per_s"),
            "/s",
        )
        .baseline("pgbench INSERT, 8 clients", pg("pgbench_insert_8_per_s")),
    );
    report.rows.push(
        Row::new(
            "queue pg: enqueue, 8 clients (msg/s)",
            pg("enqueue_8_per_s"),
            "/s",
        )
        .baseline("pgbench INSERT, 8 clients", pg("pgbench_insert_8_per_s")),
    );
    report.rows.push(
        Row::new(
            "queue pg: enqueue_many of 100, 1 client (msg/s)",
            pg("enqueue_many_1_per_s"),
            "/s",
        )
        .baseline("pgbench INSERT, 8 clients", pg("pgbench_insert_8_per_s")),
    );
    report.rows.push(
        Row::new(
            "queue pg: claim+complete, 8 workers (msg/s)",
            pg("claim_complete_8_per_s"),
            "/s",
        )
        .baseline("pgbench UPDATE, 8 clients", pg("pgbench_update_8_per_s"))
        .target("≥ 0.5×"),
    );
    report.rows.push(
        Row::new(
            "queue pg: claim+complete_many, 8 workers (msg/s)",
            pg("claim_complete_many_8_per_s"),
            "/s",
        )
        .baseline("pgbench UPDATE, 8 clients", pg("pgbench_update_8_per_s"))
        .target("≥ 0.5×"),
    );
    report.rows.push(
        Row::new(
            "queue sqlite: enqueue, 1 client (msg/s)",
            lite("enqueue_1_per_s"),
            "/s",
        )
        .baseline("Postgres, same", pg("enqueue_1_per_s")),
    );
    report.rows.push(
        Row::new(
            "queue sqlite: enqueue, 8 clients (msg/s)",
            lite("enqueue_8_per_s"),
            "/s",
        )
        .baseline("Postgres, same", pg("enqueue_8_per_s")),
    );
    report.rows.push(
        Row::new(
            "queue sqlite: enqueue_many of 100, 1 client (msg/s)",
            lite("enqueue_many_1_per_s"),
            "/s",
        )
        .baseline("Postgres, same", pg("enqueue_many_1_per_s")),
    );
    report.rows.push(
        Row::new(
            "queue sqlite: claim+complete, 8 workers (msg/s)",
            lite("claim_complete_8_per_s"),
            "/s",
        )
        .baseline("Postgres, same", pg("claim_complete_8_per_s")),
    );
    report.rows.push(
        Row::new(
            "queue sqlite: claim+complete_many, 8 workers (msg/s)",
            lite("claim_complete_many_8_per_s"),
            "/s",
        )
        .baseline("Postgres, same", pg("claim_complete_many_8_per_s")),
    );
    for (backend, get) in [
        ("sqlite", &lite as &dyn Fn(&str) -> Option<f64>),
        ("pg", &pg),
    ] {
        let lost = [
            "claim_complete_lease_lost",
            "claim_complete_claimed_twice",
            "claim_complete_many_lease_lost",
            "claim_complete_many_claimed_twice",
        ]
        .iter()
        .map(|key| get(key).unwrap_or(0.0))
        .sum::<f64>();
        if lost > 0.0 {
            report.skip(format!(
                "queue {backend}: {lost} completions refused or messages claimed twice during claim+complete (a store bug, see queue.json)"
            ));
        }
        // The backlog as the gateway leaves it (time-ordered ids), which the target is
        // about; then random ids, the worst case for where claimed rows lie.
        for (key, what, target) in [
            ("drain_backlog", "drain a 100,000 backlog", true),
            (
                "drain_backlog_random_ids",
                "drain 100,000, random ids",
                false,
            ),
        ] {
            let projected = get(&format!("{key}_projected")).is_some_and(|p| p > 0.0);
            let row = Row::new(
                format!("queue {backend}: {what} (s)"),
                get(&format!("{key}_s")),
                "s",
            )
            .note(if projected {
                "projected from a run stopped at 60 s"
            } else {
                ""
            });
            report.rows.push(if target {
                row.baseline("target", Some(10.0))
                    .lower_is_better()
                    .target("< 10 s")
            } else {
                row
            });
        }
    }
    Ok(())
}

fn http(report: &mut Report, out: &Path) -> Result<()> {
    if !tool_exists("wrk") {
        report.skip("http: wrk not installed (apt-get install -y wrk)");
        return Ok(());
    }
    cargo_quiet(
        &[
            "build",
            "--release",
            "-p",
            "sms-app",
            "--bin",
            "sms-app",
            "--example",
            "hello",
        ],
        &[],
    )?;
    let release = build_dir().join("release");
    let lua = out.join("post.lua");
    fs::write(&lua, WRK_SCRIPT)?;

    let hello = Server::start(
        Command::new(release.join("examples/hello")).arg(format!("127.0.0.1:{HELLO_PORT}")),
        HELLO_PORT,
        &out.join("hello.log"),
    )?;
    // Embedded defaults (SQLite, in-process limits, simulated instant vendors), with the
    // global limit raised so the load measures the send path, not the queue.
    let db = out.join("http-sqlite");
    let _ = fs::remove_dir_all(&db);
    let config = serve_config(&format!(
        "sqlite_path = {:?}\n",
        db.join("sms.db").display().to_string()
    ));
    let mut runs = LoadRuns::new(&lua, out);
    let (embedded, base) =
        run_serve_under_load(&config, out, "embedded", &mut runs, Some(HELLO_PORT))?;
    let base = base.expect("measured alongside");
    drop(hello);

    report.rows.push(
        Row::new(
            "http embedded: POST /v1/messages (req/s)",
            embedded.rps,
            "/s",
        )
        .baseline("axum hello-world", base.rps)
        .target("≥ 0.5×")
        .note(embedded.note()),
    );
    for (p, label) in [(0, "p50"), (1, "p99")] {
        report.rows.push(
            Row::new(
                format!("http embedded: {label} latency (ms)"),
                embedded.latency_ms[p],
                "ms",
            )
            .baseline("axum hello-world", base.latency_ms[p])
            .lower_is_better(),
        );
    }
    report.rows.push(
        Row::new(
            "memory: serve peak RSS under load, embedded (MiB)",
            embedded.peak_mib,
            "MiB",
        )
        .baseline("target", Some(100.0))
        .lower_is_better()
        .target("≤ 100 MiB"),
    );

    // Postgres + Redis.
    let pg_url = env_or(
        "SMS_BENCH_POSTGRES_URL",
        "SMS_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let redis_url = env_or(
        "SMS_BENCH_REDIS_URL",
        "SMS_TEST_REDIS_URL",
        "redis://127.0.0.1:6379",
    );
    let schema = format!("sms_bench_http_{}", std::process::id());
    let config = serve_config(&format!(
        "database_url = {pg_url:?}\nredis_url = {redis_url:?}\n"
    ))
    .replace(
        "[limit]\n",
        &format!("[postgres]\nschema = {schema:?}\n\n[limit]\nkey_prefix = \"{schema}:\"\n"),
    );
    match run_serve_under_load(&config, out, "postgres-redis", &mut runs, None) {
        Ok((shared, _)) => {
            report.rows.push(
                Row::new("http pg+redis: POST /v1/messages (req/s)", shared.rps, "/s")
                    .baseline("axum hello-world", base.rps)
                    .note(shared.note()),
            );
            for (p, label) in [(0, "p50"), (1, "p99")] {
                report.rows.push(
                    Row::new(
                        format!("http pg+redis: {label} latency (ms)"),
                        shared.latency_ms[p],
                        "ms",
                    )
                    .baseline("axum hello-world", base.latency_ms[p])
                    .lower_is_better(),
                );
            }
            report.rows.push(
                Row::new(
                    "memory: serve peak RSS under load, pg+redis (MiB)",
                    shared.peak_mib,
                    "MiB",
                )
                .baseline("target", Some(100.0))
                .lower_is_better()
                .target("≤ 100 MiB"),
            );
        }
        Err(e) => report.skip(format!("http pg+redis: {e:#}")),
    }
    drop_pg_schema(&pg_url, &schema);
    Ok(())
}

fn backlog(report: &mut Report, out: &Path) -> Result<()> {
    let release = build_dir().join("release/sms-app");
    if !release.exists() {
        bail!("sms-app was not built (see the HTTP phase)");
    }
    let dir = out.join("backlog-sqlite");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let db = dir.join("sms.db");
    let config = serve_config_with(
        &format!("sqlite_path = {:?}\n", db.display().to_string()),
        "outage = true",
    );
    let config_path = out.join("serve-backlog.toml");
    fs::write(&config_path, &config)?;

    // Idle: the same configuration on an empty queue.
    let idle = {
        let server = serve(&config_path, out, "idle")?;
        std::thread::sleep(Duration::from_secs(5));
        server.memory_mib()
    };
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;

    let started = Instant::now();
    cargo_quiet(
        &["bench", "-p", "sms-store", "--bench", "queue"],
        &[
            ("SMS_BENCH_MODE", "prefill-sqlite"),
            ("SMS_BENCH_PATH", &db.display().to_string()),
            ("SMS_BENCH_COUNT", &BACKLOG.to_string()),
        ],
    )?;
    eprintln!(
        "xtask: {BACKLOG} messages stored in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // Every vendor is down, so the drainer claims, fails and requeues batch after batch
    // while the rest waits: memory must stay flat.
    let server = serve(&config_path, out, "backlog")?;
    let mut samples = Vec::new();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(5));
        samples.push(server.memory_mib().0);
    }
    let (rss, hwm) = server.memory_mib();
    drop(server);
    eprintln!("xtask: RSS every 5 s with the backlog: {samples:?} MiB");
    report.rows.push(
        Row::new(
            "memory: serve peak RSS, 1,000,000 queued, vendors down (MiB)",
            hwm,
            "MiB",
        )
        .baseline("same serve, empty queue", idle.1)
        .lower_is_better()
        .target("≤ +10 MiB")
        .note(format!(
            "RSS every 5 s: {}; last {}",
            samples
                .iter()
                .map(|s| s.map_or("?".to_owned(), |v| format!("{v:.1}")))
                .collect::<Vec<_>>()
                .join(", "),
            rss.map_or("?".to_owned(), |v| format!("{v:.1}"))
        )),
    );
    report.rows.push(
        Row::new(
            "memory: growth with 1,000,000 queued over an empty queue (MiB)",
            hwm.zip(idle.1).map(|(with, without)| with - without),
            "MiB",
        )
        .baseline("target", Some(10.0))
        .lower_is_better()
        .target("≤ 10 MiB"),
    );
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

// ---------------------------------------------------------------- serve and wrk

/// A `serve` configuration with a bearer token, the global limit out of the way, and the
/// three simulated vendors answering at once (their default latency of 20–30 ms would
/// make the figures the vendors' and not the gateway's).
fn serve_config(storage: &str) -> String {
    serve_config_with(storage, "latency_ms = 0, jitter_ms = 0")
}

/// [`serve_config`] with `simulation` as every vendor's simulation settings.
fn serve_config_with(storage: &str, simulation: &str) -> String {
    let mut config = format!(
        "listen = \"127.0.0.1:{SERVE_PORT}\"\napi_tokens = [\"{TOKEN}\"]\n{storage}\n\
         [limit]\nglobal_per_second = 1000000\n"
    );
    for (order, name) in ["aliyun", "tencent", "cloopen"].iter().enumerate() {
        config.push_str(&format!(
            "[vendors.{name}]\norder = {order}\nsimulation = {{ {simulation} }}\n"
        ));
    }
    config
}

struct LoadResult {
    rps: Option<f64>,
    latency_ms: [Option<f64>; 2],
    non_2xx: u64,
    requests: u64,
    peak_mib: Option<f64>,
}

impl LoadResult {
    /// The median of each figure over `runs` (their middle run for an odd count); the
    /// answer counts add up.
    fn median(runs: Vec<LoadResult>) -> LoadResult {
        let middle = |figure: &dyn Fn(&LoadResult) -> Option<f64>| {
            let mut values: Vec<f64> = runs.iter().filter_map(figure).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied()
        };
        LoadResult {
            rps: middle(&|r| r.rps),
            latency_ms: [middle(&|r| r.latency_ms[0]), middle(&|r| r.latency_ms[1])],
            non_2xx: runs.iter().map(|r| r.non_2xx).sum(),
            requests: runs.iter().map(|r| r.requests).sum(),
            peak_mib: None,
        }
    }

    fn note(&self) -> String {
        if self.non_2xx > 0 {
            format!("{} of {} answers were not 2xx", self.non_2xx, self.requests)
        } else {
            String::new()
        }
    }
}

/// Starts `serve` with `config`, warms it up and measures it [`HTTP_ROUNDS`] times
/// (medians, with its peak RSS). With `alongside`, the server already listening on that
/// port (the hello-world) is warmed up and measured too, each of its runs just before
/// one of `serve`'s, and its medians come back second.
fn run_serve_under_load(
    config: &str,
    out: &Path,
    name: &str,
    runs: &mut LoadRuns<'_>,
    alongside: Option<u16>,
) -> Result<(LoadResult, Option<LoadResult>)> {
    let path = out.join(format!("serve-{name}.toml"));
    fs::write(&path, config)?;
    let server = serve(&path, out, name)?;
    if let Some(port) = alongside {
        runs.warm_up(port, "hello")?;
    }
    runs.warm_up(SERVE_PORT, name)?;
    let (mut other_runs, mut serve_runs) = (Vec::new(), Vec::new());
    for _ in 0..HTTP_ROUNDS {
        if let Some(port) = alongside {
            other_runs.push(runs.measure(port, "hello")?);
        }
        serve_runs.push(runs.measure(SERVE_PORT, name)?);
    }
    let mut result = LoadResult::median(serve_runs);
    result.peak_mib = server.memory_mib().1;
    let other = alongside.map(|_| LoadResult::median(other_runs));
    Ok((result, other))
}

/// `wrk` runs against the servers of the HTTP phase, each with recipients of its own.
struct LoadRuns<'a> {
    lua: &'a Path,
    out: &'a Path,
    runs: u64,
}

impl<'a> LoadRuns<'a> {
    fn new(lua: &'a Path, out: &'a Path) -> Self {
        Self { lua, out, runs: 0 }
    }

    fn warm_up(&mut self, port: u16, name: &str) -> Result<LoadResult> {
        self.run(port, &format!("{name}-warmup"), WARMUP_SECONDS)
    }

    fn measure(&mut self, port: u16, name: &str) -> Result<LoadResult> {
        let round = self.runs;
        self.run(port, &format!("{name}-{round}"), HTTP_SECONDS)
    }

    fn run(&mut self, port: u16, name: &str, seconds: u32) -> Result<LoadResult> {
        let first_number = self.runs * NUMBERS_PER_RUN;
        self.runs += 1;
        let save = self.out.join(format!("wrk-{name}.txt"));
        wrk(port, self.lua, &save, seconds, first_number)
    }
}

fn serve(config: &Path, out: &Path, name: &str) -> Result<Server> {
    let bin = build_dir().join("release/sms-app");
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).arg("serve");
    cmd.env("RUST_LOG", "warn");
    Server::start(&mut cmd, SERVE_PORT, &out.join(format!("serve-{name}.log")))
}

/// A child process listening on a port; killed when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn start(cmd: &mut Command, port: u16, log: &Path) -> Result<Self> {
        // Another process answering there would be measured instead of ours.
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!("port {port} is already in use; stop whatever listens there and run again");
        }
        let log_file = fs::File::create(log)?;
        let child = cmd
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let mut server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{:?} exited with {status} before listening; see {}",
                    cmd.get_program(),
                    log.display()
                );
            }
            if http_ok(port, "/healthz") {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "nothing answered on port {port} within 60 s; see {}",
            log.display()
        )
    }

    /// Current and peak resident memory, in MiB.
    fn memory_mib(&self) -> (Option<f64>, Option<f64>) {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
                .map(|kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so serve releases its leases; SIGKILL if it lingers.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if std::io::Write::write_all(&mut stream, request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// POSTs a message to a fresh recipient every time (per-recipient limits would refuse
/// repeats, and a known recipient costs less than a new one), with the bearer token.
/// The script's argument is where this run's numbers start (see [`NUMBERS_PER_RUN`]).
const WRK_SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  counter = tonumber(args[1] or "0")
end
function request()
  counter = counter + 1
  local number = string.format("+86139%01d%07d", tid % 10, counter % 10000000)
  local body = '{"template":"login","args":["123456"],"recipients":["' .. number .. '"]}'
  return wrk.format("POST", "/v1/messages",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer bench-token" }, body)
end
"#;

/// One `wrk` run of `seconds`, its recipients numbered from `first_number` on.
fn wrk(port: u16, lua: &Path, save: &Path, seconds: u32, first_number: u64) -> Result<LoadResult> {
    let output = Command::new("wrk")
        .args(["-t", "2", "-c", &CONCURRENCY.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency", "-s"])
        .arg(lua)
        .arg(format!("http://127.0.0.1:{port}/v1/messages"))
        .args(["--", &first_number.to_string()])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    fs::write(save, &text)?;
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let after = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    };
    let latency = |pct: &str| after(pct).and_then(|v| parse_duration_ms(&v));
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(LoadResult {
        rps: after("Requests/sec:").and_then(|v| v.parse().ok()),
        latency_ms: [latency("50%"), latency("99%")],
        non_2xx: after("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        requests,
        peak_mib: None,
    })
}

/// `1.23ms`, `850.00us`, `1.02s` → milliseconds.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.trim().parse().ok()?;
    match unit.trim() {
        "us" => Some(value / 1000.0),
        "ms" => Some(value),
        "s" => Some(value * 1000.0),
        "m" => Some(value * 60_000.0),
        _ => None,
    }
}

fn drop_pg_schema(url: &str, schema: &str) {
    if !tool_exists("psql") {
        println!("note: psql not installed; drop schema {schema} by hand");
        return;
    }
    let _ = Command::new("psql")
        .args([
            url,
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------- helpers

fn env_or(name: &str, fallback: &str, default: &str) -> String {
    std::env::var(name)
        .or_else(|_| std::env::var(fallback))
        .unwrap_or_else(|_| default.to_owned())
}

fn tool_exists(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn redis_host_port(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("redis://");
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = rest.split('/').next().unwrap_or("127.0.0.1:6379");
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (hostport.to_owned(), "6379".to_owned()),
    }
}

/// Runs cargo, showing its output only when it fails.
fn cargo_quiet(args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new(cargo_bin());
    cmd.current_dir(root()).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    eprintln!("xtask: $ cargo {}", args.join(" "));
    let output = cmd.output().context("starting cargo")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Benchmarks print their figures on stdout; pass them on.
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        if !line.starts_with("Benchmarking") {
            eprintln!("  {line}");
        }
    }
    if !output.status.success() {
        bail!(
            "cargo {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

/// Criterion's median for `group/name`, in nanoseconds.
fn criterion_median_ns(group: &str, name: &str) -> Option<f64> {
    let path: PathBuf = build_dir()
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let json = fs::read_to_string(path).ok()?;
    json_number(&json, &["\"median\"", "point_estimate"])
}

/// The number after the last of `keys`, each looked for after the previous one.
/// Enough for the flat documents the benchmarks and criterion write.
fn json_number(json: &str, keys: &[&str]) -> Option<f64> {
    let mut at = 0;
    for key in keys {
        let quoted = if key.starts_with('"') {
            (*key).to_owned()
        } else {
            format!("\"{key}\"")
        };
        at += json[at..].find(&quoted)? + quoted.len();
    }
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn json_string(json: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\":\"");
    let start = json.find(&quoted)? + quoted.len();
    let end = json[start..].find('"')?;
    Some(json[start..start + end].to_owned())
}

fn json_notes(json: &str) -> Vec<String> {
    let Some(start) = json.find("\"notes\":[") else {
        return Vec::new();
    };
    let rest = &json[start + "\"notes\":[".len()..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end]
        .split("\",\"")
        .map(|s| s.trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn format_value(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "—".to_owned(),
        Some(v) if unit == "×" => format!("{v:.2}×"),
        Some(v) if v >= 100.0 => format!("{v:.0} {unit}"),
        Some(v) => format!("{v:.2} {unit}"),
    }
}

fn table(report: &Report) -> String {
    let mut out = String::from(
        "| figure | value | baseline | baseline value | ratio | target | note |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            format_value(row.value, row.unit),
            row.baseline_name,
            format_value(row.baseline, row.unit),
            row.ratio().map_or("—".to_owned(), |r| format!("{r:.2}")),
            row.target,
            row.note
        );
    }
    for skipped in &report.skipped {
        let _ = writeln!(out, "\nskipped: {skipped}");
    }
    out
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_value(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or("null".to_owned(), |v| format!("{v}"))
}

fn summary_json(report: &Report, took: Duration) -> String {
    let rows: Vec<String> = report
        .rows
        .iter()
        .map(|r| {
            format!(
                "    {{\"figure\": {}, \"value\": {}, \"unit\": {}, \"baseline\": {}, \"baseline_value\": {}, \"ratio\": {}, \"ratio_is\": {}, \"target\": {}, \"note\": {}}}",
                json_escape(&r.name),
                json_value(r.value),
                json_escape(r.unit),
                json_escape(&r.baseline_name),
                json_value(r.baseline),
                json_value(r.ratio()),
                json_escape(if r.higher_is_better {
                    "value / baseline"
                } else {
                    "baseline / value"
                }),
                json_escape(&r.target),
                json_escape(&r.note),
            )
        })
        .collect();
    let skipped: Vec<String> = report.skipped.iter().map(|s| json_escape(s)).collect();
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_owned())
        .unwrap_or_default();
    let mem_kib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    format!(
        "{{\n  \"machine\": {{\"nproc\": {nproc}, \"cpu\": {}, \"memory_gib\": {:.1}}},\n  \"seconds\": {:.0},\n  \"figures\": [\n{}\n  ],\n  \"skipped\": [{}]\n}}\n",
        json_escape(&model),
        mem_kib / 1024.0 / 1024.0,
        took.as_secs_f64(),
        rows.join(",\n"),
        skipped.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_numbers_and_wrk_durations() {
        let json = r#"{"sqlite":{"a":1.5},"postgres":{"a":2e3,"notes":["x y","z"]}}"#;
        assert_eq!(json_number(json, &["\"postgres\"", "a"]), Some(2000.0));
        assert_eq!(json_number(json, &["\"sqlite\"", "a"]), Some(1.5));
        assert_eq!(json_number(json, &["missing"]), None);
        assert_eq!(json_notes(json), vec!["x y", "z"]);
        assert_eq!(parse_duration_ms("850.00us"), Some(0.85));
        assert_eq!(parse_duration_ms("1.02s"), Some(1020.0));
        assert_eq!(parse_duration_ms("3.10ms"), Some(3.1));
    }

    #[test]
    fn a_ratio_says_better_above_one_either_way() {
        let faster = Row::new("x", Some(50.0), "ns")
            .baseline("b", Some(100.0))
            .lower_is_better();
        assert_eq!(faster.ratio(), Some(2.0));
        let slower = Row::new("x", Some(50.0), "/s").baseline("b", Some(100.0));
        assert_eq!(slower.ratio(), Some(0.5));
        assert_eq!(Row::new("x", None, "/s").ratio(), None);
    }
}
