//! An in-memory blocklist.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::blocklist::{BlockReason, BlockedNumber, Blocklist};
use crate::error::StoreError;
use crate::phone::PhoneNumber;

/// A blocklist in a map; atomic per call, lost on restart.
#[derive(Debug, Default)]
pub struct MemoryBlocklist {
    entries: Mutex<HashMap<PhoneNumber, BlockedNumber>>,
}

impl MemoryBlocklist {
    /// An empty blocklist.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Blocklist for MemoryBlocklist {
    async fn block(
        &self,
        number: &PhoneNumber,
        reason: BlockReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut entries = crate::sync::lock(&self.entries);
        if entries.contains_key(number) {
            return Ok(false);
        }
        // The databases keep microseconds; so does the fake, so that an entry reads
        // back the same from every backend.
        let since = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        entries.insert(
            number.clone(),
            BlockedNumber {
                number: number.clone(),
                reason,
                since,
            },
        );
        Ok(true)
    }

    async fn unblock(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        Ok(crate::sync::lock(&self.entries).remove(number).is_some())
    }

    async fn blocked_among(&self, numbers: &[PhoneNumber]) -> Result<Vec<PhoneNumber>, StoreError> {
        let entries = crate::sync::lock(&self.entries);
        let mut seen = HashSet::new();
        Ok(numbers
            .iter()
            .filter(|n| entries.contains_key(*n) && seen.insert(*n))
            .cloned()
            .collect())
    }

    async fn entry(&self, number: &PhoneNumber) -> Result<Option<BlockedNumber>, StoreError> {
        Ok(crate::sync::lock(&self.entries).get(number).cloned())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(crate::sync::lock(&self.entries).len() as u64)
    }

    async fn numbers(&self) -> Result<Vec<PhoneNumber>, StoreError> {
        Ok(crate::sync::lock(&self.entries).keys().cloned().collect())
    }
}
