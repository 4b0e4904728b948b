//! Aliyun's error codes, and the kind each is mapped onto.

use std::time::Duration;

use sms_core::VendorError;

use super::VENDOR;
use crate::http::refusal;

const DAY: Duration = Duration::from_secs(86_400);

/// Aliyun's per-number limits: each refuses this recipient for the window it names.
/// `isv.BUSINESS_LIMIT_CONTROL` names its window in the message (`触发分钟级流控Permits:1`
/// for one a minute under a signature, `触发小时级流控Permits:5`, `触发天级流控Permits:10`).
fn per_number_window(code: &str, message: &str) -> Option<Duration> {
    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    match code {
        "isv.BUSINESS_LIMIT_CONTROL" => Some(if message.contains("天级") {
            DAY
        } else if message.contains("小时级") {
            HOUR
        } else {
            // `分钟级`, or wording this adapter does not know: the shortest window, so
            // the message is tried again soon rather than a day late.
            MINUTE
        }),
        _ => None,
    }
}

/// Whether an Aliyun code says our template, signature or parameters are not approved
/// at Aliyun: the vendor is fine, the mapping to it is not.
///
/// Beyond the shared table (`isv.SMS_TEMPLATE_ILLEGAL`, `isv.SMS_SIGNATURE_ILLEGAL`,
/// `isv.TEMPLATE_MISSING_PARAMETERS`, `isv.TEMPLATE_PARAMS_ILLEGAL`), Aliyun's API error
/// list documents three more about the signature: `isv.SMS_SIGN_ILLEGAL` (signature
/// banned), `isv.SIGN_STATE_ILLEGAL` (signature "unavailable") and
/// `isv.SMS_SIGNATURE_SCENE_ILLEGAL` (a verification-code signature on another kind of
/// template).
fn is_misconfigured(code: &str) -> bool {
    matches!(
        code,
        "isv.SMS_TEMPLATE_ILLEGAL"
            | "isv.SMS_SIGNATURE_ILLEGAL"
            | "isv.SMS_SIGN_ILLEGAL"
            | "isv.SIGN_STATE_ILLEGAL"
            | "isv.SMS_SIGNATURE_SCENE_ILLEGAL"
            | "isv.TEMPLATE_MISSING_PARAMETERS"
            | "isv.TEMPLATE_PARAMS_ILLEGAL"
    )
}

/// Maps an Aliyun error code onto an error kind.
pub(super) fn classify(code: &str, message: String, status: u16) -> VendorError {
    let window = per_number_window(code, &message);
    let message = match refusal(code, message, window, is_misconfigured(code)) {
        Ok(refused) => return refused,
        Err(message) => message,
    };
    // The account's daily and monthly caps, set in Aliyun's console: every message meets
    // them until the cap resets, so Aliyun is unusable for now and the gateway should
    // fail over. Looked at again a day later.
    if matches!(code, "isv.DAY_LIMIT_CONTROL" | "isv.MONTH_LIMIT_CONTROL") {
        return VendorError::Throttled {
            message: format!("{code}: {message}"),
            retry_after: Some(DAY),
        };
    }
    // The API gateway's own rate limits (`Throttling.User`, `Throttling.Api`): we send
    // too fast for the account, whoever the recipients are.
    if code.starts_with("Throttling") {
        return VendorError::Throttled {
            message: format!("{code}: {message}"),
            retry_after: None,
        };
    }
    if is_unauthorized(code) {
        return VendorError::Unauthorized {
            code: code.to_owned(),
            message,
        };
    }
    // A nonce seen before: the next attempt signs with a fresh one, so it may pass.
    if code == "SignatureNonceUsed" {
        return VendorError::Transient {
            message: format!("{VENDOR}: {code}: {message}"),
        };
    }
    // `isp.*` are the platform's own failures; the rest of this list are the gateway's.
    if code.starts_with("isp.")
        || matches!(
            code,
            "ServiceUnavailable" | "InternalError" | "UnknownError"
        )
        || status >= 500
    {
        return VendorError::Transient {
            message: format!("{VENDOR}: {code}: {message}"),
        };
    }
    // The other `isv.*` are the message's own faults (number, content), and the
    // gateway's other 4xx codes are about the request itself: retrying will not help.
    VendorError::Rejected {
        code: code.to_owned(),
        message,
    }
}

