//! Status callbacks: the events a client is told about its messages, and the durable
//! outbox they wait in until the client's endpoint has taken them.
//!
//! Every change of a message's status (queued, sent, delivered or undelivered per
//! recipient, dead, expired) becomes one [`StatusEvent`]. Its JSON body is fixed when it
//! is stored, so every attempt sends the same bytes under the same event id, and a
//! client can drop a repeat by that id. The outbox hands events out under leases, like
//! the deferred queue, so two dispatchers never post one event at the same time.

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
}

impl CallbackStatus {
    /// Every status.
    pub const ALL: [CallbackStatus; 6] = [
        Self::Queued,
        Self::Sent,
        Self::Delivered,
        Self::Undelivered,
        Self::Dead,
        Self::Expired,
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
            message_id: self.message_id,
            status: self.status,
            url: url.clone(),
            body: serde_json::to_string(self).expect("a status event always serialises"),
            created_at: stored_at,
        }
    }
}

/// An event in the outbox: where it goes and the exact body it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackEvent {
    /// The event id (the body's `event_id`).
    pub id: uuid::Uuid,
    /// The message it is about.
    pub message_id: MessageId,
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
}
