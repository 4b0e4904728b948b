//! What every [`DeliveryLog`] backend must do, written once: each case takes a fresh
//! log. [`delivery_contract_tests!`](crate::delivery_contract_tests) expands to one
//! `#[test]` per case for a factory: an async fn returning `Option<ContractLog>`
//! (`None` skips the case, for a backend whose server is absent).
//!
//! The rules: a receipt settles the recorded send with the same vendor, vendor id and
//! recipient; the first receipt wins and a repeat changes nothing; a receipt with no
//! recorded send is kept and applied when the send is recorded; every call is atomic,
//! so concurrent copies of one receipt settle it once.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::callback_url::CallbackUrl;
use crate::delivery::{
    DeliveryLog, DeliveryReport, DeliveryState, RecipientDelivery, ReportApplied, SentDelivery,
};
use crate::ids::{MessageId, VendorId};
use crate::phone::PhoneNumber;
use crate::testing::ContractBackend;
use crate::testing::store_contract::fixtures::at;

/// A delivery log under test, and whatever must live as long as it does.
pub type ContractLog = ContractBackend<dyn DeliveryLog>;

fn vendor(name: &str) -> VendorId {
    VendorId::new(name).expect("a valid vendor id")
}

fn number(n: &str) -> PhoneNumber {
    PhoneNumber::parse(n).expect("a valid number")
}

fn sent(
    id: MessageId,
    recipient: &str,
    vendor_name: &str,
    vendor_id: &str,
    secs: i64,
) -> SentDelivery {
    SentDelivery {
        message_id: id,
        recipient: number(recipient),
        vendor: vendor(vendor_name),
        vendor_message_id: vendor_id.to_owned(),
        sent_at: at(secs),
        callback_url: None,
        billed_segments: None,
    }
}

fn delivered(recipient: &str, vendor_name: &str, vendor_id: &str) -> DeliveryReport {
    DeliveryReport {
        vendor: vendor(vendor_name),
        vendor_message_id: vendor_id.to_owned(),
        recipient: number(recipient),
        delivered: true,
        code: Some("DELIVRD".into()),
        description: Some("用户接收成功".into()),
        reported_at: Some(at(3)),
        segments: Some(1),
    }
}

fn undelivered(recipient: &str, vendor_name: &str, vendor_id: &str) -> DeliveryReport {
    DeliveryReport {
        delivered: false,
        code: Some("MK:0001".into()),
        description: Some("空号".into()),
        reported_at: Some(at(4)),
        segments: None,
        ..delivered(recipient, vendor_name, vendor_id)
    }
}

fn message(n: u128) -> MessageId {
    format!("00000000-0000-7000-8000-{n:012}")
        .parse()
        .expect("a valid message id")
}

fn states(found: &[RecipientDelivery]) -> Vec<(&str, DeliveryState)> {
    found
        .iter()
        .map(|d| (d.recipient.as_str(), d.state))
        .collect()
}

/// Each receipt settles its own recipient; the receipt's fields are kept.
pub async fn receipts_settle_each_recipient(log: &Arc<dyn DeliveryLog>) {
    let id = message(1);
    let hook = CallbackUrl::new("https://app.example/sms-events").unwrap();
    log.record_sent(&[
        SentDelivery {
            callback_url: Some(hook.clone()),
            billed_segments: Some(2),
            ..sent(id, "+8613800000001", "aliyun", "biz-1", 1)
        },
        sent(id, "+8613800000002", "aliyun", "biz-1", 1),
        sent(id, "+8613800000003", "aliyun", "biz-1", 1),
    ])
    .await
    .unwrap();
    let found = log.deliveries(id).await.unwrap();
    assert_eq!(found.len(), 3);
    assert!(
        found
            .iter()
            .all(|d| d.state == DeliveryState::Sent && d.receipt_at.is_none())
    );
    let now: DateTime<Utc> = at(10);
    let applied = log
        .apply_reports(
            &[
                delivered("+8613800000001", "aliyun", "biz-1"),
                undelivered("+8613800000002", "aliyun", "biz-1"),
            ],
            now,
        )
        .await
        .unwrap();
    let sent_at = at(1);
    assert_eq!(
        applied,
        [
            ReportApplied::Applied {
                sent_at,
                message_id: id,
                callback_url: Some(hook),
                billed_segments: Some(2),
            },
            ReportApplied::Applied {
                sent_at,
                message_id: id,
                callback_url: None,
                billed_segments: None,
            }
        ]
    );
    let found = log.deliveries(id).await.unwrap();
    assert_eq!(
        states(&found),
        [
            ("+8613800000001", DeliveryState::Delivered),
            ("+8613800000002", DeliveryState::Undelivered),
            ("+8613800000003", DeliveryState::Sent),
        ]
    );
    let first = &found[0];
    assert_eq!(first.vendor, vendor("aliyun"));
    assert_eq!(first.vendor_message_id, "biz-1");
    assert_eq!(first.code.as_deref(), Some("DELIVRD"));
    assert_eq!(first.description.as_deref(), Some("用户接收成功"));
    assert_eq!(first.sent_at, at(1));
    assert_eq!(first.reported_at, Some(at(3)));
    assert_eq!(first.receipt_at, Some(now));
    assert_eq!(first.segments, Some(1));
    let second = &found[1];
    assert_eq!(second.code.as_deref(), Some("MK:0001"));
    assert_eq!(second.segments, None);
}

