//! Cloopen (容联云 / Ronglian) template SMS, REST API 2013-12-26: `sig` (MD5) in the
//! query, `Authorization` (Base64 of `accountSid:timestamp`) in a header, JSON body.

mod codes;

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sms_core::{OutboundSms, PhoneNumber, Receipt, Vendor, VendorError, VendorId};

use self::codes::classify;
use super::sign::{cloopen_authorization, cloopen_sig, cloopen_timestamp};
use super::{
    Billing, DEFAULT_TIMEOUT, HttpConfigError, Secret, SplitSend, build_client, is_mainland_mobile,
    override_from_env, parse_base_url, process_env, read_answer_body, require, split_send_time,
    status_error, transport_error,
};

/// The real endpoint.
pub const DEFAULT_BASE_URL: &str = "https://app.cloopen.com:8883";
/// Most numbers one call takes (the SDKs allow 100 to 200 depending on the account;
/// 100 is safe for all).
pub const MAX_RECIPIENTS_PER_CALL: usize = 100;

const VENDOR: &str = "cloopen";

/// Settings of the Cloopen adapter. Credentials may be left out and read from the
/// environment with [`CloopenConfig::with_env`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloopenConfig {
    /// Where to send (`https://app.cloopen.com:8883`, or a sandbox).
    pub base_url: String,
    /// The main account id, ACCOUNT SID (`SMS_CLOOPEN_ACCOUNT_SID`).
    pub account_sid: String,
    /// The AUTH TOKEN (`SMS_CLOOPEN_AUTH_TOKEN`).
    pub auth_token: Secret,
    /// The application id (`SMS_CLOOPEN_APP_ID`).
    pub app_id: String,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Default for CloopenConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            account_sid: String::new(),
            auth_token: Secret::default(),
            app_id: String::new(),
            timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
        }
    }
}

impl CloopenConfig {
    /// Fills missing settings from the process environment (`SMS_CLOOPEN_ACCOUNT_SID`,
    /// `SMS_CLOOPEN_AUTH_TOKEN`, `SMS_CLOOPEN_APP_ID`; `SMS_CLOOPEN_BASE_URL` overrides
    /// the URL), and fails if one is still missing.
    pub fn with_env(self) -> Result<Self, HttpConfigError> {
        self.with_env_from(&process_env)
    }

    /// [`CloopenConfig::with_env`] with a given variable lookup.
    pub fn with_env_from(
        mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, HttpConfigError> {
        override_from_env(&mut self.base_url, "SMS_CLOOPEN_BASE_URL", lookup);
        require(
            &mut self.account_sid,
            VENDOR,
            "account_sid",
            "SMS_CLOOPEN_ACCOUNT_SID",
            lookup,
        )?;
        require(
            &mut self.auth_token.0,
            VENDOR,
            "auth_token",
            "SMS_CLOOPEN_AUTH_TOKEN",
            lookup,
        )?;
        require(
            &mut self.app_id,
            VENDOR,
            "app_id",
            "SMS_CLOOPEN_APP_ID",
            lookup,
        )?;
        Ok(self)
    }
}

/// The Cloopen adapter: one HTTP client, reused for every send.
#[derive(Debug)]
pub struct CloopenVendor {
    id: VendorId,
    config: CloopenConfig,
    url: reqwest::Url,
    client: reqwest::Client,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TemplateSmsBody<'a> {
    to: String,
    app_id: &'a str,
    template_id: &'a str,
    datas: &'a [String],
}

impl CloopenVendor {
    /// An adapter named `cloopen`.
    pub fn new(config: CloopenConfig) -> Result<Self, HttpConfigError> {
        Self::with_id(VendorId::new(VENDOR).expect("valid vendor id"), config)
    }

