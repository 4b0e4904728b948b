//! Tencent Cloud SMS `SendSms`, API version 2021-01-11, signed with TC3-HMAC-SHA256 and
//! sent as a JSON POST. The adapter also pulls delivery receipts with
//! `PullSmsSendStatus` ([`sms_core::ReceiptPull`]), for an account without a status
//! callback.

mod codes;
mod pull;

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sms_core::{OutboundSms, PhoneNumber, Receipt, Vendor, VendorError, VendorId};

use self::codes::classify;
use super::sign::{TC3_CONTENT_TYPE, Tc3Input, tc3_sign};
use super::{
    Billing, DEFAULT_TIMEOUT, HttpConfigError, Secret, SplitSend, build_client, host_header,
    override_from_env, parse_base_url, process_env, read_answer_body, require, split_send_time,
    status_error, transport_error,
};

/// The real endpoint.
pub const DEFAULT_BASE_URL: &str = "https://sms.tencentcloudapi.com/";
/// Most numbers one `SendSms` call takes.
pub const MAX_RECIPIENTS_PER_CALL: usize = 200;
/// The API version this adapter speaks.
pub const API_VERSION: &str = "2021-01-11";

const VENDOR: &str = "tencent";

/// Settings of the Tencent Cloud adapter. Credentials may be left out and read from the
/// environment with [`TencentConfig::with_env`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TencentConfig {
    /// Where to send (`https://sms.tencentcloudapi.com/`, or a sandbox).
    pub base_url: String,
    /// SecretId (`SMS_TENCENT_SECRET_ID`).
    pub secret_id: String,
    /// SecretKey (`SMS_TENCENT_SECRET_KEY`).
    pub secret_key: Secret,
    /// `SmsSdkAppId` (`SMS_TENCENT_SDK_APP_ID`).
    pub sdk_app_id: String,
    /// `SignName`, required for mainland numbers (`SMS_TENCENT_SIGN_NAME`), unless the
    /// message's template names its own.
    pub sign_name: String,
    /// `X-TC-Region`, `ap-guangzhou` by default.
    pub region: String,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Default for TencentConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            secret_id: String::new(),
            secret_key: Secret::default(),
            sdk_app_id: String::new(),
            sign_name: String::new(),
            region: "ap-guangzhou".to_owned(),
            timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
        }
    }
}

impl TencentConfig {
    /// Fills missing settings from the process environment (`SMS_TENCENT_SECRET_ID`,
    /// `SMS_TENCENT_SECRET_KEY`, `SMS_TENCENT_SDK_APP_ID`, `SMS_TENCENT_SIGN_NAME`;
    /// `SMS_TENCENT_BASE_URL` overrides the URL), and fails if a required one is missing.
    pub fn with_env(self) -> Result<Self, HttpConfigError> {
        self.with_env_from(&process_env)
    }

    /// [`TencentConfig::with_env`] with a given variable lookup.
    pub fn with_env_from(
        mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, HttpConfigError> {
        override_from_env(&mut self.base_url, "SMS_TENCENT_BASE_URL", lookup);
        require(
            &mut self.secret_id,
            VENDOR,
            "secret_id",
            "SMS_TENCENT_SECRET_ID",
            lookup,
        )?;
        require(
            &mut self.secret_key.0,
            VENDOR,
            "secret_key",
            "SMS_TENCENT_SECRET_KEY",
            lookup,
        )?;
        require(
            &mut self.sdk_app_id,
            VENDOR,
            "sdk_app_id",
            "SMS_TENCENT_SDK_APP_ID",
            lookup,
        )?;
        if self.sign_name.is_empty() {
            override_from_env(&mut self.sign_name, "SMS_TENCENT_SIGN_NAME", lookup);
        }
        Ok(self)
    }
}

/// The Tencent Cloud adapter: one HTTP client, reused for every send.
#[derive(Debug)]
pub struct TencentVendor {
    id: VendorId,
    config: TencentConfig,
    url: reqwest::Url,
    host: String,
    client: reqwest::Client,
}

/// The `SendSms` body. Field order is fixed so the signed bytes are the sent bytes.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendSmsBody<'a> {
    phone_number_set: Vec<&'a str>,
    sms_sdk_app_id: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    sign_name: &'a str,
    template_param_set: &'a [String],
    session_context: String,
}

