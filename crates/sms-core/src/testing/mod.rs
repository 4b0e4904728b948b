//! In-memory fakes of the core seams, for tests and benchmarks (feature `testing`).
//!
//! They follow the same contracts as the real backends (the store crate runs its
//! contract suite against [`MemoryQueue`] too) but keep nothing across restarts.
//!
//! [`limiter_contract`] is the contract every rate-limiter backend runs.
//! [`store_contract`] is the contract every queue and ledger backend runs.

mod clock;
mod ledger;
pub mod limiter_contract;
mod queue;
pub mod store_contract;

pub use clock::ManualClock;
pub use ledger::MemoryLedger;
pub use queue::MemoryQueue;