    /// An adapter under another vendor name.
    pub fn with_id(id: VendorId, config: CloopenConfig) -> Result<Self, HttpConfigError> {
        let base = parse_base_url(VENDOR, &config.base_url)?;
        if config.account_sid.is_empty() || config.auth_token.is_empty() {
            return Err(HttpConfigError::Missing {
                vendor: VENDOR,
                field: "account_sid/auth_token",
                env: "SMS_CLOOPEN_ACCOUNT_SID",
            });
        }
        let path = format!(
            "{}/2013-12-26/Accounts/{}/SMS/TemplateSMS",
            base.path().trim_end_matches('/'),
            config.account_sid
        );
        let mut url = base;
        url.set_path(&path);
        let client = build_client(VENDOR, Duration::from_millis(config.timeout_ms))?;
        Ok(Self {
            id,
            config,
            url,
            client,
        })
    }

    /// The template SMS body: the vendor's template id and the arguments in order.
    /// Cloopen binds the signature to the template, so none is sent.
    fn body<'a>(&'a self, sms: &'a OutboundSms, numbers: &[PhoneNumber]) -> TemplateSmsBody<'a> {
        TemplateSmsBody {
            to: numbers
                .iter()
                .map(cloopen_number)
                .collect::<Vec<_>>()
                .join(","),
            app_id: &self.config.app_id,
            template_id: &sms.template.id,
            datas: sms.request.args(),
        }
    }

    async fn send_call(
        &self,
        sms: &OutboundSms,
        numbers: &[PhoneNumber],
        billing: &Billing,
    ) -> Result<Receipt, VendorError> {
        let timestamp = cloopen_timestamp(Utc::now());
        let sig = cloopen_sig(
            &self.config.account_sid,
            self.config.auth_token.expose(),
            &timestamp,
        );
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("sig", &sig);
        let body = self.body(sms, numbers);
        let response = self
            .client
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json;charset=utf-8",
            )
            .header(
                reqwest::header::AUTHORIZATION,
                cloopen_authorization(&self.config.account_sid, &timestamp),
            )
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error(VENDOR, &e))?;
        let (status, text) = read_answer_body(VENDOR, response).await?;
        parse_answer(status, &text, billing.of_all(numbers))
    }
}

