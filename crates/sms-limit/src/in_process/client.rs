//! The in-process client limiter: each client's `per_second` and `per_day` limits in
//! one process.
//!
//! `per_second` is a sliding log per client, like the global one: the requests counted
//! within the last second, each with its time and permits, oldest first. A request
//! fits while the logged permits plus its own stay within the limit, so no second of
//! any alignment ever holds more.
//!
//! `per_day` is a count for the current UTC calendar day, read on a wall clock (a
//! monotonic clock knows no dates), and started afresh when the day changes. It only
//! moves forward: a wall clock set back across midnight keeps counting into the later
//! day rather than forgetting it.
//!
//! A request is checked against every limit of its quota before anything is counted,
//! so a refused request counts in none; only the limits in the quota are counted. One
//! `Mutex` guards every client's counts: clients are the gateway's configured callers,
//! a handful, so the map stays small and a decision holds the lock for well under a
//! microsecond.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sms_core::sync::lock;
use sms_core::{
    ClientId, ClientLimiter, ClientQuota, Clock, LimitError, QuotaDecision, QuotaWindow,
    SystemClock,
};

use crate::time::{InstantClock, MonotonicClock};

/// The length of the `per_second` window.
pub(crate) const SECOND: Duration = Duration::from_secs(1);

/// How long from `now` to the next UTC midnight, when a day's count starts afresh.
fn until_midnight(now: DateTime<Utc>) -> Duration {
    let next_day = now
        .date_naive()
        .succ_opt()
        .unwrap_or(NaiveDate::MAX)
        .and_time(NaiveTime::MIN)
        .and_utc();
    (next_day - now).to_std().unwrap_or(Duration::ZERO)
}

/// One client's counts.
#[derive(Debug)]
struct Counts {
    /// Requests counted within the last second: when, and how many permits, oldest first.
    second: VecDeque<(Duration, u32)>,
    /// The permits in `second`.
    in_second: u64,
    /// The UTC day `in_day` counts.
    day: NaiveDate,
    /// Permits counted on `day`.
    in_day: u64,
}

impl Counts {
    fn new(day: NaiveDate) -> Self {
        Self {
            second: VecDeque::new(),
            in_second: 0,
            day,
            in_day: 0,
        }
    }

    /// Forgets the requests a second old or older, and a day's count once the day is over.
    fn catch_up(&mut self, now: Duration, today: NaiveDate) {
        while let Some(&(taken, permits)) = self.second.front() {
            if now - taken < SECOND {
                break;
            }
            self.second.pop_front();
            self.in_second -= u64::from(permits);
        }
        if today > self.day {
            self.day = today;
            self.in_day = 0;
        }
    }

    /// When `permits` more fit in the second window of `limit`, if they do not now.
    fn second_retry(&self, limit: u32, permits: u32, now: Duration) -> Option<Duration> {
        let (limit, permits) = (u64::from(limit), u64::from(permits));
        if permits > limit {
            return Some(SECOND);
        }
        if self.in_second + permits <= limit {
            return None;
        }
        // The request fits once `must_leave` of the oldest permits have left.
        let mut must_leave = self.in_second + permits - limit;
        for &(taken, logged) in &self.second {
            if u64::from(logged) >= must_leave {
                return Some(SECOND - (now - taken));
            }
            must_leave -= u64::from(logged);
        }
        unreachable!("more permits must leave than the log holds")
    }

    /// Forgets the newest `permits` of the second window.
    fn drop_newest(&mut self, mut permits: u32) {
        while permits > 0 {
            let Some((_, logged)) = self.second.back_mut() else {
                return;
            };
            let dropped = (*logged).min(permits);
            *logged -= dropped;
            permits -= dropped;
            self.in_second -= u64::from(dropped);
            if *logged == 0 {
                self.second.pop_back();
            }
        }
    }
}

/// Per-client limits for one process: `per_second` sliding, `per_day` by UTC day.
///
/// Exact for this process; instances that share clients share their counts through
/// [`RedisClientLimiter`](crate::RedisClientLimiter) instead.
pub struct InProcessClientLimiter {
    clock: Arc<dyn MonotonicClock>,
    wall: Arc<dyn Clock>,
    clients: Mutex<HashMap<ClientId, Counts>>,
}

impl std::fmt::Debug for InProcessClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessClientLimiter")
            .field("clock", &self.clock)
            .field("clients", &lock(&self.clients).len())
            .finish_non_exhaustive()
    }
}

