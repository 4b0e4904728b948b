use super::*;

#[test]
fn secret_never_shows_in_debug_or_display() {
    let secret = Secret::new("hunter2-very-secret");
    assert_eq!(format!("{secret:?}"), "Secret(***)");
    assert_eq!(format!("{secret}"), "***");
    assert_eq!(secret.expose(), "hunter2-very-secret");
    let config = AliyunConfig {
        access_key_id: "LTAIexample".into(),
        access_key_secret: secret,
        sign_name: "sign".into(),
        ..AliyunConfig::default()
    };
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.contains("LTAIexample"),
        "key ids are not secret: {debug}"
    );
}

#[test]
fn settings_and_the_environment_build_a_vendor() {
    let settings: TencentConfig = toml::from_str(
        r#"
        base_url = "http://127.0.0.1:9/"
        secret_id = "AKIDfromtable"
        sdk_app_id = "1400"
        timeout_ms = 500
        "#,
    )
    .unwrap();
    let env = |k: &str| (k == "SMS_TENCENT_SECRET_KEY").then(|| "from-env".to_owned());
    let id = sms_core::VendorId::new("tencent-backup").unwrap();
    let settings = settings.with_env_from(&env).unwrap();
    let vendor = TencentVendor::with_id(id.clone(), settings).unwrap();
    assert_eq!(sms_core::Vendor::id(&vendor), id);
    // Without the secret anywhere, building fails and names the variable.
    let e = CloopenConfig::default()
        .with_env_from(&|_| None)
        .unwrap_err();
    assert!(e.to_string().contains("SMS_CLOOPEN_ACCOUNT_SID"), "{e}");
    let e = toml::from_str::<AliyunConfig>("acess_key_id = \"x\"").unwrap_err();
    assert!(e.to_string().contains("acess_key_id"), "{e}");
}

#[test]
fn serialised_settings_hide_the_credentials() {
    let config = AliyunConfig {
        access_key_id: "LTAIexample".into(),
        access_key_secret: Secret::new("hunter2-very-secret"),
        ..AliyunConfig::default()
    };
    let shown = toml::to_string(&config).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("access_key_secret = \"***\""), "{shown}");
}

#[test]
fn split_send_reports_untouched_error_when_nothing_was_accepted() {
    let split = SplitSend::new("tencent", 300);
    let e = split.fail(VendorError::TimedOut);
    assert_eq!(e, VendorError::TimedOut);
}

fn numbers(count: usize) -> Vec<PhoneNumber> {
    (0..count)
        .map(|i| PhoneNumber::parse(&format!("+86139{i:08}")).unwrap())
        .collect()
}

#[test]
fn split_send_failing_after_acceptances_is_partly_sent_with_their_receipt() {
    let recipients = numbers(300);
    let mut split = SplitSend::new("tencent", recipients.len());
    split.accept("s1".into(), &recipients[..150], 300, Some(300));
    split.accept("s2".into(), &recipients[150..200], 100, Some(101));
    let e = split.fail(VendorError::Transient {
        message: "boom".into(),
    });
    match e {
        VendorError::PartlySent {
            sent,
            receipt,
            error,
        } => {
            assert_eq!(sent, recipients[..200], "the accepted, in order");
            assert_eq!(
                receipt,
                Receipt {
                    vendor_message_id: "s1,s2".into(),
                    billed_messages: 400,
                    reported_billed: Some(401),
                    // Each recipient under the id of the call that took it.
                    recipient_ids: recipients[..200]
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (n.clone(), if i < 150 { "s1" } else { "s2" }.into()))
                        .collect(),
                }
            );
            assert_eq!(receipt.id_of(&recipients[149]), "s1");
            assert_eq!(receipt.id_of(&recipients[150]), "s2");
            assert_eq!(
                *error,
                VendorError::Transient {
                    message: "boom".into()
                }
            );
        }
        other => panic!("expected PartlySent, got {other:?}"),
    }
}

