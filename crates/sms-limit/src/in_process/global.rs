//! The global in-process limiter: one sliding log for the whole process.
//!
//! # The global limiter: one shared log, per-thread permit caches
//!
//! The global decision needs the whole window's count, so the log itself stays one
//! `VecDeque` behind a `Mutex`. What keeps threads off that lock is that a thread may
//! take a few permits more than it asked for and keep them in its own cache for a
//! short validity `V` (`window / 64`, at most 10 ms, at least 1 µs). There are
//! [`PERMIT_CACHES`] caches, each one `AtomicU64` on its own cache line holding the
//! permits left (low 16 bits) and the microsecond they stop being usable (high 48
//! bits); a thread uses the cache given to it round-robin when it first asks.
//!
//! - **Fast path.** Take the permits from the own cache with one compare-and-swap,
//!   then read the clock: if the cache was still valid, the answer is `Allowed`. No
//!   lock. The clock is read *after* the swap so that the permits taken were
//!   certainly logged before the moment the decision is made at (a thread sharing the
//!   cache may refill it between an earlier reading and the swap).
//! - **Slow path.** Lock the log, read the clock under the lock, drop expired entries.
//!   If `free = limit - logged` covers the request, log it at `now`, and log up to
//!   `min(64 - permits, (free - permits) / (2 × caches))` extra permits stamped
//!   `now + V` that go to the own cache, valid until `now + V`. When the cache still
//!   held valid permits, the new ones join them under the earlier of the two ends.
//! - **Stealing.** If the free entries do not cover the request, take what is missing
//!   from every cache still valid (own first). Enough: `Allowed`. Not enough: what
//!   was gathered goes to the own cache (it is logged already, so nothing is lost or
//!   counted twice) and the answer is `Limited`.
//!
//! Why no window ever holds more than `limit` uses. Every permit is logged before it
//! is used. A permit used at once is stamped with the time of its decision, as an
//! exact log would. A cached permit logged at `t` is used at some `u` in `[t, t + V)`
//! and stamped `t + V`; an entry counts until `now >= stamp + window`, so this one
//! counts from `t` until `t + V + window`, that is, at every moment `s` with
//! `u <= s < u + window`. Now take any window and its last use `s`: every use in the
//! window is in `(s - window, s]`, so every one of their entries is in the log at `s`,
//! and the log never holds more than `limit` entries. So uses in a window are at most
//! the entries logged, which are at most `limit`. The two kinds of entries are kept in
//! two deques, each sorted because its stamps are taken under the lock from a
//! monotonic clock plus a constant; so expiring is still popping from the fronts.
//!
//! What it costs in exactness. A cached permit that is never used stays logged until
//! `t + V + window` and is lost to everyone: an expired cache is the only way the
//! limiter refuses while fewer than `limit` permits were used. One refill caches at
//! most `(free - permits) / (2 × caches)` permits, so little is at stake near the
//! limit, where it matters. While the clock does not move no cache expires and
//! stealing finds every unused permit, so a burst at one instant gets exactly
//! `limit`. A permit logged for a cache frees `V` later than an exact log would free
//! it, so `retry_after` can exceed the window by up to `V`.
//!
//! `retry_after` counts only the free entries of the log, not the permits gathered
//! from caches: those stop being usable within `V`, before a retry would come. So
//! it is the time at which the log alone has room for the request, which a retry
//! at that time finds (unless other requests took the room meanwhile).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sms_core::sync::lock;
use sms_core::{LimitError, RateDecision, RateLimiter};

use crate::error::ConfigError;
use crate::time::{InstantClock, MonotonicClock};

/// Number of permit caches of the global limiter; threads beyond this share them.
pub(crate) const PERMIT_CACHES: usize = 16;

/// Most permits one refill of a cache logs, the request's own included.
const CHUNK: usize = 64;

/// Longest time permits stay usable in a cache.
const MAX_VALIDITY: Duration = Duration::from_millis(10);

/// A duration in whole microseconds, saturating.
fn micros(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(duration.subsec_micros()))
}

