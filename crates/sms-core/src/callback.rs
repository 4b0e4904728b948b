//! Status callbacks: the events a client is told about its messages, and the durable
//! outbox they wait in until the client's endpoint has taken them.
//!
//! Every change of a message's status (queued, sent, delivered or undelivered per
//! recipient, dead, expired, cancelled) becomes one [`StatusEvent`]. A spend that passes
//! its warning share of a monthly cap becomes one [`SpendWarning`], which is about no
//! message. An event's JSON body is fixed when it is stored, so every attempt sends the
//! same bytes under the same event id, and a client can drop a repeat by that id. The
//! outbox hands events out under leases, like the deferred queue, so two dispatchers
//! never post one event at the same time.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::callback_url::CallbackUrl;
use crate::error::StoreError;
use crate::ids::{MessageId, VendorId};
use crate::phone::PhoneNumber;
use crate::queue::LeaseToken;

/// The status a [`StatusEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    /// Stored for a later attempt.
    Queued,
    /// A vendor accepted it.
    Sent,
    /// A receipt says one recipient's handset got it.
    Delivered,
    /// A receipt says it could not be delivered to one recipient.
    Undelivered,
    /// Out of attempts, or refused for good.
    Dead,
    /// Past its deliver-by time, unsent.
    Expired,
    /// Cancelled before it was sent: it never will be.
    Cancelled,
    /// Not a message's status: a spend passed its warning share of a monthly cap
    /// (a [`SpendWarning`]).
    SpendWarning,
}

impl CallbackStatus {
    /// Every status.
    pub const ALL: [CallbackStatus; 8] = [
        Self::Queued,
        Self::Sent,
        Self::Delivered,
        Self::Undelivered,
        Self::Dead,
        Self::Expired,
        Self::Cancelled,
        Self::SpendWarning,
    ];

    /// The lower-case name, as sent and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Dead => "dead",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::SpendWarning => "spend_warning",
        }
    }
}

impl fmt::Display for CallbackStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status change of a message, as the client is told it (the JSON body of a
/// callback). Fields that do not apply to a status are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// The event's own id: the same on every attempt to post it.
    pub event_id: uuid::Uuid,
    /// The message.
    pub message_id: MessageId,
    /// Its new status.
    pub status: CallbackStatus,
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// The recipient a receipt is about (`delivered`, `undelivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<PhoneNumber>,
    /// The vendor that accepted the message (`sent`, `delivered`, `undelivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<VendorId>,
    /// The vendor's id for the send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_message_id: Option<String>,
    /// The vendor's or carrier's status code, or why the message was queued or died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The vendor's words, or the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The undelivered message this message re-sends, when it is a re-send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_of: Option<MessageId>,
}

impl StatusEvent {
    /// An event about `message_id` at `at`, with a fresh event id and nothing else set.
    pub fn new(message_id: MessageId, status: CallbackStatus, at: DateTime<Utc>) -> Self {
        Self {
            event_id: uuid::Uuid::now_v7(),
            message_id,
            status,
            at,
            recipient: None,
            vendor: None,
            vendor_message_id: None,
            code: None,
            description: None,
            resend_of: None,
        }
    }

    /// The event ready for the outbox, addressed to `url`, stored at `stored_at`: its
    /// first post is due then, and its retries are timed from then (not from `at`,
    /// which for a receipt is the vendor's clock).
    pub fn to_callback(&self, url: &CallbackUrl, stored_at: DateTime<Utc>) -> CallbackEvent {
        CallbackEvent {
            id: self.event_id,
            message_id: Some(self.message_id),
            status: self.status,
            url: url.clone(),
            body: serde_json::to_string(self).expect("a status event always serialises"),
            created_at: stored_at,
        }
    }
}

/// A spend that passed its warning share of a monthly cap (the JSON body of a
/// `spend_warning` callback). It goes to the deployment's default callback address, as
/// it is about no one message.
///
/// Its event id follows from the cap and the month, so every instance that sees the
/// spend pass the share, and every restart that sees it again, stores the same event:
/// the outbox keeps one, and the client is told once a month per cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendWarning {
    /// The event's own id: one per cap and month.
    pub event_id: uuid::Uuid,
    /// Always [`CallbackStatus::SpendWarning`]: the field every event is told apart by.
    pub status: CallbackStatus,
    /// When this gateway saw the spend pass the share.
    pub at: DateTime<Utc>,
    /// Whose cap: a client's name, `(api_tokens)` for the unnamed client, or
    /// `(deployment)` for the deployment's own.
    pub scope: String,
    /// The billing month, `YYYY-MM`.
    pub period: String,
    /// What was spent this month when it passed, in the vendors' currency (`"4000.00"`).
    pub spent: String,
    /// The cap, in the same currency.
    pub cap: String,
    /// The share of the cap that warns (`0.8`).
    pub warn_at: f64,
}

impl SpendWarning {
    /// The warning for `scope`'s cap in `period`, seen at `at`.
    pub fn new(
        scope: &str,
        period: &str,
        spent: String,
        cap: String,
        warn_at: f64,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: Self::event_id(scope, period),
            status: CallbackStatus::SpendWarning,
            at,
            scope: scope.to_owned(),
            period: period.to_owned(),
            spent,
            cap,
            warn_at,
        }
    }

    /// The one event id of `scope`'s warning in `period`.
    pub fn event_id(scope: &str, period: &str) -> uuid::Uuid {
        uuid::Uuid::new_v5(
            &SPEND_WARNING_NAMESPACE,
            format!("{scope}\n{period}").as_bytes(),
        )
    }

    /// The event ready for the outbox, addressed to `url`, stored at `stored_at`.
    pub fn to_callback(&self, url: &CallbackUrl, stored_at: DateTime<Utc>) -> CallbackEvent {
        CallbackEvent {
            id: self.event_id,
            message_id: None,
            status: CallbackStatus::SpendWarning,
            url: url.clone(),
            body: serde_json::to_string(self).expect("a spend warning always serialises"),
            created_at: stored_at,
        }
    }
}