#[test]
fn a_call_timing_out_after_acceptances_is_partly_sent_with_timed_out_inside() {
    let recipients = numbers(150);
    let mut split = SplitSend::new("cloopen", recipients.len());
    split.accept("c1".into(), &recipients[..100], 100, None);
    let e = split.fail(VendorError::TimedOut);
    assert_eq!(e.cause(), &VendorError::TimedOut);
    assert_eq!(e.kind(), "timed_out");
    match e {
        VendorError::PartlySent { sent, receipt, .. } => {
            assert_eq!(sent, recipients[..100]);
            assert_eq!(receipt.billed_messages, 100);
            assert_eq!(receipt.reported_billed, None, "cloopen reports no count");
        }
        other => panic!("expected PartlySent, got {other:?}"),
    }
}

#[test]
fn split_send_sums_billing_and_joins_ids() {
    let recipients = numbers(3);
    let mut split = SplitSend::new("aliyun", 3);
    split.accept("a".into(), &recipients[..2], 2, None);
    split.accept("b".into(), &recipients[2..], 3, None);
    let r = split.finish();
    assert_eq!(r.vendor_message_id, "a,b");
    assert_eq!(r.billed_messages, 5);
    assert_eq!(r.reported_billed, None, "aliyun reports no count");
}

#[test]
fn split_send_reports_the_vendors_count_only_when_every_call_gave_one() {
    let recipients = numbers(3);
    let mut split = SplitSend::new("tencent", 3);
    split.accept("a".into(), &recipients[..1], 2, Some(2));
    split.accept("b".into(), &recipients[1..], 4, Some(5));
    let r = split.finish();
    assert_eq!(r.billed_messages, 6);
    assert_eq!(r.reported_billed, Some(7));
    let mut split = SplitSend::new("tencent", 2);
    split.accept("a".into(), &recipients[..1], 2, Some(2));
    split.accept("b".into(), &recipients[1..2], 2, None);
    assert_eq!(split.finish().reported_billed, None);
}

#[test]
fn split_send_time_covers_every_call_only_when_there_are_several() {
    let per_call = Duration::from_millis(1500);
    assert_eq!(split_send_time(per_call, 100, 0), None);
    assert_eq!(split_send_time(per_call, 100, 1), None);
    assert_eq!(split_send_time(per_call, 100, 100), None, "one full call");
    assert_eq!(
        split_send_time(per_call, 100, 101),
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        split_send_time(per_call, 100, 1000),
        Some(Duration::from_secs(15))
    );
    assert_eq!(
        split_send_time(per_call, 100, 1001),
        Some(Duration::from_millis(16_500))
    );
    // Absurd counts saturate rather than overflow.
    assert_eq!(split_send_time(Duration::MAX, 1, 2), Some(Duration::MAX));
}

#[test]
fn each_adapter_bounds_a_split_send_by_its_timeout_times_its_calls() {
    use sms_core::Vendor;
    let aliyun = AliyunVendor::new(AliyunConfig {
        base_url: "http://127.0.0.1:9/".into(),
        access_key_id: "id".into(),
        access_key_secret: Secret::new("s"),
        timeout_ms: 2_000,
        ..AliyunConfig::default()
    })
    .unwrap();
    assert_eq!(
        aliyun.split_send_time(aliyun::MAX_RECIPIENTS_PER_CALL),
        None
    );
    assert_eq!(
        aliyun.split_send_time(aliyun::MAX_RECIPIENTS_PER_CALL + 1),
        Some(Duration::from_secs(4))
    );
    let tencent = TencentVendor::new(TencentConfig {
        base_url: "http://127.0.0.1:9/".into(),
        secret_id: "AKID".into(),
        secret_key: Secret::new("k"),
        timeout_ms: 500,
        ..TencentConfig::default()
    })
    .unwrap();
    assert_eq!(tencent.split_send_time(1), None);
    assert_eq!(
        tencent.split_send_time(tencent::MAX_RECIPIENTS_PER_CALL),
        None
    );
    assert_eq!(
        tencent.split_send_time(3 * tencent::MAX_RECIPIENTS_PER_CALL),
        Some(Duration::from_millis(1_500))
    );
    let cloopen = CloopenVendor::new(CloopenConfig {
        base_url: "http://127.0.0.1:9/".into(),
        account_sid: "sid".into(),
        auth_token: Secret::new("t"),
        app_id: "app".into(),
        ..CloopenConfig::default()
    })
    .unwrap();
    assert_eq!(
        cloopen.split_send_time(cloopen::MAX_RECIPIENTS_PER_CALL),
        None
    );
    assert_eq!(
        cloopen.split_send_time(cloopen::MAX_RECIPIENTS_PER_CALL + 1),
        Some(2 * DEFAULT_TIMEOUT),
        "the default timeout when none is configured"
    );
}

