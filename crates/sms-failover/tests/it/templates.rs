//! Real vendors: each has its own templates, refuses templates it has not approved, and
//! limits how often one number gets a message. None of that is the vendor's health.

use std::time::Duration;

use sms_core::{
    DeferredQueue, IdempotencyKey, MessageStatus, QueueReason, SendError, SmsRequest, Templates,
    UsageLedger, VendorError, VendorId,
};
use sms_failover::{GatewayEvent, SendOutcome};

use crate::support::{Harness, Step, config, settle, transient};

/// `login_code` at every vendor, `notice` only at tencent.
fn templates() -> Templates {
    serde_json::from_value(serde_json::json!({
        "login_code": {
            "text": "您的验证码是{1}。",
            "vendors": {
                "aliyun": {"id": "SMS_154950909", "params": ["code"]},
                "tencent": {"id": "1860001", "sign_name": "腾讯云"},
                "cloopen": {"id": "9001"},
            }
        },
        "notice": {"vendors": {"tencent": {"id": "1860002"}}},
    }))
    .unwrap()
}

/// aliyun is cheapest, then tencent, then cloopen.
fn harness() -> Harness {
    Harness::with_templates(
        &[("aliyun", 40_000), ("tencent", 45_000), ("cloopen", 50_000)],
        config(),
        templates(),
    )
}

fn vendor(name: &str) -> VendorId {
    VendorId::new(name).unwrap()
}

fn login(code: &str, to: &str) -> SmsRequest {
    SmsRequest::new("login_code", [code], [to]).unwrap()
}

fn not_approved() -> Step {
    Step::Fail(VendorError::Misconfigured {
        code: "isv.SMS_TEMPLATE_ILLEGAL".into(),
        message: "模板不合法(不存在或被拉黑)".into(),
    })
}

fn per_number(wait: Duration) -> Step {
    Step::Fail(VendorError::RecipientRefused {
        code: "isv.BUSINESS_LIMIT_CONTROL".into(),
        message: "触发分钟级流控Permits:1".into(),
        retry_after: wait,
    })
}

fn mapping_events(h: &Harness) -> Vec<(String, String)> {
    h.events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::MappingBroken {
                template, vendor, ..
            } => Some((template, vendor.to_string())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn each_vendor_gets_its_own_template_id_parameters_and_signature() {
    let h = harness();
    h.gateway
        .send(login("1234", "+8613800138000"))
        .await
        .unwrap();
    let sent = h.vendor("aliyun").received();
    assert_eq!(sent[0].template.id, "SMS_154950909");
    assert_eq!(sent[0].template.params, ["code"]);
    assert_eq!(sent[0].text.as_deref(), Some("您的验证码是1234。"));

    h.gateway.disable(&vendor("aliyun")).await.unwrap();
    h.gateway
        .send(login("5678", "+8613800138001"))
        .await
        .unwrap();
    let sent = h.vendor("tencent").received();
    assert_eq!(sent[0].template.id, "1860001");
    assert_eq!(sent[0].signature("default"), "腾讯云");
}

#[tokio::test]
async fn a_template_the_current_vendor_lacks_goes_to_the_cheapest_that_has_it() {
    let h = harness();
    assert_eq!(h.current(), "aliyun");
    let notice = SmsRequest::new("notice", ["x"], ["+8613800138000"]).unwrap();
    let outcome = h.gateway.send(notice).await.unwrap();
    assert!(
        matches!(&outcome, SendOutcome::Sent { vendor, .. } if vendor.as_str() == "tencent"),
        "{outcome:?}"
    );
    assert_eq!(h.vendor("aliyun").calls(), 0);
    assert_eq!(h.current(), "aliyun", "a detour does not switch");

    // The detour vendor's failures rest it after N in a row; the current one stays.
    h.vendor("tencent").always(transient());
    for i in 0..3 {
        let notice = SmsRequest::new("notice", ["x"], [format!("+861380013800{i}")]).unwrap();
        let outcome = h.gateway.send(notice).await.unwrap();
        assert!(matches!(outcome, SendOutcome::Queued { .. }), "{outcome:?}");
    }
    let tencent = h
        .gateway
        .vendors()
        .into_iter()
        .find(|v| v.id.as_str() == "tencent")
        .unwrap();
    assert!(tencent.cooling_down_until.is_some(), "{tencent:?}");
    assert_eq!(h.current(), "aliyun");
    assert!(h.events.switches().is_empty());
}

#[tokio::test]
async fn unknown_templates_and_wrong_argument_counts_are_refused_before_anything_is_stored() {
    let h = harness();
    let e = h
        .gateway
        .send(SmsRequest::new("login", ["1"], ["+8613800138000"]).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SendError::Invalid(v) if v.field == "template"),
        "{e}"
    );
    let e = h
        .gateway
        .send(SmsRequest::new("login_code", ["1", "2"], ["+8613800138000"]).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SendError::Invalid(v) if v.field == "args"),
        "{e}"
    );
    assert_eq!(h.queue.stats().await.unwrap().queued, 0);
    assert_eq!(h.vendor("aliyun").calls(), 0);
}

