//! The gateway's conversations with its collaborators, checked with mockall mocks.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use sms_core::mocks::{MockClock, MockUsageLedger, MockVendor};
use sms_core::testing::{ManualClock, MemoryLedger, MemoryQueue};
use sms_core::{Money, Receipt, StoreError, VendorId};
use sms_failover::{Gateway, SendOutcome, VendorEntry};

use crate::support::*;

fn mock_vendor() -> MockVendor {
    let mut vendor = MockVendor::new();
    vendor.expect_split_send_time().return_const(None);
    vendor
        .expect_id()
        .returning(|| VendorId::new("aliyun").unwrap());
    vendor
}

#[tokio::test]
async fn the_vendor_gets_the_gateways_id_and_the_request_once() {
    let request = request_to(2);
    let expected = request.clone();
    let mut vendor = mock_vendor();
    vendor
        .expect_send()
        .withf(move |sms| sms.request == expected)
        .times(1)
        .returning(|sms| {
            Ok(Receipt {
                vendor_message_id: format!("biz-{}", sms.id),
                billed_messages: 2,
                reported_billed: None,
                recipient_ids: Vec::new(),
            })
        });
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: Arc::new(vendor),
            fees: flat(45_000),
        }],
        Arc::new(AllowAll::default()),
        Arc::new(MemoryQueue::new()),
        Arc::new(MemoryLedger::new()),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .unwrap();
    let outcome = gateway.send(request).await.unwrap();
    assert!(matches!(
        outcome,
        SendOutcome::Sent {
            billed_messages: 2,
            ..
        }
    ));
}

#[tokio::test]
async fn usage_is_recorded_in_the_billing_month_of_the_billing_time_zone() {
    let mut clock = MockClock::new();
    // 16:30 UTC on 31 October is 1 November in Beijing.
    let at = || Utc.with_ymd_and_hms(2026, 10, 31, 16, 30, 0).unwrap();
    clock.expect_now().returning(at);
    let mut ledger = MockUsageLedger::new();
    ledger
        .expect_add()
        .withf(|vendor, period, messages| {
            vendor.as_str() == "aliyun" && period.as_str() == "2026-11" && *messages == 3
        })
        .times(1)
        .returning(|_, _, n| Ok(n));
    let mut vendor = mock_vendor();
    vendor.expect_send().returning(|_| {
        Ok(Receipt {
            vendor_message_id: "x".into(),
            billed_messages: 1,
            reported_billed: None,
            recipient_ids: Vec::new(),
        })
    });
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: Arc::new(vendor),
            fees: flat(45_000),
        }],
        Arc::new(AllowAll::default()),
        Arc::new(MemoryQueue::new()),
        Arc::new(ledger),
    )
    .clock(Arc::new(clock))
    .config(config())
    .build()
    .unwrap();
    gateway.send(request_to(3)).await.unwrap();
}

#[tokio::test]
async fn a_ledger_failure_does_not_fail_a_delivered_send_and_usage_is_counted_locally() {
    let mut ledger = MockUsageLedger::new();
    ledger
        .expect_add()
        .returning(|_, _, _| Err(StoreError::unavailable("down")));
    ledger
        .expect_totals()
        .returning(|_| Err(StoreError::unavailable("down")));
    let h_vendor = FakeVendor::new("aliyun");
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: h_vendor.clone(),
            fees: flat(45_000),
        }],
        Arc::new(AllowAll::default()),
        Arc::new(MemoryQueue::new()),
        Arc::new(ledger),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .unwrap();
    assert!(matches!(
        gateway.send(request_to(2)).await.unwrap(),
        SendOutcome::Sent { .. }
    ));
    let snapshot = &gateway.vendors()[0];
    assert_eq!(snapshot.billed_this_period, 2);
    assert_eq!(snapshot.spend, Money::from_micros(90_000));
    // Start-up cannot go on without knowing the volumes: the error is the caller's.
    assert!(gateway.init().await.is_err());
}

