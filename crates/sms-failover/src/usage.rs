//! Billed usage: the messages each vendor billed this billing month, what they cost,
//! and the counts still to be written to the shared ledger.
//!
//! Prices are tiered by the month's volume, so these counts decide which vendor is the
//! cheapest. Each count is this instance's view: the ledger's total as of its last
//! write, plus what was billed here since. A count waits in memory until the next
//! ledger write takes it ([`Usage::take_unwritten`]); the ledger answers with its new
//! total, which includes other instances' usage, and the local count catches up
//! ([`Usage::written`]). A failed write keeps its count for the next one
//! ([`Usage::not_written`]). When the month changes with counts unwritten, they keep
//! the month they were billed in.

use std::sync::Arc;

use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Utc};
use sms_core::{BillingPeriod, FeeSchedule, Money, NextTier};

/// Billed messages of one vendor and period, on their way to the shared ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageDelta {
    pub period: BillingPeriod,
    /// The vendor's index.
    pub idx: usize,
    pub messages: u64,
}

/// Every vendor's billed volume and spend in the current billing month.
pub(crate) struct Usage {
    fees: Vec<Arc<dyn FeeSchedule>>,
    /// Messages billed this period, per vendor.
    billed: Vec<u64>,
    /// What this instance saw spent this period, per vendor (plus, after start-up, what
    /// the ledger's totals cost).
    spend: Vec<Money>,
    period: BillingPeriod,
    /// Start (inclusive) and end (exclusive) of `period` in UTC: comparing two instants
    /// is cheap, working out the calendar month is not, and every billed send checks it.
    period_bounds: (DateTime<Utc>, DateTime<Utc>),
    billing_offset: FixedOffset,
    /// Billed this period and not yet written to the ledger, per vendor.
    unwritten: Vec<u64>,
    /// Not yet written, from earlier periods (the month changed with writes pending).
    carried: Vec<UsageDelta>,
}

