//! The real vendors, over HTTP: Aliyun `SendSms`, Tencent Cloud `SendSms` (2021-01-11)
//! and Cloopen template SMS, each an [`sms_core::Vendor`].
//!
//! Each adapter sends the vendor's own template for the message (`sms.template.id`,
//! Aliyun's variable names from `sms.template.params`) under the template's signature
//! when it has one, else the vendor's configured one.
//!
//! Every adapter owns one `reqwest::Client` (so connections are reused), bounds each
//! request with its configured timeout, and maps every vendor answer onto
//! [`VendorError`]'s kinds:
//!
//! | answer | kind |
//! | --- | --- |
//! | the vendor's per-number limit (Aliyun `isv.BUSINESS_LIMIT_CONTROL`; Tencent `LimitExceeded.PhoneNumber*`; Cloopen 160038–160041) | `RecipientRefused`, with the window the code names |
//! | template, signature or parameters not approved at this vendor (Aliyun `isv.SMS_TEMPLATE_ILLEGAL`, `isv.SMS_SIGNATURE_ILLEGAL`, `isv.TEMPLATE_*`; Tencent `FailedOperation.TemplateIncorrectOrUnapproved`, `FailedOperation.SignatureIncorrectOrUnapproved`, …; Cloopen 160032, 160043) | `Misconfigured` |
//! | other throttling (the API's own rate limits, the account's daily and monthly caps such as Aliyun `isv.DAY_LIMIT_CONTROL`, Tencent's other `LimitExceeded.*`, HTTP 429) | `Throttled` |
//! | bad number, content refused (the message's own fault) | `Rejected` |
//! | credentials or request signature refused (Aliyun `InvalidAccessKeyId.*`, `SignatureDoesNotMatch`, `Forbidden.*`; Tencent `AuthFailure.*`, `UnauthorizedOperation.*`; Cloopen 111101, 111104, 111105, 111109, 111141, 111147; HTTP 401/403 without a code) | `Unauthorized` |
//! | 5xx, connection refused or reset before the request was sent, vendor system error | `Transient` |
//! | timeout after the request was written, or a 2xx answer that cannot be read | `TimedOut` (outcome unknown) |
//! | some recipients taken, then a failure for the others (a later call of a split send fails; Tencent refuses some numbers of a call and takes the rest) | `PartlySent`: the recipients taken, their [`Receipt`], and the others' failure, of one of the kinds above |
//!
//! A [`Receipt`]'s `billed_messages` is counted from the message's text as the vendor
//! bills it: segments of `【signature】text` per recipient ([`OutboundSms::billed_segments`]),
//! one per recipient when the text is not known. Tencent also reports its own count
//! (`Fee`), which goes in `reported_billed`.
//!
//! Requests over a vendor's recipient cap (Aliyun 1000, Tencent 200, Cloopen 100) are
//! split into consecutive calls; a request holds at most
//! [`sms_core::MAX_RECIPIENTS`] (1000), so today only Tencent and Cloopen split.
//! Sending stops at the first call that fails. When no recipient was accepted yet, that
//! call's error is returned as is; when some were, the send is reported as
//! [`VendorError::PartlySent`]: the recipients accepted, in order, a receipt for them (the
//! calls' vendor ids joined, the messages billed for them as counted from the text,
//! Tencent's own count while every call gave one), and the failure as the inner error.
//! The gateway bills what was taken and retries only the others, as the inner error's
//! kind says: nobody gets the message twice, and the others are not given up merely
//! because some went out. Tencent answers each number of a call on its own, so a single
//! call can be partly sent the same way.
//!
//! Each call is bounded by the adapter's timeout, so a split send may take up to that
//! timeout times its calls; the adapters say so through
//! [`sms_core::Vendor::split_send_time`], and the gateway waits that long rather than cut
//! the send mid-way and lose which recipients were sent. A call that times out after
//! earlier ones were accepted is `PartlySent` with `TimedOut` inside.
//!
//! Credentials live in [`Secret`]s, whose `Debug` prints `***`, and are never logged.

