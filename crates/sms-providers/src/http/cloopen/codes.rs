//! Cloopen's status codes, and the kind each is mapped onto.

use std::time::Duration;

use sms_core::VendorError;

use super::VENDOR;
use crate::http::refusal;

/// Cloopen's per-number limits, and the window each names: 160038 (verification codes
/// to one number too often) a minute; 160039 (the same template to one number, daily
/// cap), 160040 (verification codes, daily cap) and 160041 (notifications, daily cap) a
/// day.
fn per_number_window(code: &str) -> Option<Duration> {
    match code {
        "160038" => Some(Duration::from_secs(60)),
        "160039" | "160040" | "160041" => Some(Duration::from_secs(86_400)),
        _ => None,
    }
}

/// Whether a Cloopen code says our template or its parameters are not usable at
/// Cloopen. Cloopen binds the signature to the template, so no code is about the
/// signature alone.
///
/// Beyond the shared table (160032 template invalid, 160043 template not in this
/// application), Cloopen's published list has codes of the same meaning: 112311 (no such
/// template), 112307 (template id empty), 160036 (template type unknown) and 160057
/// (template id must be numeric) for the template, and 112308 (the template's `datas`
/// empty) for its parameters.
fn is_misconfigured(code: &str) -> bool {
    matches!(
        code,
        "160032" | "160043" | "112311" | "112307" | "160036" | "160057" | "112308"
    )
}

/// Maps a Cloopen status code onto an error kind.
///
/// Codes from Cloopen's published error list: per-number limits and template codes as
/// above; 160042 (bad number format) and the other 16003x (content, blacklist) are
/// permanent; the 111xxx–113xxx families are request, authentication, account and
/// application checks. Of those, the ones that refuse our credentials (the
/// `Authorization` header and its timestamp, the `sig`, an unknown account or
/// application) are `Unauthorized`: every message would meet them. The rest are
/// permanent. Anything else, such as 172001 (network error), is treated as a vendor
/// failure that may pass.
pub(super) fn classify(code: &str, message: String, status: u16) -> VendorError {
    let message = if status < 500 {
        match refusal(
            code,
            message,
            per_number_window(code),
            is_misconfigured(code),
        ) {
            Ok(refused) => return refused,
            Err(message) => message,
        }
    } else {
        message
    };
    // HTTP 429: the account sends too fast, whatever the code says.
    if status == 429 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_number_limits_refuse_the_recipient_for_their_window() {
        for (code, seconds) in [
            ("160038", 60),
            ("160039", 86_400),
            ("160040", 86_400),
            ("160041", 86_400),
        ] {
            assert_eq!(
                classify(code, "m".into(), 200),
                VendorError::RecipientRefused {
                    code: code.into(),
                    message: "m".into(),
                    retry_after: Duration::from_secs(seconds),
                },
                "{code}"
            );
        }
    }

    #[test]
    fn template_and_parameter_codes_are_misconfigurations() {
        for code in [
            "160032", "160043", "112311", "112307", "160036", "160057", "112308",
        ] {
            assert_eq!(
                classify(code, "m".into(), 200),
                VendorError::Misconfigured {
                    code: code.into(),
                    message: "m".into(),
                },
                "{code}"
            );
        }
    }

    #[test]
    fn too_many_requests_is_throttling_whatever_the_code() {
        for code in ["429", "111109", "172001"] {
            assert!(
                matches!(
                    classify(code, "m".into(), 429),
                    VendorError::Throttled { .. }
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn a_server_error_status_makes_any_code_transient() {
        for code in ["160038", "160032", "111109", "160042"] {
            assert!(
                matches!(
                    classify(code, "m".into(), 500),
                    VendorError::Transient { .. }
                ),
                "{code}"
            );
        }
    }
}
