//! Delivery records: each recipient a vendor accepted is recorded under the vendor's id
//! for it, behind the send, so that its receipt finds the message; recipients a vendor
//! did not take are recorded when a later attempt sends them.

use std::time::Duration;

use sms_core::{DeliveryLog, DeliveryState, Receipt, VendorError};
use sms_failover::SendOutcome;

use crate::support::*;

#[tokio::test]
async fn every_recipient_of_an_accepted_send_is_recorded_under_the_vendors_id() {
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], config());
    let request = request_to(3);
    let SendOutcome::Sent { id, .. } = h.gateway.send(request.clone()).await.unwrap() else {
        panic!("expected sent");
    };
    h.gateway.flush().await.unwrap();
    let found = h.deliveries.deliveries(id).await.unwrap();
    let mut recipients: Vec<_> = found.iter().map(|d| d.recipient.clone()).collect();
    recipients.sort();
    let mut expected = request.recipients().to_vec();
    expected.sort();
    assert_eq!(recipients, expected);
    for d in &found {
        assert_eq!(d.vendor.as_str(), "aliyun");
        assert_eq!(d.vendor_message_id, format!("aliyun-{id}"));
        assert_eq!(d.state, DeliveryState::Sent);
        assert_eq!(d.sent_at, start());
    }
}

#[tokio::test]
async fn a_vendor_with_an_id_per_recipient_has_each_recorded_under_its_own() {
    let h = Harness::new(&[("tencent", 40_000)], config());
    let request = request_to(2);
    let numbers = request.recipients().to_vec();
    h.vendor("tencent").then(Step::Receipt(Receipt {
        vendor_message_id: "serial-a,serial-b".into(),
        billed_messages: 2,
        reported_billed: Some(2),
        recipient_ids: vec![
            (numbers[0].clone(), "serial-a".into()),
            (numbers[1].clone(), "serial-b".into()),
        ],
    }));
    let SendOutcome::Sent { id, .. } = h.gateway.send(request).await.unwrap() else {
        panic!("expected sent");
    };
    h.gateway.flush().await.unwrap();
    let found = h.deliveries.deliveries(id).await.unwrap();
    let ids: Vec<(String, String)> = found
        .iter()
        .map(|d| (d.recipient.as_str().to_owned(), d.vendor_message_id.clone()))
        .collect();
    let mut expected = vec![
        (numbers[0].as_str().to_owned(), "serial-a".to_owned()),
        (numbers[1].as_str().to_owned(), "serial-b".to_owned()),
    ];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_split_send_records_the_taken_now_and_the_others_when_retried() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    let request = request_to(3);
    let first = request.recipients()[0].clone();
    h.vendor("aliyun").then(Step::Fail(VendorError::PartlySent {
        sent: vec![first.clone()],
        receipt: Receipt {
            vendor_message_id: "biz-1".into(),
            billed_messages: 1,
            reported_billed: None,
            recipient_ids: Vec::new(),
        },
        error: Box::new(VendorError::Transient {
            message: "503".into(),
        }),
    }));
    let SendOutcome::Queued { id, .. } = h.gateway.send(request.clone()).await.unwrap() else {
        panic!("expected queued");
    };
    h.gateway.flush().await.unwrap();
    let found = h.deliveries.deliveries(id).await.unwrap();
    assert_eq!(found.len(), 1, "only the one taken: {found:?}");
    assert_eq!(found[0].recipient, first);
    assert_eq!(found[0].vendor_message_id, "biz-1");

    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.gateway.drain_once().await.unwrap().sent, 1);
    h.gateway.flush().await.unwrap();
    let found = h.deliveries.deliveries(id).await.unwrap();
    assert_eq!(found.len(), 3, "{found:?}");
    let retried: Vec<_> = found
        .iter()
        .filter(|d| d.vendor_message_id == format!("aliyun-{id}"))
        .map(|d| d.recipient.clone())
        .collect();
    assert_eq!(retried.len(), 2);
    assert!(!retried.contains(&first));
}

/// Sends `n` messages through the current vendor; each message's receipt, delivered
/// when `delivered(i)`, as the vendor would push it.
pub async fn sends_and_receipts(
    h: &Harness,
    n: usize,
    delivered: impl Fn(usize) -> bool,
) -> Vec<sms_core::DeliveryReport> {
    let mut reports = Vec::new();
    for i in 0..n {
        let request = request();
        let SendOutcome::Sent { id, vendor, .. } = h.gateway.send(request.clone()).await.unwrap()
        else {
            panic!("expected sent");
        };
        reports.push(sms_core::DeliveryReport {
            vendor: vendor.clone(),
            vendor_message_id: format!("{vendor}-{id}"),
            recipient: request.recipients()[0].clone(),
            delivered: delivered(i),
            code: None,
            description: None,
            reported_at: None,
            segments: None,
        });
    }
    h.gateway.flush().await.unwrap();
    reports
}

/// Applies `reports` to the log and tells the gateway, as the receipt endpoint does.
pub async fn push(h: &Harness, reports: &[sms_core::DeliveryReport]) {
    let applied = h.deliveries.apply_reports(reports, start()).await.unwrap();
    h.gateway.receipts_applied(reports, &applied).await;
}

/// Why the gateway first switched vendor.
fn first_switch_reason(h: &Harness) -> String {
    h.events
        .events()
        .into_iter()
        .find_map(|e| match e {
            sms_failover::GatewayEvent::Switched { reason, .. } => Some(reason),
            _ => None,
        })
        .expect("a switch")
}

