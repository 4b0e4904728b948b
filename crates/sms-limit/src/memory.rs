//! In-process limiters: the embedded default, and the fail-open fallback of the Redis ones.
//!
//! Both keep a sliding log: the times of the permits still inside the window. A
//! request at time `t` fits when fewer than `limit` logged permits are newer than
//! `t - window`, so at most `limit` go through in any window, however the requests
//! bunch up (a fixed-window counter lets up to `2 × limit` through around a boundary).
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
//!
//! The per-recipient limiter needs no global view, so it is sharded: a recipient's log
//! lives in one of [`RECIPIENT_SHARDS`] maps chosen by hash, and requests for different
//! recipients rarely meet on a lock.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use sms_core::{
    LimitError, PhoneNumber, RateDecision, RateLimiter, RecipientDecision, RecipientLimiter,
};

use crate::config::RecipientWindow;
use crate::error::ConfigError;
use crate::time::{InstantClock, MonotonicClock};

/// Number of independently locked maps of the per-recipient limiter.
pub const RECIPIENT_SHARDS: usize = 16;

/// How many checks a shard serves between sweeps of recipients whose log is empty.
const SWEEP_EVERY: u32 = 1024;

/// Number of permit caches of the global limiter; threads beyond this share them.
pub(crate) const PERMIT_CACHES: usize = 16;

/// Most permits one refill of a cache logs, the request's own included.
const CHUNK: usize = 64;

/// Longest time permits stay usable in a cache.
const MAX_VALIDITY: Duration = Duration::from_millis(10);

/// Locks `mutex`, ignoring poisoning: the critical sections here leave the log
/// consistent at every step, so a panic elsewhere cannot leave it half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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

/// Validates per-recipient windows; shared with the Redis limiter.
pub(crate) fn validate_windows(windows: &[RecipientWindow]) -> Result<(), ConfigError> {
    if windows.is_empty() {
        return Err(ConfigError::new(
            "recipient_windows",
            "expected at least one window",
        ));
    }
    for (index, window) in windows.iter().enumerate() {
        if window.limit == 0 {
            return Err(ConfigError::new(
                format!("recipient_windows[{index}].limit"),
                "expected at least 1, found 0",
            ));
        }
        if window.window.is_zero() {
            return Err(ConfigError::new(
                format!("recipient_windows[{index}].window_s"),
                "expected a window longer than 0",
            ));
        }
    }
    Ok(())
}

/// A recipient's key: its E.164 digits as a number, tagged with the digit count.
///
/// At most 15 digits, so the value is below 10¹⁵ < 2⁵⁰ and the count (7 to 15) fits
/// in the bits above it: two numbers share a key only if they have the same digits.
/// (E.164 numbers cannot start with 0, so the value alone would do; the count makes
/// the key lossless without relying on that.)
fn recipient_key(recipient: &PhoneNumber) -> u64 {
    let digits = recipient.digits().as_bytes();
    let value = digits
        .iter()
        .fold(0u64, |value, &digit| value * 10 + u64::from(digit - b'0'));
    ((digits.len() as u64) << 50) | value
}

/// The shard of a key: a multiplicative hash of all its bits. The map inside the
/// shard hashes with a random key, so chosen numbers cannot degrade it.
fn shard_of(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % RECIPIENT_SHARDS
}

/// How many times a recipient's log holds inline or in its first allocation
/// (one slot of that allocation is the count): 6 × 4 bytes fill the smallest heap block.
const FIRST_CAPACITY: usize = 5;

/// One recipient's newest message times, oldest first, in [`Ticks`] truncated to `u32`.
///
/// 16 bytes: one message inline (the common case), more in one boxed slice whose first
/// slot is the count, grown by doubling up to the largest limit. An empty slice is an
/// empty log.
#[derive(Debug)]
enum Log {
    One(u32),
    Many(Box<[u32]>),
}

impl Log {
    fn times(&self) -> &[u32] {
        match self {
            Self::One(time) => std::slice::from_ref(time),
            Self::Many(slots) if slots.is_empty() => &[],
            Self::Many(slots) => &slots[1..=slots[0] as usize],
        }
    }

