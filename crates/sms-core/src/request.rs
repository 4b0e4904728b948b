//! What a caller asks the gateway to send, validated once at the edge.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::callback_url::CallbackUrl;
use crate::error::ValidationError;
use crate::ids::{ClientId, IdempotencyKey, MessageId, TemplateId, VendorId};
use crate::phone::{PhoneNumber, parse_recipient, truncate_for_error};

/// Most recipients one request may name (Aliyun's per-call cap).
pub const MAX_RECIPIENTS: usize = 1000;
/// Most template arguments one request may carry.
pub const MAX_ARGS: usize = 32;
/// Longest template argument, in characters.
pub const MAX_ARG_CHARS: usize = 500;
/// Furthest ahead a message may be scheduled (`send_at`): 35 days.
pub const MAX_SCHEDULE_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(35);

/// A message's lane. High-priority messages (login codes) take the global limit first
/// and are claimed from the queue before normal ones; normal messages (notices, bulk)
/// get what is left, and a configurable minimum share of it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served first.
    High,
    /// Everything else.
    #[default]
    Normal,
}

impl Priority {
    /// Both lanes, in the order they are served.
    pub const ALL: [Priority; 2] = [Self::High, Self::Normal];

    /// The lower-case name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
        }
    }

    /// Whether this is the normal lane (left out when serialised).
    pub(crate) fn is_normal(&self) -> bool {
        *self == Self::Normal
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "priority",
                    format!(
                        "expected \"high\" or \"normal\", found {:?}",
                        truncate_for_error(s)
                    ),
                )
            })
    }
}

/// A validated request: template, ordered arguments, distinct E.164 recipients, and the
/// optional idempotency key, deliver-by time and status callback endpoint.
///
/// Arguments are kept as a list of strings end to end (no separator encoding), so any
/// text survives: `###`, `;`, quotes, emoji, empty strings.
///
/// The content is shared, not copied, between clones: a request is cloned on its way to
/// the vendor, the store and the look-up records, and a clone costs one reference count.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSmsRequest", into = "RawSmsRequest")]
pub struct SmsRequest(Arc<Content>);

#[derive(Clone, PartialEq, Eq)]
struct Content {
    template: TemplateId,
    args: Vec<String>,
    recipients: Vec<PhoneNumber>,
    idempotency_key: Option<IdempotencyKey>,
    expires_at: Option<DateTime<Utc>>,
    callback_url: Option<CallbackUrl>,
    resend: Option<Resend>,
    client: Option<ClientId>,
    priority: Priority,
    send_at: Option<DateTime<Utc>>,
}

/// What makes a message a re-send: the message a vendor could not deliver, and that
/// vendor, which the re-send avoids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resend {
    /// The undelivered message.
    pub of: MessageId,
    /// The vendor that did not deliver it.
    pub avoid: VendorId,
}

impl fmt::Debug for SmsRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsRequest")
            .field("template", &self.0.template)
            .field("args", &self.0.args)
            .field("recipients", &self.0.recipients)
            .field("idempotency_key", &self.0.idempotency_key)
            .field("expires_at", &self.0.expires_at)
            .field("callback_url", &self.0.callback_url)
            .field("resend", &self.0.resend)
            .field("client", &self.0.client)
            .field("priority", &self.0.priority)
            .field("send_at", &self.0.send_at)
            .finish()
    }
}

impl From<SmsRequest> for RawSmsRequest {
    fn from(request: SmsRequest) -> Self {
        request.to_raw()
    }
}

/// The unvalidated shape of a request, as it arrives (JSON, storage rows).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawSmsRequest {
    /// Template id.
    pub template: String,
    /// Template arguments, in order.
    #[serde(default)]
    pub args: Vec<String>,
    /// Recipients, in any common international spelling.
    pub recipients: Vec<String>,
    /// Optional idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Optional deliver-by time.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Optional endpoint for status events about the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Set on a re-send of an undelivered message (never by callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend: Option<Resend>,
    /// The client that sent it (set from its token, never by the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Its lane.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// When it is to be sent, when scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<DateTime<Utc>>,
}

impl SmsRequest {
    /// Validates a request to `recipients` with `template` and `args`; no key, no expiry.
    pub fn new<A, R>(template: &str, args: A, recipients: R) -> Result<Self, ValidationError>
    where
        A: IntoIterator,
        A::Item: Into<String>,
        R: IntoIterator,
        R::Item: AsRef<str>,
    {
        Self::try_from(RawSmsRequest {
            template: template.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            recipients: recipients
                .into_iter()
                .map(|r| r.as_ref().to_owned())
                .collect(),
            idempotency_key: None,
            expires_at: None,
            callback_url: None,
            resend: None,
            client: None,
            priority: Priority::Normal,
            send_at: None,
        })
    }

