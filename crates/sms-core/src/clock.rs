//! Time: a clock seam so tests control "now", and billing periods.

use chrono::{DateTime, Datelike, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

/// The source of wall-clock time. Durations are measured on a monotonic timer instead;
/// this is for timestamps (due times, leases, billing periods), so tests can set it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
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
