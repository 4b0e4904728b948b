//! Tencent Cloud's SMS error codes, and the kind each is mapped onto.

use std::time::Duration;

use sms_core::VendorError;

use super::VENDOR;
use crate::http::refusal;

/// Tencent's per-number limits, and the window each names. The 30-second limit is the
/// default one for the same content to one number; the others are the console's
/// per-number hourly and daily limits.
fn per_number_window(code: &str) -> Option<Duration> {
    let seconds = match code {
        "LimitExceeded.PhoneNumberThirtySecondLimit" => 30,
        "LimitExceeded.PhoneNumberOneHourLimit" => 3600,
        "LimitExceeded.PhoneNumberDailyLimit"
        | "LimitExceeded.PhoneNumberSameContentDailyLimit" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// Whether a Tencent code says our template, signature or parameters are not approved
/// at Tencent.
///
/// Beyond the shared table, the SendSms error list (API 2021-01-11) documents codes of
/// the same meaning: `FailedOperation.TemplateUnapprovedOrNotExist`,
/// `FailedOperation.TemplateIdNotExist` and `FailedOperation.MissingTemplateList` (no
/// approved template by that id), `FailedOperation.MissingSignatureList` (the signature
/// is not recognised as approved), and
/// `InvalidParameterValue.TemplateParameterLengthLimit` (a variable over the length the
/// account's templates allow).
fn is_misconfigured(code: &str) -> bool {
    matches!(
        code,
        "FailedOperation.TemplateIncorrectOrUnapproved"
            | "FailedOperation.TemplateUnapprovedOrNotExist"
            | "FailedOperation.TemplateIdNotExist"
            | "FailedOperation.MissingTemplateList"
            | "FailedOperation.SignatureIncorrectOrUnapproved"
            | "FailedOperation.MissingSignatureList"
            | "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
            | "InvalidParameterValue.TemplateParameterFormatError"
            | "InvalidParameterValue.TemplateParameterLengthLimit"
    )
}

/// Maps a Tencent Cloud error code onto an error kind.
pub(super) fn classify(code: &str, message: String) -> VendorError {
    let message = match refusal(
        code,
        message,
        per_number_window(code),
        is_misconfigured(code),
    ) {
        Ok(refused) => return refused,
        Err(message) => message,
    };
    // The API's rate limits and the application's other quotas (daily totals, the
    // console's frequency policy): we send too fast or too much for this account.
    if code.starts_with("LimitExceeded") || code.starts_with("RequestLimitExceeded") {
        return VendorError::Throttled {
            message: format!("{code}: {message}"),
            retry_after: None,
        };
    }
    // Our SecretId, signature or the account's permissions (including an SdkAppId that
    // does not exist, or a suspended service) were refused: every message would meet the
    // same answer until an operator fixes the configuration.
    if code.starts_with("AuthFailure")
        || code.starts_with("UnauthorizedOperation")
        || code == "InvalidParameterValue.SdkAppIdNotExist"
        // The account's SMS package is used up: every message would fail until it is
        // topped up, so this is the vendor's state, not the message's fault.
        || code == "FailedOperation.InsufficientBalanceInSmsPackage"
    {
        return VendorError::Unauthorized {
            code: code.to_owned(),
            message,
        };
    }
    const PERMANENT: [&str; 4] = [
        "InvalidParameter",
        "MissingParameter",
        "FailedOperation",
        "UnsupportedOperation",
    ];
    if PERMANENT.iter().any(|p| code.starts_with(p)) || code == "InvalidAction" {
        return VendorError::Rejected {
            code: code.to_owned(),
            message,
        };
    }
    // `InternalError.*`, `ResourceUnavailable.*` and codes this adapter does not know:
    // the message was not sent and trying again (here or elsewhere) is safe.
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
            ("LimitExceeded.PhoneNumberThirtySecondLimit", 30),
            ("LimitExceeded.PhoneNumberOneHourLimit", 3600),
            ("LimitExceeded.PhoneNumberDailyLimit", 86_400),
            ("LimitExceeded.PhoneNumberSameContentDailyLimit", 86_400),
        ] {
            let e = classify(code, "m".into());
            assert_eq!(
                e,
                VendorError::RecipientRefused {
                    code: code.into(),
                    message: "m".into(),
                    retry_after: Duration::from_secs(seconds),
                },
                "{code}"
            );
            assert!(!e.counts_against_vendor(), "{code}");
        }
    }

    #[test]
    fn template_signature_and_parameter_codes_are_misconfigurations() {
        for code in [
            // Template not approved, and the documented codes of the same meaning.
            "FailedOperation.TemplateIncorrectOrUnapproved",
            "FailedOperation.TemplateUnapprovedOrNotExist",
            "FailedOperation.TemplateIdNotExist",
            "FailedOperation.MissingTemplateList",
            // Signature not approved.
            "FailedOperation.SignatureIncorrectOrUnapproved",
            "FailedOperation.MissingSignatureList",
            // Parameters that do not match the template.
            "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
            "InvalidParameterValue.TemplateParameterFormatError",
            "InvalidParameterValue.TemplateParameterLengthLimit",
        ] {
            let e = classify(code, "m".into());
            assert_eq!(
                e,
                VendorError::Misconfigured {
                    code: code.into(),
                    message: "m".into(),
                },
                "{code}"
            );
            assert!(!e.counts_against_vendor(), "{code}");
        }
    }

    #[test]
    fn other_codes_map_onto_kinds() {
        let e = |code: &str| classify(code, "m".into());
        for code in [
            "RequestLimitExceeded",
            "LimitExceeded.DeliveryFrequencyLimit",
            "LimitExceeded.AppDailyLimit",
        ] {
            assert!(matches!(e(code), VendorError::Throttled { .. }), "{code}");
        }
        for code in [
            "AuthFailure.SignatureFailure",
            "AuthFailure.SignatureExpire",
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.InvalidAuthorization",
            "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
            "UnauthorizedOperation.RequestIpNotInWhitelist",
            "InvalidParameterValue.SdkAppIdNotExist",
            "FailedOperation.InsufficientBalanceInSmsPackage",
        ] {
            assert!(
                matches!(e(code), VendorError::Unauthorized { code: ref c, .. } if c == code),
                "{code}"
            );
        }
        for code in [
            "InvalidParameterValue.IncorrectPhoneNumber",
            "FailedOperation.ContainSensitiveWord",
        ] {
            assert!(matches!(e(code), VendorError::Rejected { .. }), "{code}");
        }
        assert!(matches!(
            e("InternalError.Timeout"),
            VendorError::Transient { .. }
        ));
    }
}
