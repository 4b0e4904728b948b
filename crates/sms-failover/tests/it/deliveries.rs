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
