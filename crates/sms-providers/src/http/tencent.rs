//! Tencent Cloud SMS `SendSms`, API version 2021-01-11, signed with TC3-HMAC-SHA256 and
//! sent as a JSON POST.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sms_core::{OutboundSms, PhoneNumber, Receipt, Vendor, VendorError, VendorId};

use super::sign::{TC3_CONTENT_TYPE, Tc3Input, tc3_sign};
use super::{
    DEFAULT_TIMEOUT, HttpConfigError, Secret, SplitSend, build_client, host_header,
    override_from_env, parse_base_url, process_env, read_answer_body, require, status_error,
    transport_error,
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
    /// `SignName`, required for mainland numbers (`SMS_TENCENT_SIGN_NAME`).
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

    async fn send_call(
        &self,
        sms: &OutboundSms,
        numbers: &[PhoneNumber],
        split: &mut SplitSend,
    ) -> Result<(), VendorError> {
        let body = SendSmsBody {
            phone_number_set: numbers.iter().map(PhoneNumber::as_str).collect(),
            sms_sdk_app_id: &self.config.sdk_app_id,
            template_id: sms.request.template().as_str(),
            sign_name: &self.config.sign_name,
            template_param_set: sms.request.args(),
            session_context: sms.id.to_string(),
        };
        let payload = serde_json::to_string(&body).expect("the body serialises");
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
            .header("X-TC-Action", "SendSms")
            .header("X-TC-Version", API_VERSION)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Region", &self.config.region)
            .body(payload)
            .send()
            .await
            .map_err(|e| transport_error(VENDOR, &e))?;
        let (status, text) = read_answer_body(VENDOR, response).await?;
        read_answer(status, &text, numbers.len(), split)
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
    #[serde(rename = "Fee", default)]
    fee: u64,
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// Reads one answer into `split`. Tencent answers with HTTP 200 even for errors: a
/// request-level `Response.Error`, or one status per number in `SendStatusSet`, some of
/// which may have failed while others went out.
fn read_answer(
    status: u16,
    body: &str,
    numbers: usize,
    split: &mut SplitSend,
) -> Result<(), VendorError> {
    let Ok(envelope) = serde_json::from_str::<Envelope>(body) else {
        return Err(status_error(VENDOR, status, body));
    };
    let answer = envelope.response;
    if let Some(error) = answer.error {
        return Err(classify(&error.code, error.message));
    }
    if status >= 300 || answer.send_status_set.len() != numbers {
        return Err(status_error(VENDOR, status.max(200), body));
    }
    let mut first_failure: Option<VendorError> = None;
    for s in answer.send_status_set {
        if s.code == "Ok" {
            // `Fee` is the number of billed segments; never below one per recipient.
            split.accept(s.serial_no, 1, s.fee.max(1));
        } else if first_failure.is_none() {
            first_failure = Some(classify(&s.code, s.message));
        }
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Maps a Tencent Cloud error code onto an error kind.
pub(crate) fn classify(code: &str, message: String) -> VendorError {
    if code.starts_with("LimitExceeded") || code.starts_with("RequestLimitExceeded") {
        return VendorError::Throttled {
            message: format!("{code}: {message}"),
            retry_after: None,
        };
    }
    // Our SecretId, signature or the account's permissions (including an SdkAppId that
    // does not exist, or a suspended service) were refused: every message would meet the
    // same answer until an operator fixes the configuration.
    if code.starts_with("AuthFailure")
        || code.starts_with("UnauthorizedOperation")
        || code == "InvalidParameterValue.SdkAppIdNotExist"
        // The account's SMS package is used up: every message would fail until it is
        // topped up, so this is the vendor's state, not the message's fault.
        || code == "FailedOperation.InsufficientBalanceInSmsPackage"
    {
        return VendorError::Unauthorized {
            code: code.to_owned(),
            message,
        };
    }
    const PERMANENT: [&str; 4] = [
        "InvalidParameter",
        "MissingParameter",
        "FailedOperation",
        "UnsupportedOperation",
    ];
    if PERMANENT.iter().any(|p| code.starts_with(p)) || code == "InvalidAction" {
        return VendorError::Rejected {
            code: code.to_owned(),
            message,
        };
    }
    // `InternalError.*`, `ResourceUnavailable.*` and codes this adapter does not know:
    // the message was not sent and trying again (here or elsewhere) is safe.
    VendorError::Transient {
        message: format!("{VENDOR}: {code}: {message}"),
    }
}

#[async_trait]
impl Vendor for TencentVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        let recipients = sms.request.recipients();
        let mut split = SplitSend::new(VENDOR, recipients.len());
        for chunk in recipients.chunks(MAX_RECIPIENTS_PER_CALL) {
            if let Err(e) = self.send_call(sms, chunk, &mut split).await {
                return Err(split.fail(e));
            }
        }
        Ok(split.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::PARTIAL_SEND;

    fn read(body: &str, numbers: usize) -> Result<Receipt, VendorError> {
        let mut split = SplitSend::new(VENDOR, numbers);
        match read_answer(200, body, numbers, &mut split) {
            Ok(()) => Ok(split.finish()),
            Err(e) => Err(split.fail(e)),
        }
    }

    #[test]
    fn fee_is_read_from_each_status() {
        let r = read(
            r#"{"Response":{"SendStatusSet":[
                {"SerialNo":"a","PhoneNumber":"+8613800138000","Fee":2,"Code":"Ok","Message":"send success"},
                {"SerialNo":"b","PhoneNumber":"+8613800138001","Fee":3,"Code":"Ok","Message":"send success"}
            ],"RequestId":"r"}}"#,
            2,
        )
        .unwrap();
        assert_eq!(r.billed_messages, 5);
        assert_eq!(r.vendor_message_id, "a,b");
    }

    #[test]
    fn request_errors_map_onto_kinds() {
        let e = |code: &str| {
            read(
                &format!(r#"{{"Response":{{"Error":{{"Code":"{code}","Message":"m"}},"RequestId":"r"}}}}"#),
                1,
            )
            .unwrap_err()
        };
        assert!(matches!(
            e("LimitExceeded.PhoneNumberDailyLimit"),
            VendorError::Throttled { .. }
        ));
        assert!(matches!(
            e("RequestLimitExceeded"),
            VendorError::Throttled { .. }
        ));
        for code in [
            "AuthFailure.SignatureFailure",
            "AuthFailure.SignatureExpire",
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.InvalidAuthorization",
            "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
            "UnauthorizedOperation.RequestIpNotInWhitelist",
            "InvalidParameterValue.SdkAppIdNotExist",
            "FailedOperation.InsufficientBalanceInSmsPackage",
        ] {
            assert!(
                matches!(e(code), VendorError::Unauthorized { code: ref c, .. } if c == code),
                "{code}"
            );
        }
        assert!(matches!(
            e("InvalidParameterValue.IncorrectPhoneNumber"),
            VendorError::Rejected { .. }
        ));
        assert!(matches!(
            e("InternalError.Timeout"),
            VendorError::Transient { .. }
        ));
    }

    #[test]
    fn a_partly_failed_call_is_reported_as_partial() {
        let e = read(
            r#"{"Response":{"SendStatusSet":[
                {"SerialNo":"a","Fee":1,"Code":"Ok","Message":"send success"},
                {"SerialNo":"","Fee":0,"Code":"InvalidParameterValue.IncorrectPhoneNumber","Message":"bad"}
            ],"RequestId":"r"}}"#,
            2,
        )
        .unwrap_err();
        assert!(
            matches!(e, VendorError::Rejected { ref code, .. } if code == PARTIAL_SEND),
            "{e:?}"
        );
        // All numbers failing with the same code is that code, not a partial send.
        let e = read(
            r#"{"Response":{"SendStatusSet":[
                {"SerialNo":"","Fee":0,"Code":"LimitExceeded.DeliveryFrequencyLimit","Message":"slow down"}
            ],"RequestId":"r"}}"#,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, VendorError::Throttled { .. }), "{e:?}");
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
