//! The per-recipient in-process limiter: several sliding windows per recipient.
//!
//! Each recipient has its own sliding log, the times of its newest messages, at most
//! as many as the largest limit. A message at time `t` fits a window of limit `k` when
//! the `k`-th newest logged time is older than `t - window`, so no window ever holds
//! more than `k` of the recipient's messages, however they bunch up.
//!
//! The limiter needs no view across recipients, so it is sharded: a recipient's log
//! lives in one of [`RECIPIENT_SHARDS`] maps chosen by hash. Each shard sweeps its own
//! forgotten recipients, so a sweep holds one lock over a sixteenth of the recipients
//! and requests for other recipients go on meanwhile.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sms_core::sync::lock;
use sms_core::{LimitError, PhoneNumber, RecipientDecision, RecipientLimiter, RecipientWindow};

use crate::error::ConfigError;
use crate::time::{InstantClock, MonotonicClock};
use crate::window::validate_windows;

/// Number of independently locked maps of the per-recipient limiter.
pub const RECIPIENT_SHARDS: usize = 16;

/// How many checks a shard serves, at least, between sweeps of the recipients whose
/// messages have all left the longest window.
const SWEEP_EVERY: u32 = 1024;

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

    /// Forgets the newest time; returns whether the log is empty now.
    ///
    /// Which time is forgotten does not matter for exactness even when `push` has
    /// dropped the oldest of a full log: that time had left every window of the
    /// largest limit (else the push would have been refused), and windows of smaller
    /// limits only look at the newer times, which are all kept.
    fn drop_newest(&mut self) -> bool {
        match *self.times() {
            [] | [_] => return true,
            [first, _] => *self = Self::One(first),
            _ => {
                let Self::Many(slots) = self else {
                    unreachable!("a log of one time has no third")
                };
                slots[0] -= 1;
            }
        }
        false
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

    /// Gives back one message per listed recipient, synchronously: forgets its newest
    /// logged time. A recipient with nothing logged is skipped.
    pub fn give_back_now(&self, recipients: &[PhoneNumber]) {
        for recipient in recipients {
            let key = recipient_key(recipient);
            let mut shard = lock(&self.shards[shard_of(key)]);
            if let Entry::Occupied(mut log) = shard.logs.entry(key) {
                if log.get_mut().drop_newest() {
                    log.remove();
                }
            }
        }
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

    async fn give_back(&self, recipients: &[PhoneNumber]) -> Result<(), LimitError> {
        self.give_back_now(recipients);
        Ok(())
    }
}
#[cfg(test)]
mod tests;
