//! Phase 4, HTTP and memory under load: `wrk` with [`CONCURRENCY`] connections posting
//! messages to `sms-app serve` (embedded defaults, then Postgres + Redis), against the
//! axum hello-world of `sms-app/examples/hello.rs`, with `serve`'s peak RSS.
//!
//! Each backend is measured twice on the same running `serve`: keyless, and keyed, with
//! a unique `idempotency_key` on every request. A client that puts a key on every
//! request is the safe way of calling the API (a retry after a timeout or a dropped
//! connection cannot send the message twice). What the key costs the server (the
//! message is stored before the vendor call and marked sent after it, two commits a
//! keyless send does not wait for) is measured against keyless sends of the same
//! backend.
//!
//! Each load is warmed up for [`WARMUP_SECONDS`], then measured [`HTTP_ROUNDS`] times
//! for [`HTTP_SECONDS`]; the figures are the medians. The loads of a backend take turns
//! (with the hello-world for the embedded one), so a slow spell of the machine hits all
//! of them. Every run uses recipients (and keys) no earlier run used.
//! `serve`'s peak RSS is over all its runs, keyed ones included.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::server::{SERVE_PORT, Server, TOKEN, Vendors, serve, serve_config};
use super::{
    CONCURRENCY, Report, Row, build_dir, cargo_quiet, format_value, postgres_url, redis_url,
    tool_exists,
};

/// Length of one measured `wrk` run.
const HTTP_SECONDS: u32 = 10;
/// Measured `wrk` runs per server; the figures are their medians.
const HTTP_ROUNDS: u64 = 3;
/// Length of the `wrk` run that warms a server up before it is measured (its first
/// seconds grow the allocator's heap, the database file and the limiter's tables).
const WARMUP_SECONDS: u32 = 3;
/// Recipients (and idempotency keys) each `wrk` run may use: every run starts at its own
/// multiple of this, so no run repeats a recipient or a key of an earlier one. The
/// script numbers [`NUMBERS_PER_THREAD`] per `wrk` thread before it wraps, enough for
/// the [`RUNS`] runs of the phase; one run of `serve` for 10 s sends well under 500,000
/// per thread on 2 cores.
const NUMBERS_PER_RUN: u64 = 500_000;
/// Numbers the script gives each `wrk` thread before it wraps (`counter % 10000000`).
const NUMBERS_PER_THREAD: u64 = 10_000_000;
/// `wrk` runs of the phase: a warm-up and [`HTTP_ROUNDS`] measured runs for each of the
/// hello-world, embedded keyless, embedded keyed, Postgres + Redis keyless and Postgres +
/// Redis keyed: 5 × 4 = 20.
const RUNS: u64 = 5 * (1 + HTTP_ROUNDS);
const _: () = assert!(RUNS * NUMBERS_PER_RUN <= NUMBERS_PER_THREAD);
/// Port of the hello-world baseline.
const HELLO_PORT: u16 = 18_081;

pub(super) fn run(report: &mut Report, out: &Path) -> Result<()> {
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
    fs::write(&lua, WRK_SCRIPT.replace("{TOKEN}", TOKEN))?;
    let mut runs = LoadRuns::new(&lua, out);

    // Embedded defaults (SQLite, in-process limits, simulated instant vendors), by turns
    // with the hello-world.
    let hello = Server::start(
        Command::new(release.join("examples/hello")).arg(format!("127.0.0.1:{HELLO_PORT}")),
        HELLO_PORT,
        &out.join("hello.log"),
    )?;
    let db = out.join("http-sqlite");
    let _ = fs::remove_dir_all(&db);
    let storage = format!(
        "sqlite_path = {:?}\n",
        db.join("sms.db").display().to_string()
    );
    let config = serve_config(&storage, Vendors::Instant);
    let server = start_serve(&config, out, "embedded")?;
    let [base, mut embedded, embedded_keyed] = runs.by_turns([
        (HELLO_PORT, "hello", Body::Keyless),
        (SERVE_PORT, "embedded", Body::Keyless),
        (SERVE_PORT, "embedded-keyed", Body::Keyed),
    ])?;
    // The peak over every run of this `serve`, keyed ones included.
    embedded.peak_mib = server.memory_mib().1;
    drop(server);
    drop(hello);
    push_load_rows(report, Setup::Embedded, &embedded, &base);
    push_keyed_rows(report, Setup::Embedded, &embedded_keyed, &embedded);

    // Postgres + Redis, in a schema and under a key prefix of their own.
    let pg_url = postgres_url();
    let schema = format!("sms_bench_http_{}", std::process::id());
    let storage = format!("database_url = {pg_url:?}\nredis_url = {:?}\n", redis_url());
    let config = serve_config(&storage, Vendors::Instant).replace(
        "[limit]\n",
        &format!("[postgres]\nschema = {schema:?}\n\n[limit]\nkey_prefix = \"{schema}:\"\n"),
    );
    let measured = start_serve(&config, out, "postgres-redis").and_then(|server| {
        let [mut shared, keyed] = runs.by_turns([
            (SERVE_PORT, "postgres-redis", Body::Keyless),
            (SERVE_PORT, "postgres-redis-keyed", Body::Keyed),
        ])?;
        shared.peak_mib = server.memory_mib().1;
        Ok((shared, keyed))
    });
    match measured {
        Ok((shared, keyed)) => {
            push_load_rows(report, Setup::PostgresRedis, &shared, &base);
            push_keyed_rows(report, Setup::PostgresRedis, &keyed, &shared);
        }
        Err(e) => report.skip(format!("http pg+redis: {e:#}")),
    }
    drop_pg_schema(&pg_url, &schema);
    Ok(())
}

