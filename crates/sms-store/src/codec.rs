//! Conversions between stored columns and domain types, shared by both backends so
//! they read rows back identically.

use chrono::{DateTime, Utc};
use sms_core::{
    IdempotencyKey, MessageStatus, QueueReason, RawSmsRequest, SmsRequest, StoreError, VendorId,
};

/// Rebuilds a request from its columns. Stored rows were validated on the way in, so a
/// failure here means the row was edited by hand or written by a broken build.
pub(crate) fn request_from_columns(
    template: String,
    args: Vec<String>,
    recipients: Vec<String>,
    idempotency_key: Option<String>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<SmsRequest, StoreError> {
    SmsRequest::try_from(RawSmsRequest {
        template,
        args,
        recipients,
        idempotency_key,
        expires_at,
    })
    .map_err(|e| corrupt("request", e))
}

/// Parses a stored status.
pub(crate) fn status(value: &str) -> Result<MessageStatus, StoreError> {
    value.parse().map_err(|e| corrupt("status", e))
}

/// Parses a stored queue reason.
pub(crate) fn reason(value: &str) -> Result<QueueReason, StoreError> {
    value.parse().map_err(|e| corrupt("reason", e))
}

/// Parses an optional stored vendor name.
pub(crate) fn vendor(value: Option<String>) -> Result<Option<VendorId>, StoreError> {
    value
        .map(|v| VendorId::new(&v).map_err(|e| corrupt("vendor", e)))
        .transpose()
}

/// Narrows a stored attempt count.
pub(crate) fn count(column: &'static str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| {
        corrupt(
            column,
            format!("expected a count between 0 and {}, found {value}", u32::MAX),
        )
    })
}

/// A ledger increment as the signed 64-bit integer both databases store.
pub(crate) fn billed_increment(messages: u64) -> Result<i64, StoreError> {
    i64::try_from(messages).map_err(|_| {
        StoreError::backend(format!(
            "expected at most {} billed messages in one increment, found {messages}",
            i64::MAX
        ))
    })
}

/// A stored ledger total back as the unsigned count the trait returns.
pub(crate) fn billed_total(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt("billed", format!("negative total {value}")))
}

/// The idempotency key column of a request.
pub(crate) fn key_column(request: &SmsRequest) -> Option<&str> {
    request.idempotency_key().map(IdempotencyKey::as_str)
}

fn corrupt(column: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::backend(format!("stored {column} is invalid: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_columns_are_backend_errors_naming_the_column() {
        let e = status("lost").unwrap_err();
        assert!(matches!(e, StoreError::Backend(_)));
        assert!(e.to_string().contains("stored status"), "{e}");
        assert!(count("attempts", -1).is_err());
        assert_eq!(count("attempts", 7).unwrap(), 7);
        assert!(billed_total(-3).is_err());
        assert!(billed_increment(u64::MAX).is_err());
        assert_eq!(billed_increment(5).unwrap(), 5);
        let e =
            request_from_columns("t".into(), vec![], vec!["123".into()], None, None).unwrap_err();
        assert!(e.to_string().contains("stored request"), "{e}");
    }
}