pub mod aliyun;
pub mod cloopen;
pub mod sign;
pub mod tencent;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sms_core::{OutboundSms, PhoneNumber, Receipt, VendorError, billed_segments, signed_text};

pub use aliyun::{AliyunConfig, AliyunVendor};
pub use cloopen::{CloopenConfig, CloopenVendor};
pub use tencent::{TencentConfig, TencentVendor};

/// Default per-request timeout when the configuration names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a send to `recipients` may take when one call takes at most `per_call`
/// and `per_call_cap` recipients: `per_call` times the calls, or `None` for one call
/// (which the gateway's own attempt timeout bounds). See the module documentation.
pub(crate) fn split_send_time(
    per_call: Duration,
    per_call_cap: usize,
    recipients: usize,
) -> Option<Duration> {
    let calls = recipients.div_ceil(per_call_cap);
    (calls > 1).then(|| per_call.saturating_mul(u32::try_from(calls).unwrap_or(u32::MAX)))
}

/// A credential (access key secret, secret key, auth token). Its `Debug`, `Display` and
/// serialisation print `***`, so a stray `{:?}` or a printed configuration cannot leak it.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for signing. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no credential was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// A vendor adapter's configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpConfigError {
    /// A required setting is missing from the configuration and from the environment.
    #[error("{vendor}: {field} is missing; set it in the configuration or in ${env}")]
    Missing {
        /// The vendor (`aliyun`, `tencent`, `cloopen`).
        vendor: &'static str,
        /// The configuration field.
        field: &'static str,
        /// The environment variable that may hold it.
        env: &'static str,
    },
    /// The base URL does not parse or is not http(s).
    #[error("{vendor}: base_url {url:?} is not an http or https URL")]
    BaseUrl {
        /// The vendor.
        vendor: &'static str,
        /// The URL as given.
        url: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("{vendor}: cannot build the HTTP client: {message}")]
    Client {
        /// The vendor.
        vendor: &'static str,
        /// What the HTTP library said.
        message: String,
    },
}

/// Fills `value` from the environment variable `env` (through `lookup`) when empty, and
/// fails when it is still empty.
pub(crate) fn require(
    value: &mut String,
    vendor: &'static str,
    field: &'static str,
    env: &'static str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), HttpConfigError> {
    if value.is_empty() {
        if let Some(v) = lookup(env) {
            *value = v;
        }
    }
    if value.is_empty() {
        return Err(HttpConfigError::Missing { vendor, field, env });
    }
    Ok(())
}

/// Overrides `value` from the environment when the variable is set and not empty.
pub(crate) fn override_from_env(
    value: &mut String,
    env: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) {
    if let Some(v) = lookup(env).filter(|v| !v.is_empty()) {
        *value = v;
    }
}

/// The process environment, as the `lookup` of `with_env_from`.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses and checks a base URL.
pub(crate) fn parse_base_url(
    vendor: &'static str,
    url: &str,
) -> Result<reqwest::Url, HttpConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err(HttpConfigError::BaseUrl {
            vendor,
            url: url.to_owned(),
        }),
    }
}

/// The value of the `Host` header reqwest sends for `url`: the host, plus `:port` when
/// the port is not the scheme's default. Tencent signs exactly this value.
pub(crate) fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// One client per adapter: connections are pooled and reused across sends.
pub(crate) fn build_client(
    vendor: &'static str,
    timeout: Duration,
) -> Result<reqwest::Client, HttpConfigError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| HttpConfigError::Client {
            vendor,
            message: e.to_string(),
        })
}

