//! The deferred queue: every message the gateway could not send at once is stored here
//! and re-sent later under a lease, with backoff and a cap on attempts.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::ids::{ClientId, IdempotencyKey, MessageId, VendorId};
use crate::phone::PhoneNumber;
use crate::request::SmsRequest;

/// Where a stored message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waiting for its next attempt.
    Queued,
    /// Claimed by a sender under a lease.
    Leased,
    /// Delivered to a vendor.
    Sent,
    /// Out of attempts; kept for inspection and manual retry, never deleted.
    Dead,
    /// Past its deliver-by time; not sent.
    Expired,
    /// Cancelled by its client before it was sent; never sent.
    Cancelled,
}

impl MessageStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [MessageStatus; 6] = [
        Self::Queued,
        Self::Leased,
        Self::Sent,
        Self::Dead,
        Self::Expired,
        Self::Cancelled,
    ];

    /// The lower-case name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Sent => "sent",
            Self::Dead => "dead",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more will happen to the message by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Sent | Self::Dead | Self::Expired | Self::Cancelled
        )
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MessageStatus {
    type Err = crate::ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                crate::ValidationError::new(
                    "status",
                    format!(
                        "expected one of queued, leased, sent, dead, expired, cancelled, found {s:?}"
                    ),
                )
            })
    }
}

/// Why a message went into the queue instead of straight to a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueReason {
    /// The global rate limit was reached.
    RateLimited,
    /// The vendor throttled the send.
    VendorThrottled,
    /// The vendor failed (5xx, network, outage).
    VendorFailed,
    /// The vendor timed out: the first attempt may have been delivered.
    TimedOut,
    /// Stored before its first attempt (requests with an idempotency key are recorded
    /// first, so a retry of the request finds them).
    Accepted,
    /// An operator asked for a dead message to be retried.
    ManualRetry,
    /// The vendor's per-number limit refused the recipient: it waits for the vendor's
    /// window, and goes to that vendor again.
    RecipientRefused,
    /// Scheduled by its client for a later time (`send_at`).
    Scheduled,
}

impl QueueReason {
    /// The lower-case name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::VendorThrottled => "vendor_throttled",
            Self::VendorFailed => "vendor_failed",
            Self::TimedOut => "timed_out",
            Self::Accepted => "accepted",
            Self::ManualRetry => "manual_retry",
            Self::RecipientRefused => "recipient_refused",
            Self::Scheduled => "scheduled",
        }
    }

    /// Every reason.
    pub const ALL: [QueueReason; 8] = [
        Self::RateLimited,
        Self::VendorThrottled,
        Self::VendorFailed,
        Self::TimedOut,
        Self::Accepted,
        Self::ManualRetry,
        Self::RecipientRefused,
        Self::Scheduled,
    ];
}

impl fmt::Display for QueueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for QueueReason {
    type Err = crate::ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                crate::ValidationError::new("reason", format!("unknown queue reason {s:?}"))
            })
    }
}

/// A claim's proof of ownership. Every claim gets a fresh token; updates carrying an
/// older token are refused with [`StoreError::LeaseLost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(pub uuid::Uuid);

impl LeaseToken {
    /// A fresh, unique token.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for LeaseToken {
    fn default() -> Self {
        Self::new()
    }
}

