//! Logical templates: the name a caller sends (`login_code`), mapped to the template
//! each vendor approved.
//!
//! Every vendor approves its own templates and gives them its own ids: Aliyun
//! `SMS_154950909` with named variables (`${code}`), Tencent a numeric id with
//! positional parameters, Cloopen a numeric id with `datas`. A caller names one logical
//! template with ordered arguments; [`Templates`] says, for each vendor, which of its
//! templates to use, under which variable names and with which signature. A vendor
//! without a mapping for a template cannot send it.
//!
//! An empty [`Templates`] is pass-through: the caller's template name goes to the
//! vendor unchanged, which suits a deployment with one vendor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{MessageId, VendorId};
use crate::request::{Priority, SmsRequest};
use crate::segments::{billed_segments, signed_text};

/// How one vendor sends a logical template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorTemplate {
    /// The vendor's approved template id.
    pub id: String,
    /// The vendor's variable names, in argument order (Aliyun's `${code}` is `code`).
    /// Empty for vendors with positional parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// A signature for this template at this vendor, instead of the vendor's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_name: Option<String>,
}

/// One logical template: its text, if known, and its id at each vendor that has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The text with `{1}`, `{2}`, … standing for the arguments, used to count billed
    /// segments and by simulated vendors; the vendors keep their own copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The template at each vendor that can send it, by vendor name.
    #[serde(default)]
    pub vendors: BTreeMap<VendorId, VendorTemplate>,
    /// A recipient whose receipt says undelivered gets the message once more, through
    /// another vendor, while its deliver-by time has not passed (login codes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend_undelivered: bool,
    /// The lane of its messages when the request names none: `"high"` for login
    /// codes, which take the global limit and the queue first.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
}

/// A piece of a template's text.
enum Piece<'a> {
    Literal(&'a str),
    /// `{n}`: the n-th argument, counted from 1.
    Arg(usize),
}

/// Splits a text into literals and `{n}` placeholders; anything else in braces is text.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let number = (digits > 0 && after[digits..].starts_with('}'))
            .then(|| after[..digits].parse::<usize>().ok())
            .flatten()
            .filter(|n| *n > 0);
        match number {
            Some(n) => {
                out.push(Piece::Literal(&rest[..open]));
                out.push(Piece::Arg(n));
                rest = &after[digits + 1..];
            }
            None => {
                out.push(Piece::Literal(&rest[..=open]));
                rest = after;
            }
        }
    }
    out.push(Piece::Literal(rest));
    out
}

/// The argument numbers a text's `{n}` placeholders name, in order of appearance.
fn placeholders(text: &str) -> Vec<usize> {
    pieces(text)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Arg(n) => Some(n),
            Piece::Literal(_) => None,
        })
        .collect()
}

impl Template {
    /// How many arguments the template takes, when its text or a vendor's variable
    /// names say.
    pub fn arg_count(&self) -> Option<usize> {
        if let Some(text) = &self.text {
            return Some(placeholders(text).into_iter().max().unwrap_or(0));
        }
        self.vendors
            .values()
            .map(|v| v.params.len())
            .find(|n| *n > 0)
    }

