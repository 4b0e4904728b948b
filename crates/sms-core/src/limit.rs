//! Rate-limiter seams: one global limit, and per-recipient limits against SMS bombing.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::LimitError;
use crate::ids::ClientId;
use crate::phone::PhoneNumber;
use crate::request::Priority;

/// A limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead: the permits were taken.
    Allowed,
    /// Over the limit: nothing was taken.
    Limited {
        /// How long until a permit frees, as far as the limiter can tell.
        retry_after: Duration,
    },
}

impl RateDecision {
    /// Whether the request may go ahead.
    pub fn is_allowed(self) -> bool {
        matches!(self, Self::Allowed)
    }
}

/// The global send-rate limit shared by every sender (and every instance, when shared).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes `permits` permits (one per recipient) if all fit in the window now, else none.
    async fn acquire(&self, permits: u32) -> Result<RateDecision, LimitError>;

    /// Takes `permits` permits for a message of lane `priority`. High-priority messages
    /// may use the whole window; normal ones only what leaves the high lane its headroom
    /// (a configured share of the window), so that a login code finds room however much
    /// bulk is being sent. A normal request larger than that share still goes, alone, in
    /// an empty window.
    ///
    /// The default takes no lane into account.
    async fn acquire_lane(
        &self,
        permits: u32,
        priority: Priority,
    ) -> Result<RateDecision, LimitError> {
        let _ = priority;
        self.acquire(permits).await
    }

    /// The most permits one `acquire` can ever get (the limit per window), when known.
    /// The gateway refuses a request with more recipients than this: waiting would never
    /// make it fit.
    fn capacity(&self) -> Option<u32> {
        None
    }

    /// The window `capacity` permits fit in, when known. With both, the gateway knows
    /// the rate it may send at, and keeps enough drained sends in flight to reach it.
    fn window(&self) -> Option<Duration> {
        None
    }
}

/// One recipient's answer from a [`RecipientLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientDecision {
    /// The message may go to this recipient; it was counted in every window.
    Allowed,
    /// This recipient had `limit` messages in the last `window` already.
    Limited {
        /// The window that is full.
        window: Duration,
        /// How many messages that window allows.
        limit: u32,
        /// When the window allows the next one.
        retry_after: Duration,
    },
}

/// At most `limit` messages to one recipient in any `window`.
///
/// Configuration files give the window in whole seconds (`{ limit = 1, window_s = 60 }`)
/// and it is written back the same way; code and tests may use any duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientWindow {
    /// Messages allowed per window.
    pub limit: u32,
    /// Window length (`window_s`, in seconds, in configuration files).
    #[serde(
        rename = "window_s",
        serialize_with = "to_seconds",
        deserialize_with = "from_seconds"
    )]
    pub window: Duration,
}

impl RecipientWindow {
    /// At most `limit` messages per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window }
    }

    /// At most `limit` messages per `window_s` seconds.
    pub fn per_seconds(limit: u32, window_s: u64) -> Self {
        Self::new(limit, Duration::from_secs(window_s))
    }
}

fn from_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

/// Whole seconds, as configuration files give them; a fraction of a second is dropped.
fn to_seconds<S: Serializer>(window: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(window.as_secs())
}

/// Per-recipient limits (at most K messages per recipient per window, several windows).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RecipientLimiter: Send + Sync {
    /// Checks and counts each recipient; returns one decision per recipient, in order.
    /// A limited recipient is not counted.
    async fn check(&self, recipients: &[PhoneNumber])
    -> Result<Vec<RecipientDecision>, LimitError>;

    /// Gives back one message's count for each of `recipients` (counted by an earlier
    /// `check` whose request was then refused), in every window.
    ///
    /// A recipient listed twice gets two counts back; one with nothing counted is
    /// skipped. The default gives nothing back: the counts stay until they leave their
    /// windows, which errs on the side of fewer messages to each number.
    async fn give_back(&self, recipients: &[PhoneNumber]) -> Result<(), LimitError> {
        let _ = recipients;
        Ok(())
    }
}

/// A client's own limits, on top of the global one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientQuota {
    /// Most recipients per second (sliding window), when limited.
    pub per_second: Option<u32>,
    /// Most recipients per calendar day (UTC), when limited.
    pub per_day: Option<u32>,
}

impl ClientQuota {
    /// Whether the quota limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.per_second.is_none() && self.per_day.is_none()
    }
}

/// Which of a client's limits refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaWindow {
    /// `per_second`.
    Second,
    /// `per_day`.
    Day,
}

impl QuotaWindow {
    /// The configuration key of the limit.
    pub fn key(self) -> &'static str {
        match self {
            Self::Second => "per_second",
            Self::Day => "per_day",
        }
    }
}

/// A client limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDecision {
    /// Go ahead: the permits were counted in every window.
    Allowed,
    /// Over one of the client's limits: nothing was counted.
    Limited {
        /// The limit that is full.
        window: QuotaWindow,
        /// What it allows.
        limit: u32,
        /// When it allows the request (for `Day`, the next UTC midnight).
        retry_after: Duration,
    },
}

/// Per-client limits, exact across instances when shared.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ClientLimiter: Send + Sync {
    /// Counts `permits` (one per recipient) against each of `client`'s limits in
    /// `quota`, all or none: when one limit has no room, nothing is counted.
    async fn acquire(
        &self,
        client: &ClientId,
        quota: ClientQuota,
        permits: u32,
    ) -> Result<QuotaDecision, LimitError>;

    /// Gives back `permits` counted by an earlier `acquire` whose request was then
    /// refused, in every window of `quota`. The default gives nothing back.
    async fn give_back(
        &self,
        client: &ClientId,
        quota: ClientQuota,
        permits: u32,
    ) -> Result<(), LimitError> {
        let _ = (client, quota, permits);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipient_window_reads_and_writes_whole_seconds() {
        let window: RecipientWindow =
            serde_json::from_str(r#"{ "limit": 10, "window_s": 86400 }"#).unwrap();
        assert_eq!(window, RecipientWindow::per_seconds(10, 86_400));
        assert_eq!(window.window, Duration::from_secs(86_400));
        assert_eq!(
            serde_json::to_string(&window).unwrap(),
            r#"{"limit":10,"window_s":86400}"#
        );
    }

    #[test]
    fn a_recipient_window_rejects_unknown_fields() {
        let error =
            serde_json::from_str::<RecipientWindow>(r#"{ "limit": 1, "window": 60 }"#).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `window`"),
            "{error}"
        );
    }
}
