//! Re-sending undelivered messages: a login code whose receipt says undelivered goes
//! once more to that recipient, through another vendor, marked as a re-send.

use std::time::Duration;

use sms_core::{
    CallbackOutbox, CallbackStatus, CallbackUrl, DeferredQueue, DeliveryLog, DeliveryReport,
    MessageId, ReportApplied, SmsRequest, StatusEvent, Templates, VendorId,
};
use sms_failover::{GatewayEvent, SendOutcome};

use crate::support::*;

fn templates(resend: bool) -> Templates {
    serde_json::from_value(serde_json::json!({
        "login_code": {
            "text": "您的验证码是{1}。",
            "resend_undelivered": resend,
            "vendors": {"aliyun": {"id": "SMS_1", "params": ["code"]}, "tencent": {"id": "1860001"}},
        },
        "aliyun_only": {"resend_undelivered": true, "vendors": {"aliyun": {"id": "SMS_2"}}},
    }))
    .unwrap()
}

fn harness(resend: bool) -> Harness {
    Harness::with_templates(
        &[("aliyun", 40_000), ("tencent", 45_000)],
        config(),
        templates(resend),
    )
}

fn code(template: &str, recipients: &[&str]) -> SmsRequest {
    SmsRequest::new(template, ["123456"], recipients)
        .unwrap()
        .with_callback_url(CallbackUrl::new("https://app.example/e").unwrap())
}

/// Sends `request` (through the cheapest vendor, aliyun), then applies an undelivered
/// receipt for `recipient` as the receipt endpoint does. Returns the message id.
async fn undelivered(h: &Harness, request: SmsRequest, recipient: usize) -> MessageId {
    let SendOutcome::Sent { id, vendor, .. } = h.gateway.send(request.clone()).await.unwrap()
    else {
        panic!("expected sent");
    };
    assert_eq!(vendor.as_str(), "aliyun");
    h.gateway.flush().await.unwrap();
    let applied = push_undelivered(h, id, "aliyun", &request, recipient).await;
    assert!(
        matches!(applied, ReportApplied::Applied { .. }),
        "the receipt settles the recorded send: {applied:?}"
    );
    id
}

async fn push_undelivered(
    h: &Harness,
    id: MessageId,
    vendor: &str,
    request: &SmsRequest,
    recipient: usize,
) -> ReportApplied {
    let report = DeliveryReport {
        vendor: VendorId::new(vendor).unwrap(),
        vendor_message_id: format!("{vendor}-{id}"),
        recipient: request.recipients()[recipient].clone(),
        delivered: false,
        code: Some("MK:0001".into()),
        description: None,
        reported_at: None,
        segments: None,
    };
    let now = sms_core::Clock::now(h.clock.as_ref());
    let applied = h
        .deliveries
        .apply_reports(std::slice::from_ref(&report), now)
        .await
        .unwrap();
    h.gateway
        .receipts_applied(std::slice::from_ref(&report), &applied)
        .await;
    applied[0].clone()
}

fn resends(h: &Harness) -> Vec<(MessageId, MessageId, String)> {
    h.events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::Resent {
                original,
                id,
                avoided,
            } => Some((original, id, avoided.to_string())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_undelivered_code_goes_once_more_through_another_vendor_to_that_recipient() {
    let h = harness(true);
    let request = code("login_code", &["+8613800000001", "+8613800000002"]);
    let id = undelivered(&h, request.clone(), 1).await;

    let resent = resends(&h);
    assert_eq!(resent.len(), 1, "{resent:?}");
    let (original, resend_id, avoided) = resent[0].clone();
    assert_eq!((original, avoided.as_str()), (id, "aliyun"));
    let stored = h.queue.get(resend_id).await.unwrap().unwrap();
    assert_eq!(stored.request.recipients(), &request.recipients()[1..2]);
    assert_eq!(stored.request.args(), request.args());
    assert_eq!(stored.request.resend().unwrap().of, id);
    assert_eq!(stored.request.callback_url(), request.callback_url());

    // The drain sends it, through tencent although aliyun is current and cheaper.
    assert_eq!(h.gateway.drain_once().await.unwrap().sent, 1);
    assert_eq!(h.current(), "aliyun");
    let stored = h.queue.get(resend_id).await.unwrap().unwrap();
    assert_eq!(stored.last_vendor.unwrap().as_str(), "tencent");

    // The same receipt again settles nothing and re-sends nothing; the re-send's own
    // undelivered receipt is not re-sent either.
    push_undelivered(&h, id, "aliyun", &request, 1).await;
    h.gateway.flush().await.unwrap();
    push_undelivered(&h, resend_id, "tencent", &stored.request, 0).await;
    assert_eq!(resends(&h).len(), 1);

    // The client hears of the re-send, linked to the first message.
    h.gateway.flush().await.unwrap();
    let far = sms_core::Clock::now(h.clock.as_ref()) + chrono::Duration::days(1);
    let events: Vec<StatusEvent> = h
        .outbox
        .claim("t", far, Duration::from_secs(60), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| serde_json::from_str(&c.event.body).unwrap())
        .collect();
    let of_resend: Vec<(CallbackStatus, Option<MessageId>)> = events
        .iter()
        .filter(|e| e.message_id == resend_id)
        .map(|e| (e.status, e.resend_of))
        .collect();
    assert!(
        of_resend.contains(&(CallbackStatus::Queued, Some(id)))
            && of_resend.contains(&(CallbackStatus::Sent, Some(id))),
        "{of_resend:?}"
    );
}

#[tokio::test]
async fn no_resend_without_the_flag_past_the_deadline_or_without_another_vendor() {
    let h = harness(false);
    undelivered(&h, code("login_code", &["+8613800000001"]), 0).await;
    assert!(resends(&h).is_empty(), "the template does not ask for it");

    let h = harness(true);
    undelivered(&h, code("aliyun_only", &["+8613800000001"]), 0).await;
    assert!(resends(&h).is_empty(), "no other vendor has the template");

    let h = harness(true);
    let deadline = sms_core::Clock::now(h.clock.as_ref()) + chrono::Duration::seconds(30);
    let request = code("login_code", &["+8613800000001"]).with_expiry(deadline);
    let SendOutcome::Sent { id, .. } = h.gateway.send(request.clone()).await.unwrap() else {
        panic!("expected sent");
    };
    h.gateway.flush().await.unwrap();
    h.clock.advance(Duration::from_secs(60));
    let applied = push_undelivered(&h, id, "aliyun", &request, 0).await;
    assert!(matches!(applied, ReportApplied::Applied { .. }));
    assert!(resends(&h).is_empty(), "past its deadline");

    // Without a deadline: re-sent soon after it was made, not an hour later.
    let h = harness(true);
    let request = code("login_code", &["+8613800000001"]);
    let SendOutcome::Sent { id, .. } = h.gateway.send(request.clone()).await.unwrap() else {
        panic!("expected sent");
    };
    h.gateway.flush().await.unwrap();
    h.clock.advance(Duration::from_secs(3600));
    let applied = push_undelivered(&h, id, "aliyun", &request, 0).await;
    assert!(matches!(applied, ReportApplied::Applied { .. }));
    assert!(resends(&h).is_empty(), "an hour late, without a deadline");
}