/// The same receipt again, or a later one that disagrees, changes nothing.
pub async fn the_first_receipt_wins_and_repeats_change_nothing(log: &Arc<dyn DeliveryLog>) {
    let id = message(2);
    log.record_sent(&[sent(id, "+8613800000001", "tencent", "sid-1", 1)])
        .await
        .unwrap();
    let report = delivered("+8613800000001", "tencent", "sid-1");
    let first = log
        .apply_reports(std::slice::from_ref(&report), at(10))
        .await
        .unwrap();
    assert_eq!(
        first,
        [ReportApplied::Applied {
            sent_at: at(1),
            message_id: id,
            callback_url: None,
            billed_segments: None,
        }]
    );
    let before = log.deliveries(id).await.unwrap();
    let again = log
        .apply_reports(
            &[report, undelivered("+8613800000001", "tencent", "sid-1")],
            at(20),
        )
        .await
        .unwrap();
    assert_eq!(again, [ReportApplied::Duplicate, ReportApplied::Duplicate]);
    assert_eq!(log.deliveries(id).await.unwrap(), before);
}

/// A receipt that arrives before its send is recorded is kept, and applied when the
/// send is recorded.
pub async fn a_receipt_before_its_send_is_applied_when_the_send_is_recorded(
    log: &Arc<dyn DeliveryLog>,
) {
    let id = message(3);
    let report = undelivered("+8613800000001", "cloopen", "sid-9");
    assert_eq!(
        log.apply_reports(std::slice::from_ref(&report), at(5))
            .await
            .unwrap(),
        [ReportApplied::Kept]
    );
    assert!(log.deliveries(id).await.unwrap().is_empty());
    let record = sent(id, "+8613800000001", "cloopen", "sid-9", 1);
    let settled = log
        .record_sent(std::slice::from_ref(&record))
        .await
        .unwrap();
    assert_eq!(
        settled,
        [(
            report.clone(),
            ReportApplied::Applied {
                sent_at: at(1),
                message_id: id,
                callback_url: None,
                billed_segments: None,
            }
        )],
        "the kept receipt comes back, settled by the record"
    );
    assert!(
        log.record_sent(&[record]).await.unwrap().is_empty(),
        "recording it again settles nothing"
    );
    let found = log.deliveries(id).await.unwrap();
    assert_eq!(
        states(&found),
        [("+8613800000001", DeliveryState::Undelivered)]
    );
    assert_eq!(found[0].receipt_at, Some(at(5)));
    assert_eq!(found[0].sent_at, at(1));
    assert_eq!(
        log.apply_reports(&[report], at(6)).await.unwrap(),
        [ReportApplied::Duplicate]
    );
}

/// A receipt matches on vendor, vendor id and recipient together: another vendor's
/// id, another id, or another recipient settles nothing recorded.
pub async fn receipts_match_vendor_id_and_recipient_together(log: &Arc<dyn DeliveryLog>) {
    let id = message(4);
    log.record_sent(&[sent(id, "+8613800000001", "aliyun", "same-id", 1)])
        .await
        .unwrap();
    let applied = log
        .apply_reports(
            &[
                delivered("+8613800000001", "tencent", "same-id"),
                delivered("+8613800000001", "aliyun", "other-id"),
                delivered("+8613800000002", "aliyun", "same-id"),
            ],
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![ReportApplied::Kept; 3]);
    let found = log.deliveries(id).await.unwrap();
    assert_eq!(states(&found), [("+8613800000001", DeliveryState::Sent)]);
}