/// The name space of spend warnings' event ids (a fixed random UUID).
const SPEND_WARNING_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c1f_93a2_5d4e_4b8f_9a07_3e21_c8d4_f105);

/// An event in the outbox: where it goes and the exact body it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackEvent {
    /// The event id (the body's `event_id`).
    pub id: uuid::Uuid,
    /// The message it is about; none for a [`SpendWarning`].
    pub message_id: Option<MessageId>,
    /// Its status, for counting.
    pub status: CallbackStatus,
    /// The client's endpoint.
    pub url: CallbackUrl,
    /// The JSON body, as signed and posted.
    pub body: String,
    /// When it was stored; its first post is due then, and retries stop a configured
    /// time after it.
    pub created_at: DateTime<Utc>,
}

/// An event handed to a dispatcher under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedCallback {
    /// The event.
    pub event: CallbackEvent,
    /// Attempts to post it so far, this claim included.
    pub attempts: u32,
    /// The claim's token: settling with an older one changes nothing.
    pub token: LeaseToken,
}

/// How one attempt to post an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The endpoint took it (2xx): never posted again.
    Delivered,
    /// It failed; try again at `at`.
    Retry {
        /// When it is due again.
        at: DateTime<Utc>,
        /// What went wrong.
        error: String,
    },
    /// It failed and its time or attempts are up: kept as failed, never posted again.
    Failed {
        /// What went wrong last.
        error: String,
    },
}

/// Events in the outbox by where they stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallbackCounts {
    /// Waiting to be posted, or being posted.
    pub pending: u64,
    /// Taken by the client's endpoint.
    pub delivered: u64,
    /// Given up on.
    pub failed: u64,
}

/// The durable outbox of status events. Shared by every instance; each call is atomic.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CallbackOutbox: Send + Sync {
    /// Stores events to post. Storing an event id again changes nothing.
    async fn enqueue(&self, events: &[CallbackEvent]) -> Result<(), StoreError>;

    /// Claims up to `limit` pending events due at `now`, oldest due first, for `lease`:
    /// no other claim gets them until the lease lapses or they are settled. A claim
    /// counts as an attempt.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedCallback>, StoreError>;

    /// Records how the attempt under `token` ended. Returns false, changing nothing,
    /// when the claim is no longer held (its lease lapsed and another claim took it).
    async fn settle(
        &self,
        id: uuid::Uuid,
        token: LeaseToken,
        outcome: CallbackOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// How many events stand where.
    async fn counts(&self) -> Result<CallbackCounts, StoreError>;

    /// Deletes up to `limit` settled events (delivered or failed) made before `before`.
    /// Returns how many.
    async fn purge(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_body_leaves_out_what_does_not_apply_and_round_trips() {
        let at = DateTime::parse_from_rfc3339("2026-05-10T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let queued = StatusEvent::new(MessageId::new(), CallbackStatus::Queued, at);
        let json: serde_json::Value = serde_json::to_value(&queued).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["at", "event_id", "message_id", "status"]);
        assert_eq!(json["status"], "queued");

        let mut delivered = StatusEvent::new(queued.message_id, CallbackStatus::Delivered, at);
        delivered.recipient = Some(PhoneNumber::parse("+8613800138000").unwrap());
        delivered.vendor = Some(VendorId::new("aliyun").unwrap());
        delivered.code = Some("DELIVRD".into());
        let url = CallbackUrl::new("https://app.example/e").unwrap();
        let stored = delivered.to_callback(&url, at);
        assert_eq!(stored.id, delivered.event_id);
        assert_ne!(stored.id, queued.event_id, "every event has its own id");
        let back: StatusEvent = serde_json::from_str(&stored.body).unwrap();
        assert_eq!(back, delivered);
    }

    #[test]
    fn a_spend_warning_has_one_id_per_cap_and_month_and_round_trips() {
        let at = DateTime::parse_from_rfc3339("2026-05-10T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let warning = SpendWarning::new("shop", "2026-05", "4.00".into(), "5.00".into(), 0.8, at);
        let later = SpendWarning::new("shop", "2026-05", "4.10".into(), "5.00".into(), 0.8, at);
        assert_eq!(warning.event_id, later.event_id, "seen twice, told once");
        for (scope, period) in [
            ("shop", "2026-06"),
            ("crm", "2026-05"),
            ("(deployment)", "2026-05"),
        ] {
            assert_ne!(
                SpendWarning::event_id(scope, period),
                warning.event_id,
                "{scope} {period}"
            );
        }
        let url = CallbackUrl::new("https://ops.example/e").unwrap();
        let stored = warning.to_callback(&url, at);
        assert_eq!(stored.message_id, None);
        assert_eq!(stored.status, CallbackStatus::SpendWarning);
        let json: serde_json::Value = serde_json::from_str(&stored.body).unwrap();
        assert_eq!(json["status"], "spend_warning");
        assert_eq!(json["scope"], "shop");
        assert_eq!(json["spent"], "4.00");
        let back: SpendWarning = serde_json::from_str(&stored.body).unwrap();
        assert_eq!(back, warning);
    }
}
