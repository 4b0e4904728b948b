//! Rate-limiter seams: one global limit, and per-recipient limits against SMS bombing.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::LimitError;
use crate::phone::PhoneNumber;

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

/// Per-recipient limits (at most K messages per recipient per window, several windows).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RecipientLimiter: Send + Sync {
    /// Checks and counts each recipient; returns one decision per recipient, in order.
    /// A limited recipient is not counted.
    async fn check(&self, recipients: &[PhoneNumber])
    -> Result<Vec<RecipientDecision>, LimitError>;
}