/// Whether an Aliyun code says our access key, its permissions, the request signature or
/// the account were refused: every message would meet the same answer until an operator
/// fixes the configuration (or the clock, for timestamps).
fn is_unauthorized(code: &str) -> bool {
    const PREFIXES: [&str; 4] = [
        "InvalidAccessKeyId",
        "InvalidTimeStamp",
        "InvalidSecurityToken",
        "Forbidden",
    ];
    PREFIXES.iter().any(|p| code.starts_with(p))
        || matches!(
            code,
            "SignatureDoesNotMatch"
                | "IncompleteSignature"
                | "MissingSignature"
                | "isv.ACCOUNT_NOT_EXISTS"
                | "isv.ACCOUNT_ABNORMAL"
                // The account, not the message: no balance, service stopped or not
                // subscribed. Every message would fail the same way, so fail over.
                | "isv.AMOUNT_NOT_ENOUGH"
                | "isv.OUT_OF_SERVICE"
                | "isv.PRODUCT_UN_SUBSCRIPT"
                | "isv.PRODUCT_UNSUBSCRIBE"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_signatures_and_accounts_are_unauthorized() {
        for (status, code) in [
            (404, "InvalidAccessKeyId.NotFound"),
            (400, "InvalidAccessKeyId.Inactive"),
            (400, "SignatureDoesNotMatch"),
            (400, "IncompleteSignature"),
            (400, "MissingSignature"),
            (400, "InvalidTimeStamp.Expired"),
            (400, "InvalidTimeStamp.Format"),
            (400, "InvalidSecurityToken.Expired"),
            (403, "Forbidden.RAM"),
            (403, "Forbidden.AccessKeyDisabled"),
            (200, "isv.ACCOUNT_NOT_EXISTS"),
            (200, "isv.ACCOUNT_ABNORMAL"),
            (200, "isv.AMOUNT_NOT_ENOUGH"),
            (200, "isv.OUT_OF_SERVICE"),
            (200, "isv.PRODUCT_UN_SUBSCRIPT"),
        ] {
            let e = classify(code, "m".into(), status);
            assert!(
                matches!(&e, VendorError::Unauthorized { code: c, .. } if c == code),
                "{code}: {e:?}"
            );
            assert!(e.counts_against_vendor(), "{code}");
        }
        // The message's own faults stay rejections; a reused nonce passes with a new one.
        for code in ["isv.MOBILE_NUMBER_ILLEGAL", "isv.SMS_CONTENT_ILLEGAL"] {
            assert!(matches!(
                classify(code, "m".into(), 200),
                VendorError::Rejected { .. }
            ));
        }
        assert!(matches!(
            classify("SignatureNonceUsed", "m".into(), 400),
            VendorError::Transient { .. }
        ));
    }

    #[test]
    fn per_number_limits_refuse_the_recipient_for_the_window_they_name() {
        for (code, message, seconds) in [
            ("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1", 60),
            (
                "isv.BUSINESS_LIMIT_CONTROL",
                "触发小时级流控Permits:5",
                3600,
            ),
            (
                "isv.BUSINESS_LIMIT_CONTROL",
                "触发天级流控Permits:10",
                86_400,
            ),
            ("isv.BUSINESS_LIMIT_CONTROL", "some other wording", 60),
        ] {
            let e = classify(code, message.into(), 200);
            assert_eq!(
                e,
                VendorError::RecipientRefused {
                    code: code.into(),
                    message: message.into(),
                    retry_after: Duration::from_secs(seconds),
                },
                "{code} {message}"
            );
            assert!(!e.counts_against_vendor());
        }
    }

    #[test]
    fn the_accounts_daily_and_monthly_caps_are_the_vendors_not_the_numbers() {
        for (code, message) in [
            ("isv.DAY_LIMIT_CONTROL", "触发日发送限额"),
            ("isv.MONTH_LIMIT_CONTROL", "触发月发送限额"),
        ] {
            let e = classify(code, message.into(), 200);
            assert_eq!(
                e,
                VendorError::Throttled {
                    message: format!("{code}: {message}"),
                    retry_after: Some(DAY),
                },
            );
            assert!(e.counts_against_vendor(), "the gateway must fail over");
        }
    }

    #[test]
    fn template_signature_and_parameter_codes_are_misconfigurations() {
        for code in [
            // Template not approved.
            "isv.SMS_TEMPLATE_ILLEGAL",
            // Signature not approved, and the documented codes of the same meaning.
            "isv.SMS_SIGNATURE_ILLEGAL",
            "isv.SMS_SIGN_ILLEGAL",
            "isv.SIGN_STATE_ILLEGAL",
            "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
            // Parameters that do not match the template.
            "isv.TEMPLATE_MISSING_PARAMETERS",
            "isv.TEMPLATE_PARAMS_ILLEGAL",
        ] {
            let e = classify(code, "m".into(), 200);
            assert_eq!(
                e,
                VendorError::Misconfigured {
                    code: code.into(),
                    message: "m".into()
                },
                "{code}"
            );
            assert!(!e.counts_against_vendor(), "{code}");
        }
    }
}
