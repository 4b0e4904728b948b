//! In-process limiters: the embedded default, and the fail-open fallback of the Redis ones.
//!
//! Both keep an exact sliding log: the times of the permits still inside the window.
//! A request at time `t` fits when fewer than `limit` logged permits are newer than
//! `t - window`, so exactly `limit` go through in any window, however the requests
//! bunch up (a fixed-window counter lets up to `2 × limit` through around a boundary).
//!
//! The global log is one `VecDeque` behind a `Mutex`. A sharded or lock-free log cannot
//! stay exact: the global decision needs the whole window's count, and a multi-slot
//! compare-and-swap is not available. The critical section is short and bounded: read
//! the clock, drop expired entries (each entry is dropped once, so amortised O(1)),
//! compare, push `permits` timestamps into already reserved capacity. It never awaits
//! and rarely allocates. At 3000 sends per second it is held for well under 1 % of the
//! time, far less than the vendor round trip it guards.
//!
//! The per-recipient limiter needs no global view, so it is sharded: a recipient's log
//! lives in one of [`RECIPIENT_SHARDS`] maps chosen by hash, and requests for different
//! recipients rarely meet on a lock.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
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

/// Locks `mutex`, ignoring poisoning: the critical sections here leave the log
/// consistent at every step, so a panic elsewhere cannot leave it half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An exact sliding-window limit for one process: at most `limit` permits in any `window`.
#[derive(Debug)]
pub struct InProcessLimiter {
    limit: u32,
    window: Duration,
    clock: Arc<dyn MonotonicClock>,
    /// Times of the permits taken within the last window, oldest first.
    log: Mutex<VecDeque<Duration>>,
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
        Ok(Self {
            limit,
            window,
            clock,
            log: Mutex::new(VecDeque::new()),
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
    pub fn try_acquire(&self, permits: u32) -> RateDecision {
        if permits == 0 {
            return RateDecision::Allowed;
        }
        if permits > self.limit {
            return RateDecision::Limited {
                retry_after: self.window,
            };
        }
        let permits = permits as usize;
        let limit = self.limit as usize;
        let mut log = lock(&self.log);
        // Read the clock under the lock so the log stays sorted.
        let now = self.clock.elapsed();
        // An entry taken at `e` counts while `now - e < window`.
        while log.front().is_some_and(|&taken| now >= taken + self.window) {
            log.pop_front();
        }
        if log.len() + permits <= limit {
            log.extend(std::iter::repeat_n(now, permits));
            return RateDecision::Allowed;
        }
        // The request fits once the `must_leave`-th oldest entry has left the window.
        let must_leave = log.len() + permits - limit;
        let retry_after = (log[must_leave - 1] + self.window).saturating_sub(now);
        RateDecision::Limited { retry_after }
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

/// One shard of recipient logs.
#[derive(Debug, Default)]
struct Shard {
    /// Per recipient, the times of its last messages, oldest first, at most
    /// `keep` of them.
    logs: HashMap<PhoneNumber, VecDeque<Duration>>,
    checks_since_sweep: u32,
}

/// Per-recipient limits for one process: several sliding windows per recipient.
///
/// See the crate docs for how multi-recipient requests are decided.
#[derive(Debug)]
pub struct InProcessRecipientLimiter {
    windows: Vec<RecipientWindow>,
    /// The longest window: older entries can never matter again.
    longest: Duration,
    /// The largest limit: a window of limit `k` only looks at the newest `k` entries,
    /// so no log needs more than this many.
    keep: usize,
    clock: Arc<dyn MonotonicClock>,
    hasher: RandomState,
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
        let longest = windows.iter().map(|w| w.window).max().unwrap_or_default();
        let keep = windows.iter().map(|w| w.limit).max().unwrap_or(1) as usize;
        Ok(Self {
            windows,
            longest,
            keep,
            clock,
            hasher: RandomState::new(),
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
        let index = (self.hasher.hash_one(recipient) as usize) % self.shards.len();
        let mut shard = lock(&self.shards[index]);
        let now = self.clock.elapsed();
        shard.checks_since_sweep += 1;
        if shard.checks_since_sweep >= SWEEP_EVERY {
            shard.checks_since_sweep = 0;
            let longest = self.longest;
            // Forget recipients whose newest message has left every window, so
            // memory follows the recipients of the last day, not of all time.
            shard
                .logs
                .retain(|_, log| log.back().is_some_and(|&last| now < last + longest));
        }
        let log = shard.logs.entry(recipient.clone()).or_default();
        let decision = decide(&self.windows, log, now);
        if decision == RecipientDecision::Allowed {
            log.push_back(now);
            if log.len() > self.keep {
                log.pop_front();
            }
        }
        decision
    }
}

/// The decision for one recipient whose newest messages are `log` (oldest first).
///
/// When several windows are full, names the one that frees last, so `retry_after`
/// is when the recipient may really receive again.
fn decide(
    windows: &[RecipientWindow],
    log: &VecDeque<Duration>,
    now: Duration,
) -> RecipientDecision {
    let mut full: Option<(RecipientWindow, Duration)> = None;
    for window in windows {
        let in_window = log
            .iter()
            .rev()
            .take_while(|&&sent| now < sent + window.window)
            .count();
        let limit = window.limit as usize;
        if in_window >= limit {
            // The window frees when the `limit`-th newest entry leaves it.
            let frees_at = log[log.len() - limit] + window.window;
            let retry_after = frees_at.saturating_sub(now);
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
            retry_after,
        },
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

    #[test]
    fn recipient_log_keeps_no_more_than_the_largest_limit() {
        let clock = ManualMonotonicClock::new();
        let limiter = InProcessRecipientLimiter::with_clock(
            vec![RecipientWindow::new(3, SECOND)],
            Arc::new(clock.clone()),
        )
        .unwrap();
        for _ in 0..10 {
            assert_eq!(
                limiter.check_now(&[phone(1)]),
                vec![RecipientDecision::Allowed]
            );
            clock.advance(SECOND);
        }
        let index = (limiter.hasher.hash_one(phone(1)) as usize) % RECIPIENT_SHARDS;
        assert_eq!(lock(&limiter.shards[index]).logs[&phone(1)].len(), 3);
    }

    #[test]
    fn recipients_idle_for_the_longest_window_are_forgotten() {
        let clock = ManualMonotonicClock::new();
        let limiter = InProcessRecipientLimiter::with_clock(
            vec![RecipientWindow::new(1, SECOND)],
            Arc::new(clock.clone()),
        )
        .unwrap();
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
            .filter(|number| {
                let index = (limiter.hasher.hash_one(*number) as usize) % RECIPIENT_SHARDS;
                lock(&limiter.shards[index]).logs.contains_key(*number)
            })
            .count();
        assert_eq!(still_tracked, 0);
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