/// Where the calendar month of `now` in the billing zone (as `BillingPeriod::containing`
/// sees it) starts and ends, in UTC.
fn month_bounds(now: DateTime<Utc>, offset: FixedOffset) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = now.with_timezone(&offset);
    let (year, month) = (local.year(), local.month());
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let first = |y: i32, m: u32| {
        // A fixed offset has no gaps or repeats, so midnight on the 1st exists once
        // (within chrono's range; at its ends the month is left open).
        offset
            .with_ymd_and_hms(y, m, 1, 0, 0, 0)
            .single()
            .map(|t| t.with_timezone(&Utc))
    };
    (
        first(year, month).unwrap_or(DateTime::<Utc>::MIN_UTC),
        first(next_year, next_month).unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

impl Usage {
    /// Nothing billed yet, in the billing month of `now` in the zone `billing_offset`.
    pub fn new(
        fees: Vec<Arc<dyn FeeSchedule>>,
        billing_offset: FixedOffset,
        now: DateTime<Utc>,
    ) -> Self {
        let vendor_count = fees.len();
        Self {
            fees,
            billed: vec![0; vendor_count],
            spend: vec![Money::ZERO; vendor_count],
            period: BillingPeriod::containing(now, billing_offset),
            period_bounds: month_bounds(now, billing_offset),
            billing_offset,
            unwritten: vec![0; vendor_count],
            carried: Vec::new(),
        }
    }

    /// The billing period usage is counted in now.
    pub fn period(&mut self, now: DateTime<Utc>) -> BillingPeriod {
        self.roll_period(now);
        self.period.clone()
    }

    /// Starts a new period's counts when the calendar month (in the billing zone) changed.
    fn roll_period(&mut self, now: DateTime<Utc>) {
        if now >= self.period_bounds.0 && now < self.period_bounds.1 {
            return;
        }
        self.period_bounds = month_bounds(now, self.billing_offset);
        let period = BillingPeriod::containing(now, self.billing_offset);
        if period == self.period {
            return;
        }
        for idx in 0..self.billed.len() {
            self.billed[idx] = 0;
            self.spend[idx] = Money::ZERO;
            let messages = std::mem::take(&mut self.unwritten[idx]);
            if messages > 0 {
                self.carried.push(UsageDelta {
                    period: self.period.clone(),
                    idx,
                    messages,
                });
            }
        }
        self.period = period;
    }

    /// The per-message price of vendor `idx` now.
    pub fn price(&self, idx: usize) -> Money {
        self.fees[idx].price_at(self.billed[idx])
    }

    /// Where vendor `idx`'s price changes next this period.
    pub fn next_tier(&self, idx: usize) -> Option<NextTier> {
        self.fees[idx].next_tier(self.billed[idx])
    }

    /// Messages vendor `idx` billed this period.
    pub fn billed(&self, idx: usize) -> u64 {
        self.billed[idx]
    }

    /// What was spent on vendor `idx` this period.
    pub fn spend(&self, idx: usize) -> Money {
        self.spend[idx]
    }

    /// Sets the billed volumes read from the ledger at start-up (one per vendor).
    pub fn load_totals(&mut self, billed: &[u64], now: DateTime<Utc>) {
        self.roll_period(now);
        for (idx, total) in billed.iter().enumerate() {
            self.billed[idx] = *total;
            self.spend[idx] = self.fees[idx].cost_of(0, *total);
        }
    }

    /// Adds `messages` billed by vendor `idx` at `now` and returns their cost, priced at
    /// this instance's count; they wait for the next ledger write.
    pub fn add(&mut self, idx: usize, messages: u64, now: DateTime<Utc>) -> Money {
        self.roll_period(now);
        let cost = self.fees[idx].cost_of(self.billed[idx], messages);
        self.billed[idx] = self.billed[idx].saturating_add(messages);
        self.spend[idx] = self.spend[idx].checked_add(cost).unwrap_or(self.spend[idx]);
        self.unwritten[idx] = self.unwritten[idx].saturating_add(messages);
        cost
    }

    /// Takes every count not yet written to the ledger, oldest period first.
    pub fn take_unwritten(&mut self) -> Vec<UsageDelta> {
        let mut deltas = std::mem::take(&mut self.carried);
        for (idx, pending) in self.unwritten.iter_mut().enumerate() {
            if *pending > 0 {
                deltas.push(UsageDelta {
                    period: self.period.clone(),
                    idx,
                    messages: std::mem::take(pending),
                });
            }
        }
        deltas
    }

    /// Whether counts wait to be written to the ledger.
    #[cfg(test)]
    fn pending(&self) -> bool {
        !self.carried.is_empty() || self.unwritten.iter().any(|n| *n > 0)
    }

    /// `delta` was written and the ledger's total for its vendor and period is now
    /// `total`: the local count catches up with what other instances billed (it never
    /// goes down, so a late answer changes nothing).
    pub fn written(&mut self, delta: &UsageDelta, total: u64) {
        if delta.period == self.period {
            let idx = delta.idx;
            self.billed[idx] = self.billed[idx].max(total.saturating_add(self.unwritten[idx]));
        }
    }

    /// The ledger's `total` for vendor `idx` in `period`, read now: other instances'
    /// usage joins this instance's count, which never goes back (a write of this
    /// instance may still be on its way to the ledger).
    pub fn refreshed(&mut self, period: &BillingPeriod, idx: usize, total: u64) {
        if *period != self.period {
            return;
        }
        let seen = total.saturating_add(self.unwritten[idx]);
        if seen > self.billed[idx] {
            let cost = self.fees[idx].cost_of(self.billed[idx], seen - self.billed[idx]);
            self.spend[idx] = self.spend[idx].checked_add(cost).unwrap_or(self.spend[idx]);
            self.billed[idx] = seen;
        }
    }

    /// Writing `delta` failed: it waits for the next write, merged with what was billed
    /// meanwhile when its period is still the current one.
    pub fn not_written(&mut self, delta: UsageDelta) {
        if delta.period == self.period {
            self.unwritten[delta.idx] = self.unwritten[delta.idx].saturating_add(delta.messages);
        } else {
            self.carried.push(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use sms_core::mocks::MockFeeSchedule;

    use super::*;
    use crate::test_support::{flat, t, utc8};

    fn usage(prices: &[i64]) -> Usage {
        Usage::new(prices.iter().map(|p| flat(*p)).collect(), utc8(), t(0))
    }

    #[test]
    fn a_refresh_adds_the_others_usage_and_never_goes_back() {
        let mut u = usage(&[1000]);
        let period = u.period(t(0));
        u.add(0, 5, t(0));
        // The ledger has 20 from other instances; our 5 are not written yet.
        u.refreshed(&period, 0, 20);
        assert_eq!(u.billed(0), 25);
        assert_eq!(u.spend(0), Money::from_micros(25_000));
        // A total read before our last write landed never lowers the count.
        u.refreshed(&period, 0, 3);
        assert_eq!(u.billed(0), 25);
        // Another period's total changes nothing.
        u.refreshed(&BillingPeriod::from_label("1999-01"), 0, 1_000);
        assert_eq!(u.billed(0), 25);
    }

    #[test]
    fn usage_uses_the_ledger_total_to_place_messages_in_the_tiers() {
        let mut fees = MockFeeSchedule::new();
        fees.expect_price_at()
            .returning(|_| Money::from_micros(45_000));
        fees.expect_cost_of()
            .withf(|before, n| *before == 98 && *n == 2)
            .returning(|_, _| Money::from_micros(90_000));
        fees.expect_cost_of()
            .withf(|before, n| *before == 0 && *n == 1)
            .returning(|_, _| Money::from_micros(45_000));
        let mut u = Usage::new(vec![Arc::new(fees)], utc8(), t(0));
        // Another instance billed 97 meanwhile; our one write of 1 said so, and the two
        // messages billed here after that are numbers 98 and 99.
        u.add(0, 1, t(0));
        let delta = u.take_unwritten().pop().unwrap();
        u.written(&delta, 98);
        assert_eq!(u.billed(0), 98);
        assert_eq!(u.add(0, 2, t(0)), Money::from_micros(90_000));
        assert_eq!(u.billed(0), 100);
    }

    #[test]
    fn billed_volumes_restart_each_billing_month() {
        let mut u = usage(&[40]);
        u.add(0, 5, t(0));
        assert_eq!(u.billed(0), 5);
        let next_month = Utc.with_ymd_and_hms(2026, 11, 30, 16, 0, 0).unwrap(); // 1 Dec in UTC+8
        assert_eq!(u.period(next_month).as_str(), "2026-12");
        assert_eq!(u.billed(0), 0);
        assert_eq!(u.spend(0), Money::ZERO);
    }

    #[test]
    fn month_bounds_follow_the_billing_zone() {
        let utc8 = utc8();
        // 1 Dec 00:00 in UTC+8 is 30 Nov 16:00 UTC.
        let (start, end) = month_bounds(
            Utc.with_ymd_and_hms(2026, 11, 30, 15, 59, 59).unwrap(),
            utc8,
        );
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 10, 31, 16, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 11, 30, 16, 0, 0).unwrap());
        let (start, end) =
            month_bounds(Utc.with_ymd_and_hms(2026, 12, 31, 16, 0, 0).unwrap(), utc8);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 31, 16, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2027, 1, 31, 16, 0, 0).unwrap());
        // Every instant's own month label agrees with the bounds it falls in.
        for hours in (0..24 * 400).step_by(7) {
            let at = t(0) + chrono::Duration::hours(hours);
            let (start, end) = month_bounds(at, utc8);
            assert!(start <= at && at < end);
            assert_eq!(
                BillingPeriod::containing(start, utc8),
                BillingPeriod::containing(at, utc8)
            );
            assert_ne!(
                BillingPeriod::containing(end, utc8),
                BillingPeriod::containing(at, utc8)
            );
        }
    }

    #[test]
    fn usage_not_written_waits_for_the_next_write() {
        let mut u = usage(&[40, 50]);
        u.add(0, 3, t(0));
        u.add(0, 2, t(1));
        assert!(u.pending());
        let deltas = u.take_unwritten();
        assert_eq!(deltas.len(), 1);
        assert_eq!((deltas[0].idx, deltas[0].messages), (0, 5));
        assert!(!u.pending());
        // The write failed while one more message was billed: both wait, merged.
        u.add(0, 1, t(2));
        u.not_written(deltas[0].clone());
        let again = u.take_unwritten();
        assert_eq!(again[0].messages, 6);
        // The month changes before the write: the old month's count keeps its period.
        u.not_written(again[0].clone());
        let next_month = Utc.with_ymd_and_hms(2026, 11, 30, 16, 0, 0).unwrap();
        u.add(1, 4, next_month);
        let mut deltas = u.take_unwritten();
        deltas.sort_by_key(|d| d.idx);
        assert_eq!(deltas[0].period.as_str(), "2026-11");
        assert_eq!((deltas[0].idx, deltas[0].messages), (0, 6));
        assert_eq!(deltas[1].period.as_str(), "2026-12");
        assert_eq!((deltas[1].idx, deltas[1].messages), (1, 4));
    }

    #[test]
    fn a_ledger_total_never_lowers_the_local_count() {
        let mut u = usage(&[40]);
        u.add(0, 10, t(0));
        let delta = u.take_unwritten().pop().unwrap();
        u.add(0, 5, t(1));
        // The ledger had 10 before ours from elsewhere: 20 after; 5 more are pending here.
        u.written(&delta, 20);
        assert_eq!(u.billed(0), 25);
        // A stale answer (smaller) changes nothing.
        u.written(&delta, 3);
        assert_eq!(u.billed(0), 25);
    }
}
