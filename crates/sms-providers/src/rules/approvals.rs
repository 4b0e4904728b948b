//! The templates and signatures a vendor account has approved, and the checks a
//! message meets against them.
//!
//! A real vendor knows its approved templates by its own id, with their variables
//! (Aliyun's `${code}`) or their count of positional parameters (Tencent, Cloopen), and
//! the signatures approved for the account. The gateway's catalogue says the same from
//! its side, so the approvals are built from it: for the vendor's configured name, each
//! mapping is an approved template, and each mapping's `sign_name`, or the vendor's
//! default signature, an approved signature.

use std::collections::{BTreeSet, HashMap};

use sms_core::{Template, Templates, VendorId};

use super::{Protocol, Refusal};

/// One template the vendor approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedTemplate {
    /// The vendor's template id.
    pub id: String,
    /// Aliyun's variable names, in argument order; empty when the catalogue names none
    /// (and always for the positional protocols, which ignore them).
    pub params: Vec<String>,
    /// How many arguments it takes, when the catalogue says.
    pub arg_count: Option<usize>,
    /// Its text with `{1}`, `{2}`, … for the arguments, when the catalogue has it.
    pub text: Option<String>,
    /// The signature it was approved with: the mapping's own or the vendor's default.
    pub sign_name: String,
}

impl ApprovedTemplate {
    /// The text with `args` in place, when the text is known.
    pub fn render(&self, args: &[String]) -> Option<String> {
        Template {
            text: self.text.clone(),
            ..Template::default()
        }
        .render(args)
    }
}

/// The arguments of a message as the protocol carries them.
#[derive(Debug, Clone, Copy)]
pub enum TemplateArgs<'a> {
    /// Aliyun's `TemplateParam`: variable name and value.
    Named(&'a [(String, String)]),
    /// Tencent's `TemplateParamSet`, Cloopen's `datas`: in order.
    Positional(&'a [String]),
}

/// What one vendor account has approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    protocol: Protocol,
    /// No catalogue: every template, signature and argument list is accepted.
    lenient: bool,
    /// By the vendor's template id.
    templates: HashMap<String, ApprovedTemplate>,
    signatures: BTreeSet<String>,
}

/// The vendor's codes and words for each approval check.
struct Codes {
    template: (&'static str, &'static str),
    /// `None`: the protocol binds the signature to the template and checks none apart.
    signature: Option<(&'static str, &'static str)>,
    missing_params: (&'static str, &'static str),
    illegal_params: (&'static str, &'static str),
}

fn codes(protocol: Protocol) -> Codes {
    match protocol {
        Protocol::Aliyun => Codes {
            template: ("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板"),
            signature: Some(("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")),
            missing_params: ("isv.TEMPLATE_MISSING_PARAMETERS", "模板变量缺少对应参数值"),
            illegal_params: ("isv.TEMPLATE_PARAMS_ILLEGAL", "模板变量里包含非法参数"),
        },
        Protocol::Tencent => {
            let params = (
                "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
                "the parameters do not match the approved template",
            );
            Codes {
                template: (
                    "FailedOperation.TemplateIncorrectOrUnapproved",
                    "the template is incorrect or not approved",
                ),
                signature: Some((
                    "FailedOperation.SignatureIncorrectOrUnapproved",
                    "the signature is incorrect or not approved",
                )),
                missing_params: params,
                illegal_params: params,
            }
        }
        // Cloopen answers one code for a template it does not have and for parameters
        // that do not fit it.
        Protocol::Cloopen => Codes {
            template: ("160032", "短信模板无效"),
            signature: None,
            missing_params: ("160032", "短信模板无效"),
            illegal_params: ("160032", "短信模板无效"),
        },
    }
}

fn refuse((code, words): (&'static str, &'static str), detail: String) -> Refusal {
    Refusal::Misconfigured {
        code,
        message: format!("{words}: {detail}"),
    }
}

impl Approvals {
    /// Approves anything: what a vendor looks like to a gateway without a catalogue.
    pub fn lenient(protocol: Protocol) -> Self {
        Self {
            protocol,
            lenient: true,
            templates: HashMap::new(),
            signatures: BTreeSet::new(),
        }
    }

    /// The templates `catalogue` maps for `vendor`, approved with their own signature or
    /// `default_sign_name`, which is approved too. An empty catalogue approves anything;
    /// a catalogue without mappings for `vendor` approves no template. When two logical
    /// templates map the same vendor id, the first by name describes it.
    pub fn from_catalogue(
        protocol: Protocol,
        catalogue: &Templates,
        vendor: &VendorId,
        default_sign_name: &str,
    ) -> Self {
        if catalogue.is_pass_through() {
            return Self::lenient(protocol);
        }
        let mut templates = HashMap::new();
        let mut signatures = BTreeSet::from([default_sign_name.to_owned()]);
        for (_, template) in catalogue.iter() {
            let Some(at) = template.at(vendor) else {
                continue;
            };
            let sign_name = at
                .sign_name
                .clone()
                .unwrap_or_else(|| default_sign_name.to_owned());
            signatures.insert(sign_name.clone());
            templates
                .entry(at.id.clone())
                .or_insert_with(|| ApprovedTemplate {
                    id: at.id.clone(),
                    params: at.params.clone(),
                    arg_count: template.arg_count(),
                    text: template.text.clone(),
                    sign_name,
                });
        }
        Self {
            protocol,
            lenient: false,
            templates,
            signatures,
        }
    }