fn receipt_config() -> sms_failover::FailoverConfig {
    sms_failover::FailoverConfig {
        receipt_window: 50,
        min_delivery_rate: 0.9,
        ..config()
    }
}

#[tokio::test]
async fn a_vendor_whose_receipts_say_undelivered_is_switched_away_from() {
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], receipt_config());
    // 40% delivered: the window is full at the 50th receipt.
    let reports = sends_and_receipts(&h, 50, |i| i % 5 < 2).await;
    push(&h, &reports[..49]).await;
    assert_eq!(h.current(), "aliyun", "49 receipts do not fill the window");
    let snapshot = &h.gateway.vendors()[0];
    assert_eq!(snapshot.receipts_in_window, 49);
    assert!((snapshot.delivery_rate.unwrap() - 20.0 / 49.0).abs() < 1e-9);
    // The same receipts again say nothing new.
    push(&h, &reports[..49]).await;
    assert_eq!(h.gateway.vendors()[0].receipts_in_window, 49);
    push(&h, &reports[49..]).await;
    assert_eq!(h.current(), "tencent");
    assert_eq!(
        h.events.switches(),
        [("aliyun".to_owned(), "tencent".to_owned())]
    );
    let reason = first_switch_reason(&h);
    assert!(reason.contains("delivery rate 40.0%"), "{reason}");
    let aliyun = &h.gateway.vendors()[0];
    assert!(
        aliyun.cooling_down_until.is_some(),
        "it rests, to be probed later"
    );
    assert_eq!(aliyun.receipts_in_window, 0, "its window starts over");
}

#[tokio::test]
async fn a_vendor_delivering_above_the_threshold_keeps_its_place() {
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], receipt_config());
    // 46 of 50 delivered: 92%, their receipts 3 s after the sends.
    let reports = sends_and_receipts(&h, 50, |i| i % 25 >= 2).await;
    h.clock.advance(Duration::from_secs(3));
    push(&h, &reports).await;
    assert_eq!(h.current(), "aliyun");
    let aliyun = &h.gateway.vendors()[0];
    assert_eq!(aliyun.delivery_rate, Some(0.92));
    assert_eq!(
        aliyun.receipt_latency,
        Some((Duration::from_secs(3), Duration::from_secs(3)))
    );
    assert!(h.events.switches().is_empty());

    // With receipt-aware failover off, even none delivered keeps it.
    let off = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000)],
        sms_failover::FailoverConfig {
            receipt_window: 0,
            ..config()
        },
    );
    let reports = sends_and_receipts(&off, 60, |_| false).await;
    push(&off, &reports).await;
    assert_eq!(off.current(), "aliyun");
}

#[tokio::test]
async fn a_vendor_whose_receipts_stop_while_it_accepts_is_switched_away_from() {
    let config = sms_failover::FailoverConfig {
        receipt_silence: Duration::from_secs(60),
        ..receipt_config()
    };
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], config.clone());
    // It sent receipts once...
    let first = sends_and_receipts(&h, 1, |_| true).await;
    push(&h, &first).await;
    // ...then none, for 50 sends over 98 s.
    for _ in 0..49 {
        h.clock.advance(Duration::from_secs(2));
        h.gateway.send(request()).await.unwrap();
        assert_eq!(h.current(), "aliyun", "not before 50 sends");
    }
    h.clock.advance(Duration::from_secs(2));
    h.gateway.send(request()).await.unwrap();
    assert_eq!(h.current(), "tencent");
    let reason = first_switch_reason(&h);
    assert!(
        reason.starts_with("no delivery receipt for its last 50 accepted sends over 98 s"),
        "{reason}"
    );

    // A vendor that never sent a receipt is not judged by its silence.
    let quiet = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], config);
    for _ in 0..120 {
        quiet.clock.advance(Duration::from_secs(2));
        quiet.gateway.send(request()).await.unwrap();
    }
    assert_eq!(quiet.current(), "aliyun");
}

#[tokio::test]
async fn demoting_the_only_vendor_on_its_receipts_reports_that_none_is_left_at_once() {
    let h = Harness::new(&[("aliyun", 40_000)], receipt_config());
    let reports = sends_and_receipts(&h, 50, |i| i % 5 < 2).await;
    push(&h, &reports).await;
    let unavailable = h
        .events
        .events()
        .into_iter()
        .any(|e| matches!(e, sms_failover::GatewayEvent::AllVendorsUnavailable { .. }));
    assert!(
        unavailable,
        "reported when it happens, not at the next send"
    );
    assert!(h.gateway.vendors()[0].cooling_down_until.is_some());
}

/// A receipt that says the vendor billed more segments for a recipient than the gateway
/// counted at the send is reported and added to the vendor's billed volume; one that
/// agrees changes nothing.
#[tokio::test]
async fn receipts_naming_more_segments_than_billed_add_them_to_the_vendors_volume() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    let billed = |h: &Harness| h.gateway.vendors()[0].billed_this_period;
    let mut reports = sends_and_receipts(&h, 2, |_| true).await;
    assert_eq!(billed(&h), 2, "one message per recipient at the send");
    reports[0].segments = Some(3);
    reports[1].segments = Some(1);
    push(&h, &reports).await;
    assert_eq!(billed(&h), 4, "two more segments from the first receipt");
    let mismatches: Vec<(u64, u64)> = h
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            sms_failover::GatewayEvent::BillingMismatch {
                counted, reported, ..
            } => Some((counted, reported)),
            _ => None,
        })
        .collect();
    assert_eq!(mismatches, [(1, 3)]);
    // The same receipts again settle nothing and add nothing.
    push(&h, &reports).await;
    assert_eq!(billed(&h), 4);
}