    /// The text with `args` in place, when the text is known.
    pub fn render(&self, args: &[String]) -> Option<String> {
        let text = self.text.as_ref()?;
        let mut out =
            String::with_capacity(text.len() + args.iter().map(String::len).sum::<usize>());
        for piece in pieces(text) {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Arg(n) => out.push_str(args.get(n - 1).map_or("", String::as_str)),
            }
        }
        Some(out)
    }

    /// The template at `vendor`, if it has one.
    pub fn at(&self, vendor: &VendorId) -> Option<&VendorTemplate> {
        self.vendors.get(vendor)
    }

    fn validate(&self, name: &str) -> Result<(), ValidationError> {
        let field = |rest: &str| format!("templates.{name}{rest}");
        if self.vendors.is_empty() {
            return Err(ValidationError::new(
                field(".vendors"),
                "expected at least one vendor with this template, found none",
            ));
        }
        if let Some(text) = &self.text {
            let used = placeholders(text);
            let max = used.iter().copied().max().unwrap_or(0);
            if let Some(missing) = (1..=max).find(|n| !used.contains(n)) {
                return Err(ValidationError::new(
                    field(".text"),
                    format!(
                        "uses {{{max}}} but not {{{missing}}}: number the arguments from {{1}} without gaps"
                    ),
                ));
            }
        }
        let expected = self.arg_count();
        for (vendor, at) in &self.vendors {
            let here = |key: &str| field(&format!(".vendors.{vendor}.{key}"));
            if at.id.trim().is_empty() {
                return Err(ValidationError::new(
                    here("id"),
                    "expected the vendor's template id, found an empty string",
                ));
            }
            if !at.params.is_empty() && Some(at.params.len()) != expected {
                return Err(ValidationError::new(
                    here("params"),
                    format!(
                        "names {} variables, but the template takes {} arguments",
                        at.params.len(),
                        expected.unwrap_or(0)
                    ),
                ));
            }
            if at.params.iter().any(|p| p.trim().is_empty()) {
                return Err(ValidationError::new(
                    here("params"),
                    "a variable name is empty",
                ));
            }
            if at.sign_name.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(ValidationError::new(
                    here("sign_name"),
                    "expected a signature, found an empty string",
                ));
            }
        }
        Ok(())
    }
}

/// Every logical template, by name. Empty means pass-through (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, Template>",
    into = "BTreeMap<String, Template>"
)]
pub struct Templates(BTreeMap<String, Template>);

impl TryFrom<BTreeMap<String, Template>> for Templates {
    type Error = ValidationError;
    fn try_from(templates: BTreeMap<String, Template>) -> Result<Self, Self::Error> {
        Self::new(templates)
    }
}

impl From<Templates> for BTreeMap<String, Template> {
    fn from(templates: Templates) -> Self {
        templates.0
    }
}

impl Templates {
    /// Validates every template: names, placeholders numbered without gaps, variable
    /// names that match the argument count, at least one vendor each.
    pub fn new(templates: BTreeMap<String, Template>) -> Result<Self, ValidationError> {
        for (name, template) in &templates {
            crate::ids::TemplateId::new(name)
                .map_err(|e| ValidationError::new(format!("templates.{name}"), e.problem))?;
            template.validate(name)?;
        }
        Ok(Self(templates))
    }

    /// No templates: the caller's template name goes to every vendor unchanged.
    pub fn is_pass_through(&self) -> bool {
        self.0.is_empty()
    }

    /// The template named `name`.
    pub fn get(&self, name: &str) -> Option<&Template> {
        self.0.get(name)
    }