impl Default for InProcessClientLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessClientLimiter {
    /// Seconds on the process's monotonic clock, days on the system clock (UTC).
    pub fn new() -> Self {
        Self::with_clocks(Arc::new(InstantClock::new()), Arc::new(SystemClock))
    }

    /// Seconds on `clock`, days on `wall` (tests pass clocks they move).
    pub fn with_clocks(clock: Arc<dyn MonotonicClock>, wall: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            wall,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `permits` against every limit of `quota` if all have room, else none;
    /// synchronously.
    ///
    /// When both limits are full, names the one that frees last: that is when the
    /// request fits.
    pub fn acquire_now(
        &self,
        client: &ClientId,
        quota: ClientQuota,
        permits: u32,
    ) -> QuotaDecision {
        if permits == 0 || quota.is_unlimited() {
            return QuotaDecision::Allowed;
        }
        let mut clients = lock(&self.clients);
        let now = self.clock.elapsed();
        let wall = self.wall.now();
        let today = wall.date_naive();
        if !clients.contains_key(client) {
            clients.insert(client.clone(), Counts::new(today));
        }
        let Some(counts) = clients.get_mut(client) else {
            unreachable!("the client's counts were just inserted")
        };
        counts.catch_up(now, today);
        let mut full: Option<(QuotaWindow, u32, Duration)> = None;
        if let Some(limit) = quota.per_second {
            if let Some(retry) = counts.second_retry(limit, permits, now) {
                full = Some((QuotaWindow::Second, limit, retry));
            }
        }
        if let Some(limit) = quota.per_day {
            if counts.in_day + u64::from(permits) > u64::from(limit) {
                let retry = until_midnight(wall);
                if full.is_none_or(|(_, _, second)| retry >= second) {
                    full = Some((QuotaWindow::Day, limit, retry));
                }
            }
        }
        if let Some((window, limit, retry_after)) = full {
            return QuotaDecision::Limited {
                window,
                limit,
                retry_after,
            };
        }
        if quota.per_second.is_some() {
            counts.second.push_back((now, permits));
            counts.in_second += u64::from(permits);
        }
        if quota.per_day.is_some() {
            counts.in_day += u64::from(permits);
        }
        QuotaDecision::Allowed
    }

    /// Gives back `permits` in every limit of `quota`, synchronously: the newest of the
    /// second window, and from today's count. Nothing is given back beyond what is
    /// counted, so a give-back earns no credit for later.
    pub fn give_back_now(&self, client: &ClientId, quota: ClientQuota, permits: u32) {
        let mut clients = lock(&self.clients);
        let Some(counts) = clients.get_mut(client) else {
            return;
        };
        counts.catch_up(self.clock.elapsed(), self.wall.now().date_naive());
        if quota.per_second.is_some() {
            counts.drop_newest(permits);
        }
        if quota.per_day.is_some() {
            counts.in_day -= counts.in_day.min(u64::from(permits));
        }
    }
}

#[async_trait]
impl ClientLimiter for InProcessClientLimiter {
    async fn acquire(
        &self,
        client: &ClientId,
        quota: ClientQuota,
        permits: u32,
    ) -> Result<QuotaDecision, LimitError> {
        Ok(self.acquire_now(client, quota, permits))
    }

