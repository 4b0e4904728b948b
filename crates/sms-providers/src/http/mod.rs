//! The real vendors, over HTTP: Aliyun `SendSms`, Tencent Cloud `SendSms` (2021-01-11)
//! and Cloopen template SMS, each an [`sms_core::Vendor`].
//!
//! The Aliyun and Tencent Cloud adapters are also [`sms_core::ReceiptPull`]s, for an
//! account that does not push delivery receipts: Aliyun is asked about each pending send
//! (`QuerySendDetails`, four queries at a time; the receipts of the queries answered are
//! returned, and an error only when none was), Tencent hands out its queue of statuses
//! (`PullSmsSendStatus`, up to five calls of 100; a failure after the first call keeps
//! what was taken, which Tencent will not hand out again). Both sign as their `SendSms`
//! does and map the vendor's codes as in the table below.
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
    /// Each accepted recipient's id, as the call that took it answered.
    recipient_ids: Vec<(PhoneNumber, String)>,
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
            recipient_ids: Vec::with_capacity(total),
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
        self.recipient_ids.extend(
            recipients
                .iter()
                .map(|number| (number.clone(), vendor_id.clone())),
        );
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
            // One id for everybody needs no list.
            recipient_ids: if self.ids.len() > 1 {
                self.recipient_ids.clone()
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests;
