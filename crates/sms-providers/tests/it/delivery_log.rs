//! The delivery log on disk: round trips, several writers, restarts.

use std::sync::Arc;

use sms_core::{Vendor, VendorId};
use sms_providers::delivery_log::{self, DeliveryLog};
use sms_providers::rules::Protocol;
use sms_providers::simulated::{SimulatedVendor, SimulationSettings};

use crate::{sms, sms_to};

#[tokio::test(start_paused = true)]
async fn the_file_holds_what_was_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.jsonl");
    let log = DeliveryLog::append_to(&path).unwrap();
    assert_eq!(log.path(), Some(path.as_path()));
    let vendor = SimulatedVendor::aliyun(1, log.clone());
    vendor
        .send(&sms_to(&["+8613800138000", "+8613800138001"]))
        .await
        .unwrap();
    // Another number: Aliyun takes one message a minute per number.
    vendor.send(&sms_to(&["+8613800138002"])).await.unwrap();

    let from_file = DeliveryLog::read_file(&path).unwrap();
    assert_eq!(from_file.len(), 3);
    assert_eq!(from_file, log.records());
}

#[tokio::test(start_paused = true)]
async fn duplicates_are_counted_across_handles_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.jsonl");
    let message = sms();
    // Another number: Tencent refuses the same content to one number twice in 30 s.
    let other = sms_to(&["+8613800138001"]);

    // Two "instances" of the gateway share the file, each with its own vendor.
    let first = SimulatedVendor::aliyun(1, DeliveryLog::append_to(&path).unwrap());
    let second = SimulatedVendor::tencent(2, DeliveryLog::append_to(&path).unwrap());
    first.send(&message).await.unwrap();
    second.send(&message).await.unwrap();
    second.send(&other).await.unwrap();
    // Each handle only knows its own records.
    assert!(first.delivery_log().duplicates().is_empty());
    drop((first, second));

    // After a "restart" a new handle appends to what is there.
    let restarted = SimulatedVendor::cloopen(3, DeliveryLog::append_to(&path).unwrap());
    restarted.send(&message).await.unwrap();

    let records = DeliveryLog::read_file(&path).unwrap();
    assert_eq!(records.len(), 4);
    let counts = delivery_log::count_by_message(&records);
    assert_eq!(counts[&message.id], 3);
    assert_eq!(counts[&other.id], 1);
    let duplicates = delivery_log::duplicates(&records);
    assert_eq!(duplicates.len(), 1);
    assert_eq!(duplicates[0].message_id, message.id);
    assert_eq!(duplicates[0].deliveries, 3);
    let vendors: Vec<_> = duplicates[0].vendors.iter().map(VendorId::as_str).collect();
    assert_eq!(vendors, ["aliyun", "tencent", "cloopen"]);
}

#[test]
fn concurrent_writers_never_interleave_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.jsonl");
    let logs = [
        DeliveryLog::append_to(&path).unwrap(),
        DeliveryLog::append_to(&path).unwrap(),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let vendors: Vec<Arc<SimulatedVendor>> = logs
            .iter()
            .enumerate()
            .map(|(i, log)| {
                Arc::new(
                    SimulatedVendor::new(
                        VendorId::new(&format!("sim{i}")).unwrap(),
                        // A log test: a hundred messages to the same three numbers, which
                        // the vendor's per-number limits would refuse.
                        SimulationSettings {
                            protocol: Some(Protocol::Aliyun),
                            per_number_limits: false,
                            ..SimulationSettings::default()
                        },
                        i as u64,
                        log.clone(),
                    )
                    .unwrap(),
                )
            })
            .collect();
        let mut tasks = Vec::new();
        for vendor in &vendors {
            for _ in 0..100 {
                let vendor = Arc::clone(vendor);
                tasks.push(tokio::spawn(async move {
                    vendor
                        .send(&sms_to(&[
                            "+8613800138000",
                            "+8613800138001",
                            "+8613800138002",
                        ]))
                        .await
                        .unwrap();
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    // Every line parses: 2 writers × 100 sends × 3 recipients.
    let records = DeliveryLog::read_file(&path).unwrap();
    assert_eq!(records.len(), 600);
    assert!(delivery_log::duplicates(&records).is_empty());
    assert_eq!(logs[0].len() + logs[1].len(), 600);
}

#[test]
fn a_missing_file_is_an_error_not_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let e = DeliveryLog::read_file(dir.path().join("absent.jsonl")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn an_unwritable_path_is_refused_when_opening() {
    let dir = tempfile::tempdir().unwrap();
    assert!(DeliveryLog::append_to(dir.path().join("no/such/dir/log.jsonl")).is_err());
}

/// Set in the child process of [`acknowledged_deliveries_survive_a_kill`]: the file it
/// writes to.
const KILL_CHILD_LOG: &str = "SMS_PROVIDERS_KILL_CHILD_LOG";

#[test]
fn acknowledged_deliveries_survive_a_kill() {
    if let Ok(path) = std::env::var(KILL_CHILD_LOG) {
        // Child: record deliveries and acknowledge each one on stdout, until killed. The
        // bound only matters if the parent died without killing us.
        let log = DeliveryLog::append_to(path).unwrap();
        let message = sms();
        for n in 1..=1_000_000u32 {
            log.record(delivery_log::DeliveryRecord {
                message_id: message.id,
                vendor: VendorId::new("aliyun").unwrap(),
                recipient: message.request.recipients()[0].clone(),
                vendor_message_id: format!("v-{n}"),
                at: chrono::Utc::now(),
            })
            .unwrap();
            println!("ack {n}");
        }
        return;
    }

    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.jsonl");
    // Run this same test in a child process (the test binary re-invoked on just it).
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "delivery_log::acknowledged_deliveries_survive_a_kill",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_LOG, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acknowledged = 0u32;
    for line in stdout.lines() {
        if let Some(n) = line.unwrap().strip_prefix("ack ") {
            acknowledged = n.parse().unwrap();
            if acknowledged >= 200 {
                break;
            }
        }
    }
    // `Child::kill` is SIGKILL on Unix: no destructor, no flush at exit.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acknowledged, 200, "the child stopped acknowledging early");

    let records = DeliveryLog::read_file(&path).unwrap();
    assert!(
        records.len() >= acknowledged as usize,
        "{} acknowledged, {} in the file",
        acknowledged,
        records.len()
    );
}