    async fn give_back(
        &self,
        client: &ClientId,
        quota: ClientQuota,
        permits: u32,
    ) -> Result<(), LimitError> {
        self.give_back_now(client, quota, permits);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use sms_core::testing::ManualClock;

    use super::*;
    use crate::time::ManualMonotonicClock;

    struct Clocks {
        clock: ManualMonotonicClock,
        wall: Arc<ManualClock>,
    }

    impl Clocks {
        fn advance(&self, by: Duration) {
            self.clock.advance(by);
            self.wall.advance(by);
        }
    }

    fn limiter_at(start: DateTime<Utc>) -> (InProcessClientLimiter, Clocks) {
        let clocks = Clocks {
            clock: ManualMonotonicClock::new(),
            wall: Arc::new(ManualClock::new(start)),
        };
        let limiter = InProcessClientLimiter::with_clocks(
            Arc::new(clocks.clock.clone()),
            clocks.wall.clone(),
        );
        (limiter, clocks)
    }

    fn client() -> ClientId {
        ClientId::new("shop").unwrap()
    }

    const PER_DAY: ClientQuota = ClientQuota {
        per_second: None,
        per_day: Some(2),
    };

    #[test]
    fn until_midnight_counts_to_the_next_utc_day() {
        let evening = Utc.with_ymd_and_hms(2026, 2, 28, 23, 59, 30).unwrap();
        assert_eq!(until_midnight(evening), Duration::from_secs(30));
        let midnight = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(until_midnight(midnight), Duration::from_secs(86_400));
    }

    #[test]
    fn the_day_count_starts_afresh_at_utc_midnight() {
        let (limiter, clocks) = limiter_at(Utc.with_ymd_and_hms(2026, 5, 1, 23, 59, 58).unwrap());
        assert!(matches!(
            limiter.acquire_now(&client(), PER_DAY, 2),
            QuotaDecision::Allowed
        ));
        assert_eq!(
            limiter.acquire_now(&client(), PER_DAY, 1),
            QuotaDecision::Limited {
                window: QuotaWindow::Day,
                limit: 2,
                retry_after: Duration::from_secs(2)
            }
        );
        clocks.advance(Duration::from_secs(2));
        assert_eq!(
            limiter.acquire_now(&client(), PER_DAY, 2),
            QuotaDecision::Allowed
        );
    }

    #[test]
    fn a_wall_clock_set_back_across_midnight_keeps_the_later_days_count() {
        let (limiter, clocks) = limiter_at(Utc.with_ymd_and_hms(2026, 5, 2, 0, 0, 1).unwrap());
        assert_eq!(
            limiter.acquire_now(&client(), PER_DAY, 2),
            QuotaDecision::Allowed
        );
        clocks
            .wall
            .set(Utc.with_ymd_and_hms(2026, 5, 1, 23, 59, 59).unwrap());
        assert!(matches!(
            limiter.acquire_now(&client(), PER_DAY, 1),
            QuotaDecision::Limited {
                window: QuotaWindow::Day,
                ..
            }
        ));
    }

    #[test]
    fn when_both_limits_are_full_the_one_that_frees_last_is_named() {
        let quota = ClientQuota {
            per_second: Some(1),
            per_day: Some(1),
        };
        // Half a second before midnight: the second window frees after the day does.
        let (limiter, clocks) = limiter_at(Utc.with_ymd_and_hms(2026, 5, 1, 23, 59, 59).unwrap());
        clocks.advance(Duration::from_millis(500));
        assert_eq!(
            limiter.acquire_now(&client(), quota, 1),
            QuotaDecision::Allowed
        );
        clocks.advance(Duration::from_millis(200));
        assert_eq!(
            limiter.acquire_now(&client(), quota, 1),
            QuotaDecision::Limited {
                window: QuotaWindow::Second,
                limit: 1,
                retry_after: Duration::from_millis(800)
            }
        );
        // Mid-day the day frees last.
        let (limiter, clocks) = limiter_at(Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap());
        assert_eq!(
            limiter.acquire_now(&client(), quota, 1),
            QuotaDecision::Allowed
        );
        clocks.advance(Duration::from_millis(200));
        assert!(matches!(
            limiter.acquire_now(&client(), quota, 1),
            QuotaDecision::Limited {
                window: QuotaWindow::Day,
                limit: 1,
                ..
            }
        ));
    }

    #[test]
    fn retry_after_is_when_enough_old_permits_have_left_the_second() {
        let quota = ClientQuota {
            per_second: Some(5),
            per_day: None,
        };
        let (limiter, clocks) = limiter_at(Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap());
        assert_eq!(
            limiter.acquire_now(&client(), quota, 2),
            QuotaDecision::Allowed
        );
        clocks.advance(Duration::from_millis(100));
        assert_eq!(
            limiter.acquire_now(&client(), quota, 3),
            QuotaDecision::Allowed
        );
        clocks.advance(Duration::from_millis(100));
        let limited = |retry_ms| QuotaDecision::Limited {
            window: QuotaWindow::Second,
            limit: 5,
            retry_after: Duration::from_millis(retry_ms),
        };
        assert_eq!(limiter.acquire_now(&client(), quota, 2), limited(800));
        assert_eq!(limiter.acquire_now(&client(), quota, 3), limited(900));
        assert_eq!(limiter.acquire_now(&client(), quota, 6), limited(1000));
        // Giving back 4 takes the newest request's 3 and one of the first one's.
        limiter.give_back_now(&client(), quota, 4);
        assert_eq!(
            limiter.acquire_now(&client(), quota, 4),
            QuotaDecision::Allowed
        );
        assert_eq!(limiter.acquire_now(&client(), quota, 1), limited(800));
    }
}