/// The storage and limits `serve` runs with.
#[derive(Clone, Copy)]
enum Setup {
    /// SQLite and in-process limits, the defaults.
    Embedded,
    /// Postgres and the Redis limiter.
    PostgresRedis,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Embedded => "embedded",
            Setup::PostgresRedis => "pg+redis",
        }
    }
}

/// The rows of one `serve` setup: rate, p50 and p99 against the hello-world's, and peak
/// RSS against the memory target. Only the embedded rate has a target: with Postgres and
/// Redis each request also makes a Redis round trip per limit and a Postgres write,
/// which the hello-world has nothing to compare with.
fn push_load_rows(report: &mut Report, setup: Setup, serve: &LoadResult, base: &LoadResult) {
    let label = setup.label();
    let rate = Row::new(
        format!("http {label}: POST /v1/messages (req/s)"),
        serve.rps,
        "/s",
    )
    .baseline("axum hello-world", base.rps)
    .note(serve.note());
    report.push(match setup {
        Setup::Embedded => rate.target("≥ 0.5×"),
        Setup::PostgresRedis => rate,
    });
    for (p, percentile) in [(0, "p50"), (1, "p99")] {
        report.push(
            Row::new(
                format!("http {label}: {percentile} latency (ms)"),
                serve.latency_ms[p],
                "ms",
            )
            .baseline("axum hello-world", base.latency_ms[p])
            .lower_is_better(),
        );
    }
    report.push(
        Row::new(
            format!("memory: serve peak RSS under load, {label} (MiB)"),
            serve.peak_mib,
            "MiB",
        )
        .baseline("target", Some(100.0))
        .lower_is_better()
        .target("≤ 100 MiB"),
    );
}

/// The rows of keyed sends on one `serve` setup, against keyless sends of the same
/// `serve`: the rate (at least 0.6× keyless), p50, and p99 against an absolute 20 ms
/// (its ratio is `20 ms / p99`, at least 1 when met; the keyless p99 is in the note).
fn push_keyed_rows(report: &mut Report, setup: Setup, keyed: &LoadResult, keyless: &LoadResult) {
    let label = setup.label();
    report.push(
        Row::new(
            format!("http {label} keyed: POST /v1/messages (req/s)"),
            keyed.rps,
            "/s",
        )
        .baseline("keyless, same backend", keyless.rps)
        .target("≥ 0.6×")
        .note(keyed.note()),
    );
    report.push(
        Row::new(
            format!("http {label} keyed: p50 latency (ms)"),
            keyed.latency_ms[0],
            "ms",
        )
        .baseline("keyless, same backend", keyless.latency_ms[0])
        .lower_is_better(),
    );
    report.push(
        Row::new(
            format!("http {label} keyed: p99 latency (ms)"),
            keyed.latency_ms[1],
            "ms",
        )
        .baseline("target", Some(20.0))
        .lower_is_better()
        .target("≤ 20 ms")
        .note(format!(
            "keyless p99, same backend: {}",
            format_value(keyless.latency_ms[1], "ms")
        )),
    );
}

/// Writes `config` to `serve-{name}.toml` and starts `serve` with it.
fn start_serve(config: &str, out: &Path, name: &str) -> Result<Server> {
    let path = out.join(format!("serve-{name}.toml"));
    fs::write(&path, config)?;
    serve(&path, out, name)
}

