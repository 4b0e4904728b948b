//! Project automation, run as `cargo xtask <task>`.
//!
//! `ci` runs every check CI runs, in order, stopping at the first failure:
//! formatting, layering, clippy, docs, tests, fault scenarios, the container files.
//! Each step is also a task of its own.

mod chaos;
mod container;
mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

mod bench;

/// Crates that must stay free of I/O drivers, and the drivers they must not pull in.
const DRIVER_FREE: &[&str] = &["sms-core", "sms-failover", "sms-providers"];
const DRIVERS: &[&str] = &[
    "tokio-postgres",
    "deadpool-postgres",
    "fred",
    "rusqlite",
    "postgres",
    "redis",
];

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci       fmt, layering, clippy, doc, test, chaos and container, stopping at the first failure
  fmt      cargo fmt --check
  layers   fail if sms-core, sms-failover or sms-providers depend on a driver
  tidy     fail on import cycles between modules, long files without a reason,
           and docs or comments that point at numbered defects, issues or sessions
  clippy   cargo clippy on every target, warnings denied
  doc      cargo doc, warnings denied
  test     cargo nextest (or cargo test when nextest is not installed)
  bench    benchmarks against baselines measured in the same run (not part of ci)
  chaos    fault scenarios (kill -9, Redis/Postgres outages, two instances) and a fuzz smoke run
  container  check the Dockerfile and deploy/compose.yaml; build the image where Docker runs";

fn main() -> ExitCode {
    let task = env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "ci" => ci(),
        "fmt" => fmt(),
        "layers" => layers(),
        "tidy" => tidy::run(&root()),
        "clippy" => clippy(),
        "doc" => doc(),
        "test" => test(),
        "bench" => bench::run(),
        "chaos" => chaos::run(),
        "container" => container::run(),
        "" | "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One step of `ci`.
type Step = (&'static str, fn() -> Result<()>);

fn ci() -> Result<()> {
    let steps: [Step; 8] = [
        ("fmt", fmt),
        ("layers", layers),
        ("tidy", || tidy::run(&root())),
        ("clippy", clippy),
        ("doc", doc),
        ("test", test),
        ("chaos", chaos::run),
        ("container", container::run),
    ];
    for (name, step) in steps {
        let started = Instant::now();
        eprintln!("xtask: == {name} ==");
        step().with_context(|| format!("step {name} failed"))?;
        eprintln!(
            "xtask: {name} passed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn fmt() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])
}

fn clippy() -> Result<()> {
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])
}

fn doc() -> Result<()> {
    let mut cmd = cargo_cmd(&["doc", "--workspace", "--no-deps", "--all-features"]);
    cmd.env("RUSTDOCFLAGS", "-D warnings");
    run(cmd)
}

fn test() -> Result<()> {
    let has_nextest = Command::new(cargo_bin())
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if has_nextest {
        cargo(&[
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ])?;
        // nextest does not run doctests.
        cargo(&["test", "--workspace", "--all-features", "--doc"])
    } else {
        eprintln!("xtask: cargo-nextest not installed, using cargo test");
        cargo(&["test", "--workspace", "--all-features"])
    }
}

/// Checks the layering rule with `cargo tree`: no driver among the normal
/// (non-dev) dependencies of the driver-free crates, directly or transitively.
fn layers() -> Result<()> {
    for krate in DRIVER_FREE {
        let output = Command::new(cargo_bin())
            .current_dir(root())
            .args([
                "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
            ])
            .output()
            .context("running cargo tree")?;
        if !output.status.success() {
            bail!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&output.stdout);
        let found: Vec<&str> = tree
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| DRIVERS.contains(name))
            .collect();
        if !found.is_empty() {
            bail!(
                "{krate} must not depend on a driver, but depends on {}",
                found.join(", ")
            );
        }
    }
    eprintln!("xtask: {} depend on no driver", DRIVER_FREE.join(", "));
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn cargo_bin() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn cargo_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(cargo_bin());
    cmd.current_dir(root()).args(args);
    cmd
}

fn cargo(args: &[&str]) -> Result<()> {
    run(cargo_cmd(args))
}

fn run(mut cmd: Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(&cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", describe(&cmd)))?;
    if !status.success() {
        bail!("{} exited with {status}", describe(&cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}