impl TencentVendor {
    /// An adapter named `tencent`.
    pub fn new(config: TencentConfig) -> Result<Self, HttpConfigError> {
        Self::with_id(VendorId::new(VENDOR).expect("valid vendor id"), config)
    }

    /// An adapter under another vendor name.
    pub fn with_id(id: VendorId, config: TencentConfig) -> Result<Self, HttpConfigError> {
        let url = parse_base_url(VENDOR, &config.base_url)?;
        if config.secret_id.is_empty() || config.secret_key.is_empty() {
            return Err(HttpConfigError::Missing {
                vendor: VENDOR,
                field: "secret_id/secret_key",
                env: "SMS_TENCENT_SECRET_ID",
            });
        }
        let client = build_client(VENDOR, Duration::from_millis(config.timeout_ms))?;
        Ok(Self {
            id,
            host: host_header(&url),
            config,
            url,
            client,
        })
    }

    /// The `SendSms` body: the vendor's template id and the template's signature or ours.
    fn body(&self, sms: &OutboundSms, numbers: &[PhoneNumber]) -> String {
        let body = SendSmsBody {
            phone_number_set: numbers.iter().map(PhoneNumber::as_str).collect(),
            sms_sdk_app_id: &self.config.sdk_app_id,
            template_id: &sms.template.id,
            sign_name: sms.signature(&self.config.sign_name),
            template_param_set: sms.request.args(),
            session_context: sms.id.to_string(),
        };
        serde_json::to_string(&body).expect("the body serialises")
    }

    async fn send_call(
        &self,
        sms: &OutboundSms,
        numbers: &[PhoneNumber],
        billing: &Billing,
        split: &mut SplitSend,
    ) -> Result<(), VendorError> {
        let (status, text) = self.call("SendSms", self.body(sms, numbers)).await?;
        read_answer(status, &text, numbers, billing, split)
    }

    /// Signs `payload` for `action` (TC3-HMAC-SHA256) and posts it: the answer's HTTP
    /// status and body. Every action of the API is called this way.
    async fn call(&self, action: &str, payload: String) -> Result<(u16, String), VendorError> {
        let timestamp = Utc::now().timestamp();
        let signed = tc3_sign(&Tc3Input {
            secret_id: &self.config.secret_id,
            secret_key: self.config.secret_key.expose(),
            service: "sms",
            host: &self.host,
            timestamp,
            payload: &payload,
        });
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::AUTHORIZATION, signed.authorization)
            .header(reqwest::header::CONTENT_TYPE, TC3_CONTENT_TYPE)
            .header("X-TC-Action", action)
            .header("X-TC-Version", API_VERSION)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Region", &self.config.region)
            .body(payload)
            .send()
            .await
            .map_err(|e| transport_error(VENDOR, &e))?;
        read_answer_body(VENDOR, response).await
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: AnswerBody,
}

#[derive(Debug, Deserialize)]
struct AnswerBody {
    #[serde(rename = "Error")]
    error: Option<CodeMessage>,
    #[serde(rename = "SendStatusSet", default)]
    send_status_set: Vec<SendStatus>,
}