    /// The same request with an idempotency key.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        Arc::make_mut(&mut self.0).idempotency_key = Some(key);
        self
    }

    /// The same request with a deliver-by time: after it, the message is expired, not sent.
    pub fn with_expiry(mut self, expires_at: DateTime<Utc>) -> Self {
        Arc::make_mut(&mut self.0).expires_at = Some(expires_at);
        self
    }

    /// The same request with an endpoint for its status events.
    pub fn with_callback_url(mut self, url: CallbackUrl) -> Self {
        Arc::make_mut(&mut self.0).callback_url = Some(url);
        self
    }

    /// The same request marked as a re-send of `resend.of`, kept from `resend.avoid`.
    pub fn with_resend(mut self, resend: Resend) -> Self {
        Arc::make_mut(&mut self.0).resend = Some(resend);
        self
    }

    /// The same request recorded as `client`'s.
    pub fn with_client(mut self, client: ClientId) -> Self {
        Arc::make_mut(&mut self.0).client = Some(client);
        self
    }

    /// The same request in lane `priority`.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        Arc::make_mut(&mut self.0).priority = priority;
        self
    }

    /// The same request scheduled for `send_at`: stored, and sent when due. How far
    /// ahead it may be is checked where the request enters (see [`MAX_SCHEDULE_AHEAD`]).
    pub fn with_send_at(mut self, send_at: DateTime<Utc>) -> Self {
        Arc::make_mut(&mut self.0).send_at = Some(send_at);
        self
    }

    /// The same request without the recipients in `sent` (a vendor took it for them);
    /// `None` when no recipient would be left.
    pub fn without(&self, sent: &[PhoneNumber]) -> Option<Self> {
        let left: Vec<PhoneNumber> = self
            .recipients()
            .iter()
            .filter(|r| !sent.contains(r))
            .cloned()
            .collect();
        if left.is_empty() {
            return None;
        }
        let mut narrowed = self.clone();
        Arc::make_mut(&mut narrowed.0).recipients = left;
        Some(narrowed)
    }

    /// The template id.
    pub fn template(&self) -> &TemplateId {
        &self.0.template
    }
    /// The arguments, in order.
    pub fn args(&self) -> &[String] {
        &self.0.args
    }
    /// The recipients: distinct, normalised, in the caller's order.
    pub fn recipients(&self) -> &[PhoneNumber] {
        &self.0.recipients
    }
    /// The idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        self.0.idempotency_key.as_ref()
    }
    /// The deliver-by time, if any.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }

    /// Where its status events go, when the caller named an endpoint.
    pub fn callback_url(&self) -> Option<&CallbackUrl> {
        self.0.callback_url.as_ref()
    }

    /// Which undelivered message this re-sends, and the vendor it avoids; none for a
    /// caller's message.
    pub fn resend(&self) -> Option<&Resend> {
        self.0.resend.as_ref()
    }

    /// The client that sent it, when it was a named one.
    pub fn client(&self) -> Option<&ClientId> {
        self.0.client.as_ref()
    }

    /// Its lane.
    pub fn priority(&self) -> Priority {
        self.0.priority
    }

    /// When it is to be sent, when scheduled.
    pub fn send_at(&self) -> Option<DateTime<Utc>> {
        self.0.send_at
    }

    /// Whether the message is past its deliver-by time at `now`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.0.expires_at.is_some_and(|t| now >= t)
    }

    /// Whether two requests ask for the same message (template, arguments, recipients),
    /// whatever their keys and expiry: a retry with the same key must match this way.
    pub fn same_content(&self, other: &SmsRequest) -> bool {
        let (a, b) = (&self.0, &other.0);
        a.template == b.template && a.args == b.args && a.recipients == b.recipients
    }

    /// The unvalidated form, for storage.
    pub fn to_raw(&self) -> RawSmsRequest {
        RawSmsRequest {
            template: self.0.template.as_str().to_owned(),
            args: self.0.args.clone(),
            recipients: self
                .0
                .recipients
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            idempotency_key: self
                .0
                .idempotency_key
                .as_ref()
                .map(|k| k.as_str().to_owned()),
            expires_at: self.0.expires_at,
            callback_url: self.0.callback_url.as_ref().map(|u| u.as_str().to_owned()),
            resend: self.0.resend.clone(),
            client: self.0.client.as_ref().map(|c| c.as_str().to_owned()),
            priority: self.0.priority,
            send_at: self.0.send_at,
        }
    }
}