/// Who holds a message and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The claimer's name (instance id), for operators.
    pub owner: String,
    /// The claim's token.
    pub token: LeaseToken,
    /// When the lease lapses and the message becomes claimable again.
    pub expires_at: DateTime<Utc>,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Its id.
    pub id: MessageId,
    /// What to send.
    pub request: SmsRequest,
    /// Where it is in its life.
    pub status: MessageStatus,
    /// Why it was queued.
    pub reason: QueueReason,
    /// Attempts made so far (a claim counts as one).
    pub attempts: u32,
    /// Attempts allowed before it is dead.
    pub max_attempts: u32,
    /// Not claimable before this time.
    pub next_attempt_at: DateTime<Utc>,
    /// The current lease, while leased.
    pub lease: Option<Lease>,
    /// The vendor of the last attempt (or the one that delivered it).
    pub last_vendor: Option<VendorId>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// An earlier attempt timed out, so the recipient may receive it twice.
    pub may_duplicate: bool,
    /// The vendor its next attempt must go to: that vendor's per-number limit refused
    /// the recipient, and another vendor would get around the limit.
    pub pinned_vendor: Option<VendorId>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The state a new message is stored in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialState {
    /// Waiting for the drain.
    Queued,
    /// Already claimed by the storing sender, which will attempt it right away
    /// (store-then-send for requests with an idempotency key).
    Leased(Lease),
    /// Already delivered by `vendor`; stored for status look-ups and idempotency.
    Sent {
        /// The vendor that delivered it.
        vendor: VendorId,
    },
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Its id.
    pub id: MessageId,
    /// What to send.
    pub request: SmsRequest,
    /// Why it is stored.
    pub reason: QueueReason,
    /// Its state on insertion.
    pub initial: InitialState,
    /// Attempts already made before it was stored (0 or 1).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Not claimable before this time.
    pub next_attempt_at: DateTime<Utc>,
    /// The vendor of the attempt that failed, if one did.
    pub last_vendor: Option<VendorId>,
    /// That attempt's error.
    pub last_error: Option<String>,
    /// Whether that attempt's outcome is unknown.
    pub may_duplicate: bool,
    /// Now.
    pub created_at: DateTime<Utc>,
}

impl NewMessage {
    /// A message queued now for its first attempt now, with `max_attempts` attempts.
    pub fn queued(
        id: MessageId,
        request: SmsRequest,
        reason: QueueReason,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            request,
            reason,
            initial: InitialState::Queued,
            attempts: 0,
            max_attempts,
            next_attempt_at: now,
            last_vendor: None,
            last_error: None,
            may_duplicate: false,
            created_at: now,
        }
    }
}

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new row was stored.
    Created(StoredMessage),
    /// A message with the same idempotency key already existed; nothing was stored.
    Existing(StoredMessage),
}

impl Enqueued {
    /// The stored message, new or existing.
    pub fn message(&self) -> &StoredMessage {
        match self {
            Self::Created(m) | Self::Existing(m) => m,
        }
    }
}

/// One delivered message to mark sent, for [`DeferredQueue::complete_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The message.
    pub id: MessageId,
    /// The lease it was sent under.
    pub token: LeaseToken,
    /// The vendor that accepted it.
    pub vendor: VendorId,
    /// When it was accepted.
    pub at: DateTime<Utc>,
}

/// How a failed attempt is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The vendor tried, if one was.
    pub vendor: Option<VendorId>,
    /// What went wrong.
    pub error: String,
    /// Whether the attempt's outcome is unknown (timeout).
    pub may_duplicate: bool,
    /// The next attempt must go to `vendor` again (its per-number limit refused the
    /// recipient). A failure without it clears an earlier pin.
    pub pinned: bool,
}

/// Messages per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Waiting.
    pub queued: u64,
    /// Claimed now.
    pub leased: u64,
    /// Delivered (and not yet removed by retention).
    pub sent: u64,
    /// Out of attempts.
    pub dead: u64,
    /// Past their deliver-by time.
    pub expired: u64,
    /// Cancelled before they were sent.
    #[serde(default)]
    pub cancelled: u64,
}

impl QueueStats {
    /// The count for one status.
    pub fn get(&self, status: MessageStatus) -> u64 {
        match status {
            MessageStatus::Queued => self.queued,
            MessageStatus::Leased => self.leased,
            MessageStatus::Sent => self.sent,
            MessageStatus::Dead => self.dead,
            MessageStatus::Expired => self.expired,
            MessageStatus::Cancelled => self.cancelled,
        }
    }
}