    /// Forgets the `oldest` oldest times.
    fn drop_oldest(&mut self, oldest: usize) {
        if oldest == 0 {
            return;
        }
        let times = self.times();
        *self = match times.len() - oldest {
            0 => Self::Many(Box::default()),
            1 => Self::One(times[times.len() - 1]),
            _ => {
                let Self::Many(slots) = self else {
                    unreachable!("a log of one time has no second to keep")
                };
                let len = slots[0] as usize;
                slots.copy_within(1 + oldest..=len, 1);
                slots[0] = (len - oldest) as u32;
                return;
            }
        };
    }

    /// Appends `time`, dropping the oldest time if `keep` are held already.
    fn push(&mut self, time: u32, keep: usize) {
        match self {
            Self::Many(slots) if slots.is_empty() => *self = Self::One(time),
            Self::One(_) if keep == 1 => *self = Self::One(time),
            Self::One(first) => {
                let mut slots = vec![0; FIRST_CAPACITY.min(keep) + 1];
                slots[..3].copy_from_slice(&[2, *first, time]);
                *self = Self::Many(slots.into_boxed_slice());
            }
            Self::Many(slots) => {
                let len = slots[0] as usize;
                if len == keep {
                    slots.copy_within(2.., 1);
                    slots[len] = time;
                    return;
                }
                if len + 1 == slots.len() {
                    let mut grown = vec![0; (2 * len).min(keep) + 1];
                    grown[..=len].copy_from_slice(slots);
                    *slots = grown.into_boxed_slice();
                }
                slots[len + 1] = time;
                slots[0] = (len + 1) as u32;
            }
        }
    }
}

/// One shard of recipient logs.
#[derive(Debug, Default)]
struct Shard {
    /// Per recipient key, the times of its last messages, at most `keep` of them.
    logs: HashMap<u64, Log>,
    checks_since_sweep: u32,
    /// Logs left after the last sweep: the next sweep waits for at least as many
    /// checks, so sweeping costs O(1) per check however many recipients there are.
    len_after_sweep: u32,
    /// When the last sweep ran, in ticks.
    swept_at: u64,
    /// When the newest time in any log was taken, in ticks.
    newest: u64,
}

/// Sweep at least this often (in ticks), so no live time is ever 2³² ticks old and
/// the `u32` times can be read back unambiguously (see [`Ticks`]).
const SWEEP_PERIOD_TICKS: u64 = 1 << 30;

/// The time unit of the per-recipient logs, and reading `u32` times back.
///
/// Times are kept as `u32` counts of `unit` since the clock's origin, wrapping. A
/// stored time is read back as the latest instant not after now with those low 32
/// bits, which is right while it is less than 2³² ticks old. The unit is 1 ms when the
/// longest window is at most 2³⁰ ms (12.4 days), else the whole number of ms that
/// makes the longest window at most 2³⁰ ticks; a sweep at least every 2³⁰ ticks and
/// forgetting a shard idle for the longest window keep every time younger than
/// 3 × 2³⁰ ticks when read.
///
/// A message sent at `t` is logged at `t` rounded *up* to a tick and counts in a window
/// until that logged time plus the window. So it counts at least as long as it should
/// and at most one tick (1 ms by default) longer: never more than `limit` in any window,
/// and `retry_after` is exactly when the recipient frees.
#[derive(Debug, Clone, Copy)]
struct Ticks {
    unit_ns: u64,
}

impl Ticks {
    fn for_longest(longest_ns: u64) -> Self {
        const MS: u64 = 1_000_000;
        let unit_ms = longest_ns.div_ceil(MS).div_ceil(1 << 30).max(1);
        Self {
            unit_ns: unit_ms * MS,
        }
    }

    /// `now` in ticks, rounded up.
    fn now(self, now_ns: u64) -> u64 {
        now_ns.div_ceil(self.unit_ns)
    }

    /// A logged time in nanoseconds, given now in ticks.
    fn nanos_of(self, logged: u32, now_ticks: u64) -> u64 {
        let age = (now_ticks as u32).wrapping_sub(logged);
        now_ticks.saturating_sub(u64::from(age)) * self.unit_ns
    }
}

