//! `cargo xtask chaos`: the fault scenarios and a longer fuzz smoke run, in bounded time.
//!
//! The scenarios are the `chaos::` tests of `sms-app`'s end-to-end suite, ignored by the
//! plain test run because each takes seconds to tens of seconds and loads the machine:
//! `kill -9` during a drain (SQLite, and Postgres + Redis), Redis and Postgres cut off
//! behind a proxy, two instances on one schema, four instances sharing vendor health.
//! They run one at a time here. Each prints
//! a `chaos-figures {json}` line; the figures are collected into
//! `target/chaos-figures.jsonl` and summed up at the end (docs/RELIABILITY.md quotes
//! them).
//!
//! Then the cargo-fuzz target bodies (`fuzz/`) run on stable over many seeded inputs.
//! The seed changes every run and is printed, so each CI run covers new inputs and a
//! failure can be replayed with `SMS_FUZZ_SEED`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// The end-to-end suite of `sms-app`, where the scenarios and the fuzz bodies live.
const SUITE: [&str; 6] = ["test", "-p", "sms-app", "--all-features", "--test", "it"];

/// Longest the scenarios may take together before the step fails.
const SCENARIOS_BUDGET: Duration = Duration::from_secs(300);
/// Longest the fuzz smoke run may take.
const FUZZ_BUDGET: Duration = Duration::from_secs(180);
/// Inputs per fuzz target in the smoke run.
const FUZZ_CASES: &str = "40000";

/// Runs the scenarios, then the fuzz smoke run.
pub fn run() -> Result<()> {
    let root = crate::root();
    let figures_path = root.join("target").join("chaos-figures.jsonl");
    // Built first, outside the budget: on a cold cache the build alone can take longer
    // than the scenarios (`-p sms-app` unifies features apart from the workspace build,
    // so the test step's build is not reused).
    crate::cargo(&[&SUITE[..], &["--no-run"]].concat()).context("building the end-to-end suite")?;
    let started = Instant::now();
    let mut scenarios = crate::cargo_cmd(
        &[
            &SUITE[..],
            &[
                "--",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
                "chaos::",
            ],
        ]
        .concat(),
    );
    let figures = run_collecting(&mut scenarios, SCENARIOS_BUDGET, "chaos-figures ")?;
    std::fs::create_dir_all(root.join("target")).context("creating target/")?;
    std::fs::write(&figures_path, figures.join("\n") + "\n")
        .with_context(|| format!("writing {}", figures_path.display()))?;
    eprintln!(
        "xtask: scenarios passed in {:.0}s, {} figure lines in {}",
        started.elapsed().as_secs_f64(),
        figures.len(),
        figures_path.display()
    );
    for line in &figures {
        eprintln!("xtask:   {line}");
    }

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    eprintln!("xtask: fuzz smoke run, {FUZZ_CASES} inputs per target, SMS_FUZZ_SEED={seed}");
    let mut fuzz = crate::cargo_cmd(&[&SUITE[..], &["--", "fuzz_smoke::"]].concat());
    fuzz.env("SMS_FUZZ_CASES", FUZZ_CASES)
        .env("SMS_FUZZ_SEED", seed.to_string());
    run_collecting(&mut fuzz, FUZZ_BUDGET, "chaos-figures ")?;
    Ok(())
}

/// Runs `cmd` within `budget`, echoing its output, and returns what follows `marker` on
/// the stdout lines holding it.
fn run_collecting(cmd: &mut Command, budget: Duration, marker: &str) -> Result<Vec<String>> {
    eprintln!("xtask: $ {}", crate::describe(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", crate::describe(cmd)))?;
    let stdout = child.stdout.take().context("capturing stdout")?;
    let marker = marker.to_owned();
    let reader = std::thread::spawn(move || {
        let mut found = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            // libtest prints a test's name without a newline before its output, so the
            // marker may be mid-line.
            if let Some(at) = line.find(&marker) {
                found.push(line[at + marker.len()..].to_owned());
            }
        }
        found
    });
    let deadline = Instant::now() + budget;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting")? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} took longer than {}s",
                crate::describe(cmd),
                budget.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let found = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{} exited with {status}", crate::describe(cmd));
    }
    Ok(found)
}
