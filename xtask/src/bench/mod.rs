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
    fn reads_nested_numbers() {
        let json = r#"{"sqlite":{"a":1.5},"postgres":{"a":2e3,"notes":["x y","z"]}}"#;
        assert_eq!(json_number(json, &["\"postgres\"", "a"]), Some(2000.0));
        assert_eq!(json_number(json, &["\"sqlite\"", "a"]), Some(1.5));
        assert_eq!(json_number(json, &["missing"]), None);
        assert_eq!(json_notes(json), vec!["x y", "z"]);
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