/// What one or more `wrk` runs measured.
struct LoadResult {
    rps: Option<f64>,
    /// p50 and p99.
    latency_ms: [Option<f64>; 2],
    non_2xx: u64,
    requests: u64,
    /// Peak RSS of the server, when it is `serve`.
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

/// What the requests of a `wrk` run carry besides the message.
#[derive(Clone, Copy)]
enum Body {
    /// No idempotency key.
    Keyless,
    /// A unique `idempotency_key` on every request.
    Keyed,
}

impl Body {
    /// The script's second argument.
    fn script_arg(self) -> &'static str {
        match self {
            Body::Keyless => "keyless",
            Body::Keyed => "keyed",
        }
    }
}

/// `wrk` runs against the servers of the phase, each with recipients of its own.
struct LoadRuns<'a> {
    lua: &'a Path,
    out: &'a Path,
    runs: u64,
}

impl<'a> LoadRuns<'a> {
    fn new(lua: &'a Path, out: &'a Path) -> Self {
        Self { lua, out, runs: 0 }
    }

    /// Warms up each of `loads` (port, name, body) in order, then measures them by turns
    /// [`HTTP_ROUNDS`] times; the medians of each, in the same order. Two loads may be on
    /// the same port: the same server, taking turns with itself.
    fn by_turns<const N: usize>(
        &mut self,
        loads: [(u16, &str, Body); N],
    ) -> Result<[LoadResult; N]> {
        for (port, name, body) in loads {
            self.run(port, &format!("{name}-warmup"), body, WARMUP_SECONDS)?;
        }
        let mut measured: [Vec<LoadResult>; N] = std::array::from_fn(|_| Vec::new());
        for _ in 0..HTTP_ROUNDS {
            for ((port, name, body), runs) in loads.iter().zip(&mut measured) {
                let round = self.runs;
                let name = format!("{name}-{round}");
                runs.push(self.run(*port, &name, *body, HTTP_SECONDS)?);
            }
        }
        Ok(measured.map(LoadResult::median))
    }

    fn run(&mut self, port: u16, name: &str, body: Body, seconds: u32) -> Result<LoadResult> {
        if self.runs >= RUNS {
            bail!("more than {RUNS} wrk runs would reuse recipients; see NUMBERS_PER_RUN");
        }
        let first_number = self.runs * NUMBERS_PER_RUN;
        self.runs += 1;
        let save = self.out.join(format!("wrk-{name}.txt"));
        wrk(port, self.lua, &save, seconds, first_number, body)
    }
}

/// POSTs a message to a fresh recipient every time (per-recipient limits would refuse
/// repeats, and a known recipient costs less than a new one), with the bearer token.
/// The script's first argument is where this run's numbers start (see
/// [`NUMBERS_PER_RUN`]); with `keyed` as its second, every request also carries the
/// idempotency key `b<thread>-<number>`, as unique as its recipient (a repeated key
/// would be answered with the message it first sent, for less). `{TOKEN}` is replaced
/// by the configured token when the script is written.
const WRK_SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  counter = tonumber(args[1] or "0")
  keyed = args[2] == "keyed"
end
function request()
  counter = counter + 1
  local n = counter % 10000000
  local number = string.format("+86139%01d%07d", tid % 10, n)
  local body
  if keyed then
    body = '{"template":"login","args":["123456"],"recipients":["' .. number .. '"],'
      .. string.format('"idempotency_key":"b%d-%d"}', tid, n)
  else
    body = '{"template":"login","args":["123456"],"recipients":["' .. number .. '"]}'
  end
  return wrk.format("POST", "/v1/messages",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer {TOKEN}" }, body)
end
"#;

/// One `wrk` run of `seconds`, its recipients (and keys) numbered from `first_number` on.
fn wrk(
    port: u16,
    lua: &Path,
    save: &Path,
    seconds: u32,
    first_number: u64,
    body: Body,
) -> Result<LoadResult> {
    let output = Command::new("wrk")
        .args(["-t", "2", "-c", &CONCURRENCY.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency", "-s"])
        .arg(lua)
        .arg(format!("http://127.0.0.1:{port}/v1/messages"))
        .args(["--", &first_number.to_string(), body.script_arg()])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_durations() {
        assert_eq!(parse_duration_ms("850.00us"), Some(0.85));
        assert_eq!(parse_duration_ms("1.02s"), Some(1020.0));
        assert_eq!(parse_duration_ms("3.10ms"), Some(3.1));
    }

    #[test]
    fn the_script_reads_the_keyed_argument() {
        let keyed = format!("args[2] == {:?}", Body::Keyed.script_arg());
        assert!(WRK_SCRIPT.contains(&keyed));
        assert!(WRK_SCRIPT.contains(r#""idempotency_key":"b%d-%d""#));
    }
}