    /// Every template, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Template)> {
        self.0.iter().map(|(name, t)| (name.as_str(), t))
    }

    /// Refuses a template that maps a vendor not among `vendors`, naming it.
    pub fn check_vendors(&self, vendors: &[VendorId]) -> Result<(), ValidationError> {
        for (name, template) in &self.0 {
            if let Some(unknown) = template.vendors.keys().find(|v| !vendors.contains(v)) {
                return Err(ValidationError::new(
                    format!("templates.{name}.vendors.{unknown}"),
                    format!(
                        "no vendor is named {unknown:?}; configured: {}",
                        vendors
                            .iter()
                            .map(VendorId::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks a request against its template: known (unless pass-through) and given
    /// as many arguments as it takes.
    pub fn check(&self, request: &SmsRequest) -> Result<(), ValidationError> {
        if self.is_pass_through() {
            return Ok(());
        }
        let name = request.template().as_str();
        let Some(template) = self.get(name) else {
            return Err(ValidationError::new(
                "template",
                format!(
                    "unknown template {name:?}; configured: {}",
                    self.0.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if let Some(expected) = template.arg_count() {
            let found = request.args().len();
            if found != expected {
                return Err(ValidationError::new(
                    "args",
                    format!("template {name:?} takes {expected} arguments, found {found}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `vendor` can send the request's template.
    pub fn can_send(&self, request: &SmsRequest, vendor: &VendorId) -> bool {
        self.is_pass_through()
            || self
                .get(request.template().as_str())
                .is_some_and(|t| t.vendors.contains_key(vendor))
    }

    /// The message as `vendor` is to send it; `None` when the vendor has no mapping for
    /// its template.
    pub fn outbound(
        &self,
        id: MessageId,
        request: &SmsRequest,
        vendor: &VendorId,
    ) -> Option<OutboundSms> {
        if self.is_pass_through() {
            return Some(OutboundSms::pass_through(id, request.clone()));
        }
        let template = self.get(request.template().as_str())?;
        let at = template.at(vendor)?;
        Some(OutboundSms {
            id,
            template: at.clone(),
            text: template.render(request.args()),
            request: request.clone(),
        })
    }
}

/// One message handed to one vendor: the gateway's id (for the vendor's `OutId` or
/// session context, and for delivery logs), the request, and the vendor's template for
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSms {
    /// The gateway's id for this message.
    pub id: MessageId,
    /// What to send.
    pub request: SmsRequest,
    /// The vendor's template id, variable names and signature for this message.
    pub template: VendorTemplate,
    /// The text with the arguments in place, signature not included, when known.
    pub text: Option<String>,
}

impl OutboundSms {
    /// A message whose template name is the vendor's template id (no catalogue).
    pub fn pass_through(id: MessageId, request: SmsRequest) -> Self {
        Self {
            id,
            template: VendorTemplate {
                id: request.template().as_str().to_owned(),
                params: Vec::new(),
                sign_name: None,
            },
            text: None,
            request,
        }
    }

    /// The signature to send: the template's own at this vendor, or `default`.
    pub fn signature<'a>(&'a self, default: &'a str) -> &'a str {
        self.template.sign_name.as_deref().unwrap_or(default)
    }

    /// Messages the vendor bills for this send, signed with `default_signature` unless
    /// the template has its own: segments of the signed text summed over the
    /// recipients, or one per recipient when the text is not known.
    pub fn billed_segments(&self, default_signature: &str) -> u64 {
        let recipients = self.request.recipients();
        match &self.text {
            None => recipients.len() as u64,
            Some(body) => {
                let text = signed_text(self.signature(default_signature), body);
                recipients.iter().map(|r| billed_segments(&text, r)).sum()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor(name: &str) -> VendorId {
        VendorId::new(name).unwrap()
    }

    fn login_code() -> Templates {
        let toml_like = serde_json::json!({
            "login_code": {
                "text": "您的验证码是{1}，{2}分钟内有效。",
                "vendors": {
                    "aliyun": {"id": "SMS_154950909", "params": ["code", "minutes"]},
                    "tencent": {"id": "1860001", "sign_name": "腾讯云"},
                }
            },
            "notice": {"vendors": {"cloopen": {"id": "9001"}}}
        });
        serde_json::from_value(toml_like).unwrap()
    }

    #[test]
    fn renders_arguments_in_place_and_keeps_other_braces() {
        let t = Template {
            text: Some("{2}-{1} {x} {0} {}{".into()),
            ..Template::default()
        };
        assert_eq!(
            t.render(&["a".into(), "b".into()]).unwrap(),
            "b-a {x} {0} {}{"
        );
        assert_eq!(t.arg_count(), Some(2));
    }

    #[test]
    fn requests_are_checked_against_their_template() {
        let templates = login_code();
        let ok = SmsRequest::new("login_code", ["1234", "5"], ["+8613800138000"]).unwrap();
        assert!(templates.check(&ok).is_ok());
        let unknown = SmsRequest::new("login", ["1234"], ["+8613800138000"]).unwrap();
        let e = templates.check(&unknown).unwrap_err();
        assert_eq!(e.field, "template");
        assert!(e.problem.contains("login_code, notice"), "{e}");
        let short = SmsRequest::new("login_code", ["1234"], ["+8613800138000"]).unwrap();
        let e = templates.check(&short).unwrap_err();
        assert_eq!(e.field, "args");
        assert!(e.problem.contains("takes 2 arguments, found 1"), "{e}");
        // Without text or variable names the count is not known, so not checked.
        let notice = SmsRequest::new("notice", ["a", "b", "c"], ["+8613800138000"]).unwrap();
        assert!(templates.check(&notice).is_ok());
        // Pass-through checks nothing.
        assert!(Templates::default().check(&unknown).is_ok());
    }

    #[test]
    fn the_outbound_message_carries_the_vendors_template() {
        let templates = login_code();
        let request = SmsRequest::new("login_code", ["1234", "5"], ["+8613800138000"]).unwrap();
        let id = MessageId::new();
        let tencent = templates
            .outbound(id, &request, &vendor("tencent"))
            .unwrap();
        assert_eq!(tencent.template.id, "1860001");
        assert_eq!(
            tencent.text.as_deref(),
            Some("您的验证码是1234，5分钟内有效。")
        );
        assert_eq!(tencent.signature("default"), "腾讯云");
        let aliyun = templates.outbound(id, &request, &vendor("aliyun")).unwrap();
        assert_eq!(aliyun.template.params, ["code", "minutes"]);
        assert_eq!(aliyun.signature("阿里云"), "阿里云");
        assert!(
            templates
                .outbound(id, &request, &vendor("cloopen"))
                .is_none()
        );
        assert!(!templates.can_send(&request, &vendor("cloopen")));
        assert!(templates.can_send(&request, &vendor("aliyun")));
        let pass = Templates::default()
            .outbound(id, &request, &vendor("cloopen"))
            .unwrap();
        assert_eq!(pass.template.id, "login_code");
        assert_eq!(pass.text, None);
    }

    #[test]
    fn billed_segments_count_the_signature_and_every_recipient() {
        let templates = login_code();
        let long = "码".repeat(80);
        let request = SmsRequest::new(
            "login_code",
            [long.as_str(), "5"],
            ["+8613800138000", "+8613800138001"],
        )
        .unwrap();
        let sms = templates
            .outbound(MessageId::new(), &request, &vendor("aliyun"))
            .unwrap();
        // 【阿里云】 (5) + 您的验证码是 (6) + 80 + ，5分钟内有效。 (8) = 99: two each.
        assert_eq!(sms.billed_segments("阿里云"), 4);
        let pass = OutboundSms::pass_through(MessageId::new(), request);
        assert_eq!(
            pass.billed_segments("阿里云"),
            2,
            "one per recipient without a text"
        );
    }

    #[test]
    fn bad_catalogues_are_refused_naming_the_key() {
        let bad = |json: serde_json::Value| {
            serde_json::from_value::<Templates>(json)
                .unwrap_err()
                .to_string()
        };
        let e = bad(serde_json::json!({"t": {"text": "{1}", "vendors": {}}}));
        assert!(e.contains("templates.t.vendors"), "{e}");
        let e = bad(serde_json::json!({"t": {"text": "{2}", "vendors": {"a": {"id": "1"}}}}));
        assert!(e.contains("templates.t.text"), "{e}");
        let e = bad(
            serde_json::json!({"t": {"text": "{1}", "vendors": {"a": {"id": "1", "params": ["x", "y"]}}}}),
        );
        assert!(e.contains("templates.t.vendors.a.params"), "{e}");
        let e = bad(serde_json::json!({"t": {"vendors": {"a": {"id": " "}}}}));
        assert!(e.contains("templates.t.vendors.a.id"), "{e}");
        let e = bad(serde_json::json!({"t": {"vendors": {"a": {"id": "1", "colour": "x"}}}}));
        assert!(e.contains("colour"), "{e}");
        let e = bad(serde_json::json!({"bad name": {"vendors": {"a": {"id": "1"}}}}));
        assert!(e.contains("templates.bad name"), "{e}");
        let templates = login_code();
        let e = templates.check_vendors(&[vendor("aliyun")]).unwrap_err();
        assert_eq!(e.field, "templates.login_code.vendors.tencent");
        assert!(
            templates
                .check_vendors(&[vendor("aliyun"), vendor("tencent"), vendor("cloopen")])
                .is_ok()
        );
    }
}
