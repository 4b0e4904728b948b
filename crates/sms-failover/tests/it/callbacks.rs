//! Status events: each change of a message's status is stored in the callback outbox,
//! addressed to the request's callback URL, with a body that says what happened.

use std::time::Duration;

use sms_core::{
    CallbackOutbox, CallbackStatus, CallbackUrl, DeliveryLog, DeliveryReport, SmsRequest,
    StatusEvent, VendorError,
};
use sms_failover::SendOutcome;

use crate::support::*;

fn hook() -> CallbackUrl {
    CallbackUrl::new("https://app.example/sms-events").unwrap()
}

fn with_hook(request: SmsRequest) -> SmsRequest {
    request.with_callback_url(hook())
}

/// Every event in the outbox, oldest first, decoded from the body that would be posted.
async fn events(h: &Harness) -> Vec<StatusEvent> {
    h.gateway.flush().await.unwrap();
    let far = start() + chrono::Duration::days(365);
    h.outbox
        .claim("test", far, Duration::from_secs(60), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|claimed| {
            assert_eq!(claimed.event.url, hook());
            let event: StatusEvent = serde_json::from_str(&claimed.event.body).unwrap();
            assert_eq!(event.event_id, claimed.event.id);
            assert_eq!(event.status, claimed.event.status);
            event
        })
        .collect()
}

fn statuses(events: &[StatusEvent]) -> Vec<CallbackStatus> {
    events.iter().map(|e| e.status).collect()
}

#[tokio::test]
async fn a_message_queued_then_sent_then_delivered_makes_three_events() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    h.vendor("aliyun").then(transient());
    let request = with_hook(request());
    let SendOutcome::Queued { id, .. } = h.gateway.send(request.clone()).await.unwrap() else {
        panic!("expected queued");
    };
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.gateway.drain_once().await.unwrap().sent, 1);
    h.gateway.flush().await.unwrap();
    let report = DeliveryReport {
        vendor: sms_core::VendorId::new("aliyun").unwrap(),
        vendor_message_id: format!("aliyun-{id}"),
        recipient: request.recipients()[0].clone(),
        delivered: true,
        code: Some("DELIVRD".into()),
        description: None,
        reported_at: Some(start() + chrono::Duration::seconds(700)),
        segments: Some(1),
    };
    let applied = h
        .deliveries
        .apply_reports(
            std::slice::from_ref(&report),
            sms_core::Clock::now(h.clock.as_ref()),
        )
        .await
        .unwrap();
    h.gateway
        .receipts_applied(std::slice::from_ref(&report), &applied)
        .await;
    // The same receipt again settles nothing, so it tells the client nothing.
    let again = h
        .deliveries
        .apply_reports(
            std::slice::from_ref(&report),
            sms_core::Clock::now(h.clock.as_ref()),
        )
        .await
        .unwrap();
    h.gateway.receipts_applied(&[report], &again).await;

    let events = events(&h).await;
    assert_eq!(
        statuses(&events),
        [
            CallbackStatus::Queued,
            CallbackStatus::Sent,
            CallbackStatus::Delivered
        ]
    );
    assert!(events.iter().all(|e| e.message_id == id));
    assert_eq!(events[0].code.as_deref(), Some("vendor_failed"));
    assert_eq!(events[1].vendor.as_ref().unwrap().as_str(), "aliyun");
    assert_eq!(
        events[1].vendor_message_id.as_deref(),
        Some(format!("aliyun-{id}").as_str())
    );
    assert_eq!(events[2].recipient.as_ref(), Some(&request.recipients()[0]));
    assert_eq!(events[2].code.as_deref(), Some("DELIVRD"));
    let mut ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each event has its own id");
}

#[tokio::test]
async fn a_message_refused_for_good_in_the_drain_makes_a_dead_event() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    h.vendor("aliyun").then(transient());
    let SendOutcome::Queued { id, .. } = h.gateway.send(with_hook(request())).await.unwrap() else {
        panic!("expected queued");
    };
    h.vendor("aliyun").then(Step::Fail(VendorError::Rejected {
        code: "isv.MOBILE_NUMBER_ILLEGAL".into(),
        message: "bad number".into(),
    }));
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.gateway.drain_once().await.unwrap().dead, 1);
    let events = events(&h).await;
    assert_eq!(
        statuses(&events),
        [CallbackStatus::Queued, CallbackStatus::Dead]
    );
    assert_eq!(events[1].message_id, id);
    assert!(
        events[1]
            .description
            .as_deref()
            .unwrap()
            .contains("bad number"),
        "{:?}",
        events[1]
    );
}