#[derive(Debug, Deserialize)]
struct CodeMessage {
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct SendStatus {
    #[serde(rename = "SerialNo", default)]
    serial_no: String,
    /// Segments billed for this number; an answer may leave it out.
    #[serde(rename = "Fee", default)]
    fee: Option<u64>,
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// Reads one answer into `split`. Tencent answers with HTTP 200 even for errors: a
/// request-level `Response.Error`, or one status per number in `SendStatusSet`, some of
/// which may have failed while others went out. Statuses come in the order of the
/// numbers sent; an accepted number goes into `split`, billed what `billing` counts for
/// it, with `Fee` kept as Tencent's own count. The refused numbers' failure, one for all
/// of them ([`one_failure`]), is the error, which `split` turns into
/// [`VendorError::PartlySent`] when numbers were accepted.
fn read_answer(
    status: u16,
    body: &str,
    numbers: &[PhoneNumber],
    billing: &Billing,
    split: &mut SplitSend,
) -> Result<(), VendorError> {
    let Ok(envelope) = serde_json::from_str::<Envelope>(body) else {
        return Err(status_error(VENDOR, status, body));
    };
    let answer = envelope.response;
    if let Some(error) = answer.error {
        return Err(classify(&error.code, error.message));
    }
    if status >= 300 || answer.send_status_set.len() != numbers.len() {
        return Err(status_error(VENDOR, status.max(200), body));
    }
    let mut failures = Vec::new();
    for (s, number) in answer.send_status_set.into_iter().zip(numbers) {
        if s.code == "Ok" {
            split.accept(
                s.serial_no,
                std::slice::from_ref(number),
                billing.of(number),
                s.fee,
            );
        } else {
            failures.push(classify(&s.code, s.message));
        }
    }
    match one_failure(failures) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The failure that stands for every failed number of one answer. When they are all of
/// one kind, that kind: for per-number refusals the longest wait, so that the message is
/// tried again once every refused number's window has passed. Numbers failing in
/// different ways leave no single right answer; the first failure is kept, as the
/// vendor listed it. Beside accepted numbers it is the inner error of
/// [`VendorError::PartlySent`], so the gateway treats every refused number as it says.
fn one_failure(failures: Vec<VendorError>) -> Option<VendorError> {
    let first = failures.first()?;
    if failures.iter().any(|f| f.kind() != first.kind()) {
        return failures.into_iter().next();
    }
    let wait = |f: &VendorError| match f {
        VendorError::RecipientRefused { retry_after, .. } => *retry_after,
        _ => Duration::ZERO,
    };
    // `max_by_key` keeps the last of equal keys: reverse, so the first one wins a tie.
    failures.into_iter().rev().max_by_key(wait)
}

#[async_trait]
impl Vendor for TencentVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        let recipients = sms.request.recipients();
        let billing = Billing::new(sms, sms.signature(&self.config.sign_name));
        let mut split = SplitSend::new(VENDOR, recipients.len());
        for chunk in recipients.chunks(MAX_RECIPIENTS_PER_CALL) {
            if let Err(e) = self.send_call(sms, chunk, &billing, &mut split).await {
                return Err(split.fail(e));
            }
        }
        Ok(split.finish())
    }

    /// Its timeout times the calls, when the recipients need more than one call of
    /// [`MAX_RECIPIENTS_PER_CALL`]: see [`super`] on split sends.
    fn split_send_time(&self, recipients: usize) -> Option<Duration> {
        split_send_time(
            Duration::from_millis(self.config.timeout_ms),
            MAX_RECIPIENTS_PER_CALL,
            recipients,
        )
    }
}

#[cfg(test)]
mod tests {
    use sms_core::{MessageId, SmsRequest, VendorTemplate};

    use super::*;

    fn outbound(text: Option<&str>, numbers: &[&str], sign_name: Option<&str>) -> OutboundSms {
        OutboundSms {
            id: MessageId::new(),
            request: SmsRequest::new("login_code", ["1234"], numbers.iter().copied()).unwrap(),
            template: VendorTemplate {
                id: "1860001".into(),
                params: Vec::new(),
                sign_name: sign_name.map(str::to_owned),
            },
            text: text.map(str::to_owned),
        }
    }

    /// Reads `body` as the answer to a one-call send of `sms` signed `腾讯云`.
    fn read_for(sms: &OutboundSms, body: &str) -> Result<Receipt, VendorError> {
        let numbers = sms.request.recipients();
        let billing = Billing::new(sms, sms.signature("腾讯云"));
        let mut split = SplitSend::new(VENDOR, numbers.len());
        match read_answer(200, body, numbers, &billing, &mut split) {
            Ok(()) => Ok(split.finish()),
            Err(e) => Err(split.fail(e)),
        }
    }