fn outbound(text: Option<&str>, sign_name: Option<&str>, recipients: &[&str]) -> OutboundSms {
    let request =
        sms_core::SmsRequest::new("login_code", ["1"], recipients.iter().copied()).unwrap();
    OutboundSms {
        id: sms_core::MessageId::new(),
        request,
        template: sms_core::VendorTemplate {
            id: "SMS_1".into(),
            params: Vec::new(),
            sign_name: sign_name.map(str::to_owned),
        },
        text: text.map(str::to_owned),
    }
}

#[test]
fn billing_counts_the_signed_text_per_recipient_and_adds_up_over_chunks() {
    // 【腾讯云】 is 5 characters: with 95 more, 100 characters to a mainland number
    // are two messages.
    let body = "码".repeat(95);
    let numbers = ["+8613800138000", "+8613800138001", "+14155550100"];
    let sms = outbound(Some(&body), None, &numbers);
    let billing = Billing::new(&sms, sms.signature("腾讯云"));
    let recipients = sms.request.recipients();
    assert_eq!(billing.of(&recipients[0]), 2);
    // Abroad the text is UCS-2 too (Chinese): 100 units, two segments.
    assert_eq!(billing.of(&recipients[2]), 2);
    let chunked: u64 = recipients.chunks(2).map(|c| billing.of_all(c)).sum();
    assert_eq!(chunked, 6);
    assert_eq!(chunked, sms.billed_segments("腾讯云"));
    // A shorter signature of the template's own makes the text fit one message.
    let sms = outbound(Some(&"码".repeat(66)), Some("短签"), &numbers[..1]);
    let billing = Billing::new(&sms, sms.signature("a much longer signature"));
    assert_eq!(billing.of_all(sms.request.recipients()), 1);
    // Without a text: one per recipient.
    let sms = outbound(None, None, &numbers);
    assert_eq!(Billing::new(&sms, "x").of_all(sms.request.recipients()), 3);
}

#[test]
fn status_without_vendor_code_maps_by_class() {
    assert!(matches!(
        status_error("x", 503, "down"),
        VendorError::Transient { .. }
    ));
    assert!(matches!(
        status_error("x", 429, ""),
        VendorError::Throttled { .. }
    ));
    assert_eq!(status_error("x", 200, "<html>"), VendorError::TimedOut);
    assert!(matches!(
        status_error("x", 403, "no"),
        VendorError::Unauthorized { code, .. } if code == "HTTP_403"
    ));
    assert!(matches!(
        status_error("x", 401, "no"),
        VendorError::Unauthorized { code, .. } if code == "HTTP_401"
    ));
    assert!(matches!(
        status_error("x", 404, "no"),
        VendorError::Rejected { code, .. } if code == "HTTP_404"
    ));
}

#[test]
fn host_header_keeps_non_default_ports_only() {
    let u = reqwest::Url::parse("https://sms.tencentcloudapi.com/").unwrap();
    assert_eq!(host_header(&u), "sms.tencentcloudapi.com");
    let u = reqwest::Url::parse("http://127.0.0.1:8080/").unwrap();
    assert_eq!(host_header(&u), "127.0.0.1:8080");
}

#[test]
fn bad_base_urls_are_refused() {
    assert!(parse_base_url("aliyun", "ftp://x/").is_err());
    assert!(parse_base_url("aliyun", "not a url").is_err());
    assert!(parse_base_url("aliyun", "http://127.0.0.1:1/").is_ok());
}

#[test]
fn mainland_mobiles_are_recognised() {
    assert!(is_mainland_mobile(
        &PhoneNumber::parse("+8613800138000").unwrap()
    ));
    assert!(!is_mainland_mobile(
        &PhoneNumber::parse("+862012345678").unwrap()
    ));
    assert!(!is_mainland_mobile(
        &PhoneNumber::parse("+14155550100").unwrap()
    ));
}