/// A number as Cloopen wants it: mainland mobiles as 11 national digits, others as
/// `00` + country code + number.
fn cloopen_number(number: &PhoneNumber) -> String {
    if is_mainland_mobile(number) {
        number.digits()[2..].to_owned()
    } else {
        format!("00{}", number.digits())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status_code: Option<String>,
    #[serde(default)]
    status_msg: String,
    #[serde(rename = "templateSMS")]
    template_sms: Option<TemplateSms>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplateSms {
    #[serde(default)]
    sms_message_sid: String,
}

/// Reads one answer; `billed` is what this call's recipients are billed, counted from
/// the text: Cloopen does not report it.
fn parse_answer(status: u16, body: &str, billed: u64) -> Result<Receipt, VendorError> {
    let Ok(answer) = serde_json::from_str::<Answer>(body) else {
        return Err(status_error(VENDOR, status, body));
    };
    let Some(code) = answer.status_code else {
        return Err(status_error(VENDOR, status, body));
    };
    if code == "000000" {
        return Ok(Receipt {
            vendor_message_id: answer
                .template_sms
                .map(|t| t.sms_message_sid)
                .unwrap_or_default(),
            billed_messages: billed,
            reported_billed: None,
            recipient_ids: Vec::new(),
        });
    }
    Err(classify(&code, answer.status_msg, status))
}

#[async_trait]
impl Vendor for CloopenVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        let recipients = sms.request.recipients();
        // Cloopen's settings name no signature (it comes with the template): the text is
        // counted under the template's own when the catalogue names one, else without.
        let billing = Billing::new(sms, sms.signature(""));
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
    use super::*;

    #[test]
    fn numbers_are_national_for_mainland_mobiles_and_00_prefixed_otherwise() {
        let n = |s: &str| cloopen_number(&PhoneNumber::parse(s).unwrap());
        assert_eq!(n("+8613800138000"), "13800138000");
        assert_eq!(n("+14155550100"), "0014155550100");
    }

    #[test]
    fn answers_map_onto_error_kinds() {
        let ok = parse_answer(
            200,
            r#"{"statusCode":"000000","templateSMS":{"smsMessageSid":"ff8","dateCreated":"20130201155306"}}"#,
            2,
        )
        .unwrap();
        assert_eq!(ok.vendor_message_id, "ff8");
        assert_eq!(ok.billed_messages, 2);
        assert_eq!(ok.reported_billed, None);
        let code = |c: &str| {
            parse_answer(
                200,
                &format!(r#"{{"statusCode":"{c}","statusMsg":"m"}}"#),
                1,
            )
            .unwrap_err()
        };
        assert!(matches!(code("160042"), VendorError::Rejected { .. }));
        assert!(matches!(code("160033"), VendorError::Rejected { .. }));
        for auth in ["111101", "111104", "111105", "111109", "111141", "111147"] {
            assert!(
                matches!(code(auth), VendorError::Unauthorized { code: ref c, .. } if c == auth),
                "{auth}"
            );
        }
        assert!(matches!(code("111200"), VendorError::Rejected { .. }));
        assert!(matches!(code("172001"), VendorError::Transient { .. }));
        assert!(matches!(
            parse_answer(502, "bad gateway", 1),
            Err(VendorError::Transient { .. })
        ));
    }

    #[test]
    fn the_wire_carries_the_vendors_template_id_and_no_signature() {
        let v = CloopenVendor::new(CloopenConfig {
            base_url: "http://127.0.0.1:9/".into(),
            account_sid: "sid1".into(),
            auth_token: Secret::new("t"),
            app_id: "app".into(),
            ..CloopenConfig::default()
        })
        .unwrap();
        let sms = OutboundSms {
            id: sms_core::MessageId::new(),
            request: sms_core::SmsRequest::new("login_code", ["1234", "5"], ["+8613800138000"])
                .unwrap(),
            template: sms_core::VendorTemplate {
                id: "1".into(),
                params: Vec::new(),
                sign_name: Some("容联".into()),
            },
            text: None,
        };
        let body = serde_json::to_value(v.body(&sms, sms.request.recipients())).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"to": "13800138000", "appId": "app", "templateId": "1", "datas": ["1234", "5"]})
        );
    }

    #[test]
    fn billing_counts_the_text_under_the_templates_signature_or_none() {
        // Cloopen has no signature setting: 68 characters alone are one message; with
        // the template's 【容联云】 (5) in front they are two.
        let sms = |sign_name: Option<&str>| OutboundSms {
            id: sms_core::MessageId::new(),
            request: sms_core::SmsRequest::new("login_code", ["1"], ["+8613800138000"]).unwrap(),
            template: sms_core::VendorTemplate {
                id: "1".into(),
                params: Vec::new(),
                sign_name: sign_name.map(str::to_owned),
            },
            text: Some("码".repeat(68)),
        };
        let unsigned = sms(None);
        let billing = Billing::new(&unsigned, unsigned.signature(""));
        assert_eq!(billing.of_all(unsigned.request.recipients()), 1);
        let signed = sms(Some("容联云"));
        let billing = Billing::new(&signed, signed.signature(""));
        assert_eq!(billing.of_all(signed.request.recipients()), 2);
    }

    #[test]
    fn an_answer_without_a_status_code_is_not_a_success() {
        assert_eq!(
            parse_answer(200, r#"{"templateSMS":{"smsMessageSid":"x"}}"#, 1),
            Err(VendorError::TimedOut)
        );
        assert!(matches!(
            parse_answer(404, "not found", 1),
            Err(VendorError::Rejected { .. })
        ));
    }

    #[test]
    fn url_puts_the_account_in_the_path() {
        let v = CloopenVendor::new(CloopenConfig {
            base_url: "http://127.0.0.1:9/prefix/".into(),
            account_sid: "sid1".into(),
            auth_token: Secret::new("t"),
            app_id: "app".into(),
            ..CloopenConfig::default()
        })
        .unwrap();
        assert_eq!(
            v.url.as_str(),
            "http://127.0.0.1:9/prefix/2013-12-26/Accounts/sid1/SMS/TemplateSMS"
        );
    }
}