    /// The protocol whose codes the checks answer with.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether anything is approved (no catalogue).
    pub fn is_lenient(&self) -> bool {
        self.lenient
    }

    /// The approved template with the vendor's id `id`.
    pub fn template(&self, id: &str) -> Option<&ApprovedTemplate> {
        self.templates.get(id)
    }

    /// Checks a message the way the vendor does: its template approved, its signature
    /// approved (not for Cloopen, which binds the signature to the template), its
    /// arguments those the template takes. Answers the approved template, or `None` when
    /// lenient.
    pub fn check(
        &self,
        template_id: &str,
        signature: &str,
        args: TemplateArgs<'_>,
    ) -> Result<Option<&ApprovedTemplate>, Refusal> {
        if self.lenient {
            return Ok(None);
        }
        let codes = codes(self.protocol);
        let Some(approved) = self.templates.get(template_id) else {
            return Err(refuse(
                codes.template,
                format!("template {template_id:?} is not approved"),
            ));
        };
        if let Some(signature_code) = codes.signature {
            if !self.signatures.contains(signature) {
                return Err(refuse(
                    signature_code,
                    format!("signature {signature:?} is not approved"),
                ));
            }
        }
        check_args(approved, args, &codes)?;
        Ok(Some(approved))
    }
}

fn check_args(
    approved: &ApprovedTemplate,
    args: TemplateArgs<'_>,
    codes: &Codes,
) -> Result<(), Refusal> {
    let id = &approved.id;
    match args {
        TemplateArgs::Named(named) if !approved.params.is_empty() => {
            let given = |name: &str| named.iter().any(|(n, _)| n == name);
            let missing: Vec<&str> = approved
                .params
                .iter()
                .map(String::as_str)
                .filter(|p| !given(p))
                .collect();
            if !missing.is_empty() {
                return Err(refuse(
                    codes.missing_params,
                    format!("template {id:?} needs {}", missing.join(", ")),
                ));
            }
            let unknown: Vec<&str> = named
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| !approved.params.iter().any(|p| p == n))
                .collect();
            if !unknown.is_empty() {
                return Err(refuse(
                    codes.illegal_params,
                    format!("template {id:?} has no variable {}", unknown.join(", ")),
                ));
            }
            Ok(())
        }
        TemplateArgs::Named(named) => count_args(approved, named.len(), codes),
        TemplateArgs::Positional(args) => count_args(approved, args.len(), codes),
    }
}

fn count_args(approved: &ApprovedTemplate, found: usize, codes: &Codes) -> Result<(), Refusal> {
    let Some(expected) = approved.arg_count else {
        return Ok(());
    };
    let detail = format!(
        "template {:?} takes {expected} parameters, found {found}",
        approved.id
    );
    if found < expected {
        Err(refuse(codes.missing_params, detail))
    } else if found > expected {
        Err(refuse(codes.illegal_params, detail))
    } else {
        Ok(())
    }
}

