//! The Aliyun adapter against the sandbox.

use std::time::Duration;

use sms_core::{Vendor, VendorError};
use sms_providers::http::{AliyunConfig, AliyunVendor, Secret};
use sms_providers::sandbox::{FaultControls, SandboxVendor};

use crate::support::{dead_base_url, mapped, mobiles, sms, start};

fn vendor(config: AliyunConfig) -> AliyunVendor {
    AliyunVendor::new(config).expect("valid config")
}

#[tokio::test]
async fn sends_and_the_sandbox_records_every_recipient_with_our_reference() {
    let sandbox = start().await;
    let aliyun = vendor(sandbox.aliyun_config());
    let message = mapped(
        sms(&["1234"], &["+8613800138000", "+85261234567"]),
        "SMS_123",
        &["code"],
        None,
        None,
    );
    let receipt = aliyun.send(&message).await.unwrap();
    assert!(receipt.vendor_message_id.ends_with("^0"), "{receipt:?}");
    assert_eq!(receipt.billed_messages, 2);
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].recipient, "+8613800138000");
    assert_eq!(delivered[1].recipient, "+85261234567");
    assert_eq!(
        delivered[0].reference.as_deref(),
        Some(message.id.to_string().as_str())
    );
    assert_eq!(delivered[0].args, vec!["1234".to_owned()]);
    assert_eq!(receipt.reported_billed, None);
    assert_eq!(
        delivered[0].sign_name.as_deref(),
        Some("Sandbox"),
        "the configured signature"
    );
    // A second send signs with a fresh nonce and is accepted too (to other numbers:
    // Aliyun lets one signature reach one number once a minute).
    let again = mapped(
        sms(&["1234"], &["+8613800138001"]),
        "SMS_123",
        &["code"],
        None,
        None,
    );
    aliyun.send(&again).await.unwrap();
    assert_eq!(sandbox.deliveries().len(), 3);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn the_vendors_template_code_and_variable_names_reach_the_vendor() {
    let sandbox = start().await;
    let message = mapped(
        sms(&["1234", "5"], &["+8613800138000"]),
        "SMS_154950909",
        &["code", "minutes"],
        Some("登录助手"),
        None,
    );
    vendor(sandbox.aliyun_config())
        .send(&message)
        .await
        .unwrap();
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].template, "SMS_154950909",
        "the vendor's code, not the caller's template name"
    );
    // The sandbox lists named arguments in name order: code, then minutes.
    assert_eq!(delivered[0].args, ["1234", "5"]);
    assert_eq!(
        delivered[0].sign_name.as_deref(),
        Some("登录助手"),
        "the template's own signature"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_hundred_characters_with_the_signature_bill_two_per_mainland_number() {
    let sandbox = start().await;
    // 【Sandbox】 is 9 characters: with 91 more the signed text is 100, two segments.
    let text = "码".repeat(91);
    let message = mapped(
        sms(&[text.as_str()], &["+8613800138000", "+8613800138001"]),
        "SMS_123",
        &["code"],
        None,
        Some(text.clone()),
    );
    let receipt = vendor(sandbox.aliyun_config())
        .send(&message)
        .await
        .unwrap();
    assert_eq!(receipt.billed_messages, 4);
    assert_eq!(receipt.billed_messages, message.billed_segments("Sandbox"));
    assert_eq!(receipt.reported_billed, None);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn business_limit_control_refuses_the_recipient_for_the_window_it_names() {
    let sandbox = start().await;
    let aliyun = vendor(sandbox.aliyun_config());
    aliyun
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap();
    // Aliyun lets one signature reach one number once a minute.
    let e = aliyun
        .send(&sms(&["2"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        VendorError::RecipientRefused {
            code: "isv.BUSINESS_LIMIT_CONTROL".into(),
            message: "触发分钟级流控Permits:1".into(),
            retry_after: Duration::from_secs(60),
        }
    );
    assert!(!e.counts_against_vendor());
    assert_eq!(sandbox.deliveries().len(), 1);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn the_accounts_flow_control_is_throttling() {
    let sandbox = start().await;
    sandbox
        .set_faults(
            SandboxVendor::Aliyun,
            FaultControls {
                throttle_rate: 1.0,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = vendor(sandbox.aliyun_config())
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Throttled { message, .. } if message.starts_with("Throttling.User")),
        "{e:?}"
    );
    assert!(e.counts_against_vendor());
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_mainland_landline_is_rejected_as_an_illegal_number() {
    let sandbox = start().await;
    let e = vendor(sandbox.aliyun_config())
        .send(&sms(&["1"], &["+862012345678"]))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        VendorError::Rejected {
            code: "isv.MOBILE_NUMBER_ILLEGAL".into(),
            message: "非法手机号".into()
        }
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_secret_or_unknown_key_is_unauthorized_with_aliyuns_codes() {
    let sandbox = start().await;
    let wrong_secret = AliyunConfig {
        access_key_secret: Secret::new("not-the-secret"),
        ..sandbox.aliyun_config()
    };
    let e = vendor(wrong_secret)
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "SignatureDoesNotMatch"),
        "{e:?}"
    );
    let unknown_key = AliyunConfig {
        access_key_id: "nobody".into(),
        ..sandbox.aliyun_config()
    };
    let e = vendor(unknown_key)
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "InvalidAccessKeyId.NotFound"),
        "{e:?}"
    );
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn server_errors_and_outages_are_transient() {
    let sandbox = start().await;
    let aliyun = vendor(sandbox.aliyun_config());
    sandbox
        .set_faults(
            SandboxVendor::Aliyun,
            FaultControls {
                error_rate: 1.0,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = aliyun
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(matches!(e, VendorError::Transient { .. }), "{e:?}");
    sandbox
        .set_faults(
            SandboxVendor::Aliyun,
            FaultControls {
                outage: true,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = aliyun
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Transient { message } if message.contains("503")),
        "{e:?}"
    );
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn no_answer_in_time_is_an_unknown_outcome() {
    let sandbox = start().await;
    sandbox
        .set_faults(
            SandboxVendor::Aliyun,
            FaultControls {
                latency_ms: 10_000,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let aliyun = vendor(AliyunConfig {
        timeout_ms: 1_000,
        ..sandbox.aliyun_config()
    });
    let e = aliyun
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert_eq!(e, VendorError::TimedOut);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_vendor_nobody_listens_for_is_transient_not_unknown() {
    let aliyun = vendor(AliyunConfig {
        base_url: dead_base_url().await,
        access_key_id: "id".into(),
        access_key_secret: Secret::new("s"),
        sign_name: "n".into(),
        ..AliyunConfig::default()
    });
    let e = aliyun
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(matches!(e, VendorError::Transient { .. }), "{e:?}");
}

#[tokio::test]
async fn the_full_thousand_recipients_go_in_one_call() {
    let sandbox = start().await;
    let numbers = mobiles(1000);
    let receipt = vendor(sandbox.aliyun_config())
        .send(&sms(&["1"], &numbers))
        .await
        .unwrap();
    assert_eq!(receipt.billed_messages, 1000, "no text known: one each");
    // One call: one BizId for everybody.
    assert!(!receipt.vendor_message_id.contains(','), "{receipt:?}");
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 1000);
    assert!(
        delivered
            .iter()
            .all(|d| d.vendor_message_id == receipt.vendor_message_id)
    );
    sandbox.stop().await.unwrap();
}
