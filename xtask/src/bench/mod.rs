//! `cargo xtask bench`: every benchmark, each figure next to a baseline measured in the
//! same run, on loopback only, each phase bounded in time.
//!
//! Phases (a phase whose tool or server is missing prints `skipped: …` and the rest go on):
//!
//! 1. send path ([`send`]): `Gateway::send` over an instant vendor vs the vendor called
//!    directly; 2 threads vs 1;
//! 2. limiters ([`limiters`]): in-process vs `governor`; the Redis limiter with 64 tasks
//!    vs `redis-benchmark -c 64` running `EVALSHA` of the same script;
//! 3. queue ([`queue`]): enqueue, claim+complete and a 100,000-message drain on SQLite
//!    and Postgres, vs `pgbench` with plain INSERT and UPDATE;
//! 4. HTTP ([`http`]): `wrk` with 64 connections against `sms-app serve` (embedded
//!    defaults, then Postgres + Redis) vs an axum hello-world, with `serve`'s peak RSS;
//! 5. memory with a backlog ([`backlog`]): peak RSS of `serve` with 1,000,000 messages
//!    waiting, vs the same `serve` on an empty queue.
//!
//! Output: a table on stdout, `target/bench/summary.json` and `summary.md`, raw outputs
//! under `target/bench/`. `docs/BENCHMARKS.md` is written by hand from them.
//! `SMS_BENCH_ONLY=http,queue` runs only the phases whose names contain one of the words.

mod backlog;
mod http;
mod limiters;
mod queue;
mod send;
mod server;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{cargo_bin, root};

/// Connections of the HTTP load, and tasks of the Redis limiter run.
const CONCURRENCY: u32 = 64;

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
    fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

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
        ("send path", send::run),
        ("limiters", limiters::run),
        ("queue", queue::run),
        ("http and memory", http::run),
        ("memory with a backlog", backlog::run),
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
    let json = serde_json::to_string_pretty(&json).context("writing summary.json")? + "\n";
    fs::write(out.join("summary.json"), json).context("writing summary.json")?;
    fs::write(out.join("summary.md"), &table).context("writing summary.md")?;
    println!(
        "whole run: {:.0} s; summary in target/bench/summary.json",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------- tools and settings

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (as `.ci/run` does),
/// else `target/` in the workspace.
fn build_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// The Postgres the queue and HTTP phases use: `SMS_BENCH_POSTGRES_URL`, else the one
/// the tests use.
fn postgres_url() -> String {
    env_or(
        "SMS_BENCH_POSTGRES_URL",
        "SMS_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// The Redis the limiter and HTTP phases use: `SMS_BENCH_REDIS_URL`, else the one the
/// tests use.
fn redis_url() -> String {
    env_or(
        "SMS_BENCH_REDIS_URL",
        "SMS_TEST_REDIS_URL",
        "redis://127.0.0.1:6379",
    )
}

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
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        bail!("cargo {} failed: {}", args.join(" "), tail.join("\n"));
    }
    Ok(())
}

// ---------------------------------------------------------------- reading results

/// A JSON document a benchmark wrote: criterion's `estimates.json`, or the result file of
/// a benchmark binary (`{"sqlite": {…}, "postgres": {…, "notes": […]}}`, or
/// `{"skipped": "…"}` when its server was unreachable).
struct BenchResult(Value);

impl BenchResult {
    fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("reading {}", path.display()))
    }

    fn parse(text: &str) -> Result<Self> {
        let value = serde_json::from_str(text).context("expected a JSON document")?;
        Ok(Self(value))
    }

    /// The number under `keys`, one object level per key.
    fn number(&self, keys: &[&str]) -> Option<f64> {
        keys.iter()
            .try_fold(&self.0, |value, key| value.get(key))?
            .as_f64()
    }

    /// Why the benchmark, or one of its parts, measured nothing.
    fn skipped(&self) -> Vec<String> {
        self.strings("skipped")
    }

    /// What the benchmark, or one of its parts, could not measure (a missing tool).
    fn notes(&self) -> Vec<String> {
        self.strings("notes")
    }

    /// The strings under `key` at the top of the document and in each of its parts
    /// (`sqlite`, `postgres`), whether `key` holds one string or a list of them.
    fn strings(&self, key: &str) -> Vec<String> {
        let parts = self.0.as_object().into_iter().flat_map(|o| o.values());
        std::iter::once(&self.0)
            .chain(parts)
            .filter_map(|part| part.get(key))
            .flat_map(|found| match found {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            })
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    }
}