#[tokio::test]
async fn a_message_past_its_deadline_makes_an_expired_event() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    h.vendor("aliyun").then(transient());
    let request = with_hook(request()).with_expiry(start() + chrono::Duration::seconds(60));
    let SendOutcome::Queued { .. } = h.gateway.send(request).await.unwrap() else {
        panic!("expected queued");
    };
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.gateway.drain_once().await.unwrap().expired, 1);
    let events = events(&h).await;
    assert_eq!(
        statuses(&events),
        [CallbackStatus::Queued, CallbackStatus::Expired]
    );
}

#[tokio::test]
async fn a_message_without_a_callback_url_makes_no_event() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    h.vendor("aliyun").then(transient());
    h.gateway.send(request()).await.unwrap();
    h.gateway.send(request_to(2)).await.unwrap();
    h.clock.advance(Duration::from_secs(600));
    h.gateway.drain_once().await.unwrap();
    assert!(events(&h).await.is_empty());
}

#[tokio::test]
async fn a_receipt_that_came_before_its_send_tells_the_client_once_the_send_is_recorded() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    let request = with_hook(request());
    h.vendor("aliyun").then(Step::Receipt(sms_core::Receipt {
        vendor_message_id: "biz-early".into(),
        billed_messages: 1,
        reported_billed: None,
        recipient_ids: Vec::new(),
    }));
    let report = DeliveryReport {
        vendor: sms_core::VendorId::new("aliyun").unwrap(),
        vendor_message_id: "biz-early".into(),
        recipient: request.recipients()[0].clone(),
        delivered: true,
        code: Some("DELIVERED".into()),
        description: None,
        reported_at: None,
        segments: None,
    };
    let now = sms_core::Clock::now(h.clock.as_ref());
    let kept = h
        .deliveries
        .apply_reports(std::slice::from_ref(&report), now)
        .await
        .unwrap();
    assert_eq!(kept, [sms_core::ReportApplied::Kept]);
    h.gateway.receipts_applied(&[report], &kept).await;
    let SendOutcome::Sent { id, .. } = h.gateway.send(request).await.unwrap() else {
        panic!("expected sent");
    };
    let events = events(&h).await;
    assert_eq!(
        statuses(&events),
        [CallbackStatus::Sent, CallbackStatus::Delivered],
        "{events:?}"
    );
    assert!(events.iter().all(|e| e.message_id == id));
    // Taken into account once: another flush and a drain pass add nothing.
    h.gateway.flush().await.unwrap();
    h.gateway.drain_once().await.unwrap();
    assert!(super::callbacks::events(&h).await.is_empty());
}

#[tokio::test]
async fn a_receipt_event_is_due_when_stored_whatever_the_vendors_clock_says() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    let request = with_hook(request());
    let SendOutcome::Sent { id, .. } = h.gateway.send(request.clone()).await.unwrap() else {
        panic!("expected sent");
    };
    h.gateway.flush().await.unwrap();
    let now = sms_core::Clock::now(h.clock.as_ref());
    // A vendor whose clock is eight hours ahead.
    let report = DeliveryReport {
        vendor: sms_core::VendorId::new("aliyun").unwrap(),
        vendor_message_id: format!("aliyun-{id}"),
        recipient: request.recipients()[0].clone(),
        delivered: true,
        code: None,
        description: None,
        reported_at: Some(now + chrono::Duration::hours(8)),
        segments: None,
    };
    let applied = h
        .deliveries
        .apply_reports(std::slice::from_ref(&report), now)
        .await
        .unwrap();
    h.gateway.receipts_applied(&[report], &applied).await;
    h.gateway.flush().await.unwrap();
    let due: Vec<CallbackStatus> = h
        .outbox
        .claim("test", now, Duration::from_secs(60), 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.event.status)
        .collect();
    assert_eq!(due, [CallbackStatus::Sent, CallbackStatus::Delivered]);
}

/// A message cancelled before its retry tells its endpoint it was cancelled, and the
/// drain then neither sends it nor tells anything more. A cancel refused (the message
/// is final already) tells nothing.
#[tokio::test]
async fn a_cancelled_message_makes_a_cancelled_event_and_nothing_after() {
    let h = Harness::new(&[("aliyun", 40_000)], config());
    h.vendor("aliyun").then(transient());
    let SendOutcome::Queued { id, .. } = h.gateway.send(with_hook(request())).await.unwrap() else {
        panic!("expected queued");
    };
    let cancelled = h.gateway.cancel(id).await.unwrap();
    assert_eq!(cancelled.status, sms_core::MessageStatus::Cancelled);
    assert!(matches!(
        h.gateway.cancel(id).await,
        Err(sms_core::StoreError::WrongStatus { .. })
    ));
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.gateway.drain_once().await.unwrap().sent, 0);
    let events = events(&h).await;
    assert_eq!(
        statuses(&events),
        [CallbackStatus::Queued, CallbackStatus::Cancelled]
    );
    assert_eq!(events[1].message_id, id);
}
