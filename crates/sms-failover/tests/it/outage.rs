//! Every vendor down at once, for minutes, in simulated time: accepted messages wait for
//! a vendor instead of spending their retries on vendors known to be down, and none dies.

use std::time::Duration;

use sms_core::{DeferredQueue, MessageStatus, NewMessage, QueueReason};
use sms_failover::{FailoverConfig, GatewayEvent, SendOutcome};

use crate::support::*;

/// What a run of traffic through an outage of every vendor did.
struct OutageRun {
    accepted: u64,
    /// Vendor calls while every vendor was down.
    calls_during_outage: usize,
    /// Seconds after the outage until nothing was left to send.
    drained_after_s: u64,
}

/// Three vendors, `per_second` live requests every simulated second for `traffic_s`
/// seconds, every vendor failing from `down_from_s` for `down_for_s`; the drain runs once
/// a second until nothing is queued or leased.
async fn run_outage(
    h: &Harness,
    per_second: usize,
    traffic_s: u64,
    down_from_s: u64,
    down_for_s: u64,
) -> OutageRun {
    let mut accepted = 0;
    let mut calls_at_start = 0;
    let mut calls_during_outage = 0;
    let total_calls = || h.vendors.iter().map(|v| v.calls()).sum::<usize>();
    let mut second = 0;
    loop {
        if second == down_from_s {
            calls_at_start = total_calls();
            for vendor in &h.vendors {
                vendor.always(transient());
            }
        }
        if second == down_from_s + down_for_s {
            calls_during_outage = total_calls() - calls_at_start;
            for vendor in &h.vendors {
                vendor.always(Step::Ok(1));
            }
        }
        if second < traffic_s {
            for _ in 0..per_second {
                match h.gateway.send(request()).await {
                    Ok(SendOutcome::Sent { .. } | SendOutcome::Queued { .. }) => accepted += 1,
                    other => panic!("second {second}: expected sent or queued, got {other:?}"),
                }
            }
        }
        h.gateway.drain_once().await.unwrap();
        h.gateway.flush().await.unwrap();
        let stats = h.queue.stats().await.unwrap();
        let waiting = stats.get(MessageStatus::Queued) + stats.get(MessageStatus::Leased);
        if second >= traffic_s && second > down_from_s + down_for_s && waiting == 0 {
            break;
        }
        assert!(second < 4 * 3600, "still {waiting} waiting after 4 h");
        h.clock.advance(Duration::from_secs(1));
        second += 1;
    }
    OutageRun {
        accepted,
        calls_during_outage,
        drained_after_s: second - (down_from_s + down_for_s),
    }
}

#[tokio::test]
async fn ten_minutes_of_every_vendor_down_kills_no_message_under_the_defaults() {
    let h = Harness::new(
        &[("aliyun", 40_000), ("tencent", 45_000), ("cloopen", 50_000)],
        FailoverConfig {
            instance_id: "test".into(),
            ..FailoverConfig::default()
        },
    );
    let run = run_outage(&h, 5, 900, 60, 600).await;

    let stats = h.queue.stats().await.unwrap();
    assert_eq!(stats.get(MessageStatus::Dead), 0, "{stats:?}");
    assert_eq!(stats.get(MessageStatus::Expired), 0, "{stats:?}");
    assert_eq!(stats.get(MessageStatus::Sent), run.accepted, "{stats:?}");
    // The outage is reported once, not once per vendor that fails in turn.
    let unavailable = h
        .events
        .events()
        .into_iter()
        .filter(|e| matches!(e, GatewayEvent::AllVendorsUnavailable { .. }))
        .count();
    assert_eq!(unavailable, 1);
    // Vendors resting are not called: only the first failures and one try per rest
    // that ends, not one per request (3,000 requests arrived during the outage).
    assert!(
        run.calls_during_outage < 300,
        "{} vendor calls during the outage",
        run.calls_during_outage
    );
    println!(
        "outage-figures {{\"accepted\":{},\"dead\":0,\"calls_during_outage\":{},\"drained_after_s\":{}}}",
        run.accepted, run.calls_during_outage, run.drained_after_s
    );
}

#[tokio::test]
async fn while_every_vendor_rests_messages_wait_unattempted_and_expire_on_time() {
    let h = Harness::new(&[("aliyun", 40_000), ("tencent", 45_000)], config());
    for vendor in &h.vendors {
        vendor.always(transient());
    }
    // Four live failures put both vendors to rest (two in a row each) until 30 s.
    for _ in 0..4 {
        h.gateway.send(request()).await.unwrap();
    }
    let calls = || h.vendors.iter().map(|v| v.calls()).sum::<usize>();
    assert_eq!(calls(), 4);
    let rest_ends = start() + chrono::Duration::seconds(30);
    let waiting = sms_core::MessageId::new();
    let expiring = sms_core::MessageId::new();
    let deadline = start() + chrono::Duration::seconds(10);
    for (id, request) in [
        (waiting, request()),
        (expiring, request().with_expiry(deadline)),
    ] {
        let message = NewMessage::queued(id, request, QueueReason::VendorFailed, 10, start());
        h.queue.enqueue(message).await.unwrap();
    }

    let report = h.gateway.drain_once().await.unwrap();
    // Both, and those of the live failures that are due.
    assert!(report.claimed >= 2, "{report:?}");
    assert_eq!(report.deferred, report.claimed, "{report:?}");
    assert_eq!(calls(), 4, "no vendor call while every vendor rests");
    let message = h.queue.get(waiting).await.unwrap().unwrap();
    assert_eq!(
        (message.status, message.attempts, message.next_attempt_at),
        (MessageStatus::Queued, 0, rest_ends),
        "due when the first rest ends, its attempt not counted"
    );
    assert_eq!(
        h.queue
            .get(expiring)
            .await
            .unwrap()
            .unwrap()
            .next_attempt_at,
        deadline
    );
    // Nothing is claimed again before then, and the deadline still expires a message.
    h.clock.advance(std::time::Duration::from_secs(10));
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(
        report.claimed,
        report.expired + report.deferred,
        "{report:?}"
    );
    assert_eq!(calls(), 4);
    // A live request is stored without a vendor call too.
    match h.gateway.send(request()).await.unwrap() {
        SendOutcome::Queued { reason, .. } => assert_eq!(reason, QueueReason::VendorFailed),
        other => panic!("expected queued, got {other:?}"),
    }
    assert_eq!(calls(), 4);

    // Once the first rest ends, the drain sends again.
    for vendor in &h.vendors {
        vendor.always(Step::Ok(1));
    }
    h.clock.set(rest_ends);
    let report = h.gateway.drain_once().await.unwrap();
    assert!(report.sent >= 1, "{report:?}");
    assert_eq!(
        h.queue.get(waiting).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
}
