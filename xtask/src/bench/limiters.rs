//! Phase 2, the limiters: the in-process limiter against `governor` at the same rate
//! (criterion, `sms-limit/benches/limiter.rs`), and the Redis limiter with
//! [`CONCURRENCY`] tasks (`sms-limit/benches/redis_limiter.rs`) against
//! `redis-benchmark` running `EVALSHA` of the same script with as many clients, which is
//! the most the Redis server can do for that script.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{
    BenchResult, CONCURRENCY, Report, Row, cargo_quiet, criterion_median_ns, redis_url, tool_exists,
};
use crate::root;

pub(super) fn run(report: &mut Report, out: &Path) -> Result<()> {
    cargo_quiet(&["bench", "-p", "sms-limit", "--bench", "limiter"], &[])?;
    report.push(
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

    let redis_url = redis_url();
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
    let result =
        BenchResult::read(&result).context("the redis limiter benchmark wrote no result")?;
    let skipped = result.skipped();
    if !skipped.is_empty() {
        skipped.into_iter().for_each(|reason| report.skip(reason));
        return Ok(());
    }
    let ours = result.number(&["decisions_per_s"]);
    let baseline = match redis_benchmark_evalsha(&redis_url, &result) {
        Ok(rps) => Some(rps),
        Err(e) => {
            report.skip(format!("redis-benchmark baseline: {e:#}"));
            None
        }
    };
    report.push(
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
fn redis_benchmark_evalsha(url: &str, limiter: &BenchResult) -> Result<f64> {
    for tool in ["redis-benchmark", "redis-cli"] {
        if !tool_exists(tool) {
            bail!("{tool} not installed (apt-get install redis-tools)");
        }
    }
    let source = fs::read_to_string(root().join("crates/sms-limit/src/redis/global.rs"))?;
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
    let limit = limiter.number(&["limit"]).unwrap_or(1e9);
    let window = limiter.number(&["window_us"]).unwrap_or(1e6);
    let key = format!("sms-bench-rb-{}:limit:{{global}}", std::process::id());
    let requests = limiter.number(&["decisions"]).unwrap_or(100_000.0);
    let output = Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port, "-c", &CONCURRENCY.to_string()])
        .args(["-n", &format!("{}", requests.max(10_000.0) as u64)])
        .args(["--csv", "evalsha", &sha, "2", &key, &format!("{key}:seq")])
        // Limit, window, one permit, and the high lane's cap: the whole limit, as the
        // limiter's `acquire` passes it.
        .args([
            format!("{limit:.0}"),
            format!("{window:.0}"),
            "1".to_owned(),
            format!("{limit:.0}"),
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

/// Host and port of a `redis://[user:password@]host[:port][/db]` URL, as strings for
/// `redis-cli -h … -p …`.
fn redis_host_port(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("redis://");
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = rest.split('/').next().unwrap_or("127.0.0.1:6379");
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (hostport.to_owned(), "6379".to_owned()),
    }
}