#[tokio::test]
async fn a_refused_template_goes_to_the_next_vendor_at_once_and_the_mapping_is_marked_broken() {
    let h = harness();
    h.vendor("aliyun").always(not_approved());
    for i in 0..5 {
        let outcome = h
            .gateway
            .send(login("1234", &format!("+861380013800{i}")))
            .await
            .unwrap();
        assert!(
            matches!(&outcome, SendOutcome::Sent { vendor, .. } if vendor.as_str() == "tencent"),
            "{outcome:?}"
        );
    }
    assert_eq!(h.vendor("aliyun").calls(), 1, "asked once, then left out");
    assert_eq!(
        mapping_events(&h),
        [("login_code".to_owned(), "aliyun".to_owned())],
        "reported once"
    );
    let aliyun = &h.gateway.vendors()[0];
    assert_eq!(aliyun.broken_templates, ["login_code"]);
    assert_eq!(aliyun.consecutive_failures, 0, "the vendor is up");
    assert_eq!(h.current(), "aliyun", "no switch");
    assert_eq!(h.queue.stats().await.unwrap().dead, 0);

    // Enabling the vendor again says the operator fixed it.
    h.gateway.enable(&vendor("aliyun")).await.unwrap();
    assert!(h.gateway.vendors()[0].broken_templates.is_empty());
}

#[tokio::test]
async fn a_template_no_enabled_vendor_can_send_is_refused_not_queued() {
    let h = harness();
    h.vendor("tencent").always(not_approved());
    let notice = SmsRequest::new("notice", ["x"], ["+8613800138000"]).unwrap();
    let e = h.gateway.send(notice.clone()).await.unwrap_err();
    assert!(
        matches!(&e, SendError::NoVendor(reason) if reason.contains("notice")),
        "{e}"
    );
    // Now known broken: refused at intake, without asking the vendor again.
    let e = h.gateway.send(notice).await.unwrap_err();
    let SendError::NoVendor(reason) = &e else {
        panic!("{e}")
    };
    assert!(
        reason.contains("tencent (its template was refused)"),
        "{reason}"
    );
    assert_eq!(h.vendor("tencent").calls(), 1);
    let stats = h.queue.stats().await.unwrap();
    assert_eq!((stats.queued, stats.dead), (0, 0));
}

