//! The Tencent Cloud adapter against the sandbox.

use sms_core::{PhoneNumber, Vendor, VendorError};
use sms_providers::http::{Secret, TencentConfig, TencentVendor};
use sms_providers::sandbox::{FaultControls, SandboxVendor};

use crate::support::{mapped, mobiles, sms, start};

fn vendor(config: TencentConfig) -> TencentVendor {
    TencentVendor::new(config).expect("valid config")
}

#[tokio::test]
async fn sends_the_vendors_template_and_keeps_fee_as_tencents_own_count() {
    let sandbox = start().await;
    let tencent = vendor(sandbox.tencent_config());
    let short = tencent
        .send(&mapped(
            sms(&["1234"], &["+8613800138000"]),
            "1860001",
            &[],
            Some("登录助手"),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(short.billed_messages, 1);
    assert_eq!(short.reported_billed, Some(1));
    assert!(short.vendor_message_id.starts_with("sandbox:"), "{short:?}");
    // 【Sandbox】 is 9 characters: with 91 more the signed text is 100 characters, two
    // segments to a mainland number and two abroad (Chinese goes as UCS-2).
    let long = "长".repeat(91);
    let message = mapped(
        sms(&[long.as_str()], &["+8613800138001", "+14155550100"]),
        "1860001",
        &[],
        None,
        Some(long.clone()),
    );
    let receipt = tencent.send(&message).await.unwrap();
    assert_eq!(receipt.billed_messages, 4);
    assert_eq!(receipt.billed_messages, message.billed_segments("Sandbox"));
    // The sandbox's `Fee` counts the arguments alone (91 characters: two each).
    assert_eq!(receipt.reported_billed, Some(4));
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 3);
    assert!(
        delivered.iter().all(|d| d.template == "1860001"),
        "{delivered:?}"
    );
    let signatures: Vec<_> = delivered.iter().map(|d| d.sign_name.as_deref()).collect();
    assert_eq!(
        signatures,
        [Some("登录助手"), Some("Sandbox"), Some("Sandbox")],
        "the template's own signature, else the configured one"
    );
    assert_eq!(delivered[2].recipient, "+14155550100");
    assert_eq!(delivered[2].args, vec![long]);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn limit_exceeded_is_throttled() {
    let sandbox = start().await;
    sandbox
        .set_faults(
            SandboxVendor::Tencent,
            FaultControls {
                throttle_rate: 1.0,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = vendor(sandbox.tencent_config())
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Throttled { message, .. } if message.starts_with("LimitExceeded.")),
        "{e:?}"
    );
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn an_incorrect_number_is_rejected() {
    let sandbox = start().await;
    let e = vendor(sandbox.tencent_config())
        .send(&sms(&["1"], &["+862012345678"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Rejected { code, .. } if code == "InvalidParameterValue.IncorrectPhoneNumber"),
        "{e:?}"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn one_bad_number_among_good_ones_is_partly_sent_to_the_good_ones() {
    let sandbox = start().await;
    let e = vendor(sandbox.tencent_config())
        .send(&sms(&["1"], &["+8613800138000", "+862012345678"]))
        .await
        .unwrap_err();
    match e {
        VendorError::PartlySent {
            sent,
            receipt,
            error,
        } => {
            assert_eq!(sent, [PhoneNumber::parse("+8613800138000").unwrap()]);
            assert_eq!(receipt.billed_messages, 1, "no text known: one");
            assert_eq!(receipt.reported_billed, Some(1));
            assert!(
                matches!(&*error, VendorError::Rejected { code, .. } if code == "InvalidParameterValue.IncorrectPhoneNumber"),
                "{error:?}"
            );
        }
        other => panic!("expected PartlySent, got {other:?}"),
    }
    assert_eq!(sandbox.deliveries().len(), 1);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_key_or_unknown_secret_id_is_an_auth_failure() {
    let sandbox = start().await;
    let e = vendor(TencentConfig {
        secret_key: Secret::new("wrong"),
        ..sandbox.tencent_config()
    })
    .send(&sms(&["1"], &["+8613800138000"]))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "AuthFailure.SignatureFailure"),
        "{e:?}"
    );
    let e = vendor(TencentConfig {
        secret_id: "AKIDnobody".into(),
        ..sandbox.tencent_config()
    })
    .send(&sms(&["1"], &["+8613800138000"]))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "AuthFailure.SecretIdNotFound"),
        "{e:?}"
    );
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn internal_errors_and_outages_are_transient() {
    let sandbox = start().await;
    let tencent = vendor(sandbox.tencent_config());
    sandbox
        .set_faults(
            SandboxVendor::Tencent,
            FaultControls {
                error_rate: 1.0,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = tencent
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Transient { message } if message.contains("InternalError")),
        "{e:?}"
    );
    sandbox
        .set_faults(
            SandboxVendor::Tencent,
            FaultControls {
                outage: true,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = tencent
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Transient { message } if message.contains("503")),
        "{e:?}"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn no_answer_in_time_is_an_unknown_outcome() {
    let sandbox = start().await;
    sandbox
        .set_faults(
            SandboxVendor::Tencent,
            FaultControls {
                latency_ms: 10_000,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = vendor(TencentConfig {
        timeout_ms: 1_000,
        ..sandbox.tencent_config()
    })
    .send(&sms(&["1"], &["+8613800138000"]))
    .await
    .unwrap_err();
    assert_eq!(e, VendorError::TimedOut);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn more_than_two_hundred_recipients_are_split_into_calls() {
    let sandbox = start().await;
    let numbers = mobiles(450);
    let receipt = vendor(sandbox.tencent_config())
        .send(&sms(&["1"], &numbers))
        .await
        .unwrap();
    assert_eq!(receipt.billed_messages, 450);
    assert_eq!(
        receipt.reported_billed,
        Some(450),
        "Fee summed over every call"
    );
    assert_eq!(receipt.vendor_message_id.split(',').count(), 450);
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 450);
    let recipients: Vec<&str> = delivered.iter().map(|d| d.recipient.as_str()).collect();
    assert_eq!(
        recipients,
        numbers.iter().map(String::as_str).collect::<Vec<_>>()
    );
    sandbox.stop().await.unwrap();
}