/// Hands out cache indexes to threads in turn.
static NEXT_CACHE_INDEX: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's permit cache, in every global limiter.
    static CACHE_INDEX: usize = NEXT_CACHE_INDEX.fetch_add(1, Ordering::Relaxed) % PERMIT_CACHES;
}

/// The content of a permit cache, packed into one `u64` so it changes atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cached {
    /// Permits left; at most [`Cached::MAX_REMAINING`].
    remaining: u64,
    /// When they stop being usable, in microseconds of the limiter's clock (48 bits).
    valid_until_us: u64,
}

impl Cached {
    const REMAINING_BITS: u32 = 16;
    const MAX_REMAINING: u64 = (1 << Self::REMAINING_BITS) - 1;
    const MAX_VALID_UNTIL_US: u64 = (1 << (64 - Self::REMAINING_BITS)) - 1;

    fn unpack(word: u64) -> Self {
        Self {
            remaining: word & Self::MAX_REMAINING,
            valid_until_us: word >> Self::REMAINING_BITS,
        }
    }

    fn pack(self) -> u64 {
        (self.valid_until_us << Self::REMAINING_BITS) | self.remaining
    }

    fn is_valid_at(self, now_us: u64) -> bool {
        now_us < self.valid_until_us
    }
}

/// One thread's cache of logged, not yet used permits, alone on its cache line so
/// threads using neighbouring caches do not slow each other down.
#[derive(Debug, Default)]
#[repr(align(128))]
struct PermitCache {
    word: AtomicU64,
}

impl PermitCache {
    /// Adds `permits` valid until `valid_until_us`; returns how many it took (fewer
    /// only when the 16-bit count would overflow). Valid permits already there keep
    /// their place and the earlier end applies to all; expired ones are dropped.
    fn deposit(&self, permits: u64, valid_until_us: u64, now_us: u64) -> u64 {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let old = Cached::unpack(word);
            let (new, added) = if old.is_valid_at(now_us) {
                let added = permits.min(Cached::MAX_REMAINING - old.remaining);
                let new = Cached {
                    remaining: old.remaining + added,
                    valid_until_us: old.valid_until_us.min(valid_until_us),
                };
                (new, added)
            } else {
                let added = permits.min(Cached::MAX_REMAINING);
                let new = Cached {
                    remaining: added,
                    valid_until_us,
                };
                (new, added)
            };
            match self.word.compare_exchange_weak(
                word,
                new.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return added,
                Err(current) => word = current,
            }
        }
    }

    /// Takes up to `wanted` permits if the cache is valid at `now_us`; returns how many
    /// it took and until when they were valid.
    fn take_up_to(&self, wanted: u64, now_us: u64) -> (u64, u64) {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let cached = Cached::unpack(word);
            if !cached.is_valid_at(now_us) || cached.remaining == 0 {
                return (0, cached.valid_until_us);
            }
            let taken = cached.remaining.min(wanted);
            match self.word.compare_exchange_weak(
                word,
                word - taken,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return (taken, cached.valid_until_us),
                Err(current) => word = current,
            }
        }
    }
}

/// The global log: every permit taken and still counted, in two sorted deques.
#[derive(Debug, Default)]
struct GlobalLog {
    /// Permits used at once, stamped with the time of their decision.
    used: VecDeque<Duration>,
    /// Permits put in a cache, stamped with the end of that cache's validity.
    cached: VecDeque<Duration>,
}

impl GlobalLog {
    fn len(&self) -> usize {
        self.used.len() + self.cached.len()
    }

    /// Drops the entries that no longer count: an entry stamped `e` counts while
    /// `now - e < window`.
    fn expire(&mut self, now: Duration, window: Duration) {
        for entries in [&mut self.used, &mut self.cached] {
            while entries.front().is_some_and(|&stamp| now >= stamp + window) {
                entries.pop_front();
            }
        }
    }

