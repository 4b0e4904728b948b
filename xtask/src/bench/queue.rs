//! Phase 3, the queue (`sms-store/benches/queue.rs`): enqueue, claim+complete and a
//! 100,000-message drain on SQLite and Postgres. Postgres's rates are compared with
//! `pgbench` running plain INSERT and UPDATE on a table of the same shape (no lease
//! checks, no JSON, no pool), SQLite's with Postgres's.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::{BenchResult, Report, Row, cargo_quiet, postgres_url};

/// Which `pgbench` run a Postgres rate is compared with.
#[derive(Clone, Copy)]
enum Pgbench {
    Insert,
    Update,
}

/// The rates the benchmark reports for each backend: its key, the row's words, and the
/// `pgbench` run that does the same writes without the store's checks.
const RATES: [(&str, &str, Pgbench); 5] = [
    ("enqueue_1_per_s", "enqueue, 1 client", Pgbench::Insert),
    ("enqueue_8_per_s", "enqueue, 8 clients", Pgbench::Insert),
    (
        "enqueue_many_1_per_s",
        "enqueue_many of 100, 1 client",
        Pgbench::Insert,
    ),
    (
        "claim_complete_8_per_s",
        "claim+complete, 8 workers",
        Pgbench::Update,
    ),
    (
        "claim_complete_many_8_per_s",
        "claim+complete_many, 8 workers",
        Pgbench::Update,
    ),
];

/// Counters that must stay at zero: a completion refused for a lost lease, or a message
/// claimed twice, during claim+complete is a store bug.
const MUST_BE_ZERO: [&str; 4] = [
    "claim_complete_lease_lost",
    "claim_complete_claimed_twice",
    "claim_complete_many_lease_lost",
    "claim_complete_many_claimed_twice",
];

pub(super) fn run(report: &mut Report, out: &Path) -> Result<()> {
    let result = out.join("queue.json");
    let _ = fs::remove_file(&result);
    let pg_url = postgres_url();
    cargo_quiet(
        &["bench", "-p", "sms-store", "--bench", "queue"],
        &[
            ("SMS_BENCH_POSTGRES_URL", pg_url.as_str()),
            ("SMS_BENCH_OUT", &result.display().to_string()),
        ],
    )?;
    let result = BenchResult::read(&result).context("the queue benchmark wrote no result")?;
    let pg = |key: &str| result.number(&["postgres", key]);
    let lite = |key: &str| result.number(&["sqlite", key]);
    for reason in result.skipped().into_iter().chain(result.notes()) {
        report.skip(reason);
    }
    for (key, what, pgbench) in RATES {
        let row = Row::new(format!("queue pg: {what} (msg/s)"), pg(key), "/s");
        report.push(match pgbench {
            Pgbench::Insert => {
                row.baseline("pgbench INSERT, 8 clients", pg("pgbench_insert_8_per_s"))
            }
            Pgbench::Update => row
                .baseline("pgbench UPDATE, 8 clients", pg("pgbench_update_8_per_s"))
                .target("≥ 0.5×"),
        });
    }
    for (key, what, _) in RATES {
        report.push(
            Row::new(format!("queue sqlite: {what} (msg/s)"), lite(key), "/s")
                .baseline("Postgres, same", pg(key)),
        );
    }
    for (backend, get) in [
        ("sqlite", &lite as &dyn Fn(&str) -> Option<f64>),
        ("pg", &pg),
    ] {
        let lost: f64 = MUST_BE_ZERO.iter().map(|key| get(key).unwrap_or(0.0)).sum();
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
            report.push(if target {
                row.baseline("target", Some(10.0))
                    .lower_is_better()
                    .target("< 10 s")
            } else {
                row
            });
        }
    }
    // Real vendors answer in 50-300 ms: with 100 ms calls, the drain should keep up with
    // the global limit, so its baseline is the backlog at the limit's rate.
    let projected = lite("drain_backlog_100ms_vendor_projected").is_some_and(|p| p > 0.0);
    report.push(
        Row::new(
            "queue sqlite: drain 100,000 through a 100 ms vendor, limit 3,000/s (s)",
            lite("drain_backlog_100ms_vendor_s"),
            "s",
        )
        .baseline(
            "the backlog at the limit's rate",
            lite("drain_backlog_limit_bound_s"),
        )
        .lower_is_better()
        .target("≥ 0.8×")
        .note(if projected {
            "projected from a run stopped at 60 s"
        } else {
            ""
        }),
    );
    Ok(())
}