/// The text the vendor sends, signature not included: its approved template's text with
/// the arguments in place; without a known text (lenient, or no text in the catalogue)
/// the arguments one after another, a lower bound of what the vendor's own text holds.
pub fn vendor_text(approved: Option<&ApprovedTemplate>, args: &[String]) -> String {
    approved
        .and_then(|t| t.render(args))
        .unwrap_or_else(|| args.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Templates {
        serde_json::from_value(serde_json::json!({
            "login_code": {
                "text": "您的验证码是{1}，{2}分钟内有效。",
                "vendors": {
                    "aliyun": {"id": "SMS_1", "params": ["code", "minutes"]},
                    "tencent": {"id": "1001", "sign_name": "腾讯签名"},
                    "cloopen": {"id": "9001"},
                }
            },
            "notice": {"vendors": {"tencent": {"id": "1002"}}}
        }))
        .unwrap()
    }

    fn approvals(protocol: Protocol) -> Approvals {
        let name = VendorId::new(protocol.as_str()).unwrap();
        Approvals::from_catalogue(protocol, &catalogue(), &name, "默认签名")
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn named(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn code(result: Result<Option<&ApprovedTemplate>, Refusal>) -> &'static str {
        match result {
            Err(refusal) => refusal.code(),
            Ok(t) => panic!("expected a refusal, got {t:?}"),
        }
    }

    #[test]
    fn aliyun_checks_template_signature_and_variable_names() {
        let a = approvals(Protocol::Aliyun);
        let ok = named(&[("minutes", "5"), ("code", "1234")]);
        let approved = a
            .check("SMS_1", "默认签名", TemplateArgs::Named(&ok))
            .unwrap()
            .unwrap();
        assert_eq!(approved.sign_name, "默认签名");
        assert_eq!(approved.arg_count, Some(2));
        assert_eq!(
            code(a.check("SMS_2", "默认签名", TemplateArgs::Named(&ok))),
            "isv.SMS_TEMPLATE_ILLEGAL"
        );
        // Tencent's mapping signs with its own name; it is not approved at Aliyun.
        assert_eq!(
            code(a.check("SMS_1", "腾讯签名", TemplateArgs::Named(&ok))),
            "isv.SMS_SIGNATURE_ILLEGAL"
        );
        let missing = named(&[("code", "1234")]);
        let refusal = a
            .check("SMS_1", "默认签名", TemplateArgs::Named(&missing))
            .unwrap_err();
        assert_eq!(refusal.code(), "isv.TEMPLATE_MISSING_PARAMETERS");
        assert!(refusal.message().contains("minutes"), "{refusal:?}");
        let renamed = named(&[("code", "1234"), ("minutes", "5"), ("p3", "x")]);
        let refusal = a
            .check("SMS_1", "默认签名", TemplateArgs::Named(&renamed))
            .unwrap_err();
        assert_eq!(refusal.code(), "isv.TEMPLATE_PARAMS_ILLEGAL");
        assert!(refusal.message().contains("p3"), "{refusal:?}");
    }

    #[test]
    fn tencent_checks_template_signature_and_parameter_count() {
        let t = approvals(Protocol::Tencent);
        let two = strings(&["1234", "5"]);
        let approved = t
            .check("1001", "腾讯签名", TemplateArgs::Positional(&two))
            .unwrap()
            .unwrap();
        assert_eq!(approved.sign_name, "腾讯签名");
        // The vendor's default signature is approved for every template.
        assert!(
            t.check("1001", "默认签名", TemplateArgs::Positional(&two))
                .is_ok()
        );
        assert_eq!(
            code(t.check("9001", "腾讯签名", TemplateArgs::Positional(&two))),
            "FailedOperation.TemplateIncorrectOrUnapproved"
        );
        assert_eq!(
            code(t.check("1001", "别的签名", TemplateArgs::Positional(&two))),
            "FailedOperation.SignatureIncorrectOrUnapproved"
        );
        for args in [strings(&["1234"]), strings(&["1", "2", "3"])] {
            assert_eq!(
                code(t.check("1001", "腾讯签名", TemplateArgs::Positional(&args))),
                "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
            );
        }
        // A template without a text or variable names takes any arguments.
        let any = strings(&["a", "b", "c"]);
        assert!(
            t.check("1002", "默认签名", TemplateArgs::Positional(&any))
                .is_ok()
        );
    }

    #[test]
    fn cloopen_checks_template_and_count_but_no_signature() {
        let c = approvals(Protocol::Cloopen);
        let two = strings(&["1234", "5"]);
        assert!(
            c.check("9001", "anything", TemplateArgs::Positional(&two))
                .is_ok()
        );
        assert_eq!(
            code(c.check("1001", "", TemplateArgs::Positional(&two))),
            "160032"
        );
        let one = strings(&["1234"]);
        assert_eq!(
            code(c.check("9001", "", TemplateArgs::Positional(&one))),
            "160032"
        );
    }

    #[test]
    fn an_empty_catalogue_approves_anything_and_a_vendor_without_mappings_nothing() {
        let name = VendorId::new("aliyun").unwrap();
        let lenient =
            Approvals::from_catalogue(Protocol::Aliyun, &Templates::default(), &name, "默认签名");
        assert!(lenient.is_lenient());
        let any = named(&[("whatever", "1")]);
        assert_eq!(
            lenient.check("SMS_ANY", "", TemplateArgs::Named(&any)),
            Ok(None)
        );
        let other = VendorId::new("other").unwrap();
        let none = Approvals::from_catalogue(Protocol::Aliyun, &catalogue(), &other, "默认签名");
        assert!(!none.is_lenient());
        assert_eq!(
            code(none.check("SMS_1", "默认签名", TemplateArgs::Named(&any))),
            "isv.SMS_TEMPLATE_ILLEGAL"
        );
    }

    #[test]
    fn the_vendor_text_renders_the_template_or_falls_back_to_the_arguments() {
        let t = approvals(Protocol::Tencent);
        let args = strings(&["1234", "5"]);
        assert_eq!(
            vendor_text(t.template("1001"), &args),
            "您的验证码是1234，5分钟内有效。"
        );
        assert_eq!(vendor_text(t.template("1002"), &args), "12345");
        assert_eq!(vendor_text(None, &args), "12345");
    }
}
