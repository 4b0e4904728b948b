//! Aliyun (Alibaba Cloud) SMS `SendSms`, API version 2017-05-25, signed with the RPC
//! signature v1 (HMAC-SHA1) and sent as a form-encoded POST. The adapter also asks for
//! delivery receipts with `QuerySendDetails` ([`sms_core::ReceiptPull`]), for an account
//! without a receipt push.

mod codes;
mod query;

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sms_core::{OutboundSms, PhoneNumber, Receipt, Vendor, VendorError, VendorId};

use self::codes::classify;
use super::sign::{aliyun_canonical_query, aliyun_signature, aliyun_timestamp, percent_encode};
use super::{
    Billing, DEFAULT_TIMEOUT, HttpConfigError, Secret, SplitSend, build_client, is_mainland_mobile,
    override_from_env, parse_base_url, process_env, read_answer_body, require, split_send_time,
    status_error, transport_error,
};

/// The real endpoint.
pub const DEFAULT_BASE_URL: &str = "https://dysmsapi.aliyuncs.com/";
/// Most numbers one `SendSms` call takes.
pub const MAX_RECIPIENTS_PER_CALL: usize = 1000;
/// The API version this adapter speaks.
pub const API_VERSION: &str = "2017-05-25";

const VENDOR: &str = "aliyun";

/// Settings of the Aliyun adapter. Credentials may be left out and read from the
/// environment with [`AliyunConfig::with_env`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AliyunConfig {
    /// Where to send (`https://dysmsapi.aliyuncs.com/`, or a sandbox).
    pub base_url: String,
    /// AccessKey id (`SMS_ALIYUN_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// AccessKey secret (`SMS_ALIYUN_ACCESS_KEY_SECRET`).
    pub access_key_secret: Secret,
    /// The approved signature name shown in the message (`SMS_ALIYUN_SIGN_NAME`), unless
    /// the message's template names its own.
    pub sign_name: String,
    /// `RegionId`, `cn-hangzhou` by default.
    pub region: String,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Default for AliyunConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            access_key_id: String::new(),
            access_key_secret: Secret::default(),
            sign_name: String::new(),
            region: "cn-hangzhou".to_owned(),
            timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
        }
    }
}

impl AliyunConfig {
    /// Fills missing credentials and sign name from the process environment
    /// (`SMS_ALIYUN_ACCESS_KEY_ID`, `SMS_ALIYUN_ACCESS_KEY_SECRET`, `SMS_ALIYUN_SIGN_NAME`;
    /// `SMS_ALIYUN_BASE_URL` overrides the URL), and fails if any is still missing.
    pub fn with_env(self) -> Result<Self, HttpConfigError> {
        self.with_env_from(&process_env)
    }