/// Maps a transport failure. A connection that was never made is a clean failure
/// (`Transient`); a timeout once the request may have been written is an unknown outcome.
/// The refusals every vendor's code table starts with, as kinds: a per-number limit
/// (`per_number`, its window) refuses the recipient, a template, signature or
/// parameter code (`misconfigured`) says our mapping is wrong at the vendor. `None` for
/// any other code, which the vendor's own table goes on to map.
pub(crate) fn refusal(
    code: &str,
    message: String,
    per_number: Option<Duration>,
    misconfigured: bool,
) -> Result<VendorError, String> {
    let code = code.to_owned();
    match (per_number, misconfigured) {
        (Some(retry_after), _) => Ok(VendorError::RecipientRefused {
            code,
            message,
            retry_after,
        }),
        (None, true) => Ok(VendorError::Misconfigured { code, message }),
        (None, false) => Err(message),
    }
}

pub(crate) fn transport_error(vendor: &str, error: &reqwest::Error) -> VendorError {
    if error.is_connect() {
        VendorError::Transient {
            message: format!("{vendor}: cannot connect: {}", without_url(error)),
        }
    } else if error.is_timeout() {
        VendorError::TimedOut
    } else {
        VendorError::Transient {
            message: format!("{vendor}: request failed: {}", without_url(error)),
        }
    }
}

/// Reads an answer's status and body. A body that breaks off after a 2xx status is an
/// unknown outcome, not a clean failure: the vendor said yes before the connection died.
pub(crate) async fn read_answer_body(
    vendor: &str,
    response: reqwest::Response,
) -> Result<(u16, String), VendorError> {
    let status = response.status().as_u16();
    match response.text().await {
        Ok(body) => Ok((status, body)),
        Err(e) if (200..300).contains(&status) => {
            tracing::warn!(vendor, status, error = %without_url(&e), "answer body broke off after a success status; outcome unknown");
            Err(VendorError::TimedOut)
        }
        Err(e) => Err(transport_error(vendor, &e)),
    }
}

/// reqwest puts the URL in its messages; Cloopen's carries the `sig` in its query, so
/// the URL is dropped from anything that may be logged.
fn without_url(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut parts = Vec::new();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    if parts.is_empty() {
        "no detail".to_owned()
    } else {
        parts.join(": ")
    }
}

/// A 2xx answer whose body cannot be read: the vendor may well have sent the message,
/// so the outcome is unknown.
pub(crate) fn unreadable_success(vendor: &str, status: u16, body: &str) -> VendorError {
    tracing::warn!(
        vendor,
        status,
        body = %truncate(body),
        "unreadable answer from the vendor; outcome unknown"
    );
    VendorError::TimedOut
}

/// An answer that is neither a known success nor carries a vendor code.
pub(crate) fn status_error(vendor: &str, status: u16, body: &str) -> VendorError {
    if (200..300).contains(&status) {
        unreadable_success(vendor, status, body)
    } else if status == 429 {
        // Too Many Requests: we send too fast for the account, whoever the recipients.
        VendorError::Throttled {
            message: format!("{vendor}: HTTP 429: {}", truncate(body)),
            retry_after: None,
        }
    } else if status >= 500 {
        VendorError::Transient {
            message: format!("{vendor}: HTTP {status}: {}", truncate(body)),
        }
    } else if status == 401 || status == 403 {
        // Without a vendor code these still say the request's credentials were refused:
        // every message would meet the same answer, so it is the vendor that is unusable.
        VendorError::Unauthorized {
            code: format!("HTTP_{status}"),
            message: truncate(body),
        }
    } else {
        VendorError::Rejected {
            code: format!("HTTP_{status}"),
            message: truncate(body),
        }
    }
}

/// Keeps vendor bodies short in errors and logs.
pub(crate) fn truncate(body: &str) -> String {
    const LIMIT: usize = 200;
    if body.chars().count() <= LIMIT {
        body.to_owned()
    } else {
        let mut s: String = body.chars().take(LIMIT).collect();
        s.push('…');
        s
    }
}

