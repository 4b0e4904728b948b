//! The Cloopen adapter against the sandbox.

use std::time::Duration;

use sms_core::{Vendor, VendorError};
use sms_providers::http::{CloopenConfig, CloopenVendor, Secret};
use sms_providers::sandbox::{FaultControls, SandboxVendor};

use crate::support::{mapped, mobiles, sms, start};

fn vendor(config: CloopenConfig) -> CloopenVendor {
    CloopenVendor::new(config).expect("valid config")
}

#[tokio::test]
async fn sends_to_mainland_and_international_numbers() {
    let sandbox = start().await;
    let receipt = vendor(sandbox.cloopen_config())
        .send(&sms(&["1234", "5"], &["+8613800138000", "+14155550100"]))
        .await
        .unwrap();
    assert_eq!(receipt.billed_messages, 2);
    assert_eq!(receipt.vendor_message_id.len(), 32);
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[1].recipient, "+14155550100");
    assert_eq!(delivered[0].args, vec!["1234".to_owned(), "5".to_owned()]);
    assert_eq!(receipt.reported_billed, None);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn sends_the_vendors_template_id_and_bills_the_text() {
    let sandbox = start().await;
    // Cloopen's settings name no signature; the catalogue's 【容联云】 (5 characters)
    // and 95 more make 100, two segments to a mainland number.
    let text = "码".repeat(95);
    let message = mapped(
        sms(&[text.as_str()], &["+8613800138000"]),
        "1",
        &[],
        Some("容联云"),
        Some(text.clone()),
    );
    let receipt = vendor(sandbox.cloopen_config())
        .send(&message)
        .await
        .unwrap();
    assert_eq!(receipt.billed_messages, 2);
    let delivered = sandbox.deliveries();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].template, "1",
        "the vendor's id, not the caller's name"
    );
    assert_eq!(delivered[0].sign_name, None, "Cloopen sends no signature");
    assert_eq!(delivered[0].args, vec![text]);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn codes_sent_too_often_refuse_the_recipient_for_a_minute() {
    let sandbox = start().await;
    let cloopen = vendor(sandbox.cloopen_config());
    cloopen
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap();
    // Cloopen lets one template reach one number once a minute.
    let e = cloopen
        .send(&sms(&["2"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        VendorError::RecipientRefused {
            code: "160038".into(),
            message: "短信验证码发送过频繁".into(),
            retry_after: Duration::from_secs(60),
        }
    );
    assert_eq!(sandbox.deliveries().len(), 1);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn too_many_requests_is_throttling() {
    let sandbox = start().await;
    sandbox
        .set_faults(
            SandboxVendor::Cloopen,
            FaultControls {
                throttle_rate: 1.0,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = vendor(sandbox.cloopen_config())
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(matches!(e, VendorError::Throttled { .. }), "{e:?}");
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_number_is_rejected() {
    let sandbox = start().await;
    let e = vendor(sandbox.cloopen_config())
        .send(&sms(&["1"], &["+862012345678"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Rejected { code, .. } if code == "160042"),
        "{e:?}"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_token_or_account_is_unauthorized() {
    let sandbox = start().await;
    let e = vendor(CloopenConfig {
        auth_token: Secret::new("wrong"),
        ..sandbox.cloopen_config()
    })
    .send(&sms(&["1"], &["+8613800138000"]))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "111109"),
        "{e:?}"
    );
    let e = vendor(CloopenConfig {
        account_sid: "someoneelse".into(),
        ..sandbox.cloopen_config()
    })
    .send(&sms(&["1"], &["+8613800138000"]))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, VendorError::Unauthorized { code, .. } if code == "111141"),
        "{e:?}"
    );
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn server_errors_and_outages_are_transient() {
    let sandbox = start().await;
    let cloopen = vendor(sandbox.cloopen_config());
    sandbox
        .set_faults(
            SandboxVendor::Cloopen,
            FaultControls {
                error_rate: 1.0,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = cloopen
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(matches!(e, VendorError::Transient { .. }), "{e:?}");
    sandbox
        .set_faults(
            SandboxVendor::Cloopen,
            FaultControls {
                outage: true,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = cloopen
        .send(&sms(&["1"], &["+8613800138000"]))
        .await
        .unwrap_err();
    assert!(matches!(e, VendorError::Transient { .. }), "{e:?}");
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn no_answer_in_time_is_an_unknown_outcome() {
    let sandbox = start().await;
    sandbox
        .set_faults(
            SandboxVendor::Cloopen,
            FaultControls {
                latency_ms: 10_000,
                ..FaultControls::default()
            },
        )
        .unwrap();
    let e = vendor(CloopenConfig {
        timeout_ms: 1_000,
        ..sandbox.cloopen_config()
    })
    .send(&sms(&["1"], &["+8613800138000"]))
    .await
    .unwrap_err();
    assert_eq!(e, VendorError::TimedOut);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_split_that_fails_in_its_second_call_reports_what_went_out() {
    let sandbox = start().await;
    let mut numbers = mobiles(150);
    // The 121st number is a landline: the second call (numbers 101 to 150) is refused
    // whole, after the first hundred were sent.
    numbers[120] = "+862012345678".into();
    let e = vendor(sandbox.cloopen_config())
        .send(&sms(&["1"], &numbers))
        .await
        .unwrap_err();
    match e {
        VendorError::PartlySent {
            sent,
            receipt,
            error,
        } => {
            let first_call: Vec<&str> = numbers[..100].iter().map(String::as_str).collect();
            let sent: Vec<&str> = sent.iter().map(|n| n.as_str()).collect();
            assert_eq!(sent, first_call);
            assert_eq!(receipt.billed_messages, 100, "no text known: one each");
            assert!(
                matches!(&*error, VendorError::Rejected { code, .. } if code == "160042"),
                "{error:?}"
            );
        }
        other => panic!("expected PartlySent, got {other:?}"),
    }
    assert_eq!(sandbox.deliveries().len(), 100);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_split_that_fails_in_its_first_call_is_that_calls_error() {
    let sandbox = start().await;
    let mut numbers = mobiles(150);
    numbers[5] = "+862012345678".into();
    let e = vendor(sandbox.cloopen_config())
        .send(&sms(&["1"], &numbers))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VendorError::Rejected { code, .. } if code == "160042"),
        "{e:?}"
    );
    // Sending stopped at the first refused call: the second was never made.
    assert!(sandbox.deliveries().is_empty());
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_transport_error_does_not_carry_the_signed_url() {
    let e = vendor(CloopenConfig {
        base_url: crate::support::dead_base_url().await,
        account_sid: "sid".into(),
        auth_token: Secret::new("token"),
        app_id: "app".into(),
        ..CloopenConfig::default()
    })
    .send(&sms(&["1"], &["+8613800138000"]))
    .await
    .unwrap_err();
    match e {
        VendorError::Transient { message } => {
            // The `sig` query parameter is derived from the token: it stays out of errors
            // (and so out of logs and stored attempt records).
            assert!(!message.contains("sig="), "{message}");
            assert!(!message.contains("TemplateSMS"), "{message}");
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
}