    /// The stamp of the `rank`-th oldest entry of both deques, counting from 1.
    ///
    /// A merge from the fronts: O(`rank`), and `rank` is at most the permits asked
    /// for, which an allowed request of that size costs anyway.
    fn nth_oldest(&self, rank: usize) -> Duration {
        debug_assert!((1..=self.len()).contains(&rank));
        let (mut used, mut cached) = (0, 0);
        loop {
            let stamp = match (self.used.get(used), self.cached.get(cached)) {
                (Some(&u), Some(&c)) if u <= c => {
                    used += 1;
                    u
                }
                (Some(&u), None) => {
                    used += 1;
                    u
                }
                (_, Some(&c)) => {
                    cached += 1;
                    c
                }
                (None, None) => unreachable!("rank {rank} is beyond the log"),
            };
            if used + cached == rank {
                return stamp;
            }
        }
    }
}

/// The global log behind its lock, on cache lines of its own: the slow path writes
/// them, while every fast path reads the limiter's other fields.
#[derive(Debug, Default)]
#[repr(align(128))]
struct LockedLog(Mutex<GlobalLog>);

/// A sliding-window limit for one process: at most `limit` permits in any `window`.
///
/// Most decisions are one compare-and-swap on a per-thread cache; see the module
/// source for the design and why it never lets more than `limit` through in a window.
#[derive(Debug)]
pub struct InProcessLimiter {
    limit: u32,
    window: Duration,
    clock: Arc<dyn MonotonicClock>,
    /// How long cached permits stay usable: `V` in the module docs.
    validity: Duration,
    /// The permits taken within the last window, used or cached.
    log: LockedLog,
    /// [`PERMIT_CACHES`] caches, indexed by [`CACHE_INDEX`].
    caches: Box<[PermitCache]>,
}

impl InProcessLimiter {
    /// At most `limit` permits in any `window`, on the process's monotonic clock.
    pub fn new(limit: u32, window: Duration) -> Result<Self, ConfigError> {
        Self::with_clock(limit, window, Arc::new(InstantClock::new()))
    }