    /// [`AliyunConfig::with_env`] with a given variable lookup (tests use a map).
    pub fn with_env_from(
        mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, HttpConfigError> {
        override_from_env(&mut self.base_url, "SMS_ALIYUN_BASE_URL", lookup);
        require(
            &mut self.access_key_id,
            VENDOR,
            "access_key_id",
            "SMS_ALIYUN_ACCESS_KEY_ID",
            lookup,
        )?;
        require(
            &mut self.access_key_secret.0,
            VENDOR,
            "access_key_secret",
            "SMS_ALIYUN_ACCESS_KEY_SECRET",
            lookup,
        )?;
        require(
            &mut self.sign_name,
            VENDOR,
            "sign_name",
            "SMS_ALIYUN_SIGN_NAME",
            lookup,
        )?;
        Ok(self)
    }
}

/// The Aliyun adapter: one HTTP client, reused for every send.
#[derive(Debug)]
pub struct AliyunVendor {
    id: VendorId,
    config: AliyunConfig,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl AliyunVendor {
    /// An adapter named `aliyun`.
    pub fn new(config: AliyunConfig) -> Result<Self, HttpConfigError> {
        Self::with_id(VendorId::new(VENDOR).expect("valid vendor id"), config)
    }

    /// An adapter under another vendor name (two Aliyun accounts, say).
    pub fn with_id(id: VendorId, config: AliyunConfig) -> Result<Self, HttpConfigError> {
        let url = parse_base_url(VENDOR, &config.base_url)?;
        if config.access_key_id.is_empty() || config.access_key_secret.is_empty() {
            return Err(HttpConfigError::Missing {
                vendor: VENDOR,
                field: "access_key_id/access_key_secret",
                env: "SMS_ALIYUN_ACCESS_KEY_ID",
            });
        }
        let client = build_client(VENDOR, Duration::from_millis(config.timeout_ms))?;
        Ok(Self {
            id,
            config,
            url,
            client,
        })
    }

    /// The form body of one signed `SendSms` call (parameters and `Signature`): the
    /// vendor's template code, the template's signature or ours, and the arguments under
    /// the template's variable names.
    fn signed_body(&self, sms: &OutboundSms, numbers: &[PhoneNumber]) -> String {
        let request = &sms.request;
        let mut params: Vec<(&str, String)> = vec![
            ("OutId", sms.id.to_string()),
            (
                "PhoneNumbers",
                numbers
                    .iter()
                    .map(aliyun_number)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("SignName", sms.signature(&self.config.sign_name).to_owned()),
            ("TemplateCode", sms.template.id.clone()),
        ];
        if !request.args().is_empty() {
            params.push((
                "TemplateParam",
                template_param_json(&sms.template.params, request.args()),
            ));
        }
        self.signed_form("SendSms", params)
    }

    /// The form body of one signed call of `action` with its own `params`: the common
    /// parameters (fresh nonce, current timestamp) added, then `Signature` over all.
    fn signed_form(&self, action: &str, mut params: Vec<(&str, String)>) -> String {
        params.extend([
            ("AccessKeyId", self.config.access_key_id.clone()),
            ("Action", action.to_owned()),
            ("Format", "JSON".to_owned()),
            ("RegionId", self.config.region.clone()),
            ("SignatureMethod", "HMAC-SHA1".to_owned()),
            ("SignatureNonce", new_nonce()),
            ("SignatureVersion", "1.0".to_owned()),
            ("Timestamp", aliyun_timestamp(Utc::now())),
            ("Version", API_VERSION.to_owned()),
        ]);
        let signature = aliyun_signature("POST", &params, self.config.access_key_secret.expose());
        format!(
            "{}&Signature={}",
            aliyun_canonical_query(&params),
            percent_encode(&signature)
        )
    }

    async fn send_call(
        &self,
        sms: &OutboundSms,
        numbers: &[PhoneNumber],
        billing: &Billing,
    ) -> Result<Receipt, VendorError> {
        let (status, body) = self.post(self.signed_body(sms, numbers)).await?;
        parse_answer(status, &body, billing.of_all(numbers))
    }

    /// Posts a signed form: the answer's HTTP status and body.
    async fn post(&self, form: String) -> Result<(u16, String), VendorError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| transport_error(VENDOR, &e))?;
        read_answer_body(VENDOR, response).await
    }
}

/// A number as Aliyun wants it: mainland mobiles as 11 national digits, others with
/// their country code and no `+`.
fn aliyun_number(number: &PhoneNumber) -> String {
    if is_mainland_mobile(number) {
        number.digits()[2..].to_owned()
    } else {
        number.digits().to_owned()
    }
}

/// A fresh `SignatureNonce`: 128 random bits as hex.
fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `TemplateParam`: a JSON object of the arguments under the template's variable names,
/// in order. A template without names (pass-through, or a catalogue entry that left them
/// out) gets `p1`, `p2`, … for its arguments.
fn template_param_json(names: &[String], args: &[String]) -> String {
    let mut map = serde_json::Map::new();
    for (i, arg) in args.iter().enumerate() {
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("p{}", i + 1));
        map.insert(name, serde_json::Value::String(arg.clone()));
    }
    serde_json::Value::Object(map).to_string()
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message", default)]
    message: String,
    #[serde(rename = "BizId", default)]
    biz_id: String,
}

/// Reads one `SendSms` answer. Aliyun answers business errors (`isv.*`) with HTTP 200
/// and a code, and gateway errors (signature, throttling of the API) with 4xx/5xx and a
/// code, so the code decides when there is one. `billed` is what this call's recipients
/// are billed, counted from the text: `SendSms` does not report it.
fn parse_answer(status: u16, body: &str, billed: u64) -> Result<Receipt, VendorError> {
    let answer: Answer = match serde_json::from_str(body) {
        Ok(a) => a,
        Err(_) => return Err(status_error(VENDOR, status, body)),
    };
    let Some(code) = answer.code else {
        return Err(status_error(VENDOR, status, body));
    };
    if code == "OK" {
        return Ok(Receipt {
            vendor_message_id: answer.biz_id,
            billed_messages: billed,
            reported_billed: None,
            recipient_ids: Vec::new(),
        });
    }
    Err(classify(&code, answer.message, status))
}

