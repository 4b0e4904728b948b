//! Phase 1, the send path: `Gateway::send` over an instant vendor against the vendor
//! called directly, and how throughput grows from 1 thread to 2
//! (criterion, `sms-failover/benches/send_path.rs`). Both are reported for information:
//! the figures users feel are the HTTP phase's.

use std::path::Path;

use anyhow::Result;

use super::{Report, Row, cargo_quiet, criterion_median_ns};

pub(super) fn run(report: &mut Report, _out: &Path) -> Result<()> {
    cargo_quiet(
        &["bench", "-p", "sms-failover", "--bench", "send_path"],
        &[],
    )?;
    let ns = |name: &str| criterion_median_ns("send_path", name);
    let (gateway, direct) = (ns("gateway"), ns("vendor_direct"));
    let overhead = gateway.zip(direct).map(|(g, d)| g - d);
    report.push(
        Row::new("send: Gateway::send (ns/send)", gateway, "ns")
            .baseline("vendor called directly", direct)
            .lower_is_better(),
    );
    report.push(
        Row::new(
            "send: Gateway::send, records kept in the in-memory queue (ns/send)",
            ns("gateway_memory_queue"),
            "ns",
        )
        .baseline("vendor called directly", direct)
        .lower_is_better(),
    );
    // For information only: a few hundred nanoseconds per send are far below anything a
    // client of the HTTP API can notice, so this figure has no target; the ones that
    // matter are HTTP throughput and p99, the drain rate and memory.
    report.push(
        Row::new("send: overhead over the vendor (ns/send)", overhead, "ns")
            .note("for information"),
    );
    // Criterion measures time per send, so throughput with 2 threads over 1 is the
    // 1-thread time over the 2-thread time. Sends share the gateway's health lock, held
    // for a few hundred nanoseconds, so over an instant vendor a second thread adds less
    // than a second core; over a vendor that takes 50-300 ms per call the lock is free
    // nearly all the time. For information, like the overhead.
    let scaling = |prefix: &str| {
        let one = ns(&format!("{prefix}_threads_1"))?;
        let two = ns(&format!("{prefix}_threads_2"))?;
        Some(one / two)
    };
    report.push(
        Row::new(
            "send: throughput 2 threads / 1 thread",
            scaling("gateway"),
            "×",
        )
        .baseline("same for the vendor alone", scaling("vendor_direct"))
        .note("for information"),
    );
    Ok(())
}
