//! The README's main job: `sms-app simulate` on embedded defaults loses nothing.

use std::process::Command;

use serde_json::Value;

/// Runs `sms-app simulate` with `args` in a fresh directory; its JSON report.
fn simulate(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_sms-app"))
        .current_dir(dir.path())
        .arg("simulate")
        .args(args)
        .output()
        .expect("running simulate");
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn simulate_switches_away_from_the_failed_vendor_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let chart = dir.path().join("timeline.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_sms-app"))
        .current_dir(dir.path())
        .args([
            "simulate",
            "--json",
            "--duration",
            "5",
            "--requests",
            "500",
            "--chart",
        ])
        .arg(&chart)
        .output()
        .expect("running simulate");
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "accepted",
        "delivered",
        "pending",
        "dead",
        "expired",
        "lost",
        "duplicates",
        "switches",
        "spend_total",
        "vendors",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    let accepted = report["accepted"].as_u64().expect("accepted");
    assert!(accepted >= 500, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    let settled = ["delivered", "pending", "dead", "expired"]
        .iter()
        .map(|k| report[k].as_u64().expect("count"))
        .sum::<u64>();
    assert_eq!(
        settled, accepted,
        "every accepted message is accounted for: {report}"
    );
    // The default scenario takes Aliyun down at 3 s: the gateway must leave it.
    let switches = report["switch_log"].as_array().expect("switch log");
    assert!(
        switches.iter().any(|s| s["what"]
            .as_str()
            .is_some_and(|w| w.starts_with("aliyun ->"))),
        "{report}"
    );
    let tencent = &report["vendors"]["tencent"];
    assert!(tencent["sent"].as_u64().unwrap_or(0) > 0, "{report}");
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.starts_with("<svg") && svg.contains("aliyun"));
    // Nothing is written under the working directory: the embedded store is temporary.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("timeline.svg")]);
}

#[test]
fn the_mapping_scenario_detours_refuses_per_number_and_kills_nothing() {
    let report = simulate(&["--scenario", "mapping", "--json", "--duration", "5"]);
    assert_eq!(report["dead"], 0, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(
        report["switches"], 0,
        "per-number limits never switch: {report}"
    );
    let refused = report["refused_by_vendor_limits"].as_u64().expect("count");
    let waiting = report["waiting_for_windows"].as_u64().expect("count");
    assert!(
        refused + waiting > 0,
        "the burst meets the limits: {report}"
    );
    // `notice` is not mapped at aliyun, the cheapest: tencent sends it.
    let tencent = report["vendors"]["tencent"]["sent"].as_u64().unwrap_or(0);
    assert!(tencent > 0, "{report}");
    for vendor in ["aliyun", "tencent"] {
        assert_eq!(
            report["vendors"][vendor]["refused_templates"], 0,
            "{report}"
        );
    }
}

#[test]
fn the_outage_scenario_keeps_every_message_and_reports_the_outage_once() {
    let report = simulate(&["--scenario", "outage", "--json", "--duration", "7"]);
    for key in ["dead", "expired", "lost", "duplicates", "pending"] {
        assert_eq!(report[key], 0, "{key}: {report}");
    }
    let log = report["switch_log"].as_array().expect("switch log");
    let unavailable = log
        .iter()
        .filter(|s| s["what"] == "all vendors unavailable")
        .count();
    assert_eq!(unavailable, 1, "{report}");
    // Vendors resting are not cycled through: a few switches as rests end, not dozens.
    assert!(
        report["switches"].as_u64().expect("switches") <= 8,
        "{report}"
    );
}

/// The `silent` scenario: from 5 s the cheapest vendor accepts everything but delivers
/// 40%. The switch comes from its receipts, within 30 s, and more codes reach the
/// handsets than in the same run without receipt-aware failover.
#[test]
fn the_silent_scenario_switches_on_receipts_and_delivers_more() {
    let report = simulate(&["--json", "--scenario", "silent", "--duration", "12"]);
    assert_eq!(report["lost"], 0, "{report}");
    let at = report["receipt_switch_at_s"]
        .as_f64()
        .expect("a switch on receipts");
    assert!(at > 5.0 && at < 35.0, "switched at {at} s: {report}");
    let switches = report["switch_log"].as_array().expect("switch log");
    let first = &switches[0];
    assert_eq!(first["what"], "aliyun -> tencent", "{report}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with("delivery rate"),
        "{report}"
    );
    let aliyun = &report["vendors"]["aliyun"];
    assert!(
        aliyun["handset_undelivered"].as_u64().unwrap() > 0,
        "{report}"
    );
    let with = report["handset_share"].as_f64().expect("share");
    let baseline = &report["without_receipt_failover"];
    let without = baseline["handset_share"].as_f64().expect("baseline share");
    assert!(baseline["receipt_switch_at_s"].is_null(), "{baseline}");
    assert!(
        with > without + 0.1,
        "with receipt-aware failover {with}, without {without}"
    );
    // Each undelivered code went once more through tencent, and most arrived.
    let resends = report["resends"].as_u64().unwrap();
    let undelivered = aliyun["handset_undelivered"].as_u64().unwrap();
    assert!(
        resends > 0 && resends <= undelivered,
        "{resends} re-sends of {undelivered} undelivered: {report}"
    );
    let after = report["handset_share_with_resends"].as_f64().unwrap();
    assert!(after > with, "re-sends raise {with} to {after}");
}