/// Recording a send twice keeps one row, with the first record's time.
pub async fn recording_a_send_twice_keeps_one_row(log: &Arc<dyn DeliveryLog>) {
    let id = message(5);
    let first = sent(id, "+8613800000001", "aliyun", "biz-5", 1);
    log.record_sent(std::slice::from_ref(&first)).await.unwrap();
    log.record_sent(&[SentDelivery {
        sent_at: at(2),
        ..first
    }])
    .await
    .unwrap();
    let found = log.deliveries(id).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].sent_at, at(1));
}

/// A message sent again through another vendor has a row per send, oldest first, and
/// other messages' rows are not its own.
pub async fn a_message_lists_every_send_oldest_first(log: &Arc<dyn DeliveryLog>) {
    let (id, other) = (message(6), message(7));
    log.record_sent(&[
        sent(id, "+8613800000001", "tencent", "sid-b", 5),
        sent(other, "+8613800000001", "aliyun", "biz-x", 2),
        sent(id, "+8613800000001", "aliyun", "biz-a", 1),
    ])
    .await
    .unwrap();
    let found = log.deliveries(id).await.unwrap();
    let sends: Vec<(&str, &str)> = found
        .iter()
        .map(|d| (d.vendor.as_str(), d.vendor_message_id.as_str()))
        .collect();
    assert_eq!(sends, [("aliyun", "biz-a"), ("tencent", "sid-b")]);
}

/// Copies of one receipt applied at the same time settle the send once.
pub async fn concurrent_copies_of_a_receipt_settle_it_once(log: &Arc<dyn DeliveryLog>) {
    let id = message(8);
    log.record_sent(&[sent(id, "+8613800000001", "aliyun", "biz-8", 1)])
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let report = if i % 2 == 0 {
                    delivered("+8613800000001", "aliyun", "biz-8")
                } else {
                    undelivered("+8613800000001", "aliyun", "biz-8")
                };
                log.apply_reports(&[report], at(10 + i)).await.unwrap()[0].clone()
            })
        })
        .collect();
    let mut applied = Vec::new();
    for task in tasks {
        applied.push(task.await.unwrap());
    }
    assert_eq!(
        applied
            .iter()
            .filter(|a| matches!(a, ReportApplied::Applied { .. }))
            .count(),
        1,
        "{applied:?}"
    );
    assert_eq!(
        applied
            .iter()
            .filter(|a| **a == ReportApplied::Duplicate)
            .count(),
        7
    );
    let found = log.deliveries(id).await.unwrap();
    assert!(found[0].state.is_final());
}

/// A number's sends since a time, newest first, with their messages; other numbers'
/// sends and kept receipts are not among them.
pub async fn sends_to_a_number_are_listed_newest_first(log: &Arc<dyn DeliveryLog>) {
    let number_a = "+8613800000001";
    log.record_sent(&[
        sent(message(11), number_a, "aliyun", "biz-11", 1),
        sent(message(12), number_a, "tencent", "sid-12", 2),
        sent(message(13), number_a, "aliyun", "biz-13", 3),
        sent(message(14), "+8613800000002", "aliyun", "biz-14", 4),
    ])
    .await
    .unwrap();
    log.apply_reports(&[delivered(number_a, "aliyun", "never-sent")], at(5))
        .await
        .unwrap();
    let found = log.sent_to(&number(number_a), at(2), 10).await.unwrap();
    let listed: Vec<(MessageId, &str)> = found
        .iter()
        .map(|(id, d)| (*id, d.vendor_message_id.as_str()))
        .collect();
    assert_eq!(listed, [(message(13), "biz-13"), (message(12), "sid-12")]);
    let newest = log.sent_to(&number(number_a), at(0), 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].0, message(13));
}

