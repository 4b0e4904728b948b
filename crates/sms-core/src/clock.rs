//! Time: a clock seam so tests control "now", and billing periods.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The source of wall-clock time.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;

    /// Now, given that `elapsed` (measured on a monotonic timer) has passed since
    /// `earlier` was read from this clock, or a little more. The default reads the clock
    /// again. The system clock answers `earlier + elapsed` without a reading: the
    /// gateway uses this for the end of a vendor call, whose duration it times anyway.
    fn now_after(&self, earlier: DateTime<Utc>, elapsed: Duration) -> DateTime<Utc> {
        let _ = (earlier, elapsed);
        self.now()
    }

    /// Now, with the monotonic instant it stands for (tokio's, so tests that pause time
    /// control it). The default reads both. The system clock reads only the instant
    /// while its thread's last wall-clock reading is under [`SYSTEM_CLOCK_REUSE`] old,
    /// and answers that reading plus the time elapsed since: the gateway times a vendor
    /// call from the same instant it stamps the message with.
    fn now_timed(&self) -> (DateTime<Utc>, tokio::time::Instant) {
        (self.now(), tokio::time::Instant::now())
    }
}

/// How long [`SystemClock::now_timed`] derives the wall-clock time from one reading of
/// it and the monotonic time elapsed since. The two clocks differ in rate by at most
/// the 500 ppm an NTP slew allows, so a derived time is off by half a microsecond at
/// most; a step of the wall clock (a manual change) shows after this long at the latest.
pub const SYSTEM_CLOCK_REUSE: Duration = Duration::from_millis(1);

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// Days from 1 January of year 1 (chrono's day count) to the Unix epoch.
const UNIX_EPOCH_DAY_FROM_CE: i64 = 719_163;
const SECONDS_PER_DAY: u64 = 86_400;

thread_local! {
    /// The last day this thread read, and its date: turning a day number into a
    /// calendar date is most of the cost of a reading, and the day rarely changes.
    static LAST_DAY: Cell<(u64, NaiveDate)> = const { Cell::new((0, NaiveDate::MIN)) };
    /// The last wall-clock reading [`SystemClock::now_timed`] made on this thread, and
    /// the monotonic instant read just before it.
    static LAST_READING: Cell<Option<(tokio::time::Instant, Duration)>> =
        const { Cell::new(None) };
}

