//! The global in-process limiter: one exact sliding log for the whole process.
//!
//! The log holds, oldest first, the time each permit still inside the window was
//! taken, one entry per permit. A request for `n` permits at `now` drops the entries
//! one window old or older, then fits when `n` more entries keep the log within
//! `limit`, and is logged `n` times at `now`. Every permit is logged when it is
//! decided, so no window of any length `window` ever holds more than `limit` of them;
//! the log holds at most `limit` entries (48 KiB at the default 3000 per second).
//!
//! One `Mutex` guards the log. A decision holds it for well under a microsecond,
//! while each send it admits then waits 50 to 300 ms on a vendor, so at the rates a
//! gateway sends at the lock is nearly always free. The clock is read under the lock,
//! so entries are logged in time order and expiring them is popping from the front.
//!
//! A request that does not fit is told when it will: the `n - free` oldest entries
//! must leave first, so `retry_after` is when the newest of those becomes a window
//! old. A retry at that moment fits, unless other requests took the room meanwhile.
//!
//! Both lanes share the log (see [`crate::lane`]): a high-priority request may fill it
//! up to `limit`, a normal one only up to the normal ceiling, so "free" depends on the
//! lane and so does `retry_after`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sms_core::sync::lock;
use sms_core::{LimitError, Priority, RateDecision, RateLimiter};

use crate::config::LimitConfig;
use crate::error::ConfigError;
use crate::lane::{cap_for, normal_ceiling, validate_headroom};
use crate::time::{InstantClock, MonotonicClock};

/// A sliding-window limit for one process: at most `limit` permits in any `window`.
///
/// Exact: the permits allowed in any interval of length `window` never exceed
/// `limit`, and a request is refused only when allowing it would break that.
///
/// Normal-priority requests stop at a lower ceiling when the limiter keeps headroom for
/// the high lane ([`InProcessLimiter::with_high_priority_headroom`], or
/// [`InProcessLimiter::from_config`]); without it both lanes share the whole window.
#[derive(Debug)]
pub struct InProcessLimiter {
    limit: u32,
    /// The most permits normal-priority requests may hold in the window.
    normal_ceiling: u32,
    window: Duration,
    clock: Arc<dyn MonotonicClock>,
    /// When each permit taken within the last window was taken, oldest first.
    log: Mutex<VecDeque<Duration>>,
}

impl InProcessLimiter {
    /// At most `config.global_per_second` permits in any `config.global_window_ms`,
    /// keeping `config.high_priority_headroom` of them for high-priority requests, on
    /// the process's monotonic clock: the global limit of a single instance.
    pub fn from_config(config: &LimitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Self::new(config.global_per_second, config.global_window())?
            .with_high_priority_headroom(config.high_priority_headroom)
    }