fn check_arg(index: usize, arg: &str) -> Result<(), ValidationError> {
    let field = || format!("args[{index}]");
    let chars = arg.chars().count();
    if chars > MAX_ARG_CHARS {
        return Err(ValidationError::new(
            field(),
            format!("expected at most {MAX_ARG_CHARS} characters, found {chars}"),
        ));
    }
    // Line breaks and tabs are fine in a message; other control characters are never
    // wanted and NUL cannot be stored by Postgres.
    if let Some(c) = arg
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ValidationError::new(
            field(),
            format!(
                "control character U+{:04X} is not allowed (only line breaks and tabs are)",
                c as u32
            ),
        ));
    }
    Ok(())
}

impl TryFrom<RawSmsRequest> for SmsRequest {
    type Error = ValidationError;

    fn try_from(raw: RawSmsRequest) -> Result<Self, Self::Error> {
        let template = TemplateId::new(&raw.template)?;
        if raw.args.len() > MAX_ARGS {
            return Err(ValidationError::new(
                "args",
                format!(
                    "expected at most {MAX_ARGS} arguments, found {}",
                    raw.args.len()
                ),
            ));
        }
        for (i, arg) in raw.args.iter().enumerate() {
            check_arg(i, arg)?;
        }
        if raw.recipients.is_empty() {
            return Err(ValidationError::new(
                "recipients",
                "expected at least one recipient, found none",
            ));
        }
        if raw.recipients.len() > MAX_RECIPIENTS {
            return Err(ValidationError::new(
                "recipients",
                format!(
                    "expected at most {MAX_RECIPIENTS} recipients, found {}",
                    raw.recipients.len()
                ),
            ));
        }
        let mut seen = HashSet::with_capacity(raw.recipients.len());
        let mut recipients = Vec::with_capacity(raw.recipients.len());
        for (i, input) in raw.recipients.iter().enumerate() {
            let number = parse_recipient(i, input)?;
            if !seen.insert(number.clone()) {
                return Err(ValidationError::new(
                    format!("recipients[{i}]"),
                    format!(
                        "duplicate recipient {}, given as {:?}",
                        number.masked(),
                        truncate_for_error(input)
                    ),
                ));
            }
            recipients.push(number);
        }
        let idempotency_key = raw
            .idempotency_key
            .as_deref()
            .map(IdempotencyKey::new)
            .transpose()?;
        let callback_url = raw
            .callback_url
            .as_deref()
            .map(CallbackUrl::new)
            .transpose()?;
        let client = raw.client.as_deref().map(ClientId::new).transpose()?;
        Ok(Self(Arc::new(Content {
            template,
            args: raw.args,
            recipients,
            idempotency_key,
            expires_at: raw.expires_at,
            callback_url,
            resend: raw.resend,
            client,
            priority: raw.priority,
            send_at: raw.send_at,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn without_keeps_the_other_recipients_in_order_and_nothing_else_changes() {
        let request = SmsRequest::new(
            "t",
            ["1"],
            ["+8613800000001", "+8613800000002", "+8613800000003"],
        )
        .unwrap()
        .with_idempotency_key(crate::IdempotencyKey::new("k").unwrap());
        let first = request.recipients()[0].clone();
        let rest = request.without(std::slice::from_ref(&first)).unwrap();
        assert_eq!(rest.recipients(), &request.recipients()[1..]);
        assert_eq!(rest.idempotency_key(), request.idempotency_key());
        assert_eq!(rest.args(), request.args());
        assert_eq!(request.recipients().len(), 3, "the original is untouched");
        assert!(request.without(request.recipients()).is_none());
    }

    #[test]
    fn empty_duplicate_and_too_many_recipients_are_named() {
        let e = SmsRequest::new("login", ["1"], Vec::<String>::new()).unwrap_err();
        assert_eq!(e.field, "recipients");
        let e =
            SmsRequest::new("login", ["1"], ["+8613800138000", "+86 138 0013 8000"]).unwrap_err();
        assert_eq!(e.field, "recipients[1]");
        assert!(e.problem.contains("duplicate"), "{e}");
        assert!(
            !e.problem.contains("13800138000"),
            "error must not leak the number: {e}"
        );
        let many: Vec<String> = (0..1001).map(|i| format!("+861380000{i:04}")).collect();
        let e = SmsRequest::new("login", ["1"], &many).unwrap_err();
        assert_eq!(e.field, "recipients");
        assert!(SmsRequest::new("login", ["1"], &many[..1000]).is_ok());
        let e = SmsRequest::new("login", ["1"], ["+8613800138000", "12345"]).unwrap_err();
        assert_eq!(e.field, "recipients[1]");
        assert!(e.problem.contains("\"12345\""), "{e}");
    }

    #[test]
    fn json_has_the_raw_shape_and_clones_share_the_content() {
        let expires = DateTime::parse_from_rfc3339("2026-05-10T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = SmsRequest::new("login", ["1234"], ["+86 138 0013 8000"])
            .unwrap()
            .with_idempotency_key(IdempotencyKey::new("k-1").unwrap())
            .with_expiry(expires);
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "template": "login",
                "args": ["1234"],
                "recipients": ["+8613800138000"],
                "idempotency_key": "k-1",
                "expires_at": "2026-05-10T08:00:00Z",
            })
        );
        let copy = r.clone();
        assert!(
            std::ptr::eq(copy.args(), r.args()),
            "a clone shares the content"
        );
        let changed = copy.with_expiry(expires + chrono::Duration::hours(1));
        assert_eq!(
            r.expires_at(),
            Some(expires),
            "changing a clone leaves the original"
        );
        assert_eq!(
            changed.expires_at(),
            Some(expires + chrono::Duration::hours(1))
        );
        assert!(format!("{r:?}").starts_with("SmsRequest { template: "));
        assert!(
            !format!("{r:?}").contains("13800138000"),
            "numbers stay masked"
        );
    }

    #[test]
    fn arguments_keep_any_text() {
        let args = [
            "a###b",
            "x;y",
            "",
            "\"quoted\" 'single'",
            "验证码 😀",
            "line\nbreak",
        ];
        let r = SmsRequest::new("login", args, ["+8613800138000"]).unwrap();
        assert_eq!(r.args(), args);
        let json = serde_json::to_string(&r).unwrap();
        let back: SmsRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // An empty string stays one empty argument; no arguments stay none.
        let r = SmsRequest::new("login", [""], ["+8613800138000"]).unwrap();
        assert_eq!(r.args().len(), 1);
        let r = SmsRequest::new("login", Vec::<String>::new(), ["+8613800138000"]).unwrap();
        assert!(r.args().is_empty());
    }

    #[test]
    fn control_characters_and_oversized_arguments_are_refused() {
        let e = SmsRequest::new("login", ["ok", "bad\u{7}"], ["+8613800138000"]).unwrap_err();
        assert_eq!(e.field, "args[1]");
        assert!(e.problem.contains("U+0007"));
        let e = SmsRequest::new("login", ["x".repeat(501)], ["+8613800138000"]).unwrap_err();
        assert_eq!(e.field, "args[0]");
        let e = SmsRequest::new("login", vec!["a"; 33], ["+8613800138000"]).unwrap_err();
        assert_eq!(e.field, "args");
        let e = SmsRequest::new("", ["a"], ["+8613800138000"]).unwrap_err();
        assert_eq!(e.field, "template");
    }

    #[test]
    fn deserialising_validates() {
        let ok = r#"{"template":"login","args":["1"],"recipients":["+8613800138000"],"idempotency_key":"k1"}"#;
        let r: SmsRequest = serde_json::from_str(ok).unwrap();
        assert_eq!(r.idempotency_key().unwrap().as_str(), "k1");
        let bad = r#"{"template":"login","args":["1"],"recipients":["abc"]}"#;
        let e = serde_json::from_str::<SmsRequest>(bad).unwrap_err();
        assert!(e.to_string().contains("recipients[0]"), "{e}");
    }

    #[test]
    fn same_content_ignores_key_and_expiry() {
        let a = SmsRequest::new("login", ["1"], ["+8613800138000"]).unwrap();
        let b = a
            .clone()
            .with_idempotency_key(IdempotencyKey::new("k").unwrap())
            .with_expiry(Utc::now());
        assert!(a.same_content(&b));
        let c = SmsRequest::new("login", ["2"], ["+8613800138000"]).unwrap();
        assert!(!a.same_content(&c));
    }

    proptest! {
        #[test]
        fn any_printable_arguments_round_trip_through_json(args in proptest::collection::vec("[^\\p{Cc}]{0,40}", 0..8)) {
            let r = SmsRequest::new("t", args.clone(), ["+8613800138000"]).unwrap();
            let back: SmsRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            prop_assert_eq!(back.args(), &args[..]);
        }
    }
}