#[async_trait]
impl Vendor for AliyunVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        let recipients = sms.request.recipients();
        let billing = Billing::new(sms, sms.signature(&self.config.sign_name));
        let mut split = SplitSend::new(VENDOR, recipients.len());
        for chunk in recipients.chunks(MAX_RECIPIENTS_PER_CALL) {
            match self.send_call(sms, chunk, &billing).await {
                Ok(r) => split.accept(r.vendor_message_id, chunk, r.billed_messages, None),
                Err(e) => return Err(split.fail(e)),
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
    use std::collections::BTreeMap;

    use sms_core::{MessageId, SmsRequest, VendorTemplate};

    use super::*;

    fn vendor() -> AliyunVendor {
        AliyunVendor::new(AliyunConfig {
            base_url: "http://127.0.0.1:9/".into(),
            access_key_id: "id".into(),
            access_key_secret: Secret::new("secret"),
            sign_name: "阿里云".into(),
            ..AliyunConfig::default()
        })
        .unwrap()
    }

    fn outbound(args: &[&str], template: VendorTemplate) -> OutboundSms {
        OutboundSms {
            id: MessageId::new(),
            request: SmsRequest::new("login_code", args.iter().copied(), ["+8613800138000"])
                .unwrap(),
            template,
            text: None,
        }
    }

    /// The decoded parameters of a signed form body.
    fn form(body: &str) -> BTreeMap<String, String> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .unwrap()
                .into_owned()
        };
        body.split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (decode(k), decode(v))
            })
            .collect()
    }

    #[test]
    fn numbers_are_national_for_mainland_mobiles_and_international_otherwise() {
        let n = |s: &str| aliyun_number(&PhoneNumber::parse(s).unwrap());
        assert_eq!(n("+8613800138000"), "13800138000");
        assert_eq!(n("+862012345678"), "862012345678");
        assert_eq!(n("+85261234567"), "85261234567");
    }

    #[test]
    fn template_params_use_the_templates_names_then_positions() {
        let names = ["code".to_owned(), "minutes".to_owned()];
        let json = template_param_json(&names, &["1234".into(), "5".into()]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v, serde_json::json!({"code": "1234", "minutes": "5"}));
        // Fewer names than arguments: the rest go by position.
        let json = template_param_json(&names[..1], &["1234".into(), "5".into()]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v, serde_json::json!({"code": "1234", "p2": "5"}));
        // No names at all (pass-through); text with quotes and separators survives as JSON.
        let json = template_param_json(&[], &["a\"b###c;d".into()]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v, serde_json::json!({"p1": "a\"b###c;d"}));
    }

    #[test]
    fn the_wire_carries_the_vendors_template_its_names_and_its_signature() {
        let aliyun = vendor();
        let numbers = [PhoneNumber::parse("+8613800138000").unwrap()];
        let mapped = outbound(
            &["1234", "5"],
            VendorTemplate {
                id: "SMS_154950909".into(),
                params: vec!["code".into(), "minutes".into()],
                sign_name: Some("登录助手".into()),
            },
        );
        let sent = form(&aliyun.signed_body(&mapped, &numbers));
        assert_eq!(sent["TemplateCode"], "SMS_154950909");
        assert_eq!(sent["SignName"], "登录助手", "the template's own signature");
        assert_eq!(sent["PhoneNumbers"], "13800138000");
        assert_eq!(sent["OutId"], mapped.id.to_string());
        let params: serde_json::Value = serde_json::from_str(&sent["TemplateParam"]).unwrap();
        assert_eq!(params, serde_json::json!({"code": "1234", "minutes": "5"}));
        // A template without its own signature is sent under the configured one; the
        // caller's template name never reaches the vendor.
        let plain = outbound(
            &["1234"],
            VendorTemplate {
                id: "SMS_2".into(),
                params: Vec::new(),
                sign_name: None,
            },
        );
        let sent = form(&aliyun.signed_body(&plain, &numbers));
        assert_eq!(sent["SignName"], "阿里云");
        assert_eq!(sent["TemplateCode"], "SMS_2");
        assert!(!sent.values().any(|v| v == "login_code"), "{sent:?}");
        let params: serde_json::Value = serde_json::from_str(&sent["TemplateParam"]).unwrap();
        assert_eq!(params, serde_json::json!({"p1": "1234"}));
    }

    #[test]
    fn answers_map_onto_error_kinds() {
        let ok = parse_answer(
            200,
            r#"{"Code":"OK","Message":"OK","BizId":"9^0","RequestId":"r"}"#,
            3,
        )
        .unwrap();
        assert_eq!(ok.vendor_message_id, "9^0");
        assert_eq!(ok.billed_messages, 3);
        assert_eq!(ok.reported_billed, None, "SendSms reports no count");
        let throttled = parse_answer(
            400,
            r#"{"Code":"Throttling.User","Message":"Request was denied due to user flow control."}"#,
            1,
        );
        assert!(matches!(throttled, Err(VendorError::Throttled { .. })));
        let bad = parse_answer(
            200,
            r#"{"Code":"isv.MOBILE_NUMBER_ILLEGAL","Message":"bad"}"#,
            1,
        );
        assert!(
            matches!(bad, Err(VendorError::Rejected { code, .. }) if code == "isv.MOBILE_NUMBER_ILLEGAL")
        );
        let auth = parse_answer(400, r#"{"Code":"SignatureDoesNotMatch","Message":"x"}"#, 1);
        assert!(
            matches!(auth, Err(VendorError::Unauthorized { code, .. }) if code == "SignatureDoesNotMatch")
        );
        let sys = parse_answer(200, r#"{"Code":"isp.SYSTEM_ERROR","Message":"x"}"#, 1);
        assert!(matches!(sys, Err(VendorError::Transient { .. })));
        let down = parse_answer(503, "Service Unavailable", 1);
        assert!(matches!(down, Err(VendorError::Transient { .. })));
        let garbled = parse_answer(200, "<html>", 1);
        assert_eq!(garbled, Err(VendorError::TimedOut));
    }

    #[test]
    fn an_answer_without_a_code_is_not_a_success() {
        assert_eq!(
            parse_answer(200, r#"{"BizId":"1^0"}"#, 1),
            Err(VendorError::TimedOut)
        );
        assert!(matches!(
            parse_answer(500, r#"{"Message":"x"}"#, 1),
            Err(VendorError::Transient { .. })
        ));
    }

    #[test]
    fn config_reads_missing_credentials_from_the_environment() {
        let env: BTreeMap<&str, &str> = [
            ("SMS_ALIYUN_ACCESS_KEY_ID", "id-from-env"),
            ("SMS_ALIYUN_ACCESS_KEY_SECRET", "secret-from-env"),
            ("SMS_ALIYUN_SIGN_NAME", "sign"),
        ]
        .into();
        let lookup = |k: &str| env.get(k).map(|v| (*v).to_owned());
        let c = AliyunConfig::default().with_env_from(&lookup).unwrap();
        assert_eq!(c.access_key_id, "id-from-env");
        assert_eq!(c.access_key_secret.expose(), "secret-from-env");
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        // Values in the configuration win over the environment.
        let c = AliyunConfig {
            access_key_id: "from-config".into(),
            ..AliyunConfig::default()
        }
        .with_env_from(&lookup)
        .unwrap();
        assert_eq!(c.access_key_id, "from-config");
        let e = AliyunConfig::default()
            .with_env_from(&|_| None)
            .unwrap_err();
        assert!(e.to_string().contains("SMS_ALIYUN_ACCESS_KEY_ID"), "{e}");
    }

    #[test]
    fn config_deserialises_with_defaults() {
        let c: AliyunConfig = toml::from_str(
            r#"
            access_key_id = "id"
            access_key_secret = "s"
            sign_name = "n"
            "#,
        )
        .unwrap();
        assert_eq!(c.region, "cn-hangzhou");
        assert!(toml::from_str::<AliyunConfig>("bogus = 1").is_err());
        // Variable names come from the template catalogue now, not from here.
        let e =
            toml::from_str::<AliyunConfig>("[template_params]\nSMS_1 = [\"code\"]").unwrap_err();
        assert!(e.to_string().contains("template_params"), "{e}");
    }
}
