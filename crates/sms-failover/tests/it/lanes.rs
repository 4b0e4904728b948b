//! Priority lanes and scheduled sends in the send path: codes are drained before bulk
//! without starving it, and a scheduled message waits for its time.

use sms_core::{DeferredQueue, MessageStatus, NewMessage, Priority, QueueReason, SmsRequest};
use sms_failover::{FailoverConfig, SendOutcome};

use crate::support::*;

fn code(i: usize) -> SmsRequest {
    SmsRequest::new("login", ["1234"], [format!("+86138002{i:05}")])
        .unwrap()
        .with_priority(Priority::High)
}

fn notice(i: usize) -> SmsRequest {
    SmsRequest::new("notice", ["x"], [format!("+86138003{i:05}")]).unwrap()
}

async fn queue(h: &Harness, request: SmsRequest) {
    h.queue
        .enqueue(NewMessage::queued(
            sms_core::MessageId::new(),
            request,
            QueueReason::RateLimited,
            10,
            start(),
        ))
        .await
        .unwrap();
}

fn small_batches() -> FailoverConfig {
    FailoverConfig {
        drain_batch: 10,
        drain_concurrency: 1,
        drain_concurrency_max: 1,
        ..config()
    }
}

#[tokio::test]
async fn a_backlog_of_codes_drains_in_one_pass_though_part_of_each_claim_is_kept_for_bulk() {
    let h = Harness::new(&[("aliyun", 45_000)], small_batches());
    for i in 0..50 {
        queue(&h, code(i)).await;
    }
    let report = h.gateway.drain_once().await.unwrap();
    assert_eq!(
        report.sent, 50,
        "claims of 9 codes (1 of 10 kept for bulk) go on while codes are due"
    );
}

#[tokio::test]
async fn codes_go_before_older_bulk_and_bulk_keeps_its_share() {
    let h = Harness::new(&[("aliyun", 45_000)], small_batches());
    for i in 0..20 {
        queue(&h, notice(i)).await;
    }
    h.clock.advance(std::time::Duration::from_secs(1));
    for i in 0..20 {
        queue(&h, code(i)).await;
    }
    h.gateway.drain_once().await.unwrap();
    let order: Vec<String> = h
        .vendor("aliyun")
        .received()
        .iter()
        .map(|s| s.request.template().as_str().to_owned())
        .collect();
    assert_eq!(order.len(), 40);
    // Each claim of 10: 9 codes, then the one place kept for a notice.
    assert_eq!(order[..10], [["login"; 9].as_slice(), &["notice"]].concat());
    let codes_done = order.iter().rposition(|t| t == "login").unwrap();
    assert!(
        codes_done < 25,
        "every code before most notices, at {codes_done}: {order:?}"
    );
}

#[tokio::test]
async fn a_scheduled_message_waits_for_its_time_and_then_goes_once() {
    let h = Harness::new(&[("aliyun", 45_000)], config());
    let send_at = start() + chrono::Duration::minutes(10);
    let outcome = h
        .gateway
        .send(notice(1).with_send_at(send_at))
        .await
        .unwrap();
    let SendOutcome::Queued { id, reason, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(reason, QueueReason::Scheduled);
    assert_eq!(h.queue.next_due().await.unwrap(), Some(send_at));
    h.gateway.drain_once().await.unwrap();
    assert_eq!(h.vendor("aliyun").calls(), 0, "not before its time");
    h.clock.advance(std::time::Duration::from_secs(600));
    h.gateway.drain_once().await.unwrap();
    h.gateway.drain_once().await.unwrap();
    assert_eq!(h.vendor("aliyun").calls(), 1);
    let m = h.queue.get(id).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Sent);
    assert_eq!(m.request.send_at(), Some(send_at));
}

/// One vendor over the in-memory queue, with a manual clock and optionally a blocklist,
/// per-recipient limits and a spend gate.
struct Scheduling {
    gateway: sms_failover::Gateway,
    vendor: std::sync::Arc<FakeVendor>,
    queue: std::sync::Arc<sms_core::testing::MemoryQueue>,
    clock: std::sync::Arc<sms_core::testing::ManualClock>,
}

fn scheduling(
    blocklist: Option<std::sync::Arc<sms_core::testing::MemoryBlocklist>>,
    recipients: Option<std::sync::Arc<sms_limit::InProcessRecipientLimiter>>,
    spend_gate: Option<std::sync::Arc<dyn sms_core::SpendGate>>,
) -> Scheduling {
    use std::sync::Arc;
    let vendor = FakeVendor::new("aliyun");
    let queue = Arc::new(sms_core::testing::MemoryQueue::new());
    let clock = Arc::new(sms_core::testing::ManualClock::new(start()));
    let mut builder = sms_failover::Gateway::builder(
        vec![sms_failover::VendorEntry {
            vendor: vendor.clone(),
            fees: flat(40_000),
        }],
        Arc::new(AllowAll::default()),
        queue.clone(),
        Arc::new(sms_core::testing::MemoryLedger::new()),
    )
    .clock(clock.clone())
    .config(config());
    if let Some(blocklist) = blocklist {
        builder = builder.blocklist(blocklist);
    }
    if let Some(recipients) = recipients {
        builder = builder.recipient_limiter(recipients);
    }
    if let Some(gate) = spend_gate {
        builder = builder.spend_gate(gate);
    }
    Scheduling {
        gateway: builder.build().unwrap(),
        vendor,
        queue,
        clock,
    }
}