#[tokio::test]
async fn init_reads_the_totals_of_the_current_period_only() {
    let mut ledger = MockUsageLedger::new();
    ledger
        .expect_totals()
        .withf(|period| period.as_str() == "2026-11")
        .times(1)
        .returning(|_| {
            let mut totals = BTreeMap::new();
            totals.insert(VendorId::new("aliyun").unwrap(), 7);
            Ok(totals)
        });
    let gateway = Gateway::builder(
        vec![VendorEntry {
            vendor: FakeVendor::new("aliyun"),
            fees: flat(45_000),
        }],
        Arc::new(AllowAll::default()),
        Arc::new(MemoryQueue::new()),
        Arc::new(ledger),
    )
    .clock(Arc::new(ManualClock::new(start())))
    .config(config())
    .build()
    .unwrap();
    gateway.init().await.unwrap();
    assert_eq!(gateway.vendors()[0].billed_this_period, 7);
}

#[test]
fn building_refuses_no_vendors_and_duplicate_names() {
    let build = |vendors: Vec<VendorEntry>| {
        Gateway::builder(
            vendors,
            Arc::new(AllowAll::default()),
            Arc::new(MemoryQueue::new()),
            Arc::new(MemoryLedger::new()),
        )
        .clock(Arc::new(ManualClock::new(start())))
        .config(config())
        .build()
    };
    assert!(matches!(
        build(vec![]),
        Err(sms_failover::FailoverError::NoVendors)
    ));
    let entry = || VendorEntry {
        vendor: FakeVendor::new("aliyun"),
        fees: flat(45_000),
    };
    assert!(matches!(
        build(vec![entry(), entry()]),
        Err(sms_failover::FailoverError::DuplicateVendor(_))
    ));
}

/// Senders on two runtimes of their own (each on its thread) share one records buffer:
/// whichever runtime runs the write task, every record is written, and written once.
#[test]
fn records_of_senders_on_two_runtimes_are_each_written_once() {
    use std::sync::Mutex;

    use sms_core::SmsRequest;
    use sms_core::mocks::MockDeferredQueue;

    let batches: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let mut queue = MockDeferredQueue::new();
    let seen = batches.clone();
    queue.expect_enqueue_many().returning(move |messages| {
        let recipients = messages
            .iter()
            .map(|m| m.request.recipients()[0].to_string())
            .collect();
        seen.lock().unwrap().push(recipients);
        // The gateway reads nothing back from these writes.
        Ok(Vec::new())
    });
    let mut vendor = mock_vendor();
    vendor.expect_send().returning(|_| {
        Ok(Receipt {
            vendor_message_id: String::new(),
            billed_messages: 1,
            reported_billed: None,
            recipient_ids: Vec::new(),
        })
    });
    let gateway = Arc::new(
        Gateway::builder(
            vec![VendorEntry {
                vendor: Arc::new(vendor),
                fees: flat(45_000),
            }],
            Arc::new(AllowAll::default()),
            Arc::new(queue),
            Arc::new(MemoryLedger::new()),
        )
        .clock(Arc::new(ManualClock::new(start())))
        .config(config())
        .build()
        .unwrap(),
    );
    let senders: Vec<_> = ["+8613800000001", "+8613800000002"]
        .into_iter()
        .map(|recipient| {
            let gateway = gateway.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let request = SmsRequest::new("login", ["1234"], [recipient]).unwrap();
                    for _ in 0..300 {
                        gateway.send(request.clone()).await.unwrap();
                    }
                    // Past the write delay, so a write task this runtime started runs.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                });
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let batches = batches.lock().unwrap();
    let mut written = BTreeMap::<&str, usize>::new();
    for recipient in batches.iter().flatten() {
        *written.entry(recipient).or_default() += 1;
    }
    assert_eq!(
        written.into_iter().collect::<Vec<_>>(),
        vec![("+8613800000001", 300), ("+8613800000002", 300)]
    );
}
