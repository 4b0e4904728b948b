//! Test support (feature `testing`): in-memory fakes of the core seams, and the
//! contract suites every backend runs.
//!
//! The fakes ([`MemoryQueue`], [`MemoryLedger`], [`MemorySpendLedger`],
//! [`MemoryBlocklist`], [`MemoryDeliveryLog`], [`MemoryOutbox`], [`MemoryBoard`],
//! [`ManualClock`]) keep nothing across restarts but otherwise follow the same contracts
//! as the real backends: the store contract runs against [`MemoryQueue`] as it does
//! against SQLite and Postgres.
//!
//! The contract suites are what a backend must do, written once: [`store_contract`] for
//! a `DeferredQueue` and `UsageLedger`, [`delivery_contract`] for a `DeliveryLog`,
//! [`callback_contract`] for a `CallbackOutbox`, [`blocklist_contract`] for a
//! `Blocklist`, [`spend_contract`] for a `SpendLedger`, [`board_contract`] for a
//! `SharedBoard`, [`limiter_contract`] for a `RateLimiter` and `RecipientLimiter`. A
//! backend outside this workspace adds `sms-core` with the `testing` feature to its
//! dev-dependencies and invokes the suite's macro in its tests, as the workspace's own
//! backends do.

mod blocklist;
pub mod blocklist_contract;
mod board;
pub mod board_contract;
mod callback;
pub mod callback_contract;
pub mod client_limiter_contract;
mod clock;
mod delivery;
pub mod delivery_contract;
mod ledger;
pub mod limiter_contract;
mod queue;
mod spend;
pub mod spend_contract;
pub mod store_contract;

pub use blocklist::MemoryBlocklist;
pub use board::MemoryBoard;
pub use callback::MemoryOutbox;

pub use clock::ManualClock;
pub use delivery::MemoryDeliveryLog;
pub use ledger::MemoryLedger;
pub use queue::MemoryQueue;
pub use spend::MemorySpendLedger;

use std::sync::Arc;

/// A backend under test, as a contract suite's factory returns it, and whatever must
/// live as long as it does (a temporary directory, a database schema to drop).
pub struct ContractBackend<T: ?Sized> {
    /// The backend the cases drive.
    pub backend: Arc<T>,
    /// Dropped after the backend.
    keep: Option<Box<dyn Send>>,
}

impl<T: ?Sized> ContractBackend<T> {
    /// A backend.
    pub fn new(backend: Arc<T>) -> Self {
        Self {
            backend,
            keep: None,
        }
    }

    /// Keeps `resource` alive until the backend is dropped, and drops it after.
    pub fn keeping(self, resource: impl Send + 'static) -> Self {
        Self {
            keep: Some(Box::new(resource)),
            ..self
        }
    }
}

impl<T: ?Sized> std::fmt::Debug for ContractBackend<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractBackend")
            .field("keeps_a_resource", &self.keep.is_some())
            .finish_non_exhaustive()
    }
}
