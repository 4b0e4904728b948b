//! A monotonic time source for the in-process limiters, so tests can move time by hand.
//!
//! The limiters measure time as a [`Duration`] since an arbitrary origin. A sliding
//! window only needs differences, and a monotonic source cannot jump backwards when
//! the wall clock is adjusted (which would let a burst through or block sending).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the in-process limiters read "now".
pub trait MonotonicClock: Send + Sync + std::fmt::Debug {
    /// Time elapsed since this clock's origin. Never decreases.
    fn elapsed(&self) -> Duration;
}

/// The process's monotonic clock ([`Instant`]).
#[derive(Debug, Clone, Copy)]
pub struct InstantClock {
    origin: Instant,
}

impl InstantClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for InstantClock {
    fn default() -> Self {
        Self::new()
    }
}

impl MonotonicClock for InstantClock {
    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualMonotonicClock {
    nanos: Arc<AtomicU64>,
}

impl ManualMonotonicClock {
    /// A clock at its origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl MonotonicClock for ManualMonotonicClock {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualMonotonicClock::new();
        let clone = clock.clone();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        clone.advance(Duration::from_millis(250));
        assert_eq!(clock.elapsed(), Duration::from_millis(250));
    }
}
