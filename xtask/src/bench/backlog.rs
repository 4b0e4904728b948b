//! Phase 5, memory with a backlog: peak RSS of `serve` with [`BACKLOG`] messages waiting
//! in its SQLite queue and every vendor down, against the same `serve` on an empty queue.
//! The drainer claims, fails and requeues batch after batch while the rest waits, so
//! memory must stay flat however long the queue is.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::server::{Vendors, serve, serve_config};
use super::{Report, Row, build_dir, cargo_quiet};

/// Messages waiting in the queue.
const BACKLOG: u64 = 1_000_000;

pub(super) fn run(report: &mut Report, out: &Path) -> Result<()> {
    let release = build_dir().join("release/sms-app");
    if !release.exists() {
        bail!("sms-app was not built (see the HTTP phase)");
    }
    let dir = out.join("backlog-sqlite");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let db = dir.join("sms.db");
    let storage = format!("sqlite_path = {:?}\n", db.display().to_string());
    let config_path = out.join("serve-backlog.toml");
    fs::write(&config_path, serve_config(&storage, Vendors::Down))?;

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
    let server = serve(&config_path, out, "backlog")?;
    let mut samples = Vec::new();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(5));
        samples.push(server.memory_mib().0);
    }
    let (rss, hwm) = server.memory_mib();
    drop(server);
    eprintln!("xtask: RSS every 5 s with the backlog: {samples:?} MiB");
    let mib = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1}"));
    let every_5_s: Vec<String> = samples.iter().copied().map(mib).collect();
    report.push(
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
            every_5_s.join(", "),
            mib(rss)
        )),
    );
    report.push(
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
