//! In-memory fakes of the core seams, for tests and benchmarks (feature `testing`).
//!
//! They follow the same contracts as the real backends (the store crate runs its
//! contract suite against [`MemoryQueue`] too) but keep nothing across restarts.

mod clock;
mod ledger;
mod queue;

pub use clock::ManualClock;
pub use ledger::MemoryLedger;
pub use queue::MemoryQueue;
