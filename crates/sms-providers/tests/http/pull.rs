//! Receipts pulled through the adapters from the sandbox: Tencent `PullSmsSendStatus`
//! (a queue) and Aliyun `QuerySendDetails` (asked per send), each send's fate drawn at
//! the sandbox's delivery rate and due after its delay; and the parameters each API
//! refuses, in the vendor's codes, through hand-signed requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sms_core::{
    DeliveryReport, PendingDelivery, PhoneNumber, Receipt, ReceiptPull, Vendor, VendorError,
    VendorId,
};
use sms_providers::http::{AliyunConfig, AliyunVendor, Secret, TencentConfig, TencentVendor};
use sms_providers::receipts::ReceiptFormat;
use sms_providers::sandbox::{ReceiptPushes, SandboxConfig, SandboxHandle};
use tokio::net::TcpListener;

use crate::support::{aliyun_call, dead_base_url, mobiles, sms, start, start_with, tencent_call};

/// How long after a send the sandbox has its receipt.
const DELAY: Duration = Duration::from_millis(800);

/// A sandbox whose receipts are due after [`DELAY`], about half of them delivered, that
/// pushes them to `pushes` (or nowhere), with no per-number limits.
async fn start_pulled(pushes: ReceiptPushes) -> SandboxHandle {
    start_with(SandboxConfig {
        per_number_limits: false,
        seed: 11,
        receipts: ReceiptPushes {
            delivery_rate: 0.5,
            delay_ms: DELAY.as_millis() as u64,
            ..pushes
        },
        ..SandboxConfig::default()
    })
    .await
}

/// Each of `numbers` with the id the send gave it.
fn sent_ids(receipt: &Receipt, numbers: &[String]) -> BTreeMap<String, String> {
    numbers
        .iter()
        .map(|n| {
            let number = PhoneNumber::parse(n).unwrap();
            (n.clone(), receipt.id_of(&number).to_owned())
        })
        .collect()
}

/// Checks `reports` hold each of `sent` exactly once, under its id and `vendor`.
fn assert_each_once(reports: &[DeliveryReport], sent: &BTreeMap<String, String>, vendor: &str) {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for r in reports {
        assert_eq!(r.vendor.as_str(), vendor);
        let earlier = seen.insert(r.recipient.as_str().to_owned(), r.vendor_message_id.clone());
        assert!(earlier.is_none(), "{} reported twice", r.recipient);
    }
    assert_eq!(&seen, sent, "every accepted recipient, under its id");
}

/// Checks some of `reports`, not all, say delivered, as a delivery rate of 0.5 makes it.
fn assert_both_fates(reports: &[DeliveryReport]) {
    let delivered = reports.iter().filter(|r| r.delivered).count();
    assert!(
        delivered > 0 && delivered < reports.len(),
        "a delivery rate of 0.5 delivers some, not all: {delivered} of {}",
        reports.len()
    );
}

/// Pulls from a queue (`puller`) until `expected` receipts came or five seconds passed.
async fn pull_until(puller: &dyn ReceiptPull, expected: usize) -> Vec<DeliveryReport> {
    let mut reports = Vec::new();
    for _ in 0..50 {
        reports.extend(puller.pull_receipts(&[]).await.unwrap());
        if reports.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reports
}

/// A receipt endpoint on loopback that keeps every push's body.
async fn receipt_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: String| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock().unwrap().push(body);
                r#"{"result":0,"errmsg":"OK"}"#
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, bodies)
}