/// A duration in nanoseconds, saturating at 584 years.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Per-recipient limits for one process: several sliding windows per recipient.
///
/// See the crate docs for how multi-recipient requests are decided. A recipient costs
/// one 24-byte map entry (its number as a `u64` key and an inline time) while it has
/// one message in its longest window, plus one small allocation of `u32` times if it
/// has more (whole milliseconds since the limiter started, rounded up).
#[derive(Debug)]
pub struct InProcessRecipientLimiter {
    windows: Vec<RecipientWindow>,
    /// Each window's length in nanoseconds, in the order of `windows`.
    window_ns: Vec<u64>,
    /// The longest window, in nanoseconds: older times can never matter again.
    longest_ns: u64,
    /// The largest limit: a window of limit `k` only looks at the newest `k` times,
    /// so no log needs more than this many.
    keep: usize,
    ticks: Ticks,
    clock: Arc<dyn MonotonicClock>,
    shards: Box<[Mutex<Shard>]>,
}

impl InProcessRecipientLimiter {
    /// Enforces every window in `windows` at once, on the process's monotonic clock.
    pub fn new(windows: Vec<RecipientWindow>) -> Result<Self, ConfigError> {
        Self::with_clock(windows, Arc::new(InstantClock::new()))
    }

    /// As [`InProcessRecipientLimiter::new`], reading time from `clock`.
    pub fn with_clock(
        windows: Vec<RecipientWindow>,
        clock: Arc<dyn MonotonicClock>,
    ) -> Result<Self, ConfigError> {
        validate_windows(&windows)?;
        let window_ns: Vec<u64> = windows.iter().map(|w| nanos(w.window)).collect();
        let longest_ns = window_ns.iter().copied().max().unwrap_or_default();
        let keep = windows.iter().map(|w| w.limit).max().unwrap_or(1) as usize;
        Ok(Self {
            windows,
            window_ns,
            longest_ns,
            keep,
            ticks: Ticks::for_longest(longest_ns),
            clock,
            shards: (0..RECIPIENT_SHARDS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
        })
    }

    /// The windows enforced, as configured.
    pub fn windows(&self) -> &[RecipientWindow] {
        &self.windows
    }

    /// Decides and counts each recipient in order, synchronously.
    pub fn check_now(&self, recipients: &[PhoneNumber]) -> Vec<RecipientDecision> {
        recipients.iter().map(|r| self.check_one(r)).collect()
    }

    /// How many recipients have a log in memory (for tests of the sweep).
    pub fn tracked_recipients(&self) -> usize {
        self.shards.iter().map(|s| lock(s).logs.len()).sum()
    }

    fn check_one(&self, recipient: &PhoneNumber) -> RecipientDecision {
        let key = recipient_key(recipient);
        let mut shard = lock(&self.shards[shard_of(key)]);
        let now = nanos(self.clock.elapsed());
        let now_ticks = self.ticks.now(now);
        self.maybe_sweep(&mut shard, now, now_ticks);
        shard.newest = shard.newest.max(now_ticks);
        let log = match shard.logs.entry(key) {
            Entry::Vacant(vacant) => {
                // Every limit is at least 1, so a recipient without a log is allowed.
                vacant.insert(Log::One(now_ticks as u32));
                return RecipientDecision::Allowed;
            }
            Entry::Occupied(occupied) => occupied.into_mut(),
        };
        // Times past the longest window can never matter again.
        let expired = log
            .times()
            .iter()
            .take_while(|&&logged| {
                let logged = self.ticks.nanos_of(logged, now_ticks);
                now >= logged.saturating_add(self.longest_ns)
            })
            .count();
        log.drop_oldest(expired);
        let decision = self.decide(log.times(), now, now_ticks);
        if decision == RecipientDecision::Allowed {
            log.push(now_ticks as u32, self.keep);
        }
        decision
    }

    /// Forgets recipients whose newest message has left every window, so memory
    /// follows the recipients of the last day, not of all time.
    fn maybe_sweep(&self, shard: &mut Shard, now: u64, now_ticks: u64) {
        let newest_ns = shard.newest.saturating_mul(self.ticks.unit_ns);
        if now >= newest_ns.saturating_add(self.longest_ns) {
            // Idle for the longest window: every log is over, whatever its times say.
            shard.logs.clear();
        } else {
            shard.checks_since_sweep += 1;
            if shard.checks_since_sweep < SWEEP_EVERY.max(shard.len_after_sweep)
                && now_ticks - shard.swept_at < SWEEP_PERIOD_TICKS
            {
                return;
            }
            let (ticks, longest_ns) = (self.ticks, self.longest_ns);
            shard.logs.retain(|_, log| {
                log.times().last().is_some_and(|&last| {
                    now < ticks.nanos_of(last, now_ticks).saturating_add(longest_ns)
                })
            });
        }
        let len = shard.logs.len();
        if len < shard.logs.capacity() / 4 {
            shard.logs.shrink_to(2 * len);
        }
        shard.checks_since_sweep = 0;
        shard.len_after_sweep = u32::try_from(len).unwrap_or(u32::MAX);
        shard.swept_at = now_ticks;
    }

    /// The decision for a recipient whose newest messages are `times` (oldest first).
    ///
    /// When several windows are full, names the one that frees last, so `retry_after`
    /// is when the recipient may really receive again.
    fn decide(&self, times: &[u32], now: u64, now_ticks: u64) -> RecipientDecision {
        let mut full: Option<(RecipientWindow, u64)> = None;
        for (window, &window_ns) in self.windows.iter().zip(&self.window_ns) {
            let limit = window.limit as usize;
            if times.len() < limit {
                continue;
            }
            // The window is full when the `limit`-th newest time is still in it, and
            // frees when that time leaves it.
            let frees_at = self
                .ticks
                .nanos_of(times[times.len() - limit], now_ticks)
                .saturating_add(window_ns);
            if now < frees_at {
                let retry_after = frees_at - now;
                if full.is_none_or(|(_, longest_wait)| retry_after > longest_wait) {
                    full = Some((*window, retry_after));
                }
            }
        }
        match full {
            None => RecipientDecision::Allowed,
            Some((window, retry_after)) => RecipientDecision::Limited {
                window: window.window,
                limit: window.limit,
                retry_after: Duration::from_nanos(retry_after),
            },
        }
    }
}

#[async_trait]
impl RecipientLimiter for InProcessRecipientLimiter {
    async fn check(
        &self,
        recipients: &[PhoneNumber],
    ) -> Result<Vec<RecipientDecision>, LimitError> {
        Ok(self.check_now(recipients))
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

    fn phone(n: u32) -> PhoneNumber {
        PhoneNumber::parse(&format!("+86138{n:08}")).unwrap()
    }

    #[test]
    fn zero_limit_or_window_is_rejected() {
        assert_eq!(InProcessLimiter::new(0, SECOND).unwrap_err().field, "limit");
        assert_eq!(
            InProcessLimiter::new(1, Duration::ZERO).unwrap_err().field,
            "window"
        );
        assert_eq!(
            InProcessRecipientLimiter::new(vec![]).unwrap_err().field,
            "recipient_windows"
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

    fn recipients(
        windows: Vec<RecipientWindow>,
    ) -> (InProcessRecipientLimiter, ManualMonotonicClock) {
        let clock = ManualMonotonicClock::new();
        let limiter =
            InProcessRecipientLimiter::with_clock(windows, Arc::new(clock.clone())).unwrap();
        (limiter, clock)
    }

    /// The logged times of `number`, or `None` when it has no log.
    fn logged(limiter: &InProcessRecipientLimiter, number: &PhoneNumber) -> Option<Vec<u32>> {
        let key = recipient_key(number);
        let shard = lock(&limiter.shards[shard_of(key)]);
        shard.logs.get(&key).map(|log| log.times().to_vec())
    }

    fn allowed(limiter: &InProcessRecipientLimiter, number: &PhoneNumber) -> bool {
        limiter.check_now(std::slice::from_ref(number)) == vec![RecipientDecision::Allowed]
    }

    #[test]
    fn recipient_keys_are_the_digits_and_their_count() {
        let key = |s: &str| recipient_key(&PhoneNumber::parse(s).unwrap());
        assert_eq!(key("+8613800138000"), (13 << 50) | 8_613_800_138_000);
        // The longest E.164 number stays below the count bits.
        assert_eq!(key("+999999999999999"), (15 << 50) | 999_999_999_999_999);
        // Distinct digit strings give distinct keys, leading zeros or not.
        assert_ne!(key("+10000000"), key("+100000000"));
        assert_ne!(key("+1234567"), key("+12345670"));
        // Two spellings of one number share a key.
        assert_eq!(key("+86 138-0013-8000"), key("008613800138000"));
    }

    #[test]
    fn a_recipient_costs_a_bounded_number_of_bytes() {
        // One map entry: the `u64` key and a 16-byte log holding one time inline.
        assert_eq!(std::mem::size_of::<Log>(), 16);
        assert_eq!(std::mem::size_of::<(u64, Log)>(), 24);
        // More times go to one slice of `u32`: a count and at most `keep` times.
        let (limiter, clock) = recipients(vec![
            RecipientWindow::new(1, SECOND),
            RecipientWindow::new(10, Duration::from_secs(86_400)),
        ]);
        for _ in 0..30 {
            assert!(allowed(&limiter, &phone(1)) || clock.elapsed() >= 10 * SECOND);
            let key = recipient_key(&phone(1));
            let shard = lock(&limiter.shards[shard_of(key)]);
            match &shard.logs[&key] {
                Log::One(_) => {}
                Log::Many(slots) => assert!(slots.len() <= limiter.keep + 1),
            }
            drop(shard);
            clock.advance(SECOND);
        }
        assert_eq!(logged(&limiter, &phone(1)).unwrap().len(), 10);
    }

    #[test]
    fn recipient_log_keeps_no_more_than_the_largest_limit() {
        let (limiter, clock) = recipients(vec![RecipientWindow::new(3, 10 * SECOND)]);
        for step in 0..10 {
            assert!(allowed(&limiter, &phone(1)));
            assert_eq!(
                logged(&limiter, &phone(1)).unwrap().len(),
                (step + 1).min(3)
            );
            clock.advance(4 * SECOND);
        }
    }

    #[test]
    fn the_limit_is_hit_exactly_and_the_window_slides() {
        let (limiter, clock) = recipients(vec![RecipientWindow::new(10, Duration::from_secs(100))]);
        for _ in 0..10 {
            assert!(allowed(&limiter, &phone(1)));
            clock.advance(SECOND);
        }
        // 10 sent at 0..=9 s; the 11th waits for the first to leave at 100 s.
        assert_eq!(
            limiter.check_now(&[phone(1)]),
            vec![RecipientDecision::Limited {
                window: Duration::from_secs(100),
                limit: 10,
                retry_after: Duration::from_secs(90),
            }]
        );
        clock.advance(Duration::from_millis(89_999));
        assert!(!allowed(&limiter, &phone(1)));
        clock.advance(Duration::from_millis(1));
        assert!(allowed(&limiter, &phone(1)));
        // The one sent at 1 s leaves at 101 s, not before.
        assert!(!allowed(&limiter, &phone(1)));
        clock.advance(SECOND);
        assert!(allowed(&limiter, &phone(1)));
        assert!(!allowed(&limiter, &phone(1)));
    }

    #[test]
    fn a_limited_recipient_is_counted_in_no_window() {
        let (limiter, clock) = recipients(vec![
            RecipientWindow::new(1, SECOND),
            RecipientWindow::new(3, Duration::from_secs(60)),
        ]);
        assert!(allowed(&limiter, &phone(1)));
        for _ in 0..100 {
            assert!(!allowed(&limiter, &phone(1)));
        }
        assert_eq!(logged(&limiter, &phone(1)).unwrap().len(), 1);
        clock.advance(SECOND);
        assert!(allowed(&limiter, &phone(1)));
        clock.advance(SECOND);
        assert!(allowed(&limiter, &phone(1)));
        clock.advance(SECOND);
        assert!(!allowed(&limiter, &phone(1)));
    }

    #[test]
    fn several_recipients_in_one_request_are_decided_in_order() {
        let (limiter, _clock) = recipients(vec![RecipientWindow::new(1, SECOND)]);
        assert!(allowed(&limiter, &phone(2)));
        let decisions = limiter.check_now(&[phone(1), phone(2), phone(3), phone(1)]);
        let allowed: Vec<bool> = decisions
            .iter()
            .map(|d| *d == RecipientDecision::Allowed)
            .collect();
        assert_eq!(allowed, [true, false, true, false]);
    }

    #[test]
    fn sub_millisecond_times_round_up_so_no_window_lets_more_through() {
        let (limiter, clock) = recipients(vec![RecipientWindow::new(1, SECOND)]);
        clock.advance(Duration::from_micros(400));
        assert!(allowed(&limiter, &phone(1)));
        // Logged at 1 ms: counts until 1001 ms, which `retry_after` names exactly.
        clock.advance(Duration::from_micros(999_700));
        assert_eq!(
            limiter.check_now(&[phone(1)]),
            vec![RecipientDecision::Limited {
                window: SECOND,
                limit: 1,
                retry_after: Duration::from_micros(900),
            }]
        );
        clock.advance(Duration::from_micros(900));
        assert!(allowed(&limiter, &phone(1)));
    }

    #[test]
    fn times_are_read_back_across_the_u32_wrap() {
        let (limiter, clock) = recipients(vec![RecipientWindow::new(2, Duration::from_secs(60))]);
        // 2³² ms is 49.7 days; start just before the wrap.
        clock.advance(Duration::from_millis((1 << 32) - 10_000));
        assert!(allowed(&limiter, &phone(1)));
        clock.advance(Duration::from_secs(20));
        assert!(allowed(&limiter, &phone(1)));
        assert_eq!(
            limiter.check_now(&[phone(1)]),
            vec![RecipientDecision::Limited {
                window: Duration::from_secs(60),
                limit: 2,
                retry_after: Duration::from_secs(40),
            }]
        );
        clock.advance(Duration::from_secs(40));
        assert!(allowed(&limiter, &phone(1)));
    }

    #[test]
    fn a_log_idle_for_2_to_the_32_ms_is_not_mistaken_for_a_recent_one() {
        let (limiter, clock) =
            recipients(vec![RecipientWindow::new(1, Duration::from_secs(86_400))]);
        assert!(allowed(&limiter, &phone(1)));
        // Exactly 2³² ms later the stored `u32` time looks like "now".
        clock.advance(Duration::from_millis(1 << 32));
        assert!(allowed(&limiter, &phone(1)));
        assert!(!allowed(&limiter, &phone(1)));
    }

    #[test]
    fn windows_longer_than_2_to_the_30_ms_use_a_coarser_tick() {
        let long = Duration::from_secs(30 * 86_400);
        let (limiter, clock) = recipients(vec![RecipientWindow::new(1, long)]);
        assert_eq!(limiter.ticks.unit_ns, 3_000_000);
        assert!(allowed(&limiter, &phone(1)));
        clock.advance(long - SECOND);
        assert_eq!(
            limiter.check_now(&[phone(1)]),
            vec![RecipientDecision::Limited {
                window: long,
                limit: 1,
                retry_after: SECOND,
            }]
        );
        clock.advance(SECOND);
        assert!(allowed(&limiter, &phone(1)));
    }

    #[test]
    fn recipients_idle_for_the_longest_window_are_forgotten() {
        let (limiter, clock) = recipients(vec![RecipientWindow::new(1, SECOND)]);
        let first: Vec<PhoneNumber> = (0..100).map(phone).collect();
        limiter.check_now(&first);
        assert_eq!(limiter.tracked_recipients(), 100);
        clock.advance(2 * SECOND);
        // Enough checks of other numbers that every shard sweeps at least once.
        let others: Vec<PhoneNumber> = (1000..1000 + 4 * RECIPIENT_SHARDS as u32 * SWEEP_EVERY)
            .map(phone)
            .collect();
        limiter.check_now(&others);
        let still_tracked = first
            .iter()
            .filter(|number| logged(&limiter, number).is_some())
            .count();
        assert_eq!(still_tracked, 0);
        // A second later every log is over: the next check of a shard forgets them all.
        clock.advance(2 * SECOND);
        limiter.check_now(&(0..2000).map(phone).collect::<Vec<_>>());
        assert_eq!(limiter.tracked_recipients(), 2000);
    }

    #[test]
    fn full_windows_name_the_one_that_frees_last() {
        let clock = ManualMonotonicClock::new();
        let windows = vec![
            RecipientWindow::new(1, Duration::from_secs(60)),
            RecipientWindow::new(2, Duration::from_secs(3600)),
        ];
        let limiter =
            InProcessRecipientLimiter::with_clock(windows, Arc::new(clock.clone())).unwrap();
        assert_eq!(
            limiter.check_now(&[phone(1)]),
            vec![RecipientDecision::Allowed]
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            limiter.check_now(&[phone(1)]),
            vec![RecipientDecision::Allowed]
        );
        // Both windows are full now; the hour window frees at 3600 s, the minute one at 120 s.
        assert_eq!(
            limiter.check_now(&[phone(1)]),
            vec![RecipientDecision::Limited {
                window: Duration::from_secs(3600),
                limit: 2,
                retry_after: Duration::from_secs(3540),
            }]
        );
    }
}
