//! Simulated vendors check what the real ones check: approved templates, signatures and
//! arguments, per-number limits on tokio's paused clock, billing by segment, each with
//! its vendor's own codes.

use std::time::Duration;

use sms_core::{
    MessageId, OutboundSms, SmsRequest, Templates, Vendor, VendorError, VendorId, VendorTemplate,
};
use sms_providers::ConfigError;
use sms_providers::delivery_log::DeliveryLog;
use sms_providers::rules::Protocol;
use sms_providers::simulated::{SimulatedVendor, SimulationSettings};
use tokio::time::advance;

const NUMBER: &str = "+8613800138000";

/// The gateway's catalogue, which the vendors approve too.
fn catalogue() -> Templates {
    serde_json::from_value(serde_json::json!({
        "login_code": {
            "text": "您的验证码是{1}，{2}分钟内有效。",
            "vendors": {
                "aliyun": {"id": "SMS_1", "params": ["code", "minutes"]},
                "tencent": {"id": "1001", "sign_name": "腾讯签名"},
                "cloopen": {"id": "9001"},
            }
        }
    }))
    .unwrap()
}

fn name(vendor: &str) -> VendorId {
    VendorId::new(vendor).unwrap()
}

/// A simulated vendor named `vendor` (its protocol by its name), signing with `默认签名`,
/// approving the catalogue.
fn strict(vendor: &str) -> SimulatedVendor {
    SimulatedVendor::new(
        name(vendor),
        SimulationSettings {
            sign_name: Some("默认签名".into()),
            ..SimulationSettings::default()
        },
        1,
        DeliveryLog::in_memory(),
    )
    .unwrap()
    .with_templates(catalogue())
}

/// `login_code` for `vendor`, as the gateway hands it over, with `args` to `recipients`.
fn login_code(vendor: &str, args: &[&str], recipients: &[&str]) -> OutboundSms {
    let request = SmsRequest::new("login_code", args.iter().copied(), recipients).unwrap();
    catalogue()
        .outbound(MessageId::new(), &request, &name(vendor))
        .unwrap()
}

/// The same message with the vendor's template changed by `change`: what a gateway with
/// a catalogue out of step with the vendor sends.
fn altered(mut sms: OutboundSms, change: impl FnOnce(&mut VendorTemplate)) -> OutboundSms {
    change(&mut sms.template);
    sms
}

fn misconfigured_code(result: Result<sms_core::Receipt, VendorError>) -> String {
    match result {
        Err(VendorError::Misconfigured { code, .. }) => code,
        other => panic!("expected Misconfigured, got {other:?}"),
    }
}