#[tokio::test]
async fn a_number_blocked_after_scheduling_is_left_out_and_a_message_left_with_none_dies() {
    use sms_core::{BlockReason, Blocklist, PhoneNumber};
    let blocklist = std::sync::Arc::new(sms_core::testing::MemoryBlocklist::new());
    let s = scheduling(Some(blocklist.clone()), None, None);
    let send_at = start() + chrono::Duration::minutes(5);
    let both = SmsRequest::new("notice", ["x"], ["+8613900000001", "+8613900000002"])
        .unwrap()
        .with_send_at(send_at);
    let alone = SmsRequest::new("notice", ["x"], ["+8613900000001"])
        .unwrap()
        .with_send_at(send_at);
    let SendOutcome::Queued { id: both, .. } = s.gateway.send(both).await.unwrap() else {
        panic!("scheduled");
    };
    let SendOutcome::Queued { id: alone, .. } = s.gateway.send(alone).await.unwrap() else {
        panic!("scheduled");
    };
    let opted_out = PhoneNumber::parse("+8613900000001").unwrap();
    blocklist
        .block(&opted_out, BlockReason::OptedOut, start())
        .await
        .unwrap();
    s.clock.advance(std::time::Duration::from_secs(300));
    s.gateway.drain_once().await.unwrap();
    let sent = s.vendor.received();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].request.recipients(),
        &[PhoneNumber::parse("+8613900000002").unwrap()],
        "the blocked number is left out"
    );
    assert_eq!(
        s.queue.get(both).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
    let dead = s.queue.get(alone).await.unwrap().unwrap();
    assert_eq!(dead.status, MessageStatus::Dead);
    assert!(
        dead.last_error.unwrap().contains("blocklist"),
        "the reason is kept"
    );
}

#[tokio::test]
async fn a_scheduled_message_counts_in_the_recipients_limit_when_it_goes_out() {
    let limiter = std::sync::Arc::new(
        sms_limit::InProcessRecipientLimiter::new(vec![sms_core::RecipientWindow::per_seconds(
            1, 60,
        )])
        .unwrap(),
    );
    let s = scheduling(None, Some(limiter), None);
    let later = SmsRequest::new("notice", ["x"], ["+8613900000003"])
        .unwrap()
        .with_send_at(start() + chrono::Duration::minutes(5));
    assert!(matches!(
        s.gateway.send(later).await.unwrap(),
        SendOutcome::Queued { .. }
    ));
    // Scheduling used none of the number's allowance: a code to it goes now.
    let now = SmsRequest::new("login", ["1234"], ["+8613900000003"]).unwrap();
    assert!(matches!(
        s.gateway.send(now).await.unwrap(),
        SendOutcome::Sent { .. }
    ));
    // When it falls due within the same minute of the limiter's clock, the number has
    // had its one message: the scheduled one waits, unsent and unattempted.
    s.clock.advance(std::time::Duration::from_secs(300));
    s.gateway.drain_once().await.unwrap();
    assert_eq!(s.vendor.calls(), 1, "only the code went out");
    let waiting = s.queue.list(MessageStatus::Queued, 10).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].attempts, 0);
    assert!(waiting[0].next_attempt_at > start() + chrono::Duration::minutes(5));
}

/// Holds the shop's messages back while `reached` is set, for 10 minutes at a time.
struct ShopCap {
    reached: std::sync::atomic::AtomicBool,
}

impl sms_core::SpendGate for ShopCap {
    fn hold(
        &self,
        client: Option<sms_core::ClientId>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<sms_core::SpendHold> {
        let shop = client.is_some_and(|c| c.as_str() == "shop");
        (shop && self.reached.load(std::sync::atomic::Ordering::SeqCst)).then(|| {
            sms_core::SpendHold {
                until: now + chrono::Duration::minutes(10),
                why: "the shop's cap is reached".to_owned(),
            }
        })
    }
}

/// A client that reached its spend cap after scheduling does not send its scheduled
/// message: it waits, its attempt not counted, while another client's goes; once the
/// cap lets it (raised, or a new month), it goes at the next look.
#[tokio::test]
async fn a_scheduled_message_waits_while_its_clients_spend_cap_is_reached() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let gate = Arc::new(ShopCap {
        reached: true.into(),
    });
    let s = scheduling(None, None, Some(gate.clone()));
    let send_at = start() + chrono::Duration::minutes(5);
    let of = |client: &str, to: &str| {
        SmsRequest::new("notice", ["x"], [to])
            .unwrap()
            .with_send_at(send_at)
            .with_client(sms_core::ClientId::new(client).unwrap())
    };
    let SendOutcome::Queued { id: shop, .. } =
        s.gateway.send(of("shop", "+8613900000011")).await.unwrap()
    else {
        panic!("scheduled");
    };
    let SendOutcome::Queued { id: other, .. } =
        s.gateway.send(of("crm", "+8613900000012")).await.unwrap()
    else {
        panic!("scheduled");
    };
    s.clock.advance(std::time::Duration::from_secs(300));
    let report = s.gateway.drain_once().await.unwrap();
    assert_eq!((report.sent, report.deferred), (1, 1), "{report:?}");
    assert_eq!(
        s.queue.get(other).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
    let held = s.queue.get(shop).await.unwrap().unwrap();
    assert_eq!(held.status, MessageStatus::Queued);
    assert_eq!(held.attempts, 0, "waiting for the cap is no attempt");
    assert_eq!(
        held.next_attempt_at,
        send_at + chrono::Duration::minutes(10)
    );
    // Still reached at the next look: it waits again.
    s.clock.advance(std::time::Duration::from_secs(600));
    assert_eq!(s.gateway.drain_once().await.unwrap().deferred, 1);
    gate.reached.store(false, Ordering::SeqCst);
    s.clock.advance(std::time::Duration::from_secs(600));
    assert_eq!(s.gateway.drain_once().await.unwrap().sent, 1);
    assert_eq!(s.vendor.received().len(), 2);
    assert_eq!(
        s.queue.get(shop).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );
}