/// Whether `number` is a mainland China mobile number (`+86` then 11 digits starting with 1).
pub(crate) fn is_mainland_mobile(number: &PhoneNumber) -> bool {
    let digits = number.digits();
    digits.len() == 13 && digits.starts_with("861")
}

/// Messages a vendor bills per recipient for one outbound message: the signed text's
/// segments ([`billed_segments`]), or one when the text is not known. Split sends count
/// each call's recipients with it, so the calls add up to
/// [`OutboundSms::billed_segments`] for the whole message.
#[derive(Debug)]
pub(crate) struct Billing {
    /// `【signature】text`, when the text is known.
    signed: Option<String>,
}

impl Billing {
    /// Billing for `sms` sent under `signature` (already resolved with
    /// [`OutboundSms::signature`]).
    pub(crate) fn new(sms: &OutboundSms, signature: &str) -> Self {
        Self {
            signed: sms.text.as_deref().map(|body| signed_text(signature, body)),
        }
    }

    /// Messages billed for one recipient.
    pub(crate) fn of(&self, number: &PhoneNumber) -> u64 {
        self.signed
            .as_deref()
            .map_or(1, |text| billed_segments(text, number))
    }

    /// Messages billed for every recipient in `numbers`.
    pub(crate) fn of_all(&self, numbers: &[PhoneNumber]) -> u64 {
        numbers.iter().map(|n| self.of(n)).sum()
    }
}

/// Accumulates the results of the calls a split send made, and reports a failure
/// honestly (see the module documentation).
#[derive(Debug)]
pub(crate) struct SplitSend {
    vendor: &'static str,
    total: usize,
    /// The recipients the vendor accepted so far, in the order sent.
    sent: Vec<PhoneNumber>,
    billed: u64,
    /// The vendor's own count over the accepted recipients, while every call reported one.
    reported: Option<u64>,
    ids: Vec<String>,
}

impl SplitSend {
    pub(crate) fn new(vendor: &'static str, total: usize) -> Self {
        Self {
            vendor,
            total,
            sent: Vec::with_capacity(total),
            billed: 0,
            reported: Some(0),
            ids: Vec::new(),
        }
    }

    /// Records `recipients` the vendor accepted under `vendor_id`: `billed` messages as
    /// counted from the text, `reported` as the vendor counted them, when it said. One
    /// acceptance without a vendor count leaves the whole send without one.
    pub(crate) fn accept(
        &mut self,
        vendor_id: String,
        recipients: &[PhoneNumber],
        billed: u64,
        reported: Option<u64>,
    ) {
        self.sent.extend_from_slice(recipients);
        self.billed += billed;
        self.reported = self.reported.zip(reported).map(|(sum, more)| sum + more);
        if !vendor_id.is_empty() && !self.ids.contains(&vendor_id) {
            self.ids.push(vendor_id);
        }
    }

    /// The send stops here with `error`: returned as is when nobody got the message,
    /// else as [`VendorError::PartlySent`] with the accepted recipients and their receipt.
    pub(crate) fn fail(self, error: VendorError) -> VendorError {
        if self.sent.is_empty() {
            return error;
        }
        // Counts only: recipients' numbers stay out of the logs.
        tracing::warn!(
            vendor = self.vendor,
            sent = self.sent.len(),
            total = self.total,
            billed = self.billed,
            error = %error,
            "vendor took the message for some recipients and failed for the others"
        );
        let receipt = self.receipt();
        VendorError::PartlySent {
            sent: self.sent,
            receipt,
            error: Box::new(error),
        }
    }

    /// Every recipient was accepted.
    pub(crate) fn finish(self) -> Receipt {
        self.receipt()
    }

    /// What the vendor answered for the recipients accepted so far.
    fn receipt(&self) -> Receipt {
        Receipt {
            vendor_message_id: self.ids.join(","),
            billed_messages: self.billed,
            reported_billed: self.reported.filter(|_| !self.sent.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
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
                    }
                );
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
}