/// Purging deletes sends recorded, and kept receipts received, before the time, up to
/// the limit, and nothing newer.
pub async fn purge_deletes_old_sends_and_old_unmatched_receipts(log: &Arc<dyn DeliveryLog>) {
    let (old, new) = (message(21), message(22));
    log.record_sent(&[
        sent(old, "+8613800000001", "aliyun", "biz-21", 1),
        sent(old, "+8613800000002", "aliyun", "biz-21", 1),
        sent(new, "+8613800000001", "aliyun", "biz-22", 10),
    ])
    .await
    .unwrap();
    log.apply_reports(&[delivered("+8613800000009", "aliyun", "lost-1")], at(2))
        .await
        .unwrap();
    log.apply_reports(&[delivered("+8613800000009", "aliyun", "lost-2")], at(20))
        .await
        .unwrap();
    assert_eq!(log.purge(at(5), 1).await.unwrap(), 1, "the limit holds");
    assert_eq!(log.purge(at(5), 100).await.unwrap(), 2);
    assert_eq!(log.purge(at(5), 100).await.unwrap(), 0);
    assert!(log.deliveries(old).await.unwrap().is_empty());
    assert_eq!(log.deliveries(new).await.unwrap().len(), 1);
    // The newer kept receipt is still there for its send.
    let late = message(23);
    log.record_sent(&[sent(late, "+8613800000009", "aliyun", "lost-2", 21)])
        .await
        .unwrap();
    let found = log.deliveries(late).await.unwrap();
    assert_eq!(
        states(&found),
        [("+8613800000009", DeliveryState::Delivered)]
    );
}

/// The sends to one vendor without a receipt, in a time range, oldest first: settled
/// sends, other vendors' sends and kept receipts without a send are not among them.
pub async fn unsettled_lists_a_vendors_sends_without_a_receipt_oldest_first(
    log: &Arc<dyn DeliveryLog>,
) {
    let id = message(30);
    log.record_sent(&[
        sent(id, "+8613800000003", "aliyun", "biz-c", 3),
        sent(id, "+8613800000001", "aliyun", "biz-a", 1),
        sent(id, "+8613800000002", "aliyun", "biz-b", 2),
        sent(id, "+8613800000004", "aliyun", "biz-d", 4),
        sent(id, "+8613800000001", "tencent", "sid-a", 2),
        sent(id, "+8613800000009", "aliyun", "biz-old", 0),
    ])
    .await
    .unwrap();
    log.apply_reports(
        &[
            delivered("+8613800000002", "aliyun", "biz-b"),
            delivered("+8613800000007", "aliyun", "biz-unknown"),
        ],
        at(5),
    )
    .await
    .unwrap();
    let pending = log
        .unsettled(&vendor("aliyun"), at(0), at(4), 10)
        .await
        .unwrap();
    let found: Vec<(&str, &str)> = pending
        .iter()
        .map(|p| (p.vendor_message_id.as_str(), p.recipient.as_str()))
        .collect();
    assert_eq!(
        found,
        [("biz-a", "+8613800000001"), ("biz-c", "+8613800000003")],
        "after 0 and before 4 (both excluded), no receipt, aliyun only"
    );
    assert_eq!(pending[0].sent_at, at(1));
    let first = log
        .unsettled(&vendor("aliyun"), at(0), at(10), 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].vendor_message_id, "biz-a");
}

/// Expands to one `#[test]` per case of [`delivery_contract`](crate::testing::delivery_contract),
/// each on a fresh log from `$factory` (an async fn returning `Option<ContractLog>`).
#[macro_export]
macro_rules! delivery_contract_tests {
    ($factory:path) => {
        $crate::delivery_contract_tests!(@cases $factory;
            receipts_settle_each_recipient,
            the_first_receipt_wins_and_repeats_change_nothing,
            a_receipt_before_its_send_is_applied_when_the_send_is_recorded,
            receipts_match_vendor_id_and_recipient_together,
            recording_a_send_twice_keeps_one_row,
            a_message_lists_every_send_oldest_first,
            concurrent_copies_of_a_receipt_settle_it_once,
            sends_to_a_number_are_listed_newest_first,
            purge_deletes_old_sends_and_old_unmatched_receipts,
            unsettled_lists_a_vendors_sends_without_a_receipt_oldest_first,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::store_contract::run(async {
                    let Some(store) = $factory().await else {
                        return;
                    };
                    $crate::testing::delivery_contract::$case(&store.backend).await;
                });
            }
        )*
    };
}