    /// Reads `body` for a message without a known text to `numbers` mainland numbers.
    fn read(body: &str, numbers: usize) -> Result<Receipt, VendorError> {
        let numbers: Vec<String> = (0..numbers)
            .map(|i| format!("+86138001380{i:02}"))
            .collect();
        let numbers: Vec<&str> = numbers.iter().map(String::as_str).collect();
        read_for(&outbound(None, &numbers, None), body)
    }

    fn status(code: &str, fee: u64) -> String {
        format!(
            r#"{{"SerialNo":"{}","PhoneNumber":"+8613800138000","Fee":{fee},"Code":"{code}","Message":"m"}}"#,
            if code == "Ok" { "s" } else { "" }
        )
    }

    fn statuses(list: &[String]) -> String {
        format!(
            r#"{{"Response":{{"SendStatusSet":[{}],"RequestId":"r"}}}}"#,
            list.join(",")
        )
    }

    #[test]
    fn billing_is_counted_from_the_text_and_fee_is_tencents_own_count() {
        // 【腾讯云】 (5) and 95 characters: 100 characters to a mainland number bill 2.
        let text = "码".repeat(95);
        let sms = outbound(Some(&text), &["+8613800138000"], None);
        let r = read_for(
            &sms,
            r#"{"Response":{"SendStatusSet":[
                {"SerialNo":"a","PhoneNumber":"+8613800138000","Fee":2,"Code":"Ok","Message":"send success"}
            ],"RequestId":"r"}}"#,
        )
        .unwrap();
        assert_eq!(r.billed_messages, 2);
        assert_eq!(r.reported_billed, Some(2));
        // Tencent may report a count that differs from ours; both are kept.
        let sms = outbound(Some(&text), &["+8613800138000", "+8613800138001"], None);
        let r = read_for(
            &sms,
            r#"{"Response":{"SendStatusSet":[
                {"SerialNo":"a","PhoneNumber":"+8613800138000","Fee":2,"Code":"Ok","Message":"send success"},
                {"SerialNo":"b","PhoneNumber":"+8613800138001","Fee":3,"Code":"Ok","Message":"send success"}
            ],"RequestId":"r"}}"#,
        )
        .unwrap();
        assert_eq!(r.billed_messages, 4);
        assert_eq!(r.reported_billed, Some(5));
        assert_eq!(r.vendor_message_id, "a,b");
        // An answer without Fee reports no count of Tencent's own.
        let r = read(
            r#"{"Response":{"SendStatusSet":[{"SerialNo":"a","Code":"Ok","Message":"ok"}],"RequestId":"r"}}"#,
            1,
        )
        .unwrap();
        assert_eq!((r.billed_messages, r.reported_billed), (1, None));
    }

    #[test]
    fn codes_are_read_per_number_and_per_request() {
        for (code, kind) in [
            (
                "LimitExceeded.PhoneNumberThirtySecondLimit",
                "recipient_refused",
            ),
            (
                "FailedOperation.TemplateIncorrectOrUnapproved",
                "misconfigured",
            ),
            ("InvalidParameterValue.IncorrectPhoneNumber", "rejected"),
        ] {
            let per_number = read(&statuses(&[status(code, 0)]), 1).unwrap_err();
            let request_level = read(
                &format!(r#"{{"Response":{{"Error":{{"Code":"{code}","Message":"m"}},"RequestId":"r"}}}}"#),
                1,
            )
            .unwrap_err();
            assert_eq!(per_number, request_level, "{code}");
            assert_eq!(per_number.kind(), kind, "{code}");
        }
    }

    #[test]
    fn numbers_failing_the_same_way_give_that_kind_with_the_longest_wait() {
        let e = read(
            &statuses(&[
                status("LimitExceeded.PhoneNumberThirtySecondLimit", 0),
                status("LimitExceeded.PhoneNumberDailyLimit", 0),
                status("LimitExceeded.PhoneNumberOneHourLimit", 0),
            ]),
            3,
        )
        .unwrap_err();
        assert!(
            matches!(&e, VendorError::RecipientRefused { code, retry_after, .. }
                if code == "LimitExceeded.PhoneNumberDailyLimit" && *retry_after == Duration::from_secs(86_400)),
            "{e:?}"
        );
        let e = read(
            &statuses(&[
                status("FailedOperation.TemplateIncorrectOrUnapproved", 0),
                status("FailedOperation.TemplateIncorrectOrUnapproved", 0),
            ]),
            2,
        )
        .unwrap_err();
        assert!(matches!(e, VendorError::Misconfigured { .. }), "{e:?}");
        // Different kinds: the first failure, as listed.
        let e = read(
            &statuses(&[
                status("InvalidParameterValue.IncorrectPhoneNumber", 0),
                status("LimitExceeded.PhoneNumberDailyLimit", 0),
            ]),
            2,
        )
        .unwrap_err();
        assert!(matches!(e, VendorError::Rejected { .. }), "{e:?}");
    }

    /// The numbers [`read`] sends to, `+8613800138000` on.
    fn sent_to(indexes: &[usize]) -> Vec<PhoneNumber> {
        indexes
            .iter()
            .map(|i| PhoneNumber::parse(&format!("+86138001380{i:02}")).unwrap())
            .collect()
    }

    /// The parts of a [`VendorError::PartlySent`].
    fn partly_sent(e: VendorError) -> (Vec<PhoneNumber>, Receipt, VendorError) {
        match e {
            VendorError::PartlySent {
                sent,
                receipt,
                error,
            } => (sent, receipt, *error),
            other => panic!("expected PartlySent, got {other:?}"),
        }
    }

    #[test]
    fn a_call_accepted_for_some_numbers_is_partly_sent_with_the_others_error() {
        let e = read(
            r#"{"Response":{"SendStatusSet":[
                {"SerialNo":"a","Fee":1,"Code":"Ok","Message":"send success"},
                {"SerialNo":"","Fee":0,"Code":"InvalidParameterValue.IncorrectPhoneNumber","Message":"bad"}
            ],"RequestId":"r"}}"#,
            2,
        )
        .unwrap_err();
        let (sent, receipt, error) = partly_sent(e);
        assert_eq!(sent, sent_to(&[0]));
        assert_eq!(
            receipt,
            Receipt {
                vendor_message_id: "a".into(),
                billed_messages: 1,
                reported_billed: Some(1),
                recipient_ids: Vec::new(),
            }
        );
        assert!(
            matches!(&error, VendorError::Rejected { code, .. } if code == "InvalidParameterValue.IncorrectPhoneNumber"),
            "{error:?}"
        );
        // A per-number refusal among accepted numbers: the refused ones wait out their
        // window, the others already have the message.
        let e = read(
            &statuses(&[
                status("LimitExceeded.PhoneNumberThirtySecondLimit", 0),
                status("Ok", 2),
                status("Ok", 1),
            ]),
            3,
        )
        .unwrap_err();
        let (sent, receipt, error) = partly_sent(e);
        assert_eq!(sent, sent_to(&[1, 2]), "in the order sent");
        assert_eq!(
            (receipt.billed_messages, receipt.reported_billed),
            (2, Some(3))
        );
        assert!(
            matches!(&error, VendorError::RecipientRefused { code, retry_after, .. }
                if code == "LimitExceeded.PhoneNumberThirtySecondLimit" && *retry_after == Duration::from_secs(30)),
            "{error:?}"
        );
    }

    #[test]
    fn refused_numbers_beside_accepted_ones_give_one_error_as_if_alone() {
        // Refused the same way: the longest wait.
        let e = read(
            &statuses(&[
                status("Ok", 1),
                status("LimitExceeded.PhoneNumberThirtySecondLimit", 0),
                status("LimitExceeded.PhoneNumberDailyLimit", 0),
            ]),
            3,
        )
        .unwrap_err();
        let (sent, _, error) = partly_sent(e);
        assert_eq!(sent, sent_to(&[0]));
        assert!(
            matches!(&error, VendorError::RecipientRefused { code, .. } if code == "LimitExceeded.PhoneNumberDailyLimit"),
            "{error:?}"
        );
        // Refused in different ways: the first, as listed.
        let e = read(
            &statuses(&[
                status("Ok", 1),
                status("LimitExceeded.PhoneNumberDailyLimit", 0),
                status("InvalidParameterValue.IncorrectPhoneNumber", 0),
            ]),
            3,
        )
        .unwrap_err();
        let (_, _, error) = partly_sent(e);
        assert!(
            matches!(&error, VendorError::RecipientRefused { code, .. } if code == "LimitExceeded.PhoneNumberDailyLimit"),
            "{error:?}"
        );
    }

    /// An answer without statuses or error must neither crash the adapter (by reading a
    /// status that is not there) nor count as a success: the message may or may not have
    /// gone out.
    #[test]
    fn an_answer_without_statuses_is_not_a_success() {
        let e = read(r#"{"Response":{"RequestId":"r"}}"#, 1).unwrap_err();
        assert_eq!(
            e,
            VendorError::TimedOut,
            "a 200 without a verdict is an unknown outcome"
        );
        let e = read(r#"{"Response":{"SendStatusSet":[],"RequestId":"r"}}"#, 2).unwrap_err();
        assert_eq!(e, VendorError::TimedOut);
        assert!(read("{}", 1).is_err());
    }

    #[test]
    fn body_is_serialised_in_the_documented_shape() {
        let args = vec!["1234".to_owned()];
        let body = SendSmsBody {
            phone_number_set: vec!["+8613800138000"],
            sms_sdk_app_id: "1400000000",
            template_id: "449739",
            sign_name: "",
            template_param_set: &args,
            session_context: "ctx".into(),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400000000","TemplateId":"449739","TemplateParamSet":["1234"],"SessionContext":"ctx"}"#
        );
    }

    #[test]
    fn the_wire_carries_the_vendors_template_and_the_templates_signature() {
        let tencent = TencentVendor::new(TencentConfig {
            base_url: "http://127.0.0.1:9/".into(),
            secret_id: "AKID".into(),
            secret_key: Secret::new("key"),
            sdk_app_id: "1400".into(),
            sign_name: "腾讯云".into(),
            ..TencentConfig::default()
        })
        .unwrap();
        let sent = |sms: &OutboundSms| -> serde_json::Value {
            serde_json::from_str(&tencent.body(sms, sms.request.recipients())).unwrap()
        };
        let own = outbound(None, &["+8613800138000"], Some("登录助手"));
        let body = sent(&own);
        assert_eq!(body["TemplateId"], "1860001");
        assert_eq!(body["SignName"], "登录助手");
        assert_eq!(body["TemplateParamSet"], serde_json::json!(["1234"]));
        assert_eq!(body["SessionContext"], own.id.to_string());
        let body = sent(&outbound(None, &["+8613800138000"], None));
        assert_eq!(body["SignName"], "腾讯云");
        assert_eq!(
            body["TemplateId"], "1860001",
            "not the caller's template name"
        );
    }

    #[test]
    fn config_reads_missing_credentials_from_the_environment() {
        let lookup = |k: &str| match k {
            "SMS_TENCENT_SECRET_ID" => Some("AKIDenv".to_owned()),
            "SMS_TENCENT_SECRET_KEY" => Some("key".to_owned()),
            "SMS_TENCENT_SDK_APP_ID" => Some("1400".to_owned()),
            _ => None,
        };
        let c = TencentConfig::default().with_env_from(&lookup).unwrap();
        assert_eq!(c.secret_id, "AKIDenv");
        assert_eq!(c.secret_key.expose(), "key");
        assert!(!format!("{c:?}").contains("\"key\""));
        assert!(TencentConfig::default().with_env_from(&|_| None).is_err());
    }
}