#[tokio::test]
async fn tencent_hands_out_each_receipt_once_and_the_same_fate_it_pushes() {
    let (url, pushed) = receipt_endpoint().await;
    let sandbox = start_pulled(ReceiptPushes {
        tencent: Some(url),
        ..ReceiptPushes::default()
    })
    .await;
    let tencent = TencentVendor::new(sandbox.tencent_config()).unwrap();
    // 600 numbers: three calls of 200 to send, six of 100 to pull.
    let numbers = mobiles(600);
    let receipt = tencent.send(&sms(&["1"], &numbers)).await.unwrap();
    let sent = sent_ids(&receipt, &numbers);
    assert!(sent.values().all(|id| id.starts_with("sandbox:")));
    // Nothing is due yet: the queue hands out nothing.
    assert!(tencent.pull_receipts(&[]).await.unwrap().is_empty());
    tokio::time::sleep(DELAY + Duration::from_millis(300)).await;
    // One pull makes at most five calls of 100; the rest comes with the next.
    let first = tencent.pull_receipts(&[]).await.unwrap();
    assert_eq!(first.len(), 500);
    let mut reports = pull_until(&tencent, 100).await;
    assert_eq!(reports.len(), 100);
    reports.extend(first);
    assert_each_once(&reports, &sent, "tencent");
    assert_both_fates(&reports);
    assert!(
        tencent.pull_receipts(&[]).await.unwrap().is_empty(),
        "each once"
    );
    assert!(
        reports
            .iter()
            .all(|r| r.code.is_some() && r.reported_at.is_some())
    );
    // The pushes, sent alongside, tell each recipient's fate as the pull did.
    let vendor = VendorId::new("tencent").unwrap();
    let mut pushed_fates = HashMap::new();
    for _ in 0..50 {
        pushed_fates = pushed
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| {
                ReceiptFormat::Tencent
                    .parse(&vendor, body.as_bytes())
                    .unwrap()
            })
            .map(|r| (r.vendor_message_id, r.delivered))
            .collect();
        if pushed_fates.len() == reports.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pulled_fates: HashMap<String, bool> = reports
        .iter()
        .map(|r| (r.vendor_message_id.clone(), r.delivered))
        .collect();
    assert_eq!(pushed_fates, pulled_fates);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn aliyun_answers_waiting_until_due_then_each_sends_fate() {
    // It also pushes, to nowhere: pulling does not depend on it.
    let sandbox = start_pulled(ReceiptPushes {
        aliyun: Some(dead_base_url().await),
        ..ReceiptPushes::default()
    })
    .await;
    let aliyun = AliyunVendor::new(sandbox.aliyun_config()).unwrap();
    let numbers = mobiles(40);
    let receipt = aliyun.send(&sms(&["1"], &numbers)).await.unwrap();
    let sent = sent_ids(&receipt, &numbers);
    let pending: Vec<PendingDelivery> = numbers
        .iter()
        .map(|n| PendingDelivery {
            vendor_message_id: receipt.vendor_message_id.clone(),
            recipient: PhoneNumber::parse(n).unwrap(),
            sent_at: Utc::now(),
        })
        .collect();
    // Before the delay: waiting for the receipt, and no report.
    assert!(aliyun.pull_receipts(&pending).await.unwrap().is_empty());
    let today = Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y%m%d")
        .to_string();
    let query = [
        ("PhoneNumber", "13900000000"),
        ("BizId", receipt.vendor_message_id.as_str()),
        ("SendDate", today.as_str()),
        ("PageSize", "10"),
        ("CurrentPage", "1"),
    ];
    let (status, answer) = aliyun_call(&sandbox, "QuerySendDetails", &query).await;
    assert_eq!(
        (status, answer["Code"].as_str()),
        (200, Some("OK")),
        "{answer}"
    );
    assert_eq!(answer["TotalCount"], 1, "{answer}");
    let record = &answer["SmsSendDetailDTOs"]["SmsSendDetailDTO"][0];
    assert_eq!(record["SendStatus"], 1, "{answer}");
    assert_eq!(record["PhoneNum"], "13900000000");
    assert_eq!(record["ReceiveDate"], "");
    tokio::time::sleep(DELAY + Duration::from_millis(200)).await;
    let reports = aliyun.pull_receipts(&pending).await.unwrap();
    assert_each_once(&reports, &sent, "aliyun");
    assert_both_fates(&reports);
    assert!(
        reports
            .iter()
            .all(|r| r.code.as_deref() == Some(if r.delivered { "DELIVERED" } else { "UNDELIV" }))
    );
    assert!(reports.iter().all(|r| r.reported_at.is_some()));
    // Aliyun keeps its records: asked again, it answers the same.
    let again = aliyun.pull_receipts(&pending).await.unwrap();
    assert_eq!(again, reports);
    // Nothing pending, nothing asked.
    assert!(aliyun.pull_receipts(&[]).await.unwrap().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn aliyun_keeps_the_answered_queries_when_others_fail() {
    let sandbox = start_pulled(ReceiptPushes::default()).await;
    let aliyun = AliyunVendor::new(sandbox.aliyun_config()).unwrap();
    let numbers = mobiles(3);
    let receipt = aliyun.send(&sms(&["1"], &numbers)).await.unwrap();
    tokio::time::sleep(DELAY + Duration::from_millis(200)).await;
    let pending_for = |number: &str| PendingDelivery {
        vendor_message_id: receipt.vendor_message_id.clone(),
        recipient: PhoneNumber::parse(number).unwrap(),
        sent_at: Utc::now(),
    };
    // A landline Aliyun refuses to look up: that query fails on its own.
    let mut pending: Vec<PendingDelivery> = numbers.iter().map(|n| pending_for(n)).collect();
    pending.insert(1, pending_for("+862012345678"));
    let reports = aliyun.pull_receipts(&pending).await.unwrap();
    assert_each_once(&reports, &sent_ids(&receipt, &numbers), "aliyun");
    // When every query fails, the first failure is the pull's.
    let e = aliyun.pull_receipts(&pending[1..2]).await.unwrap_err();
    assert!(
        matches!(&e, VendorError::Rejected { code, .. } if code == "isv.MOBILE_NUMBER_ILLEGAL"),
        "{e:?}"
    );
    let wrong_secret = AliyunVendor::new(AliyunConfig {
        access_key_secret: Secret::new("not-the-secret"),
        ..sandbox.aliyun_config()
    })
    .unwrap();
    let e = wrong_secret.pull_receipts(&pending).await.unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "SignatureDoesNotMatch"),
        "{e:?}"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn tencent_pull_errors_map_as_send_errors_do() {
    let sandbox = start().await;
    let unknown_app = TencentVendor::new(TencentConfig {
        sdk_app_id: "1400999999".into(),
        ..sandbox.tencent_config()
    })
    .unwrap();
    let e = unknown_app.pull_receipts(&[]).await.unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "InvalidParameterValue.SdkAppIdNotExist"),
        "{e:?}"
    );
    let wrong_key = TencentVendor::new(TencentConfig {
        secret_key: Secret::new("not-the-key"),
        ..sandbox.tencent_config()
    })
    .unwrap();
    let e = wrong_key.pull_receipts(&[]).await.unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "AuthFailure.SignatureFailure"),
        "{e:?}"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn tencent_refuses_bad_pull_parameters_in_its_codes() {
    let sandbox = start().await;
    let error_of = |answer: Value| {
        answer["Response"]["Error"]["Code"]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    };
    for (body, code) in [
        (
            json!({"SmsSdkAppId": "1400000000", "Limit": 101}),
            "InvalidParameterValue.LimitVerifyFail",
        ),
        (
            json!({"SmsSdkAppId": "1400000000", "Limit": 0}),
            "InvalidParameterValue.LimitVerifyFail",
        ),
        (json!({"SmsSdkAppId": "1400000000"}), "MissingParameter"),
        (json!({"Limit": 10}), "MissingParameter"),
        (
            json!({"SmsSdkAppId": "1400000000", "Limit": "ten"}),
            "InvalidParameter",
        ),
        (
            json!({"SmsSdkAppId": "1400000001", "Limit": 10}),
            "InvalidParameterValue.SdkAppIdNotExist",
        ),
        (json!(["not", "an", "object"]), "InvalidParameter"),
    ] {
        let answer = tencent_call(&sandbox, "PullSmsSendStatus", &body.to_string()).await;
        assert_eq!(error_of(answer), code, "{body}");
    }
    let ok = tencent_call(
        &sandbox,
        "PullSmsSendStatus",
        r#"{"SmsSdkAppId":"1400000000","Limit":100}"#,
    )
    .await;
    assert_eq!(ok["Response"]["PullSmsSendStatusSet"], json!([]), "{ok}");
    assert!(ok["Response"]["RequestId"].is_string());
    let unknown = tencent_call(&sandbox, "PullSmsReplyStatus", "{}").await;
    assert_eq!(error_of(unknown), "InvalidAction");
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn aliyun_refuses_bad_query_parameters_in_its_codes() {
    let sandbox = start().await;
    type Params = Vec<(&'static str, &'static str)>;
    let good = [
        ("PhoneNumber", "13800138000"),
        ("BizId", "1^0"),
        ("SendDate", "20240301"),
        ("PageSize", "10"),
        ("CurrentPage", "1"),
    ];
    let without =
        |name: &str| -> Params { good.iter().copied().filter(|(k, _)| *k != name).collect() };
    let with = |name: &str, value: &'static str| -> Params {
        good.iter()
            .map(|&(k, v)| (k, if k == name { value } else { v }))
            .collect()
    };
    let cases: Vec<(Params, u16, &str)> = vec![
        (without("PhoneNumber"), 400, "MissingPhoneNumber"),
        (without("SendDate"), 400, "MissingSendDate"),
        (without("PageSize"), 400, "MissingPageSize"),
        (without("CurrentPage"), 400, "MissingCurrentPage"),
        (with("PageSize", "51"), 200, "isv.INVALID_PARAMETERS"),
        (with("PageSize", "0"), 200, "isv.INVALID_PARAMETERS"),
        (with("CurrentPage", "0"), 200, "isv.INVALID_PARAMETERS"),
        (
            with("SendDate", "2024-03-01"),
            200,
            "isv.INVALID_PARAMETERS",
        ),
        (with("SendDate", "20241301"), 200, "isv.INVALID_PARAMETERS"),
        (
            with("PhoneNumber", "13800138000,13800138001"),
            200,
            "isv.MOBILE_NUMBER_ILLEGAL",
        ),
        (
            with("PhoneNumber", "862012345678"),
            200,
            "isv.MOBILE_NUMBER_ILLEGAL",
        ),
    ];
    for (params, status, code) in cases {
        let (got_status, answer) = aliyun_call(&sandbox, "QuerySendDetails", &params).await;
        assert_eq!(
            (got_status, answer["Code"].as_str()),
            (status, Some(code)),
            "{params:?}: {answer}"
        );
        assert!(answer["Message"].is_string() && answer["RequestId"].is_string());
    }
    // Without a BizId Aliyun lists every send to the number that day: none here.
    let (status, answer) = aliyun_call(&sandbox, "QuerySendDetails", &without("BizId")).await;
    assert_eq!(
        (status, answer["Code"].as_str()),
        (200, Some("OK")),
        "{answer}"
    );
    assert_eq!(answer["TotalCount"], 0);
    sandbox.stop().await.unwrap();
}
