//! Test support (feature `testing`): in-memory fakes of the core seams, and the
//! contract suites every backend runs.
//!
//! The fakes ([`MemoryQueue`], [`MemoryLedger`], [`MemoryDeliveryLog`], [`MemoryOutbox`],
//! [`ManualClock`]) keep nothing across
//! restarts but otherwise follow the same contracts as the real backends: the store
//! contract runs against [`MemoryQueue`] as it does against SQLite and Postgres.
//!
//! The contract suites are what a backend must do, written once: [`store_contract`] for
//! a `DeferredQueue` and `UsageLedger`, [`delivery_contract`] for a `DeliveryLog`,
//! [`callback_contract`] for a `CallbackOutbox`,
//! [`limiter_contract`] for a `RateLimiter` and
//! `RecipientLimiter`. A backend outside this workspace adds `sms-core` with the
//! `testing` feature to its dev-dependencies and invokes the suite's macro in its
//! tests, as the workspace's own backends do.

mod callback;
pub mod callback_contract;
mod clock;
mod delivery;
pub mod delivery_contract;
mod ledger;
pub mod limiter_contract;
mod queue;
pub mod store_contract;

pub use callback::MemoryOutbox;
pub use clock::ManualClock;
pub use delivery::MemoryDeliveryLog;
pub use ledger::MemoryLedger;
pub use queue::MemoryQueue;