fn refused(result: Result<sms_core::Receipt, VendorError>) -> (String, String, Duration) {
    match result {
        Err(VendorError::RecipientRefused {
            code,
            message,
            retry_after,
        }) => (code, message, retry_after),
        other => panic!("expected RecipientRefused, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn each_vendor_refuses_what_it_has_not_approved_with_its_own_codes() {
    // (vendor, unknown template, bad signature, too few arguments, too many)
    let cases = [
        (
            "aliyun",
            "isv.SMS_TEMPLATE_ILLEGAL",
            Some("isv.SMS_SIGNATURE_ILLEGAL"),
            "isv.TEMPLATE_MISSING_PARAMETERS",
            "isv.TEMPLATE_PARAMS_ILLEGAL",
        ),
        (
            "tencent",
            "FailedOperation.TemplateIncorrectOrUnapproved",
            Some("FailedOperation.SignatureIncorrectOrUnapproved"),
            "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
            "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
        ),
        // Cloopen binds the signature to the template and checks none apart.
        ("cloopen", "160032", None, "160032", "160032"),
    ];
    for (vendor_name, template, signature, few, many) in cases {
        let vendor = strict(vendor_name);
        let ok = login_code(vendor_name, &["1234", "5"], &[NUMBER]);
        let unknown = altered(ok.clone(), |t| t.id = "404".into());
        assert_eq!(misconfigured_code(vendor.send(&unknown).await), template);
        let unsigned = altered(ok.clone(), |t| t.sign_name = Some("未批准".into()));
        match signature {
            Some(code) => assert_eq!(misconfigured_code(vendor.send(&unsigned).await), code),
            None => assert!(vendor.send(&unsigned).await.is_ok(), "{vendor_name}"),
        }
        let one = login_code(vendor_name, &["1234"], &["+8613800138001"]);
        assert_eq!(misconfigured_code(vendor.send(&one).await), few);
        let three = login_code(vendor_name, &["1234", "5", "x"], &["+8613800138002"]);
        assert_eq!(misconfigured_code(vendor.send(&three).await), many);
        let stats = vendor.stats();
        let refusals = if signature.is_some() { 4 } else { 3 };
        assert_eq!(stats.misconfigured, refusals, "{vendor_name}");
        assert_eq!(stats.failed, refusals, "{vendor_name}");
        // What the gateway's own catalogue maps goes through.
        let other_number = login_code(vendor_name, &["1234", "5"], &["+8613800138009"]);
        assert!(vendor.send(&other_number).await.is_ok(), "{vendor_name}");
        let error = VendorError::Misconfigured {
            code: template.into(),
            message: String::new(),
        };
        assert!(!error.counts_against_vendor());
    }
}

#[tokio::test(start_paused = true)]
async fn aliyun_checks_the_variable_names() {
    let vendor = strict("aliyun");
    let ok = login_code("aliyun", &["1234", "5"], &[NUMBER]);
    // Names the template does not have, for as many arguments as it takes.
    let renamed = altered(ok.clone(), |t| {
        t.params = vec!["code".into(), "mins".into()];
    });
    let error = vendor.send(&renamed).await.unwrap_err();
    assert!(
        matches!(&error, VendorError::Misconfigured { code, message }
            if code == "isv.TEMPLATE_MISSING_PARAMETERS" && message.contains("minutes")),
        "{error:?}"
    );
    assert!(vendor.delivery_log().is_empty());
    assert!(vendor.send(&ok).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_empty_catalogue_approves_any_template_and_signature() {
    let vendor = SimulatedVendor::aliyun(1, DeliveryLog::in_memory());
    let request = SmsRequest::new("anything_at_all", ["a", "b", "c"], [NUMBER]).unwrap();
    let sms = altered(OutboundSms::pass_through(MessageId::new(), request), |t| {
        t.sign_name = Some("任何签名".into());
    });
    let receipt = vendor.send(&sms).await.unwrap();
    assert_eq!(receipt.billed_messages, 1, "no text: one per recipient");
    assert_eq!(vendor.delivery_log().len(), 1);
}

/// Sends `sms` and expects it delivered.
async fn delivered(vendor: &SimulatedVendor, sms: &OutboundSms) {
    if let Err(e) = vendor.send(sms).await {
        panic!("expected a delivery, got {e:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn aliyun_refuses_a_number_per_minute_hour_and_day_under_one_signature() {
    let vendor = strict("aliyun");
    let m = || login_code("aliyun", &["1234", "5"], &[NUMBER]);
    delivered(&vendor, &m()).await;
    advance(Duration::from_millis(59_999)).await;
    assert_eq!(
        refused(vendor.send(&m()).await),
        (
            "isv.BUSINESS_LIMIT_CONTROL".into(),
            "触发分钟级流控Permits:1".into(),
            Duration::from_secs(60)
        )
    );
    // Another number has its own windows.
    delivered(
        &vendor,
        &login_code("aliyun", &["1234", "5"], &["+8613800138001"]),
    )
    .await;
    advance(Duration::from_millis(1)).await;
    delivered(&vendor, &m()).await;
    for _ in 0..3 {
        advance(Duration::from_secs(60)).await;
        delivered(&vendor, &m()).await;
    }
    advance(Duration::from_secs(60)).await;
    let (code, message, retry_after) = refused(vendor.send(&m()).await);
    assert_eq!(code, "isv.BUSINESS_LIMIT_CONTROL");
    assert_eq!(message, "触发小时级流控Permits:5");
    assert_eq!(retry_after, Duration::from_secs(3600));
    // The first of the five was at 0 s; it leaves the hour at 3600 s.
    advance(Duration::from_secs(3600 - 300 - 1)).await;
    assert_eq!(
        refused(vendor.send(&m()).await).1,
        "触发小时级流控Permits:5"
    );
    advance(Duration::from_secs(1)).await;
    delivered(&vendor, &m()).await;
    for _ in 0..4 {
        advance(Duration::from_secs(3600)).await;
        delivered(&vendor, &m()).await;
    }
    advance(Duration::from_secs(3600)).await;
    let (_, message, retry_after) = refused(vendor.send(&m()).await);
    assert_eq!(message, "触发天级流控Permits:10");
    assert_eq!(retry_after, Duration::from_secs(86_400));
    let stats = vendor.stats();
    assert_eq!((stats.succeeded, stats.recipient_refused), (11, 4));
    assert_eq!(vendor.delivery_log().len(), 11);
}

#[tokio::test(start_paused = true)]
async fn tencent_refuses_the_same_content_within_30_s_and_an_eleventh_a_day() {
    let vendor = strict("tencent");
    let with = |code: &str| login_code("tencent", &[code, "5"], &[NUMBER]);
    delivered(&vendor, &with("1111")).await;
    advance(Duration::from_millis(29_999)).await;
    assert_eq!(
        refused(vendor.send(&with("1111")).await).0,
        "LimitExceeded.PhoneNumberThirtySecondLimit"
    );
    delivered(&vendor, &with("2222")).await;
    advance(Duration::from_millis(1)).await;
    delivered(&vendor, &with("1111")).await;
    for i in 0..7 {
        delivered(&vendor, &with(&format!("c{i}"))).await;
    }
    let (code, _, retry_after) = refused(vendor.send(&with("c7")).await);
    assert_eq!(code, "LimitExceeded.PhoneNumberDailyLimit");
    assert_eq!(retry_after, Duration::from_secs(86_400));
    // The first was sent 30 s ago; a day after it the number may receive again.
    advance(Duration::from_secs(86_400 - 30) - Duration::from_millis(1)).await;
    assert!(vendor.send(&with("c7")).await.is_err());
    advance(Duration::from_millis(1)).await;
    delivered(&vendor, &with("c7")).await;
}

#[tokio::test(start_paused = true)]
async fn cloopen_refuses_the_same_template_within_a_minute_and_an_eleventh_a_day() {
    let vendor = strict("cloopen");
    let m = |code: &str| login_code("cloopen", &[code, "5"], &[NUMBER]);
    delivered(&vendor, &m("1")).await;
    advance(Duration::from_millis(59_999)).await;
    // Other arguments, same template: still too often.
    let (code, _, retry_after) = refused(vendor.send(&m("2")).await);
    assert_eq!(
        (code.as_str(), retry_after),
        ("160038", Duration::from_secs(60))
    );
    advance(Duration::from_millis(1)).await;
    for i in 0..9 {
        delivered(&vendor, &m(&i.to_string())).await;
        advance(Duration::from_secs(60)).await;
    }
    let (code, _, retry_after) = refused(vendor.send(&m("x")).await);
    assert_eq!(
        (code.as_str(), retry_after),
        ("160039", Duration::from_secs(86_400))
    );
}

#[tokio::test(start_paused = true)]
async fn per_number_limits_can_be_switched_off() {
    let vendor = SimulatedVendor::new(
        name("aliyun"),
        SimulationSettings {
            per_number_limits: false,
            ..SimulationSettings::default()
        },
        1,
        DeliveryLog::in_memory(),
    )
    .unwrap()
    .with_templates(catalogue());
    for _ in 0..20 {
        delivered(&vendor, &login_code("aliyun", &["1234", "5"], &[NUMBER])).await;
    }
    // Approvals still apply.
    let unknown = altered(login_code("aliyun", &["1", "2"], &[NUMBER]), |t| {
        t.id = "SMS_404".into()
    });
    assert!(vendor.send(&unknown).await.is_err());
    // Switched back on, the next send starts the window.
    vendor.set_settings(SimulationSettings::default()).unwrap();
    delivered(&vendor, &login_code("aliyun", &["1234", "5"], &[NUMBER])).await;
    assert!(
        vendor
            .send(&login_code("aliyun", &["1234", "5"], &[NUMBER]))
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn aliyun_refuses_a_whole_request_when_one_number_is_over_its_limit() {
    let vendor = strict("aliyun");
    delivered(&vendor, &login_code("aliyun", &["1", "5"], &[NUMBER])).await;
    let both = login_code("aliyun", &["1", "5"], &["+8613800138001", NUMBER]);
    refused(vendor.send(&both).await);
    assert_eq!(vendor.delivery_log().len(), 1);
    // The other number's message was not counted.
    delivered(
        &vendor,
        &login_code("aliyun", &["1", "5"], &["+8613800138001"]),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn tencent_sends_to_the_numbers_within_their_limits_and_says_it_did_part() {
    let vendor = strict("tencent");
    let m = |recipients: &[&str]| login_code("tencent", &["1234", "5"], recipients);
    delivered(&vendor, &m(&[NUMBER])).await;
    let error = vendor
        .send(&m(&["+8613800138001", NUMBER]))
        .await
        .unwrap_err();
    match &error {
        VendorError::PartlySent {
            sent,
            receipt,
            error,
        } => {
            let sent: Vec<&str> = sent.iter().map(|n| n.as_str()).collect();
            assert_eq!(sent, ["+8613800138001"]);
            assert_eq!(
                (receipt.billed_messages, receipt.reported_billed),
                (1, Some(1))
            );
            let (code, _, retry_after) = refused(Err((**error).clone()));
            assert_eq!(code, "LimitExceeded.PhoneNumberThirtySecondLimit");
            assert_eq!(retry_after, Duration::from_secs(30));
        }
        other => panic!("expected PartlySent, got {other:?}"),
    }
    let records = vendor.delivery_log().records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].recipient.as_str(), "+8613800138001");
    // Every number refused: the refusal itself, the longest wait of them.
    advance(Duration::from_secs(1)).await;
    let (code, _, _) = refused(vendor.send(&m(&["+8613800138001", NUMBER])).await);
    assert_eq!(code, "LimitExceeded.PhoneNumberThirtySecondLimit");
    // The partly sent one counts by why the others were not sent, and bills what went.
    let stats = vendor.stats();
    assert_eq!(
        (stats.succeeded, stats.recipient_refused, stats.rejected),
        (1, 2, 0)
    );
    assert_eq!(stats.billed_messages, 2);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_chinese_characters_to_one_mainland_number_are_billed_two() {
    let templates: Templates = serde_json::from_value(serde_json::json!({
        "notice": {"text": "{1}", "vendors": {
            "aliyun": {"id": "SMS_9", "params": ["body"]},
            "tencent": {"id": "2002"},
        }}
    }))
    .unwrap();
    let request = SmsRequest::new("notice", ["通".repeat(100)], [NUMBER]).unwrap();
    for (vendor_name, reported) in [("aliyun", None), ("tencent", Some(2))] {
        let vendor = SimulatedVendor::new(
            name(vendor_name),
            SimulationSettings::default(),
            1,
            DeliveryLog::in_memory(),
        )
        .unwrap()
        .with_templates(templates.clone());
        let sms = templates
            .outbound(MessageId::new(), &request, &name(vendor_name))
            .unwrap();
        let receipt = vendor.send(&sms).await.unwrap();
        assert_eq!(receipt.billed_messages, 2, "{vendor_name}");
        assert_eq!(receipt.reported_billed, reported, "{vendor_name}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_signature_counts_in_what_is_billed_and_tencent_reports_it_too() {
    let vendor = strict("tencent");
    // 【腾讯签名】 (6) + 您的验证码是 (6) + 50 + ，5分钟内有效。 (8) = 70: one message;
    // one more character makes two.
    let fits = login_code("tencent", &[&"1".repeat(50), "5"], &[NUMBER]);
    let receipt = vendor.send(&fits).await.unwrap();
    assert_eq!(
        (receipt.billed_messages, receipt.reported_billed),
        (1, Some(1))
    );
    let over = login_code("tencent", &[&"1".repeat(51), "5"], &["+8613800138001"]);
    let receipt = vendor.send(&over).await.unwrap();
    assert_eq!(
        (receipt.billed_messages, receipt.reported_billed),
        (2, Some(2))
    );
    assert_eq!(vendor.stats().billed_messages, 3);
}

#[tokio::test(start_paused = true)]
async fn without_a_known_text_tencent_reports_at_least_the_arguments() {
    // The gateway knows no text (one per recipient); Tencent bills its own text, of
    // which the arguments are a part.
    let vendor = SimulatedVendor::tencent(1, DeliveryLog::in_memory());
    let request = SmsRequest::new("any", ["长".repeat(100)], [NUMBER]).unwrap();
    let receipt = vendor
        .send(&OutboundSms::pass_through(MessageId::new(), request))
        .await
        .unwrap();
    assert_eq!(receipt.billed_messages, 1);
    assert_eq!(receipt.reported_billed, Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_protocol_comes_from_the_setting_or_the_name() {
    assert_eq!(strict("cloopen").protocol(), Protocol::Cloopen);
    let e = SimulatedVendor::new(
        name("quiet"),
        SimulationSettings::default(),
        1,
        DeliveryLog::in_memory(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::Simulation { field, .. } if field == "protocol"),
        "{e}"
    );
    let quiet = SimulatedVendor::new(
        name("quiet"),
        SimulationSettings {
            protocol: Some(Protocol::Tencent),
            ..SimulationSettings::default()
        },
        1,
        DeliveryLog::in_memory(),
    )
    .unwrap();
    assert_eq!(quiet.settings().protocol, Some(Protocol::Tencent));
    let request = SmsRequest::new("any", ["1"], [NUMBER]).unwrap();
    let receipt = quiet
        .send(&OutboundSms::pass_through(MessageId::new(), request))
        .await
        .unwrap();
    assert_eq!(receipt.reported_billed, Some(1), "Tencent reports Fee");
    // New settings without a protocol keep the one the vendor speaks; with one, switch.
    quiet.set_settings(SimulationSettings::default()).unwrap();
    assert_eq!(quiet.protocol(), Protocol::Tencent);
    quiet
        .set_settings(SimulationSettings {
            protocol: Some(Protocol::Cloopen),
            ..SimulationSettings::default()
        })
        .unwrap();
    assert_eq!(quiet.protocol(), Protocol::Cloopen);
    // The name decides for the vendors' own names, unless the setting says otherwise.
    let aliyun_as_tencent = SimulatedVendor::new(
        name("aliyun"),
        SimulationSettings {
            protocol: Some(Protocol::Tencent),
            ..SimulationSettings::default()
        },
        1,
        DeliveryLog::in_memory(),
    )
    .unwrap();
    assert_eq!(aliyun_as_tencent.protocol(), Protocol::Tencent);
}

#[tokio::test(start_paused = true)]
async fn faults_come_before_the_vendors_checks() {
    let vendor = strict("aliyun");
    vendor.set_outage(true);
    let unknown = altered(login_code("aliyun", &["1", "5"], &[NUMBER]), |t| {
        t.id = "SMS_404".into()
    });
    let error = vendor.send(&unknown).await.unwrap_err();
    assert_eq!(error.kind(), "transient", "{error}");
    vendor.set_outage(false);
    assert_eq!(
        vendor.send(&unknown).await.unwrap_err().kind(),
        "misconfigured"
    );
}