/// Criterion's median for `group/name`, in nanoseconds.
fn criterion_median_ns(group: &str, name: &str) -> Option<f64> {
    let path: PathBuf = build_dir()
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    BenchResult::read(&path)
        .ok()?
        .number(&["median", "point_estimate"])
}

// ---------------------------------------------------------------- writing the summary

fn format_value(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "—".to_owned(),
        Some(v) if unit == "×" => format!("{v:.2}×"),
        Some(v) if v >= 100.0 => format!("{v:.0} {unit}"),
        Some(v) => format!("{v:.2} {unit}"),
    }
}

/// The report as a Markdown table, skip notices after it.
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

/// `summary.json`: the machine, how long the run took, each figure with its baseline and
/// ratio, and what was skipped. A figure that is missing or not finite is `null`.
fn summary_json(report: &Report, took: Duration) -> Value {
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let figures: Vec<Value> = report
        .rows
        .iter()
        .map(|row| {
            json!({
                "figure": row.name,
                "value": finite(row.value),
                "unit": row.unit,
                "baseline": row.baseline_name,
                "baseline_value": finite(row.baseline),
                "ratio": finite(row.ratio()),
                "ratio_is": if row.higher_is_better {
                    "value / baseline"
                } else {
                    "baseline / value"
                },
                "target": row.target,
                "note": row.note,
            })
        })
        .collect();
    json!({
        "machine": machine(),
        "seconds": took.as_secs_f64().round(),
        "figures": figures,
        "skipped": report.skipped,
    })
}

/// The cores, processor model and memory of the machine the run is on, which absolute
/// figures depend on.
fn machine() -> Value {
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let memory_gib = (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0;
    json!({ "nproc": nproc, "cpu": model, "memory_gib": memory_gib })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_numbers_skips_and_notes() {
        let json = r#"{"sqlite":{"a":1.5},"postgres":{"a":2e3,"notes":["x y","z"]}}"#;
        let result = BenchResult::parse(json).unwrap();
        assert_eq!(result.number(&["postgres", "a"]), Some(2000.0));
        assert_eq!(result.number(&["sqlite", "a"]), Some(1.5));
        assert_eq!(result.number(&["missing"]), None);
        assert_eq!(result.notes(), vec!["x y", "z"]);
        assert!(result.skipped().is_empty());

        let skipped = r#"{"sqlite":{"a":1},"postgres":{"skipped":"postgres: cannot connect"}}"#;
        let result = BenchResult::parse(skipped).unwrap();
        assert_eq!(result.skipped(), vec!["postgres: cannot connect"]);
        let top = BenchResult::parse(r#"{"skipped":"redis limiter: no answer"}"#).unwrap();
        assert_eq!(top.skipped(), vec!["redis limiter: no answer"]);
        assert!(BenchResult::parse("{\"a\":NaN}").is_err());
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

    #[test]
    fn the_summary_escapes_text_and_writes_missing_figures_as_null() {
        let mut report = Report::default();
        report.push(Row::new("a \"quoted\"\nname", Some(f64::NAN), "ns").baseline("b", Some(2.0)));
        report.skipped.push("back\\slash".to_owned());
        let text = serde_json::to_string(&summary_json(&report, Duration::from_secs(3))).unwrap();
        let summary: Value = serde_json::from_str(&text).unwrap();
        let figure = &summary["figures"][0];
        assert_eq!(figure["figure"], "a \"quoted\"\nname");
        assert_eq!(figure["value"], Value::Null);
        assert_eq!(figure["baseline_value"], 2.0);
        assert_eq!(figure["ratio_is"], "value / baseline");
        assert_eq!(summary["skipped"][0], "back\\slash");
        assert_eq!(summary["seconds"], 3.0);
    }
}