    /// As [`InProcessLimiter::new`], reading time from `clock` (tests pass a manual clock).
    pub fn with_clock(
        limit: u32,
        window: Duration,
        clock: Arc<dyn MonotonicClock>,
    ) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::new("limit", "expected at least 1, found 0"));
        }
        if window.is_zero() {
            return Err(ConfigError::new(
                "window",
                "expected a window longer than 0",
            ));
        }
        // Whole microseconds, as the caches keep time, and at least one.
        let validity = Duration::from_micros(micros((window / 64).min(MAX_VALIDITY)).max(1));
        Ok(Self {
            limit,
            window,
            clock,
            validity,
            log: LockedLog::default(),
            caches: (0..PERMIT_CACHES).map(|_| PermitCache::default()).collect(),
        })
    }

    /// Permits allowed per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Takes `permits` permits if they all fit now, else none. Never blocks on I/O.
    ///
    /// A request for more permits than `limit` can never fit; it is answered
    /// `Limited` with `retry_after` equal to the window, and the caller should split it.
    /// Otherwise `retry_after` is when enough logged permits will have left the
    /// window. It can exceed the window by up to 1/64 of it, at most 10 ms: permits
    /// logged for a thread's cache count that much longer, see the module source.
    pub fn try_acquire(&self, permits: u32) -> RateDecision {
        CACHE_INDEX.with(|&cache_index| self.try_acquire_in(cache_index, permits))
    }

    /// [`InProcessLimiter::try_acquire`] using the permit cache `cache_index`
    /// (modulo [`PERMIT_CACHES`]) instead of this thread's; tests use it to play
    /// several threads from one.
    pub(crate) fn try_acquire_in(&self, cache_index: usize, permits: u32) -> RateDecision {
        if permits == 0 {
            return RateDecision::Allowed;
        }
        if permits > self.limit {
            return RateDecision::Limited {
                retry_after: self.window,
            };
        }
        let cache_index = cache_index % PERMIT_CACHES;
        let cache = &self.caches[cache_index].word;
        let wanted = u64::from(permits);
        let mut word = cache.load(Ordering::Acquire);
        while Cached::unpack(word).remaining >= wanted {
            match cache.compare_exchange_weak(
                word,
                word - wanted,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // The clock is read after the swap (see the module docs). Permits
                    // taken from a cache that has just expired are lost, as they
                    // would have been anyway; the slow path decides instead.
                    if Cached::unpack(word).is_valid_at(micros(self.clock.elapsed())) {
                        return RateDecision::Allowed;
                    }
                    break;
                }
                Err(current) => word = current,
            }
        }
        self.acquire_logged(cache_index, permits as usize)
    }

    /// The slow path: decides on the log, refilling the cache `cache_index` or
    /// stealing from the others.
    fn acquire_logged(&self, cache_index: usize, permits: usize) -> RateDecision {
        let limit = self.limit as usize;
        let own = &self.caches[cache_index];
        let mut log = lock(&self.log.0);
        // Read the clock under the lock so both deques stay sorted.
        let now = self.clock.elapsed();
        let now_us = micros(now);
        log.expire(now, self.window);
        let free = limit - log.len();
        if free >= permits {
            log.used.extend(std::iter::repeat_n(now, permits));
            let extra = CHUNK
                .saturating_sub(permits)
                .min((free - permits) / (2 * PERMIT_CACHES));
            let valid_until = now + self.validity;
            let valid_until_us = micros(valid_until);
            // Past 2⁴⁸ µs (8.9 years) of the clock no cache can be valid: decide on
            // the log every time rather than wrap.
            if extra > 0 && valid_until_us <= Cached::MAX_VALID_UNTIL_US {
                let cached = own.deposit(extra as u64, valid_until_us, now_us) as usize;
                log.cached.extend(std::iter::repeat_n(valid_until, cached));
            }
            return RateDecision::Allowed;
        }

        // The log is short of `missing` permits: look for them in the caches, which
        // only shrink while the lock is held, so one pass sees all there is.
        let missing = (permits - free) as u64;
        let mut gathered = 0;
        let mut gathered_until_us = u64::MAX;
        for offset in 0..PERMIT_CACHES {
            let cache = &self.caches[(cache_index + offset) % PERMIT_CACHES];
            let (taken, valid_until_us) = cache.take_up_to(missing - gathered, now_us);
            if taken > 0 {
                gathered += taken;
                gathered_until_us = gathered_until_us.min(valid_until_us);
            }
            if gathered == missing {
                log.used.extend(std::iter::repeat_n(now, free));
                return RateDecision::Allowed;
            }
        }
        // Too few: keep them usable by this thread (they are logged already; any the
        // 16-bit count cannot hold are simply not used).
        if gathered > 0 {
            own.deposit(gathered, gathered_until_us, now_us);
        }
        // The request fits once the `missing`-th oldest entry has left the window.
        let leaves_at = log.nth_oldest(missing as usize) + self.window;
        RateDecision::Limited {
            retry_after: leaves_at.saturating_sub(now),
        }
    }
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn acquire(&self, permits: u32) -> Result<RateDecision, LimitError> {
        Ok(self.try_acquire(permits))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::time::ManualMonotonicClock;

    const SECOND: Duration = Duration::from_secs(1);

    fn limiter(limit: u32, window: Duration) -> (InProcessLimiter, ManualMonotonicClock) {
        let clock = ManualMonotonicClock::new();
        let limiter = InProcessLimiter::with_clock(limit, window, Arc::new(clock.clone())).unwrap();
        (limiter, clock)
    }

    #[test]
    fn zero_limit_or_window_is_rejected() {
        assert_eq!(InProcessLimiter::new(0, SECOND).unwrap_err().field, "limit");
        assert_eq!(
            InProcessLimiter::new(1, Duration::ZERO).unwrap_err().field,
            "window"
        );
    }

    #[test]
    fn a_fixed_window_boundary_does_not_let_a_double_burst_through() {
        let (limiter, clock) = limiter(10, SECOND);
        clock.advance(Duration::from_millis(900));
        assert!(limiter.try_acquire(10).is_allowed());
        // 200 ms later a fixed window would have reset; the sliding one still holds all 10.
        clock.advance(Duration::from_millis(200));
        assert!(!limiter.try_acquire(1).is_allowed());
        clock.advance(Duration::from_millis(800));
        assert!(limiter.try_acquire(10).is_allowed());
    }

    #[test]
    fn retry_after_is_when_enough_old_permits_have_left() {
        let (limiter, clock) = limiter(3, SECOND);
        assert!(limiter.try_acquire(1).is_allowed());
        clock.advance(Duration::from_millis(100));
        assert!(limiter.try_acquire(2).is_allowed());
        clock.advance(Duration::from_millis(100));
        // One permit needs the oldest (taken at 0) to leave: at 1000 ms, 800 ms from now.
        assert_eq!(
            limiter.try_acquire(1),
            RateDecision::Limited {
                retry_after: Duration::from_millis(800)
            }
        );
        // Two permits also need the second (taken at 100): 900 ms from now.
        assert_eq!(
            limiter.try_acquire(2),
            RateDecision::Limited {
                retry_after: Duration::from_millis(900)
            }
        );
        // An entry exactly one window old has left.
        clock.advance(Duration::from_millis(800));
        assert!(limiter.try_acquire(1).is_allowed());
    }

    #[test]
    fn more_permits_than_the_limit_never_fit() {
        let (limiter, _clock) = limiter(3, SECOND);
        assert_eq!(
            limiter.try_acquire(4),
            RateDecision::Limited {
                retry_after: SECOND
            }
        );
        assert!(limiter.try_acquire(0).is_allowed());
        assert!(limiter.try_acquire(3).is_allowed());
    }

    /// What permit cache `index` holds.
    fn cache(limiter: &InProcessLimiter, index: usize) -> Cached {
        Cached::unpack(limiter.caches[index].word.load(Ordering::SeqCst))
    }

    /// How many entries the global log holds: (used at once, cached).
    fn global_log(limiter: &InProcessLimiter) -> (usize, usize) {
        let log = lock(&limiter.log.0);
        (log.used.len(), log.cached.len())
    }

    #[test]
    fn cache_validity_is_a_64th_of_the_window_at_most_10_ms_at_least_1_us() {
        let validity = |window| limiter(1, window).0.validity;
        assert_eq!(validity(SECOND), Duration::from_millis(10));
        assert_eq!(
            validity(Duration::from_millis(100)),
            Duration::from_micros(1562)
        );
        assert_eq!(validity(Duration::from_nanos(1)), Duration::from_micros(1));
    }

    #[test]
    fn a_refill_caches_a_share_of_the_free_permits_that_later_requests_take_without_the_log() {
        let (limiter, _clock) = limiter(3200, SECOND);
        assert!(limiter.try_acquire_in(0, 1).is_allowed());
        // min(64 - 1, (3200 - 1) / 32) = 63 extra, usable for the validity (10 ms).
        assert_eq!(
            cache(&limiter, 0),
            Cached {
                remaining: 63,
                valid_until_us: 10_000
            }
        );
        assert_eq!(global_log(&limiter), (1, 63));
        for _ in 0..63 {
            assert!(limiter.try_acquire_in(0, 1).is_allowed());
        }
        assert_eq!(global_log(&limiter), (1, 63));
        assert_eq!(cache(&limiter, 0).remaining, 0);
        assert!(limiter.try_acquire_in(0, 1).is_allowed());
        assert_eq!(global_log(&limiter), (2, 126));
        // Near the limit a refill takes little: 72 free, 71 after the request, 71 / 32.
        assert!(limiter.try_acquire_in(1, 3200 - 128 - 72).is_allowed());
        assert_eq!(cache(&limiter, 1).remaining, 0);
        assert!(limiter.try_acquire_in(2, 1).is_allowed());
        assert_eq!(cache(&limiter, 2).remaining, 2);
    }

    #[test]
    fn permits_added_to_a_valid_cache_share_its_earlier_end() {
        let (limiter, clock) = limiter(2049, SECOND);
        assert!(limiter.try_acquire_in(0, 1).is_allowed());
        assert!(limiter.try_acquire_in(0, 62).is_allowed());
        // One left, valid until 10 ms; asking for two at 5 ms refills the cache.
        clock.advance(Duration::from_millis(5));
        assert!(limiter.try_acquire_in(0, 2).is_allowed());
        // The new 61 are logged as valid until 15 ms, the old one until 10 ms: all 62
        // end at 10 ms, when the old one's entry stops covering a use.
        assert_eq!(
            cache(&limiter, 0),
            Cached {
                remaining: 62,
                valid_until_us: 10_000
            }
        );
        assert_eq!(global_log(&limiter), (3, 63 + 61));
        clock.advance(Duration::from_millis(5));
        assert!(limiter.try_acquire_in(0, 1).is_allowed());
        assert_eq!(global_log(&limiter).0, 4);
    }

    #[test]
    fn permits_left_in_other_caches_are_stolen_before_refusing() {
        let (limiter, _clock) = limiter(2049, SECOND);
        assert!(limiter.try_acquire_in(0, 1).is_allowed());
        assert_eq!(cache(&limiter, 0).remaining, 63);
        // The log is full now; 63 permits sit in cache 0.
        assert!(limiter.try_acquire_in(1, 1985).is_allowed());
        assert_eq!(global_log(&limiter), (1986, 63));
        assert!(limiter.try_acquire_in(1, 10).is_allowed());
        assert_eq!(cache(&limiter, 0).remaining, 53);
        // 60 wanted, 53 to be found: refused, and the 53 move to the asking cache.
        assert_eq!(
            limiter.try_acquire_in(2, 60),
            RateDecision::Limited {
                retry_after: SECOND
            }
        );
        assert_eq!(cache(&limiter, 0).remaining, 0);
        assert_eq!(cache(&limiter, 2).remaining, 53);
        assert!(limiter.try_acquire_in(2, 53).is_allowed());
        // 1 + 1985 + 10 + 53: exactly the limit, and nothing logged twice.
        assert_eq!(global_log(&limiter), (1986, 63));
        for index in 0..PERMIT_CACHES {
            assert!(!limiter.try_acquire_in(index, 1).is_allowed());
        }
    }

    #[test]
    fn unused_permits_of_an_expired_cache_count_until_a_window_after_it_expired() {
        let (limiter, clock) = limiter(2049, SECOND);
        assert!(limiter.try_acquire_in(0, 1).is_allowed());
        clock.advance(Duration::from_micros(9_999));
        assert!(limiter.try_acquire_in(0, 1).is_allowed());
        assert_eq!(global_log(&limiter), (1, 63));
        // At 10 ms cache 0 has expired with 62 unused; the refill replaces them.
        clock.advance(Duration::from_micros(1));
        assert!(limiter.try_acquire_in(0, 1).is_allowed());
        assert_eq!(global_log(&limiter), (2, 63 + 62));
        assert_eq!(
            cache(&limiter, 0),
            Cached {
                remaining: 62,
                valid_until_us: 20_000
            }
        );
        assert!(limiter.try_acquire_in(1, 2049 - 2 - 125).is_allowed());
        // At 20 ms cache 0 expires too. The oldest entry, used at 0, leaves at 1 s.
        clock.advance(Duration::from_millis(10));
        assert_eq!(
            limiter.try_acquire_in(2, 1),
            RateDecision::Limited {
                retry_after: Duration::from_millis(980)
            }
        );
        clock.advance(Duration::from_millis(980));
        assert!(limiter.try_acquire_in(2, 1).is_allowed());
        // The 63 cached at 0 were stamped 10 ms (the end of their validity): they count
        // until 1010 ms, as do the permits used at 10 ms.
        assert_eq!(
            limiter.try_acquire_in(2, 1),
            RateDecision::Limited {
                retry_after: Duration::from_millis(10)
            }
        );
        clock.advance(Duration::from_micros(9_999));
        assert!(!limiter.try_acquire_in(3, 1).is_allowed());
        clock.advance(Duration::from_micros(1));
        assert_eq!(global_log(&limiter), (2 + 1922, 125));
        assert!(limiter.try_acquire_in(3, 1).is_allowed());
        // The 62 cached at 10 ms count until 1020 ms; 62 more for cache 3.
        assert_eq!(global_log(&limiter), (2, 62 + 62));
    }

    /// A request of a random simulated thread: (cache index, permits).
    fn random_request(rng: &mut StdRng, limit: u32) -> (usize, u32) {
        // More indexes than caches, so some simulated threads share one.
        let cache_index = rng.random_range(0..PERMIT_CACHES + 4);
        let permits = if rng.random_bool(0.7) {
            1
        } else {
            rng.random_range(1..=limit.min(2 * CHUNK as u32))
        };
        (cache_index, permits)
    }

    #[test]
    fn random_requests_on_a_moving_clock_never_exceed_the_limit_in_any_window() {
        let window = Duration::from_millis(100);
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let limit = [1, 5, 40, 300, 3000][seed as usize % 5];
            let (limiter, clock) = limiter(limit, window);
            let validity = limiter.validity;
            // Allowed permits still inside the window ending now: (time, permits).
            let mut recent: VecDeque<(Duration, u32)> = VecDeque::new();
            let mut in_window = 0;
            let mut record = |now: Duration, permits: u32| {
                while recent.front().is_some_and(|&(t, _)| now - t >= window) {
                    in_window -= recent.pop_front().unwrap().1;
                }
                recent.push_back((now, permits));
                in_window += permits;
                assert!(
                    in_window <= limit,
                    "seed {seed}: {in_window} permits within {window:?} at {now:?}"
                );
            };
            for _ in 0..2000 {
                let advance = match rng.random_range(0..20) {
                    0..10 => Duration::ZERO,
                    10..16 => validity.mul_f64(rng.random_range(0.0..1.2)),
                    16..19 => window.mul_f64(rng.random_range(0.0..0.3)),
                    _ => window.mul_f64(rng.random_range(0.5..1.5)),
                };
                clock.advance(advance);
                let (cache_index, permits) = random_request(&mut rng, limit);
                match limiter.try_acquire_in(cache_index, permits) {
                    RateDecision::Allowed => record(clock.elapsed(), permits),
                    RateDecision::Limited { retry_after } => {
                        assert!(
                            !retry_after.is_zero() && retry_after <= window + validity,
                            "seed {seed}: retry_after {retry_after:?}"
                        );
                        // Retrying after `retry_after` finds room (nothing else came).
                        if rng.random_bool(0.3) {
                            clock.advance(retry_after);
                            assert!(
                                limiter.try_acquire_in(cache_index, permits).is_allowed(),
                                "seed {seed}: a retry after {retry_after:?} was refused"
                            );
                            record(clock.elapsed(), permits);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn on_a_frozen_clock_every_request_that_fits_is_allowed_whatever_the_cache() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let limit = [1, 7, 64, 100, 1000, 5000][seed as usize % 6];
            let (limiter, clock) = limiter(limit, SECOND);
            clock.advance(Duration::from_micros(rng.random_range(0..10_000_000)));
            let mut allowed = 0;
            let mut requests = 0;
            while allowed < limit {
                let (cache_index, permits) = random_request(&mut rng, limit);
                let fits = allowed + permits <= limit;
                assert_eq!(
                    limiter.try_acquire_in(cache_index, permits).is_allowed(),
                    fits,
                    "seed {seed}: {permits} more after {allowed} of {limit}"
                );
                if fits {
                    allowed += permits;
                }
                requests += 1;
                assert!(requests < 100_000, "seed {seed}: no progress");
            }
            for index in 0..PERMIT_CACHES {
                assert!(!limiter.try_acquire_in(index, 1).is_allowed());
            }
        }
    }

    #[test]
    fn threads_racing_take_exactly_the_limit() {
        let (limiter, _clock) = limiter(3000, SECOND);
        let limiter = Arc::new(limiter);
        let allowed: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let limiter = Arc::clone(&limiter);
                    scope.spawn(move || {
                        (0..500)
                            .filter(|_| limiter.try_acquire(1).is_allowed())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 3000);
    }
}
