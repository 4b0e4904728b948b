//! Conversions between stored columns and domain types, shared by both backends so
//! they read rows back identically.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sms_core::{
    AttemptFailure, CallbackCounts, CallbackStatus, CallbackUrl, ClientId, DeliveryState,
    IdempotencyKey, InitialState, Lease, MessageId, MessageStatus, NewMessage, PhoneNumber,
    Priority, QueueReason, QueueStats, RawSmsRequest, Resend, SmsRequest, StoreError,
    StoredMessage, VendorId,
};

/// The columns a request is stored in, as a row holds them.
pub(crate) struct RequestColumns {
    pub(crate) template: String,
    pub(crate) args: Vec<String>,
    pub(crate) recipients: Vec<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) callback_url: Option<String>,
    /// With `avoid_vendor`, the two columns of [`resend`].
    pub(crate) resend_of: Option<MessageId>,
    pub(crate) avoid_vendor: Option<String>,
    pub(crate) client: Option<String>,
    /// The lane's name, as [`priority_column`] writes it.
    pub(crate) priority: String,
    pub(crate) send_at: Option<DateTime<Utc>>,
}

impl RequestColumns {
    /// Rebuilds the request. Stored rows were validated on the way in, so a failure
    /// here means the row was edited by hand or written by a broken build.
    pub(crate) fn into_request(self) -> Result<SmsRequest, StoreError> {
        let resend = resend(self.resend_of, self.avoid_vendor)?;
        let priority = self
            .priority
            .parse::<Priority>()
            .map_err(|e| corrupt("priority", e))?;
        SmsRequest::try_from(RawSmsRequest {
            template: self.template,
            args: self.args,
            recipients: self.recipients,
            idempotency_key: self.idempotency_key,
            expires_at: self.expires_at,
            callback_url: self.callback_url,
            resend,
            client: self.client,
            priority,
            send_at: self.send_at,
        })
        .map_err(|e| corrupt("request", e))
    }
}

/// Rebuilds what makes a message a re-send from its `resend_of` and `avoid_vendor`
/// columns: both set, or neither for a message that is no re-send.
pub(crate) fn resend(
    resend_of: Option<MessageId>,
    avoid_vendor: Option<String>,
) -> Result<Option<Resend>, StoreError> {
    match (resend_of, avoid_vendor) {
        (None, None) => Ok(None),
        (Some(of), Some(avoid)) => Ok(Some(Resend {
            of,
            avoid: VendorId::new(&avoid).map_err(|e| corrupt("avoid_vendor", e))?,
        })),
        (Some(_), None) => Err(corrupt(
            "avoid_vendor",
            "expected the vendor a re-send avoids, found none",
        )),
        (None, Some(_)) => Err(corrupt(
            "resend_of",
            "expected the message a re-send re-sends, found none",
        )),
    }
}

/// The `resend_of` column of a request: the message it re-sends, if it is a re-send.
pub(crate) fn resend_of_column(request: &SmsRequest) -> Option<&MessageId> {
    request.resend().map(|r| &r.of)
}

/// The `avoid_vendor` column of a request: the vendor it avoids, if it is a re-send.
pub(crate) fn avoid_vendor_column(request: &SmsRequest) -> Option<&str> {
    request.resend().map(|r| r.avoid.as_str())
}

/// The `client` column of a request: the client that sent it, when it was a named one.
pub(crate) fn client_column(request: &SmsRequest) -> Option<&str> {
    request.client().map(ClientId::as_str)
}

/// The `priority` column of a request: its lane's name, `high` or `normal`.
pub(crate) fn priority_column(request: &SmsRequest) -> &'static str {
    request.priority().as_str()
}

/// Parses a stored status.
pub(crate) fn status(value: &str) -> Result<MessageStatus, StoreError> {
    value.parse().map_err(|e| corrupt("status", e))
}

/// Parses a stored queue reason.
pub(crate) fn reason(value: &str) -> Result<QueueReason, StoreError> {
    value.parse().map_err(|e| corrupt("reason", e))
}

/// Parses a stored delivery state.
pub(crate) fn delivery_state(value: &str) -> Result<DeliveryState, StoreError> {
    value.parse().map_err(|e| corrupt("state", e))
}

/// Parses a stored recipient.
/// A receipt kept before its send, as read back when recording the send settled it:
/// the report it was, and what applying it did.
pub(crate) fn kept_receipt_settled(
    send: &sms_core::SentDelivery,
    state: &str,
    code: Option<String>,
    description: Option<String>,
    reported_at: Option<chrono::DateTime<chrono::Utc>>,
    segments: Option<u32>,
) -> Result<(sms_core::DeliveryReport, sms_core::ReportApplied), StoreError> {
    let report = sms_core::DeliveryReport {
        vendor: send.vendor.clone(),
        vendor_message_id: send.vendor_message_id.clone(),
        recipient: send.recipient.clone(),
        delivered: delivery_state(state)? == DeliveryState::Delivered,
        code,
        description,
        reported_at,
        segments,
    };
    let applied = sms_core::ReportApplied::Applied {
        sent_at: send.sent_at,
        message_id: send.message_id,
        callback_url: send.callback_url.clone(),
        billed_segments: send.billed_segments,
    };
    Ok((report, applied))
}