    /// At most `limit` permits in any `window`, on the process's monotonic clock. Both
    /// lanes share the whole window.
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
            normal_ceiling: limit,
            window,
            clock,
            log: Mutex::new(VecDeque::new()),
        })
    }

    /// Keeps `headroom` (a share from 0.0 up to, not including, 1.0) of the window for
    /// high-priority requests: normal ones stop at the limit less that share, rounded
    /// to a whole permit.
    pub fn with_high_priority_headroom(mut self, headroom: f64) -> Result<Self, ConfigError> {
        validate_headroom(headroom, "high_priority_headroom")?;
        self.normal_ceiling = normal_ceiling(self.limit, headroom);
        Ok(self)
    }

    /// Permits allowed per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The most permits normal-priority requests may hold in one window.
    pub fn normal_ceiling(&self) -> u32 {
        self.normal_ceiling
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Takes `permits` permits in the high lane (the whole window) if they all fit
    /// now, else none. Never blocks on I/O.
    ///
    /// A request for more permits than `limit` can never fit; it is answered
    /// `Limited` with `retry_after` equal to the window, and the caller should split it.
    /// Otherwise `retry_after` is when enough logged permits will have left the
    /// window, never more than the window.
    pub fn try_acquire(&self, permits: u32) -> RateDecision {
        self.try_acquire_lane(permits, Priority::High)
    }

    /// Takes `permits` permits in lane `priority` if they all fit now, else none:
    /// a normal request only while the window stays within the normal ceiling (or, when
    /// it is larger than the ceiling, in an empty window).
    pub fn try_acquire_lane(&self, permits: u32, priority: Priority) -> RateDecision {
        if permits == 0 {
            return RateDecision::Allowed;
        }
        if permits > self.limit {
            return RateDecision::Limited {
                retry_after: self.window,
            };
        }
        let cap = cap_for(self.limit, self.normal_ceiling, permits, priority) as usize;
        let permits = permits as usize;
        let mut log = lock(&self.log);
        let now = self.clock.elapsed();
        // An entry counts while it is less than a window old. The clock is monotonic
        // and read under the lock, so no entry is newer than `now`.
        while log.front().is_some_and(|&taken| now - taken >= self.window) {
            log.pop_front();
        }
        // High-priority permits may have filled the log past a normal request's cap.
        let free = cap.saturating_sub(log.len());
        if permits <= free {
            log.extend(std::iter::repeat_n(now, permits));
            return RateDecision::Allowed;
        }
        // The request fits once the `log.len() + permits - cap` oldest entries have
        // left; `permits <= cap`, so they are all in the log.
        let last_to_leave = log[log.len() + permits - cap - 1];
        RateDecision::Limited {
            retry_after: self.window - (now - last_to_leave),
        }
    }
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn acquire(&self, permits: u32) -> Result<RateDecision, LimitError> {
        Ok(self.try_acquire(permits))
    }

    async fn acquire_lane(
        &self,
        permits: u32,
        priority: Priority,
    ) -> Result<RateDecision, LimitError> {
        Ok(self.try_acquire_lane(permits, priority))
    }

    fn capacity(&self) -> Option<u32> {
        Some(self.limit)
    }

    fn window(&self) -> Option<Duration> {
        Some(self.window)
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
    fn its_capacity_is_the_limit_per_window() {
        let limiter = InProcessLimiter::new(7, Duration::from_secs(1)).unwrap();
        assert_eq!(RateLimiter::capacity(&limiter), Some(7));
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

    #[test]
    fn normal_requests_stop_at_the_ceiling_and_high_ones_take_the_rest() {
        let (limiter, clock) = limiter(10, SECOND);
        let limiter = limiter.with_high_priority_headroom(0.3).unwrap();
        assert_eq!(limiter.normal_ceiling(), 7);
        assert!(limiter.try_acquire_lane(5, Priority::Normal).is_allowed());
        clock.advance(Duration::from_millis(100));
        assert!(limiter.try_acquire_lane(2, Priority::Normal).is_allowed());
        clock.advance(Duration::from_millis(100));
        // At the ceiling: one more normal permit needs the first 5 (taken at 0) gone.
        assert_eq!(
            limiter.try_acquire_lane(1, Priority::Normal),
            RateDecision::Limited {
                retry_after: Duration::from_millis(800)
            }
        );
        assert!(limiter.try_acquire_lane(3, Priority::High).is_allowed());
        assert!(!limiter.try_acquire(1).is_allowed());
        // 10 held, cap 7: four must leave for one normal permit, and they are of the
        // first request, which leaves at 1000 ms.
        assert_eq!(
            limiter.try_acquire_lane(1, Priority::Normal),
            RateDecision::Limited {
                retry_after: Duration::from_millis(800)
            }
        );
        // Six leave only when the second request's permits do, at 1100 ms.
        assert_eq!(
            limiter.try_acquire_lane(3, Priority::Normal),
            RateDecision::Limited {
                retry_after: Duration::from_millis(900)
            }
        );
    }

    #[test]
    fn a_normal_request_above_the_ceiling_goes_alone_in_an_empty_window() {
        let (limiter, clock) = limiter(10, SECOND);
        let limiter = limiter.with_high_priority_headroom(0.3).unwrap();
        assert!(limiter.try_acquire(1).is_allowed());
        clock.advance(Duration::from_millis(300));
        // Not alone: it waits for the one permit to leave.
        assert_eq!(
            limiter.try_acquire_lane(9, Priority::Normal),
            RateDecision::Limited {
                retry_after: Duration::from_millis(700)
            }
        );
        clock.advance(Duration::from_millis(700));
        assert!(limiter.try_acquire_lane(9, Priority::Normal).is_allowed());
        assert!(!limiter.try_acquire_lane(1, Priority::Normal).is_allowed());
        assert!(limiter.try_acquire(1).is_allowed());
        assert!(!limiter.try_acquire_lane(11, Priority::Normal).is_allowed());
    }

    #[test]
    fn without_headroom_both_lanes_share_the_whole_window() {
        let (limiter, _clock) = limiter(4, SECOND);
        assert_eq!(limiter.normal_ceiling(), 4);
        assert!(limiter.try_acquire_lane(4, Priority::Normal).is_allowed());
        assert!(!limiter.try_acquire(1).is_allowed());
    }

    #[test]
    fn from_config_keeps_the_configured_headroom() {
        let limiter = InProcessLimiter::from_config(&LimitConfig::default()).unwrap();
        assert_eq!(
            (limiter.limit(), limiter.normal_ceiling(), limiter.window()),
            (3000, 2700, SECOND)
        );
        let invalid = LimitConfig {
            high_priority_headroom: 1.0,
            ..LimitConfig::default()
        };
        assert_eq!(
            InProcessLimiter::from_config(&invalid).unwrap_err().field,
            "high_priority_headroom"
        );
    }

    /// The permits of a random request: mostly one, sometimes up to 128.
    fn random_permits(rng: &mut StdRng, limit: u32) -> u32 {
        if rng.random_bool(0.7) {
            1
        } else {
            rng.random_range(1..=limit.min(128))
        }
    }

    #[test]
    fn random_requests_on_a_moving_clock_never_exceed_the_limit_in_any_window() {
        let window = Duration::from_millis(100);
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let limit = [1, 5, 40, 300, 3000][seed as usize % 5];
            let (limiter, clock) = limiter(limit, window);
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
                    10..16 => (window / 64).mul_f64(rng.random_range(0.0..1.2)),
                    16..19 => window.mul_f64(rng.random_range(0.0..0.3)),
                    _ => window.mul_f64(rng.random_range(0.5..1.5)),
                };
                clock.advance(advance);
                let permits = random_permits(&mut rng, limit);
                match limiter.try_acquire(permits) {
                    RateDecision::Allowed => record(clock.elapsed(), permits),
                    RateDecision::Limited { retry_after } => {
                        assert!(
                            !retry_after.is_zero() && retry_after <= window,
                            "seed {seed}: retry_after {retry_after:?}"
                        );
                        // Retrying after `retry_after` finds room (nothing else came).
                        if rng.random_bool(0.3) {
                            clock.advance(retry_after);
                            assert!(
                                limiter.try_acquire(permits).is_allowed(),
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
    fn on_a_frozen_clock_every_request_that_fits_is_allowed() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let limit = [1, 7, 64, 100, 1000, 5000][seed as usize % 6];
            let (limiter, clock) = limiter(limit, SECOND);
            clock.advance(Duration::from_micros(rng.random_range(0..10_000_000)));
            let mut allowed = 0;
            let mut requests = 0;
            while allowed < limit {
                let permits = random_permits(&mut rng, limit);
                let fits = allowed + permits <= limit;
                assert_eq!(
                    limiter.try_acquire(permits).is_allowed(),
                    fits,
                    "seed {seed}: {permits} more after {allowed} of {limit}"
                );
                if fits {
                    allowed += permits;
                }
                requests += 1;
                assert!(requests < 100_000, "seed {seed}: no progress");
            }
            assert!(!limiter.try_acquire(1).is_allowed());
            // One entry per permit, and none for the refused requests.
            assert_eq!(lock(&limiter.log).len(), limit as usize);
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