#[tokio::test]
async fn a_per_number_refusal_is_answered_and_never_switches_or_goes_elsewhere() {
    let h = harness();
    h.vendor("aliyun")
        .always(per_number(Duration::from_secs(60)));
    for _ in 0..5 {
        let e = h
            .gateway
            .send(login("1234", "+8613800138000"))
            .await
            .unwrap_err();
        let SendError::RecipientRefused {
            vendor,
            retry_after,
            ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(vendor.as_str(), "aliyun");
        assert_eq!(*retry_after, Duration::from_secs(60));
    }
    assert!(h.events.switches().is_empty());
    assert_eq!(h.failures_of("aliyun"), 0);
    assert_eq!(h.vendor("tencent").calls() + h.vendor("cloopen").calls(), 0);
}

#[tokio::test]
async fn a_keyed_per_number_refusal_waits_for_the_window_on_the_same_vendor() {
    let h = harness();
    h.vendor("aliyun").then(per_number(Duration::from_secs(60)));
    let request =
        login("1234", "+8613800138000").with_idempotency_key(IdempotencyKey::new("k-1").unwrap());
    let outcome = h.gateway.send(request).await.unwrap();
    let SendOutcome::Queued { id, reason, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(reason, QueueReason::RecipientRefused);
    let stored = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        stored.pinned_vendor.as_ref().map(|v| v.as_str()),
        Some("aliyun")
    );
    assert_eq!(
        stored.next_attempt_at,
        crate::support::start() + chrono::Duration::seconds(60)
    );

    // Meanwhile aliyun fails for other messages (two in a row switch, by default) and
    // the gateway leaves it.
    h.vendor("aliyun").then(transient()).then(transient());
    for i in 1..3 {
        let _ = h
            .gateway
            .send(login("1", &format!("+861380013801{i}")))
            .await;
    }
    assert_eq!(h.current(), "tencent");

    // Not before the window.
    h.clock.advance(Duration::from_secs(59));
    h.gateway.drain_once().await.unwrap();
    let waiting = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        (waiting.status, waiting.attempts),
        (MessageStatus::Queued, 1)
    );
    // After it, on aliyun again (it has rested), never around the limit through tencent.
    h.clock.advance(Duration::from_secs(1));
    let mut sent_by_aliyun = false;
    for _ in 0..20 {
        let report = h.gateway.drain_once().await.unwrap();
        settle().await;
        if h.queue.get(id).await.unwrap().unwrap().status == MessageStatus::Sent {
            sent_by_aliyun = true;
            break;
        }
        assert_eq!(report.dead, 0);
        h.clock.advance(Duration::from_secs(30));
    }
    assert!(sent_by_aliyun);
    let stored = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        stored.last_vendor.as_ref().map(|v| v.as_str()),
        Some("aliyun")
    );
    let to_first_number = |name: &str| {
        h.vendor(name)
            .received()
            .iter()
            .filter(|sms| sms.request.recipients()[0].as_str() == "+8613800138000")
            .count()
    };
    assert_eq!(to_first_number("tencent"), 0, "never sent around the limit");
}

#[tokio::test]
async fn the_vendors_own_billed_count_wins_and_a_difference_is_reported() {
    let h = harness();
    h.vendor("aliyun").then(Step::Reported(1, 2));
    let outcome = h
        .gateway
        .send(login("1234", "+8613800138000"))
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            SendOutcome::Sent {
                billed_messages: 2,
                ..
            }
        ),
        "{outcome:?}"
    );
    let mismatches: Vec<(u64, u64)> = h
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            GatewayEvent::BillingMismatch {
                counted, reported, ..
            } => Some((counted, reported)),
            _ => None,
        })
        .collect();
    assert_eq!(mismatches, [(1, 2)]);
    h.gateway.flush().await.unwrap();
    let period = sms_core::BillingPeriod::from_label("2026-11");
    let totals = h.ledger.totals(&period).await.unwrap();
    assert_eq!(totals.get(&vendor("aliyun")).copied(), Some(2));
}

#[tokio::test]
async fn a_queued_message_no_vendor_can_send_waits_without_halting_the_drain() {
    let h = harness();
    let now = crate::support::start();
    let notice = SmsRequest::new("notice", ["x"], ["+8613800138000"]).unwrap();
    let mut ids = Vec::new();
    for request in [
        notice,
        login("1", "+8613800138001"),
        login("2", "+8613800138002"),
    ] {
        let id = sms_core::MessageId::at(now);
        ids.push(id);
        let message = sms_core::NewMessage::queued(id, request, QueueReason::VendorFailed, 10, now);
        h.queue.enqueue(message).await.unwrap();
    }
    h.vendor("tencent").then(not_approved());
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(
        (report.sent, report.requeued, report.released),
        (2, 1, 0),
        "{report:?}"
    );
    let waiting = h.queue.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(waiting.status, MessageStatus::Queued);
    assert!(waiting.next_attempt_at > now, "it waits with a backoff");
    assert!(
        waiting
            .last_error
            .as_deref()
            .unwrap()
            .contains("no enabled vendor can send template \"notice\""),
        "{waiting:?}"
    );
}