pub(crate) fn recipient(value: &str) -> Result<PhoneNumber, StoreError> {
    PhoneNumber::parse(value).map_err(|e| corrupt("recipient", e))
}

/// Parses a stored callback URL; `column` names where it was stored.
pub(crate) fn callback_url(column: &str, value: &str) -> Result<CallbackUrl, StoreError> {
    CallbackUrl::new(value).map_err(|e| corrupt(column, e))
}

/// The callback URL column of a request.
pub(crate) fn callback_url_column(request: &SmsRequest) -> Option<&str> {
    request.callback_url().map(CallbackUrl::as_str)
}

/// Parses the stored status of a callback event.
pub(crate) fn callback_status(value: &str) -> Result<CallbackStatus, StoreError> {
    CallbackStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == value)
        .ok_or_else(|| {
            corrupt(
                "status",
                format!("expected a callback status, found {value:?}"),
            )
        })
}

/// The outbox's counts from the `(state, count)` rows of a count grouped by state; a
/// state with no row has no events.
pub(crate) fn callback_counts<S: AsRef<str>>(
    rows: impl IntoIterator<Item = (S, i64)>,
) -> Result<CallbackCounts, StoreError> {
    let mut counts = CallbackCounts::default();
    for (state, stored_count) in rows {
        let count = u64::try_from(stored_count).unwrap_or_default();
        match state.as_ref() {
            "pending" => counts.pending = count,
            "delivered" => counts.delivered = count,
            "failed" => counts.failed = count,
            other => {
                return Err(corrupt(
                    "state",
                    format!("expected pending, delivered or failed, found {other:?}"),
                ));
            }
        }
    }
    Ok(counts)
}

/// Parses an optional stored vendor name.
pub(crate) fn vendor(value: Option<String>) -> Result<Option<VendorId>, StoreError> {
    value
        .map(|v| VendorId::new(&v).map_err(|e| corrupt("vendor", e)))
        .transpose()
}

/// The `pinned_vendor` column a failed attempt writes: its vendor when the failure pins
/// the message to it, and nothing otherwise, so a failure without a pin clears an
/// earlier one.
pub(crate) fn pinned_vendor(failure: &AttemptFailure) -> Option<&str> {
    failure
        .vendor
        .as_ref()
        .filter(|_| failure.pinned)
        .map(VendorId::as_str)
}

