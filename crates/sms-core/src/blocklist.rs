//! The blocklist: numbers that asked never to get messages, or that an operator blocked.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::phone::PhoneNumber;

/// Why a number is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// The number's owner asked not to get messages (a STOP reply, a support request).
    OptedOut,
    /// An operator blocked it (abuse, a wrong number).
    Operator,
}

impl BlockReason {
    /// Every reason.
    pub const ALL: [BlockReason; 2] = [Self::OptedOut, Self::Operator];

    /// The lower-case name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::Operator => "operator",
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BlockReason {
    type Err = crate::ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                crate::ValidationError::new(
                    "reason",
                    format!(
                        "expected \"opted_out\" or \"operator\", found {:?}",
                        crate::phone::truncate_for_error(s)
                    ),
                )
            })
    }
}

/// One blocked number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedNumber {
    /// The number.
    pub number: PhoneNumber,
    /// Why.
    pub reason: BlockReason,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// The stored blocklist, shared by every instance.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Blocklist: Send + Sync {
    /// Blocks `number` for `reason` from `now`; a number already blocked keeps its entry
    /// and the answer is `false`.
    async fn block(
        &self,
        number: &PhoneNumber,
        reason: BlockReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Unblocks `number`; `false` when it was not blocked.
    async fn unblock(&self, number: &PhoneNumber) -> Result<bool, StoreError>;

    /// Which of `numbers` are blocked, in their order (one look-up for a whole request).
    async fn blocked_among(&self, numbers: &[PhoneNumber]) -> Result<Vec<PhoneNumber>, StoreError>;

    /// The entry of `number`, when blocked.
    async fn entry(&self, number: &PhoneNumber) -> Result<Option<BlockedNumber>, StoreError>;

    /// How many numbers are blocked.
    async fn count(&self) -> Result<u64, StoreError>;

    /// Every blocked number, in no particular order: for a copy in memory that answers
    /// requests without a look-up each.
    async fn numbers(&self) -> Result<Vec<PhoneNumber>, StoreError>;
}
