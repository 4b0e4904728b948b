//! Fixtures the unit tests of health and usage share: flat prices and fixed times.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use sms_core::mocks::MockFeeSchedule;
use sms_core::{FeeSchedule, Money};

/// A fee schedule of one price, `micros` millionths per message, at any volume.
pub(crate) fn flat(micros: i64) -> Arc<dyn FeeSchedule> {
    let mut fees = MockFeeSchedule::new();
    fees.expect_price_at()
        .returning(move |_| Money::from_micros(micros));
    fees.expect_cost_of()
        .returning(move |_, n| Money::from_micros(micros) * n);
    Arc::new(fees)
}

/// `secs` seconds after a fixed start, in the middle of a billing month.
pub(crate) fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 10, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// China's billing time zone.
pub(crate) fn utc8() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}
