//! The blocklist, answered from memory: every request and every drained message is
//! checked against it, and a look-up in the store for each would cost a round trip
//! (on SQLite, a turn of its one connection) per send.
//!
//! The copy holds every blocked number. Blocks and unblocks made through this instance
//! change it at once; those made through another instance reach it with the next
//! reload, every [`RELOAD_EVERY`]. While the store cannot be read, the last copy
//! answers, so sends that need no database go on through its outage.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sms_core::{BlockReason, BlockedNumber, Blocklist, PhoneNumber, StoreError};
use tokio_util::sync::CancellationToken;

/// How often the copy is read again from the store.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The stored blocklist with a copy of its numbers in memory.
pub struct BlockedNumbers {
    store: Arc<dyn Blocklist>,
    numbers: RwLock<HashSet<PhoneNumber>>,
    /// Counts the changes made here, so that a reload that read the store before one
    /// of them does not undo it.
    changes: AtomicU64,
}

impl BlockedNumbers {
    /// A copy of `store`'s list, read now; an unreadable store leaves it empty until
    /// the next reload, with a warning.
    pub async fn load(store: Arc<dyn Blocklist>) -> Self {
        let copy = Self {
            store,
            numbers: RwLock::new(HashSet::new()),
            changes: AtomicU64::new(0),
        };
        copy.reload().await;
        copy
    }

    /// Reads the list from the store again; keeps the copy when that fails.
    pub async fn reload(&self) {
        let before = self.changes.load(Ordering::SeqCst);
        match self.store.numbers().await {
            Ok(numbers) => {
                let mut copy = self.numbers.write().unwrap_or_else(|e| e.into_inner());
                // A change made here meanwhile may be missing from what was read.
                if self.changes.load(Ordering::SeqCst) == before {
                    *copy = numbers.into_iter().collect();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the blocklist; the last copy answers");
            }
        }
    }

    /// Reloads every [`RELOAD_EVERY`] until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(RELOAD_EVERY) => self.reload().await,
                () = stop.cancelled() => return,
            }
        }
    }
}

#[async_trait]
impl Blocklist for BlockedNumbers {
    async fn block(
        &self,
        number: &PhoneNumber,
        reason: BlockReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let added = self.store.block(number, reason, now).await?;
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.numbers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(number.clone());
        Ok(added)
    }

    async fn unblock(&self, number: &PhoneNumber) -> Result<bool, StoreError> {
        let removed = self.store.unblock(number).await?;
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.numbers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(number);
        Ok(removed)
    }

    /// From the copy: no store round trip.
    async fn blocked_among(&self, numbers: &[PhoneNumber]) -> Result<Vec<PhoneNumber>, StoreError> {
        let copy = self.numbers.read().unwrap_or_else(|e| e.into_inner());
        if copy.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen = HashSet::new();
        Ok(numbers
            .iter()
            .filter(|n| copy.contains(*n) && seen.insert(*n))
            .cloned()
            .collect())
    }

    async fn entry(&self, number: &PhoneNumber) -> Result<Option<BlockedNumber>, StoreError> {
        self.store.entry(number).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.store.count().await
    }

    async fn numbers(&self) -> Result<Vec<PhoneNumber>, StoreError> {
        self.store.numbers().await
    }
}

#[cfg(test)]
mod tests {
    use sms_core::testing::MemoryBlocklist;

    use super::*;

    fn number(n: &str) -> PhoneNumber {
        PhoneNumber::parse(n).unwrap()
    }

    #[tokio::test]
    async fn the_copy_answers_at_once_for_changes_here_and_after_a_reload_for_others() {
        let store = Arc::new(MemoryBlocklist::new());
        let (a, b) = (number("+8613800000001"), number("+8613800000002"));
        let both = vec![a.clone(), b.clone()];
        let blocked = |copy: &BlockedNumbers| {
            let copy = copy.numbers.read().unwrap().clone();
            both.iter()
                .filter(|n| copy.contains(*n))
                .cloned()
                .collect::<Vec<_>>()
        };
        store
            .block(&a, BlockReason::Operator, Utc::now())
            .await
            .unwrap();
        let copy = BlockedNumbers::load(store.clone()).await;
        assert_eq!(copy.blocked_among(&both).await.unwrap(), vec![a.clone()]);
        // Through this copy: at once.
        copy.block(&b, BlockReason::OptedOut, Utc::now())
            .await
            .unwrap();
        assert_eq!(blocked(&copy), both);
        copy.unblock(&a).await.unwrap();
        assert_eq!(blocked(&copy), vec![b.clone()]);
        // Through another instance (the store directly): after the reload.
        store
            .block(&a, BlockReason::Operator, Utc::now())
            .await
            .unwrap();
        assert_eq!(blocked(&copy), vec![b.clone()]);
        copy.reload().await;
        assert_eq!(copy.blocked_among(&both).await.unwrap(), both);
    }
}
