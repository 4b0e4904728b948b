//! What a real vendor checks before it sends, written once for the simulated vendors
//! and the sandbox so that tests meet the answers production will.
//!
//! - [`Approvals`]: the templates and signatures a vendor account has approved, built
//!   from the gateway's [`Templates`](sms_core::Templates) catalogue, and the checks a
//!   message meets against them (unknown template, signature not approved, arguments
//!   that do not match) with the vendor's own error codes. An empty catalogue approves
//!   anything, for pass-through setups.
//! - [`PerNumberLimits`]: the vendor's default limits on messages to one number (Aliyun
//!   per signature and number, Tencent per content and number and per number and day,
//!   Cloopen per template and number), answered with the vendor's per-number codes.
//! - [`vendor_text`] and [`billed_for`]: what the vendor sends and how many segments it
//!   bills for it, as Tencent reports in `Fee`.
//!
//! Each refusal is a [`Refusal`], which converts into the [`VendorError`] the real HTTP
//! adapter maps the same code to: [`VendorError::Misconfigured`] for the approvals,
//! [`VendorError::RecipientRefused`] for the per-number limits.

mod approvals;
mod limits;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sms_core::{PhoneNumber, VendorError, billed_segments, signed_text};

pub use approvals::{Approvals, ApprovedTemplate, TemplateArgs, vendor_text};
pub use limits::{Outgoing, PerNumberLimits, Scope, Window};

/// The vendor API a simulated vendor or a sandbox route behaves as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Aliyun `SendSms`: named template variables, one answer per request.
    Aliyun,
    /// Tencent Cloud `SendSms`: positional parameters, one status (and `Fee`) per number.
    Tencent,
    /// Cloopen template SMS: positional `datas`, one answer per request.
    Cloopen,
}

impl Protocol {
    /// The three protocols.
    pub const ALL: [Protocol; 3] = [Self::Aliyun, Self::Tencent, Self::Cloopen];

    /// The protocol's name: `aliyun`, `tencent` or `cloopen`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aliyun => "aliyun",
            Self::Tencent => "tencent",
            Self::Cloopen => "cloopen",
        }
    }

    /// The protocol a vendor of that name speaks, when the name is one of the three.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vendor's refusal of a message, in its own code and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Our template, signature or parameters are not approved at this vendor.
    Misconfigured {
        /// The vendor's code (`isv.SMS_TEMPLATE_ILLEGAL`).
        code: &'static str,
        /// The vendor's words, with what did not match.
        message: String,
    },
    /// A per-number limit: this number has had its share of messages for now.
    RecipientLimited {
        /// The vendor's code (`isv.BUSINESS_LIMIT_CONTROL`).
        code: &'static str,
        /// The vendor's words (`触发分钟级流控Permits:1`).
        message: String,
        /// How long the gateway waits before trying this number again: what the HTTP
        /// adapter reads from the same code, so the simulation answers as production.
        retry_after: Duration,
    },
}

impl Refusal {
    /// The vendor's code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Misconfigured { code, .. } | Self::RecipientLimited { code, .. } => code,
        }
    }

    /// The vendor's words.
    pub fn message(&self) -> &str {
        match self {
            Self::Misconfigured { message, .. } | Self::RecipientLimited { message, .. } => message,
        }
    }
}

impl From<Refusal> for VendorError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Misconfigured { code, message } => Self::Misconfigured {
                code: code.to_owned(),
                message,
            },
            Refusal::RecipientLimited {
                code,
                message,
                retry_after,
            } => Self::RecipientRefused {
                code: code.to_owned(),
                message,
                retry_after,
            },
        }
    }
}

/// Segments a vendor bills for sending `body` signed with `signature` to `number`:
/// the signature's `【】` counts like the text.
pub fn billed_for(signature: &str, body: &str, number: &PhoneNumber) -> u64 {
    billed_segments(&signed_text(signature, body), number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_named_like_the_vendors() {
        for protocol in Protocol::ALL {
            assert_eq!(Protocol::by_name(protocol.as_str()), Some(protocol));
            let json = serde_json::to_string(&protocol).unwrap();
            assert_eq!(json, format!("\"{protocol}\""));
        }
        assert_eq!(Protocol::by_name("quiet"), None);
    }

    #[test]
    fn refusals_become_the_kinds_the_adapters_map_their_codes_to() {
        let limited = Refusal::RecipientLimited {
            code: "isv.BUSINESS_LIMIT_CONTROL",
            message: "触发分钟级流控Permits:1".into(),
            retry_after: Duration::from_secs(60),
        };
        assert_eq!(limited.code(), "isv.BUSINESS_LIMIT_CONTROL");
        let error = VendorError::from(limited);
        assert_eq!(error.kind(), "recipient_refused");
        assert!(!error.counts_against_vendor());
        let misconfigured = Refusal::Misconfigured {
            code: "160032",
            message: "短信模板无效".into(),
        };
        assert_eq!(misconfigured.message(), "短信模板无效");
        assert_eq!(VendorError::from(misconfigured).kind(), "misconfigured");
    }

    #[test]
    fn a_hundred_chinese_characters_to_one_mainland_number_bill_two() {
        let mainland = PhoneNumber::parse("+8613800138000").unwrap();
        let body = "验".repeat(100);
        assert_eq!(billed_for("", &body, &mainland), 2);
        assert_eq!(billed_for("测试", &body, &mainland), 2);
        // The signature counts: 66 + 【测试】 (4) is 70, one message; one more is two.
        assert_eq!(billed_for("测试", &"验".repeat(66), &mainland), 1);
        assert_eq!(billed_for("测试", &"验".repeat(67), &mainland), 2);
    }
}
