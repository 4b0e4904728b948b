//! Cloopen (容联云 / Ronglian) template SMS, REST API 2013-12-26: `sig` (MD5) in the
//! query, `Authorization` (Base64 of `accountSid:timestamp`) in a header, JSON body.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sms_core::{OutboundSms, PhoneNumber, Receipt, Vendor, VendorError, VendorId};

use super::sign::{cloopen_authorization, cloopen_sig, cloopen_timestamp};
use super::{
    DEFAULT_TIMEOUT, HttpConfigError, Secret, SplitSend, build_client, is_mainland_mobile,
    override_from_env, parse_base_url, process_env, read_answer_body, require, status_error,
    transport_error,
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

    async fn send_call(
        &self,
        sms: &OutboundSms,
        numbers: &[PhoneNumber],
    ) -> Result<Receipt, VendorError> {
        let timestamp = cloopen_timestamp(Utc::now());
        let sig = cloopen_sig(
            &self.config.account_sid,
            self.config.auth_token.expose(),
            &timestamp,
        );
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("sig", &sig);
        let body = TemplateSmsBody {
            to: numbers
                .iter()
                .map(cloopen_number)
                .collect::<Vec<_>>()
                .join(","),
            app_id: &self.config.app_id,
            template_id: sms.request.template().as_str(),
            datas: sms.request.args(),
        };
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
        parse_answer(status, &text, numbers.len())
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

fn parse_answer(status: u16, body: &str, recipients: usize) -> Result<Receipt, VendorError> {
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
            // Cloopen does not report segments; one per recipient is the floor.
            billed_messages: recipients as u64,
        });
    }
    Err(classify(&code, answer.status_msg, status))
}

/// Maps a Cloopen status code onto an error kind.
///
/// Codes from Cloopen's published error list: 160038 (verification codes sent too
/// often), 160039–160041 (per-number daily caps) are throttling; 160042 (bad number
/// format), 16003x (template, content, blacklist) and 160043 (template not in this app)
/// are permanent; the 111xxx–113xxx families are request, authentication, account and
/// application checks. Of those, the ones that refuse our credentials (the
/// `Authorization` header and its timestamp, the `sig`, an unknown account or
/// application) are `Unauthorized`: every message would meet them. The rest are
/// permanent. Anything else, such as 172001 (network error), is treated as a vendor
/// failure that may pass.
pub(crate) fn classify(code: &str, message: String, status: u16) -> VendorError {
    if matches!(code, "160038" | "160039" | "160040" | "160041") {
        return VendorError::Throttled {
            message: format!("{code}: {message}"),
            retry_after: None,
        };
    }
    // 111101: the `Authorization` header cannot be decoded; 111104/111105: its
    // timestamp is malformed or expired; 111109: the `sig` does not match; 111141: no
    // such account; 111147: no such application. Other 111xxx codes are not listed here
    // because their meaning is not certain enough to take a vendor out of service.
    let unauthorized = matches!(
        code,
        "111101" | "111104" | "111105" | "111109" | "111141" | "111147"
    );
    if unauthorized && status < 500 {
        return VendorError::Unauthorized {
            code: code.to_owned(),
            message,
        };
    }
    let permanent = code == "160042"
        || code == "160043"
        || code.starts_with("16003")
        || code.starts_with("111")
        || code.starts_with("112")
        || code.starts_with("113");
    if permanent && status < 500 {
        return VendorError::Rejected {
            code: code.to_owned(),
            message,
        };
    }
    VendorError::Transient {
        message: format!("{VENDOR}: {code}: {message}"),
    }
}

#[async_trait]
impl Vendor for CloopenVendor {
    fn id(&self) -> VendorId {
        self.id.clone()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<Receipt, VendorError> {
        let recipients = sms.request.recipients();
        let mut split = SplitSend::new(VENDOR, recipients.len());
        for chunk in recipients.chunks(MAX_RECIPIENTS_PER_CALL) {
            match self.send_call(sms, chunk).await {
                Ok(r) => split.accept(r.vendor_message_id, chunk.len(), r.billed_messages),
                Err(e) => return Err(split.fail(e)),
            }
        }
        Ok(split.finish())
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
        let code = |c: &str| {
            parse_answer(
                200,
                &format!(r#"{{"statusCode":"{c}","statusMsg":"m"}}"#),
                1,
            )
            .unwrap_err()
        };
        assert!(matches!(code("160038"), VendorError::Throttled { .. }));
        assert!(matches!(code("160040"), VendorError::Throttled { .. }));
        assert!(matches!(code("160042"), VendorError::Rejected { .. }));
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