/// The durable store of messages awaiting (re)delivery.
///
/// Every state change of a leased message carries the lease's token and is refused
/// with [`StoreError::LeaseLost`] when another claimer holds the message now, so a
/// stale drainer never overwrites a newer outcome.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DeferredQueue: Send + Sync {
    /// Stores a message. With an idempotency key already present, stores nothing and
    /// returns the existing message.
    async fn enqueue(&self, message: NewMessage) -> Result<Enqueued, StoreError>;

    /// Stores many messages in one write (one commit on a durable store); the answer
    /// holds what [`DeferredQueue::enqueue`] would have answered for each, in order. Durable
    /// stores write all or nothing, so an `Err` means nothing was stored. The default
    /// stores them one by one: an `Err` from it may leave the earlier ones stored.
    async fn enqueue_many(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, StoreError> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.enqueue(message).await?);
        }
        Ok(results)
    }

    /// Claims up to `limit` due messages: queued ones whose `next_attempt_at` has come,
    /// and leased ones whose lease lapsed at `now`. High-priority ones first, then
    /// normal ones; oldest due first within each lane. Each claimed message's `attempts`
    /// grows by one and it is leased to `owner` until `now + lease_for` under one fresh
    /// token. The same as [`DeferredQueue::claim_lanes`] with no share kept for normal
    /// messages.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Claims like [`DeferredQueue::claim`], keeping room for normal messages: of the
    /// `limit`, at most `limit - normal_min` go to high-priority messages, so that at
    /// least `normal_min` (when that many are due) go to normal ones. High-priority
    /// messages beyond that wait for the next claim; normal ones fill whatever the high
    /// lane leaves. The answer lists the high-priority messages first.
    ///
    /// The default ignores `normal_min`: it is there so wrappers written before the
    /// method existed still build, and the contract suite fails for a store that keeps it.
    async fn claim_lanes(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
        limit: u32,
        normal_min: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let _ = normal_min;
        self.claim(owner, now, lease_for, limit).await
    }

    /// The earliest time a queued message falls due or a lease lapses, if any message is
    /// queued or leased: the drain sleeps until then at most, so a scheduled message
    /// goes out when due rather than at the next tick.
    ///
    /// The default knows nothing (`None`): the drain then keeps to its tick.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(None)
    }

    /// Cancels a queued message (scheduled, or waiting for a retry): it becomes
    /// `cancelled`, is never claimed again, and is returned as it is now. Refused with
    /// [`StoreError::WrongStatus`] when it is not queued (a sender holds it, or it is
    /// final), and [`StoreError::NotFound`] when it is not stored.
    ///
    /// The default refuses with [`StoreError::Backend`]: it is there so wrappers written
    /// before the method existed still build, and the contract suite fails for a store
    /// that keeps it.
    async fn cancel(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError> {
        let _ = now;
        Err(StoreError::backend(format!(
            "this queue cannot cancel messages (message {id})"
        )))
    }

    /// Marks a leased message sent by `vendor`.
    async fn complete(
        &self,
        id: MessageId,
        token: LeaseToken,
        vendor: &VendorId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Marks many leased messages sent in one write (one commit on a durable store).
    ///
    /// The answer holds one result per completion, in order: `Ok`, or the error that
    /// completion alone met (`LeaseLost`, `NotFound`). An `Err` of the whole call means
    /// nothing was written (the default, which completes them one by one, answers `Err`
    /// only when the first one finds the store unavailable).
    async fn complete_many(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(completions.len());
        for c in completions {
            match self.complete(c.id, c.token, &c.vendor, c.at).await {
                Err(StoreError::Unavailable(e)) if results.is_empty() => {
                    return Err(StoreError::Unavailable(e));
                }
                other => results.push(other),
            }
        }
        Ok(results)
    }

    /// Puts a leased message back in the queue after a failed attempt, due at `next_attempt_at`.
    async fn fail(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Marks a leased message dead (out of attempts, or refused for good).
    async fn dead(
        &self,
        id: MessageId,
        token: LeaseToken,
        failure: AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Marks a leased message expired (past its deliver-by time).
    async fn expire(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Gives a leased message back unattempted (shutdown): queued, due now, the claim's
    /// attempt not counted.
    async fn release(
        &self,
        id: MessageId,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Gives a leased message back unattempted, due at `due_at`: nothing could take it
    /// before then (every vendor rests). Like `release`, the claim's attempt is not counted.
    ///
    /// The message is queued again with `next_attempt_at` set to `due_at` (the caller's
    /// time, as every due time is) and `updated_at` to `now`; its failure, pin and
    /// duplicate flag stay. Refused like `release`: [`StoreError::LeaseLost`] when the
    /// message is no longer leased under `token`, [`StoreError::NotFound`] when it is not
    /// stored. A release is a deferral due `now`.
    ///
    /// The default refuses with [`StoreError::Backend`]: it is there so wrappers written
    /// before the method existed still build, and the contract suite fails for a store
    /// that keeps it.
    async fn defer(
        &self,
        id: MessageId,
        token: LeaseToken,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (token, due_at, now);
        Err(StoreError::backend(format!(
            "this queue cannot defer messages (message {id})"
        )))
    }

    /// Extends the lease `token` holds on message `id` to `lease_for` from now; returns the
    /// new lease.
    ///
    /// A sender calls it before an attempt that could outlive its lease, and while it
    /// retries an outcome write, so the message is not claimed again meanwhile. The lease
    /// is set to end `lease_for` after `now` (which may also shorten it); the owner and
    /// token stay, and so do `status`, `attempts`, `next_attempt_at` and `may_duplicate`.
    /// A lease that lapsed is renewed as long as nobody claimed the message since. Refused
    /// with [`StoreError::LeaseLost`] when the message is no longer leased under `token`
    /// (claimed again, sent, failed, released), and [`StoreError::NotFound`] when it is not
    /// stored.
    ///
    /// The default refuses with [`StoreError::Backend`]: it is there so wrappers written
    /// before the method existed still build, and the contract suite fails for a store
    /// that keeps it.
    async fn renew(
        &self,
        id: MessageId,
        token: LeaseToken,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let _ = (token, lease_for, now);
        Err(StoreError::backend(format!(
            "this queue cannot renew leases (message {id})"
        )))
    }

    /// Takes `sent` off the recipients of the message leased under `token`: a vendor took
    /// the message for them in a split send that failed for the others, so later attempts
    /// go to the others only. Recipients not on the message are ignored. Nothing else
    /// changes (status, lease, attempts, due time).
    ///
    /// The remaining recipients keep their order, and the rest of the request (template,
    /// arguments, idempotency key, deliver-by time) stays; `updated_at` is set to `now`.
    /// Refused like `fail`: [`StoreError::LeaseLost`] when the message is no longer leased
    /// under `token`, [`StoreError::NotFound`] when it is not stored. When `sent` covers
    /// every recipient it is refused with [`StoreError::Backend`] naming the message, and
    /// nothing changes: a message with no recipients cannot be stored, and the gateway
    /// never asks for it (a message the vendor took for everyone is completed instead).
    ///
    /// The default refuses with [`StoreError::Backend`]: it is there so wrappers written
    /// before the method existed still build, and the contract suite fails for a store
    /// that keeps it.
    async fn narrow(
        &self,
        id: MessageId,
        token: LeaseToken,
        sent: &[PhoneNumber],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (token, sent, now);
        Err(StoreError::backend(format!(
            "this queue cannot narrow the recipients of messages (message {id})"
        )))
    }

    /// Re-queues a dead or expired message for a fresh set of attempts (operator action).
    async fn retry(&self, id: MessageId, now: DateTime<Utc>) -> Result<StoredMessage, StoreError>;

    /// The message with this id.
    async fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError>;

    /// The message stored with this idempotency key.
    async fn find_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredMessage>, StoreError>;

    /// Up to `limit` messages in `status`, oldest first.
    async fn list(
        &self,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Up to `limit` messages of `client` in `status`, oldest first.
    ///
    /// The default refuses with [`StoreError::Backend`]: it is there so wrappers written
    /// before the method existed still build, and the contract suite fails for a store
    /// that keeps it.
    async fn list_for_client(
        &self,
        client: &ClientId,
        status: MessageStatus,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let _ = (status, limit);
        Err(StoreError::backend(format!(
            "this queue cannot list messages by client ({client})"
        )))
    }

    /// Counts by status.
    async fn stats(&self) -> Result<QueueStats, StoreError>;

    /// Removes up to `limit` sent messages last updated before `before`; returns how many.
    async fn purge_sent(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
}