/// The instant `secs` seconds and `nanos` nanoseconds after the Unix epoch, as
/// `DateTime::from_timestamp` gives it, with this thread's last date reused.
fn from_unix(secs: u64, nanos: u32) -> Option<DateTime<Utc>> {
    let day = secs / SECONDS_PER_DAY;
    let date = LAST_DAY.with(|last| match last.get() {
        (cached, date) if cached == day && date != NaiveDate::MIN => Some(date),
        _ => {
            let days = i32::try_from(i64::try_from(day).ok()? + UNIX_EPOCH_DAY_FROM_CE).ok()?;
            let date = NaiveDate::from_num_days_from_ce_opt(days)?;
            last.set((day, date));
            Some(date)
        }
    })?;
    let time =
        NaiveTime::from_num_seconds_from_midnight_opt((secs % SECONDS_PER_DAY) as u32, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// Now as a [`DateTime`], from the time since the Unix epoch if there is one.
fn from_unix_time(since_epoch: Option<Duration>) -> DateTime<Utc> {
    since_epoch
        .and_then(|since| from_unix(since.as_secs(), since.subsec_nanos()))
        // A system clock before 1970 or past chrono's range: chrono's own reading.
        .unwrap_or_else(Utc::now)
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        from_unix_time(SystemTime::now().duration_since(UNIX_EPOCH).ok())
    }

    fn now_after(&self, earlier: DateTime<Utc>, elapsed: Duration) -> DateTime<Utc> {
        TimeDelta::from_std(elapsed)
            .ok()
            .and_then(|d| earlier.checked_add_signed(d))
            .unwrap_or_else(Utc::now)
    }

    fn now_timed(&self) -> (DateTime<Utc>, tokio::time::Instant) {
        let instant = tokio::time::Instant::now();
        let derived = LAST_READING.with(|last| {
            let (read_at, since_epoch) = last.get()?;
            let since = instant.checked_duration_since(read_at)?;
            (since < SYSTEM_CLOCK_REUSE).then(|| since_epoch + since)
        });
        let since_epoch = derived.or_else(|| {
            let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
            LAST_READING.with(|last| last.set(Some((instant, since_epoch))));
            Some(since_epoch)
        });
        (from_unix_time(since_epoch), instant)
    }
}

/// A billing period: a calendar month in the billing time zone, written `YYYY-MM`.
/// Vendors reset tiered volumes each period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BillingPeriod(String);

impl BillingPeriod {
    /// The month containing `at`, as seen in the zone `offset` (China bills in UTC+8).
    pub fn containing(at: DateTime<Utc>, offset: FixedOffset) -> Self {
        let local = at.with_timezone(&offset);
        Self(format!("{:04}-{:02}", local.year(), local.month()))
    }

    /// Wraps a stored `YYYY-MM` label.
    pub fn from_label(label: impl Into<String>) -> Self {
        Self(label.into())
    }

    /// The `YYYY-MM` label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BillingPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_system_clock_reads_what_chrono_reads() {
        for _ in 0..3 {
            let before = Utc::now();
            let ours = SystemClock.now();
            let after = Utc::now();
            assert!(before <= ours && ours <= after, "{before} {ours} {after}");
        }
    }

    #[test]
    fn dates_from_unix_time_match_chronos_across_days_and_years() {
        // Forwards and backwards over day, month, leap-day and year boundaries, so the
        // per-thread date is both reused and replaced.
        let mut secs: Vec<u64> = (0..2_000u64).map(|i| 1_700_000_000 + i * 43_201).collect();
        secs.extend([0, 86_399, 86_400, 951_782_400, 4_102_444_799, 4_102_444_800]);
        secs.extend(secs.clone().into_iter().rev());
        for (i, s) in secs.into_iter().enumerate() {
            let nanos = ((i as u64 * 7_919_111) % 1_000_000_000) as u32;
            assert_eq!(
                from_unix(s, nanos),
                DateTime::from_timestamp(s as i64, nanos),
                "{s} s {nanos} ns"
            );
        }
    }

    #[test]
    fn the_system_clock_adds_elapsed_time_to_an_earlier_reading() {
        let earlier = Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59).unwrap();
        assert_eq!(
            SystemClock.now_after(earlier, Duration::from_millis(1500)),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + TimeDelta::milliseconds(500)
        );
        // Out of range: a fresh reading rather than a panic.
        let now = SystemClock.now_after(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1));
        assert!(now < DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn timed_readings_of_the_system_clock_stay_between_wall_clock_readings() {
        // A derived time may be late by the moment between the two readings it started
        // from, and off by the rate difference of the clocks: far below 100 µs.
        let slack = TimeDelta::microseconds(100);
        for pause_ms in [0, 0, 2, 0, 5, 0] {
            std::thread::sleep(Duration::from_millis(pause_ms));
            let before = Utc::now();
            let (ours, _) = SystemClock.now_timed();
            let after = Utc::now();
            assert!(
                before - slack <= ours && ours <= after + slack,
                "{before} {ours} {after}"
            );
        }
    }

    #[test]
    fn timed_readings_close_together_differ_by_their_instants() {
        // After a pause the first reading reads the wall clock afresh; a second one
        // within SYSTEM_CLOCK_REUSE derives from it, so the wall times differ exactly as
        // the instants do. A pair that the scheduler pulled apart is not compared.
        let mut compared = 0;
        for _ in 0..20 {
            std::thread::sleep(SYSTEM_CLOCK_REUSE * 2);
            let (first, first_instant) = SystemClock.now_timed();
            let (second, second_instant) = SystemClock.now_timed();
            let elapsed = second_instant.duration_since(first_instant);
            if elapsed < SYSTEM_CLOCK_REUSE / 2 {
                assert_eq!(second - first, TimeDelta::from_std(elapsed).unwrap());
                compared += 1;
            }
        }
        assert!(
            compared > 0,
            "no two readings came within half a millisecond"
        );
    }

    #[test]
    fn timed_readings_default_to_reading_the_clock_and_the_instant() {
        struct Fixed(DateTime<Utc>);
        impl Clock for Fixed {
            fn now(&self) -> DateTime<Utc> {
                self.0
            }
        }
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap();
        let before = tokio::time::Instant::now();
        let (wall, instant) = Fixed(at).now_timed();
        assert_eq!(wall, at);
        assert!(instant >= before && instant <= tokio::time::Instant::now());
    }

    #[test]
    fn period_follows_the_billing_time_zone() {
        let beijing = FixedOffset::east_opt(8 * 3600).unwrap();
        // 16:30 UTC on 31 October is already 1 November in Beijing.
        let t = Utc.with_ymd_and_hms(2026, 10, 31, 16, 30, 0).unwrap();
        assert_eq!(BillingPeriod::containing(t, beijing).as_str(), "2026-11");
        assert_eq!(
            BillingPeriod::containing(t, FixedOffset::east_opt(0).unwrap()).as_str(),
            "2026-10"
        );
    }
}
