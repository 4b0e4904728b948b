//! Simulated vendors: reproducible outcomes, each fault kind, scripted windows on
//! tokio's paused clock, settings changed while running.

use std::sync::Arc;
use std::time::Duration;

use sms_core::{Templates, Vendor, VendorError, VendorId};
use sms_providers::ConfigError;
use sms_providers::delivery_log::DeliveryLog;
use sms_providers::simulated::{FaultKind, ScheduledFault, SimulatedVendor, SimulationSettings};
use tokio::time::{Instant, advance, timeout};

use crate::{sms, sms_to};

/// Longer than any simulated latency, far shorter than a hang.
const DEADLINE: Duration = Duration::from_secs(5);

/// A vendor named `aliyun` with `settings`. The tests here are about faults and send the
/// same message to one number many times, so those that send more than one switch the
/// vendor's per-number limits off (tests/it/vendor_rules.rs covers them).
fn vendor(settings: SimulationSettings, seed: u64) -> SimulatedVendor {
    SimulatedVendor::new(
        VendorId::new("aliyun").unwrap(),
        settings,
        seed,
        DeliveryLog::in_memory(),
    )
    .unwrap()
}

fn noisy() -> SimulationSettings {
    SimulationSettings {
        latency_ms: 50,
        jitter_ms: 100,
        error_rate: 0.15,
        throttle_rate: 0.1,
        timeout_rate: 0.05,
        reject_rate: 0.05,
        per_number_limits: false,
        ..SimulationSettings::default()
    }
}

/// The outcome of one send as the caller sees it, and how long it took (virtual time).
async fn outcome(vendor: &SimulatedVendor) -> (String, Duration) {
    let started = Instant::now();
    let result = match timeout(DEADLINE, vendor.send(&sms())).await {
        Err(_) => "deadline".to_owned(),
        Ok(Ok(receipt)) => format!("ok {}", receipt.vendor_message_id),
        Ok(Err(e)) => e.kind().to_owned(),
    };
    (result, started.elapsed())
}

