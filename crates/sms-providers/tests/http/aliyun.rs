//! The Aliyun adapter against the sandbox.

use sms_core::{Vendor, VendorError};
use sms_providers::http::{AliyunConfig, AliyunVendor, Secret};
use sms_providers::sandbox::{FaultControls, SandboxVendor};

use crate::support::{dead_base_url, mobiles, sms, start};

fn vendor(config: AliyunConfig) -> AliyunVendor {
    AliyunVendor::new(config).expect("valid config")
}

#[tokio::test]
async fn sends_and_the_sandbox_records_every_recipient_with_our_reference() {
    let sandbox = start().await;
    let mut config = sandbox.aliyun_config();
    config
        .template_params
        .insert("SMS_123".into(), vec!["code".into()]);
    let aliyun = vendor(config);
    let message = sms(&["1234"], &["+8613800138000", "+85261234567"]);
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
    // A second send signs with a fresh nonce and is accepted too.
    aliyun.send(&message).await.unwrap();
    assert_eq!(sandbox.deliveries().len(), 4);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn business_limit_control_is_throttled() {
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
        matches!(&e, VendorError::Throttled { message, .. } if message.contains("isv.BUSINESS_LIMIT_CONTROL")),
        "{e:?}"
    );
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
    assert_eq!(receipt.billed_messages, 1000);
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