/// The refusal of a narrowing that would leave message `id` with no recipients: the
/// gateway completes a message sent to everyone instead, and a message to nobody cannot
/// be stored (Postgres' CHECK on `recipients` would refuse the row).
pub(crate) fn nobody_left(id: MessageId) -> StoreError {
    StoreError::backend(format!(
        "message {id} cannot be narrowed to no recipients: every one is among those sent"
    ))
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

/// The queue's statistics from the `(status, count)` rows of a count grouped by
/// status; a status with no row has no messages.
pub(crate) fn queue_stats<S: AsRef<str>>(
    rows: impl IntoIterator<Item = (S, i64)>,
) -> Result<QueueStats, StoreError> {
    let mut stats = QueueStats::default();
    for (stored_status, stored_count) in rows {
        let count = u64::try_from(stored_count).unwrap_or_default();
        match status(stored_status.as_ref())? {
            MessageStatus::Queued => stats.queued = count,
            MessageStatus::Leased => stats.leased = count,
            MessageStatus::Sent => stats.sent = count,
            MessageStatus::Dead => stats.dead = count,
            MessageStatus::Expired => stats.expired = count,
            MessageStatus::Cancelled => stats.cancelled = count,
        }
    }
    Ok(stats)
}

/// A claim's lease duration as the signed duration added to the claim's time.
pub(crate) fn lease_duration(lease_for: Duration) -> Result<chrono::Duration, StoreError> {
    chrono::Duration::from_std(lease_for)
        .map_err(|_| StoreError::backend(format!("lease duration {lease_for:?} is out of range")))
}

/// The idempotency key column of a request.
pub(crate) fn key_column(request: &SmsRequest) -> Option<&str> {
    request.idempotency_key().map(IdempotencyKey::as_str)
}

/// The message `new` stores, exactly as reading its row back returns it: the initial
/// state resolved as the insert writes it, and every time (the request's deliver-by and
/// scheduled times too) cut to the whole microseconds
/// both databases keep ([`whole_micros`]). The insert writes this message, not `new`, so
/// the database holds exactly these times and an insert can answer with it instead of
/// reading the row back and validating it again.
pub(crate) fn stored_from_new(new: NewMessage) -> StoredMessage {
    let (status, lease, last_vendor) = match new.initial {
        InitialState::Queued => (MessageStatus::Queued, None, new.last_vendor),
        InitialState::Leased(lease) => (MessageStatus::Leased, Some(lease), new.last_vendor),
        InitialState::Sent { vendor } => (MessageStatus::Sent, None, Some(vendor)),
    };
    let request = match new.request.expires_at() {
        Some(t) => new.request.with_expiry(whole_micros(t)),
        None => new.request,
    };
    let request = match request.send_at() {
        Some(t) => request.with_send_at(whole_micros(t)),
        None => request,
    };
    let created_at = whole_micros(new.created_at);
    StoredMessage {
        id: new.id,
        request,
        status,
        reason: new.reason,
        attempts: new.attempts,
        max_attempts: new.max_attempts,
        next_attempt_at: whole_micros(new.next_attempt_at),
        lease: lease.map(|l| Lease {
            expires_at: whole_micros(l.expires_at),
            ..l
        }),
        last_vendor,
        last_error: new.last_error,
        may_duplicate: new.may_duplicate,
        // Only a failed attempt pins a message; the inserts leave the column NULL.
        pinned_vendor: None,
        created_at,
        updated_at: created_at,
    }
}

/// `t` rounded down to whole microseconds, the precision both databases keep; it is
/// stored and read back unchanged.
pub(crate) fn whole_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// A stored value that is not what its column must hold, naming the column.
pub(crate) fn corrupt(column: &str, problem: impl std::fmt::Display) -> StoreError {
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
        let columns = || RequestColumns {
            template: "t".into(),
            args: vec![],
            recipients: vec!["+8613800138000".into()],
            idempotency_key: None,
            expires_at: None,
            callback_url: None,
            resend_of: None,
            avoid_vendor: None,
            client: None,
            priority: "normal".into(),
            send_at: None,
        };
        assert!(columns().into_request().is_ok());
        let e = RequestColumns {
            recipients: vec!["123".into()],
            ..columns()
        }
        .into_request()
        .unwrap_err();
        assert!(e.to_string().contains("stored request"), "{e}");
        let e = RequestColumns {
            priority: "urgent".into(),
            ..columns()
        }
        .into_request()
        .unwrap_err();
        assert!(e.to_string().contains("stored priority"), "{e}");
        let e = RequestColumns {
            client: Some("Shop".into()),
            ..columns()
        }
        .into_request()
        .unwrap_err();
        assert!(e.to_string().contains("stored request"), "{e}");
        let of = MessageId::new();
        assert_eq!(resend(None, None).unwrap(), None);
        assert_eq!(
            resend(Some(of), Some("aliyun".into())).unwrap(),
            Some(Resend {
                of,
                avoid: VendorId::new("aliyun").unwrap()
            })
        );
        for (of, avoid, column) in [
            (Some(of), None, "stored avoid_vendor"),
            (None, Some("aliyun".to_owned()), "stored resend_of"),
            (Some(of), Some("Aliyun".to_owned()), "stored avoid_vendor"),
        ] {
            let e = resend(of, avoid).unwrap_err();
            assert!(matches!(e, StoreError::Backend(_)));
            assert!(e.to_string().contains(column), "{e}");
        }
        let e = callback_url("deliveries.callback_url", "ftp://x").unwrap_err();
        assert!(
            e.to_string().contains("stored deliveries.callback_url"),
            "{e}"
        );
        assert!(callback_status("lost").is_err());
        for status in CallbackStatus::ALL {
            assert_eq!(callback_status(status.as_str()).unwrap(), status);
        }
        assert!(callback_counts([("claimed", 1)]).is_err());
    }

    #[test]
    fn only_a_pinned_failure_at_a_vendor_writes_a_pin() {
        let aliyun = VendorId::new("aliyun").unwrap();
        let failure = |vendor: Option<&VendorId>, pinned| AttemptFailure {
            vendor: vendor.cloned(),
            error: "refused".to_owned(),
            may_duplicate: false,
            pinned,
        };
        assert_eq!(pinned_vendor(&failure(Some(&aliyun), true)), Some("aliyun"));
        assert_eq!(pinned_vendor(&failure(Some(&aliyun), false)), None);
        assert_eq!(pinned_vendor(&failure(None, true)), None);
    }

    #[test]
    fn whole_micros_rounds_down_on_either_side_of_the_epochs() {
        let y2k = DateTime::from_timestamp(946_684_800, 0).unwrap();
        for base in [DateTime::UNIX_EPOCH, y2k] {
            for (nanos, micros) in [(-1, -1), (-1_500, -2), (1_999, 1), (0, 0)] {
                let t = base + chrono::Duration::nanoseconds(nanos);
                let cut = whole_micros(t);
                assert_eq!(cut, base + chrono::Duration::microseconds(micros), "{t}");
                assert_eq!(whole_micros(cut), cut);
            }
        }
    }
}