async fn run(seed: u64, sends: usize) -> Vec<(String, Duration)> {
    let vendor = vendor(noisy(), seed);
    let mut outcomes = Vec::with_capacity(sends);
    for _ in 0..sends {
        outcomes.push(outcome(&vendor).await);
    }
    outcomes
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_outcomes_and_latencies() {
    let first = run(42, 300).await;
    let second = run(42, 300).await;
    assert_eq!(first, second);
    // The mix is really mixed: every kind shows up in 300 sends at these rates.
    for kind in ["ok ", "transient", "throttled", "rejected", "deadline"] {
        assert!(
            first.iter().any(|(o, _)| o.starts_with(kind)),
            "no {kind} in {first:?}"
        );
    }
    let other = run(43, 300).await;
    assert_ne!(first, other);
}

#[tokio::test(start_paused = true)]
async fn each_fault_rate_gives_its_error_kind_and_delivers_nothing() {
    type Setup = fn(&mut SimulationSettings);
    let cases: [(Setup, &str); 4] = [
        (|s| s.error_rate = 1.0, "transient"),
        (|s| s.throttle_rate = 1.0, "throttled"),
        (|s| s.reject_rate = 1.0, "rejected"),
        (|s| s.outage = true, "transient"),
    ];
    for (set, kind) in cases {
        let mut settings = SimulationSettings::healthy(20, 10);
        set(&mut settings);
        let vendor = vendor(settings, 7);
        let error = vendor.send(&sms()).await.unwrap_err();
        assert_eq!(error.kind(), kind, "{error}");
        assert!(vendor.delivery_log().is_empty());
        let stats = vendor.stats();
        assert_eq!((stats.attempted, stats.failed, stats.succeeded), (1, 1, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn errors_carry_what_the_gateway_acts_on() {
    let throttled = vendor(
        SimulationSettings {
            throttle_rate: 1.0,
            ..SimulationSettings::default()
        },
        1,
    );
    match throttled.send(&sms()).await {
        Err(VendorError::Throttled { retry_after, .. }) => assert!(retry_after.is_some()),
        other => panic!("expected Throttled, got {other:?}"),
    }
    let rejected = vendor(
        SimulationSettings {
            reject_rate: 1.0,
            ..SimulationSettings::default()
        },
        1,
    );
    let error = rejected.send(&sms()).await.unwrap_err();
    assert!(
        !error.counts_against_vendor(),
        "a rejection is not a health problem"
    );
    let down = vendor(
        SimulationSettings {
            outage: true,
            ..SimulationSettings::default()
        },
        1,
    );
    let error = down.send(&sms()).await.unwrap_err();
    assert!(error.counts_against_vendor());
    assert!(error.to_string().contains("outage"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_send_is_cut_by_the_callers_timeout() {
    let vendor = vendor(
        SimulationSettings {
            timeout_rate: 1.0,
            ..SimulationSettings::default()
        },
        3,
    );
    assert!(timeout(DEADLINE, vendor.send(&sms())).await.is_err());
    // Left alone it gives up after an hour of (virtual) time and says the outcome is unknown.
    let started = Instant::now();
    assert_eq!(vendor.send(&sms()).await, Err(VendorError::TimedOut));
    assert!(started.elapsed() >= Duration::from_secs(3600));
    assert!(vendor.delivery_log().is_empty());
    assert_eq!(vendor.stats().timed_out, 2);
}

#[tokio::test(start_paused = true)]
async fn a_hang_may_still_have_delivered() {
    let vendor = vendor(
        SimulationSettings {
            timeout_rate: 1.0,
            timeout_delivers: true,
            ..SimulationSettings::default()
        },
        3,
    );
    let message = sms();
    assert!(timeout(DEADLINE, vendor.send(&message)).await.is_err());
    let records = vendor.delivery_log().records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].message_id, message.id);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_during_the_latency_gets_nothing_delivered() {
    let vendor = vendor(SimulationSettings::healthy(200, 0), 3);
    assert!(
        timeout(Duration::from_millis(100), vendor.send(&sms()))
            .await
            .is_err()
    );
    assert!(vendor.delivery_log().is_empty());
    let stats = vendor.stats();
    assert_eq!((stats.attempted, stats.succeeded, stats.failed), (1, 0, 0));
}

/// One request to several numbers is several messages: each recipient is recorded and
/// billed.
#[tokio::test(start_paused = true)]
async fn a_delivery_records_each_recipient_and_bills_them() {
    let log = DeliveryLog::in_memory();
    let vendor = SimulatedVendor::tencent(9, log.clone());
    let message = sms_to(&["+8613800138000", "+8613800138001", "+14155550100"]);
    let receipt = vendor.send(&message).await.unwrap();
    assert_eq!(receipt.billed_messages, 3);
    let records = log.records();
    assert_eq!(records.len(), 3);
    for (record, recipient) in records.iter().zip(message.request.recipients()) {
        assert_eq!(record.message_id, message.id);
        assert_eq!(record.vendor.as_str(), "tencent");
        assert_eq!(&record.recipient, recipient);
        assert_eq!(record.vendor_message_id, receipt.vendor_message_id);
    }
    let stats = vendor.stats();
    assert_eq!(stats.succeeded, 1);
    assert_eq!(stats.billed_messages, 3);
}

/// Billing counts the segments of the signed text the catalogue gives, as the vendor
/// bills it; a message without a known text is billed one per recipient.
#[tokio::test(start_paused = true)]
async fn long_texts_bill_several_messages_per_recipient() {
    let templates: Templates = serde_json::from_value(serde_json::json!({
        "notice": {"text": "{1}", "vendors": {"aliyun": {"id": "SMS_NOTICE"}}}
    }))
    .unwrap();
    let vendor = vendor(SimulationSettings::default(), 1).with_templates(templates.clone());
    let request = sms_core::SmsRequest::new(
        "notice",
        ["验".repeat(100)],
        ["+8613800138000", "+8613800138001"],
    )
    .unwrap();
    let aliyun = VendorId::new("aliyun").unwrap();
    let message = templates
        .outbound(sms_core::MessageId::new(), &request, &aliyun)
        .unwrap();
    // 100 characters to a mainland number take two parts of 67.
    let receipt = vendor.send(&message).await.unwrap();
    assert_eq!(receipt.billed_messages, 4);
    assert_eq!(receipt.reported_billed, None, "Aliyun reports no count");
    assert_eq!(vendor.stats().billed_messages, 4);
}

#[tokio::test(start_paused = true)]
async fn scripted_windows_follow_the_vendors_clock() {
    let mut slow = ScheduledFault::new(70, 80, FaultKind::Slow);
    slow.latency_ms = Some(1500);
    let settings = SimulationSettings {
        schedule: vec![ScheduledFault::new(20, 60, FaultKind::Outage), slow],
        per_number_limits: false,
        ..SimulationSettings::healthy(10, 0)
    };
    let vendor = vendor(settings, 5);

    assert!(vendor.send(&sms()).await.is_ok(), "before the window");
    advance(Duration::from_secs(20)).await;
    let error = vendor.send(&sms()).await.unwrap_err();
    assert!(error.to_string().contains("outage"), "{error}");
    advance(Duration::from_secs(39)).await;
    assert!(vendor.send(&sms()).await.is_err(), "still inside at 59 s");
    advance(Duration::from_secs(1)).await;
    assert!(vendor.send(&sms()).await.is_ok(), "the window ends at 60 s");

    // In the slow window a 1 s deadline cuts sends that would otherwise succeed.
    advance(Duration::from_secs(10)).await;
    assert!(
        timeout(Duration::from_secs(1), vendor.send(&sms()))
            .await
            .is_err()
    );
    assert!(
        timeout(Duration::from_secs(2), vendor.send(&sms()))
            .await
            .unwrap()
            .is_ok()
    );

    // The schedule can be replayed from the start.
    vendor.restart_schedule();
    advance(Duration::from_secs(25)).await;
    assert!(vendor.send(&sms()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn settings_change_while_running() {
    let settings = SimulationSettings {
        per_number_limits: false,
        ..SimulationSettings::healthy(100, 0)
    };
    let vendor = Arc::new(vendor(settings, 11));
    assert!(vendor.send(&sms()).await.is_ok());

    // A send already waiting keeps what it drew; the next one sees the outage.
    let in_flight = tokio::spawn({
        let vendor = Arc::clone(&vendor);
        async move { vendor.send(&sms()).await }
    });
    tokio::task::yield_now().await;
    vendor.set_outage(true);
    assert!(vendor.settings().outage);
    assert!(vendor.send(&sms()).await.is_err());
    assert!(in_flight.await.unwrap().is_ok());

    vendor
        .set_settings(SimulationSettings {
            reject_rate: 1.0,
            ..SimulationSettings::default()
        })
        .unwrap();
    assert_eq!(vendor.send(&sms()).await.unwrap_err().kind(), "rejected");

    // Invalid settings are refused and the current ones stay.
    let e = vendor
        .set_settings(SimulationSettings {
            error_rate: 1.5,
            ..SimulationSettings::default()
        })
        .unwrap_err();
    assert!(matches!(e, ConfigError::Simulation { ref field, .. } if field == "error_rate"));
    assert_eq!(vendor.settings().reject_rate, 1.0);

    vendor.set_settings(SimulationSettings::default()).unwrap();
    assert!(vendor.send(&sms()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn concurrent_sends_are_all_counted() {
    let vendor: Arc<SimulatedVendor> = Arc::new(vendor(noisy(), 99));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let vendor = Arc::clone(&vendor);
            tokio::spawn(async move { timeout(DEADLINE, vendor.send(&sms())).await })
        })
        .collect();
    let mut delivered = 0;
    for task in tasks {
        if let Ok(Ok(_)) = task.await.unwrap() {
            delivered += 1;
        }
    }
    let stats = vendor.stats();
    assert_eq!(stats.attempted, 200);
    assert_eq!(stats.succeeded, delivered);
    assert_eq!(stats.succeeded + stats.failed, 200);
    assert_eq!(vendor.delivery_log().len() as u64, delivered);
    // Unique vendor ids, as a real vendor's would be.
    let mut ids: Vec<_> = vendor
        .delivery_log()
        .records()
        .into_iter()
        .map(|r| r.vendor_message_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, delivered);
}

#[test]
fn invalid_settings_are_refused_at_construction() {
    let e = SimulatedVendor::new(
        VendorId::new("aliyun").unwrap(),
        SimulationSettings {
            schedule: vec![ScheduledFault::new(60, 20, FaultKind::Outage)],
            ..SimulationSettings::default()
        },
        1,
        DeliveryLog::in_memory(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "simulation setting schedule[0].to_s: expected the window to end after it starts (from_s = 60), found to_s = 20"
    );
}

#[tokio::test(start_paused = true)]
async fn works_behind_the_vendor_trait() {
    let vendors: Vec<Arc<dyn Vendor>> = vec![
        Arc::new(SimulatedVendor::aliyun(1, DeliveryLog::in_memory())),
        Arc::new(SimulatedVendor::tencent(1, DeliveryLog::in_memory())),
        Arc::new(SimulatedVendor::cloopen(1, DeliveryLog::in_memory())),
    ];
    let names: Vec<_> = vendors.iter().map(|v| v.id().to_string()).collect();
    assert_eq!(names, ["aliyun", "tencent", "cloopen"]);
    for vendor in &vendors {
        assert!(vendor.send(&sms()).await.is_ok());
    }
}

/// A vendor client must never drop its own error and report success: a simulated vendor
/// that cannot record its delivery reports a failure instead.
#[cfg(target_os = "linux")]
#[tokio::test(start_paused = true)]
async fn a_vendor_that_cannot_record_the_delivery_reports_a_failure() {
    // Every write to /dev/full fails with "no space left on device".
    let log = match DeliveryLog::append_to("/dev/full") {
        Ok(log) => log,
        Err(e) => {
            println!("skipped: /dev/full cannot be opened: {e}");
            return;
        }
    };
    let vendor = SimulatedVendor::aliyun(1, log.clone());
    let error = vendor.send(&sms()).await.unwrap_err();
    assert_eq!(error.kind(), "transient", "{error}");
    assert!(log.is_empty());
    let stats = vendor.stats();
    assert_eq!(
        (stats.succeeded, stats.transient, stats.billed_messages),
        (0, 1, 0)
    );
}

/// The receipts a vendor with `settings` sends for `sends` accepted sends, `gap` apart
/// (virtual time), once their delay has passed.
async fn receipts_of(
    settings: SimulationSettings,
    sends: usize,
    gap: Duration,
) -> Vec<sms_core::DeliveryReport> {
    let vendor = vendor(settings, 7);
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    vendor.set_receipt_sink(Arc::new(move |reports| {
        sink.lock().unwrap().extend(reports)
    }));
    for _ in 0..sends {
        vendor.send(&sms()).await.unwrap();
        advance(gap).await;
    }
    advance(Duration::from_secs(10)).await;
    // Every receipt's task is due; the runtime runs a few dozen per turn.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    got.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn receipts_come_after_their_delay_at_the_delivery_rate() {
    let settings = SimulationSettings {
        per_number_limits: false,
        delivery_rate: 0.7,
        receipt_delay_ms: 2_000,
        ..SimulationSettings::default()
    };
    let vendor = vendor(settings.clone(), 3);
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    vendor.set_receipt_sink(Arc::new(move |reports| {
        sink.lock().unwrap().extend(reports)
    }));
    let receipt = vendor.send(&sms()).await.unwrap();
    // The receipt's task starts its wait.
    tokio::task::yield_now().await;
    advance(Duration::from_millis(1_900)).await;
    assert!(got.lock().unwrap().is_empty(), "not before the delay");
    advance(Duration::from_millis(200)).await;
    tokio::task::yield_now().await;
    let first = got.lock().unwrap().clone();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].vendor_message_id, receipt.vendor_message_id);
    assert_eq!(first[0].recipient, sms().request.recipients()[0]);

    let reports = receipts_of(settings, 400, Duration::from_millis(1)).await;
    assert_eq!(reports.len(), 400);
    let delivered = reports.iter().filter(|r| r.delivered).count();
    assert!(
        (240..=320).contains(&delivered),
        "{delivered} of 400 at 0.7"
    );
    for r in &reports {
        let code = r.code.as_deref().unwrap();
        assert_eq!(code == "DELIVRD", r.delivered, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_undelivered_window_lowers_the_rate_and_a_silent_vendor_sends_none() {
    let mut settings = SimulationSettings {
        per_number_limits: false,
        receipt_delay_ms: 10,
        ..SimulationSettings::default()
    };
    let mut drop = ScheduledFault::new(1, 60, FaultKind::Undelivered);
    drop.rate = 0.6;
    settings.schedule = vec![drop];
    // 100 sends before the window (10 ms apart), 100 inside it.
    let reports = receipts_of(settings.clone(), 200, Duration::from_millis(10)).await;
    assert_eq!(reports.len(), 200);
    assert!(
        reports[..100].iter().all(|r| r.delivered),
        "before the window"
    );
    let inside = reports[100..].iter().filter(|r| r.delivered).count();
    assert!((25..=55).contains(&inside), "{inside} of 100 at 0.4");
    // The send is still accepted: only the receipts tell.
    let silent = SimulationSettings {
        silent: true,
        ..settings
    };
    assert!(
        receipts_of(silent, 20, Duration::from_millis(1))
            .await
            .is_empty()
    );
}
