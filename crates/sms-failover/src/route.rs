//! The steady-state send path, without the health lock.
//!
//! [`Health`] stays the one authority on vendor health, behind its mutex. What a send
//! needs to know in the steady state is published from it, after every change made
//! under the lock, in a few atomics (the *route*):
//!
//! - the current vendor and the epoch, and whether the route is *steady*: the current
//!   vendor is enabled and has no failures counted in a row;
//! - from when a cheaper vendor may be probed (it has rested), or never;
//! - the bounds of the billing month the counts belong to.
//!
//! A send on a steady route, before any probe is due, takes its [`Ticket`] from the route
//! alone. After a fast success on a ticket that still matches the route, it has nothing to
//! change in [`Health`] (a fast success only resets a count that is already 0), and it
//! adds its billed messages to a per-thread counter. So threads sending through a healthy
//! gateway share no written memory on the way.
//!
//! Everything else takes the lock as before: failures, slow answers, probes, switches,
//! operator actions, status, ledger writes. Taking the lock folds every per-thread count
//! into [`Health`] first, so each price comparison, status and ledger write sees every
//! billed message. The lock-free steps change no rule of the `health` module:
//!
//! - a ticket taken from the route carries the epoch it was published with, so a failure
//!   started before a switch is still never charged to the new vendor;
//! - a fast success that skips the reset because the route was steady is ordered before a
//!   failure published after it was read, which is one of the orders the lock allows;
//! - probes are counted among the sends made while a probe is possible (every such send
//!   takes the lock), so "one in `probe_every`" holds from the moment a vendor rests;
//! - a send racing with a change of route acts on the route it read, as a send that took
//!   the lock just before the change would have.
//!
//! One approximation: messages counted per thread are placed in the billing month that
//! is current when they are folded. A count added just before the month's end and folded
//! just after it lands in the new month (the bounds are checked when it is added, so the
//! window is the few nanoseconds between that check and the add).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::health::{Health, Ticket};
use crate::write_behind::lock;

/// Per-thread usage counters come in this many sets; a thread uses one.
const USAGE_SHARDS: usize = 8;
/// Unused counters between two sets, so two sets never share a cache line.
const SHARD_GAP: usize = 16;

/// Most vendors the route can name (the index is kept in 8 bits).
pub(crate) const MAX_VENDORS: usize = 255;

const IDX_BITS: u64 = 0xff;
const STEADY: u64 = 1 << 8;
const EPOCH_SHIFT: u32 = 9;

/// The route word: current vendor index, steady flag, epoch.
fn route_word(idx: usize, steady: bool, epoch: u64) -> u64 {
    (idx as u64 & IDX_BITS) | if steady { STEADY } else { 0 } | (epoch << EPOCH_SHIFT)
}

/// The set of usage counters this thread adds to.
pub(crate) fn thread_shard(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.with(|shard| *shard % shards)
}

/// [`Health`] behind its lock, with the route published from it.
pub(crate) struct SharedHealth {
    health: Mutex<Health>,
    /// Current vendor index (8 bits), steady flag (1 bit), epoch (the rest).
    route: AtomicU64,
    /// Microseconds since the Unix epoch from which a cheaper vendor may be probed;
    /// `i64::MAX` when none may.
    probe_from: AtomicI64,
    /// The billing month, in microseconds since the Unix epoch, start inclusive.
    period_start: AtomicI64,
    period_end: AtomicI64,
    vendors: usize,
    /// Billed messages not yet folded into [`Health`], `vendors + SHARD_GAP` per set.
    usage: Box<[AtomicU64]>,
}

/// The health lock. Taking it folds the per-thread counts in; releasing it publishes
/// the route.
pub(crate) struct HealthGuard<'a> {
    shared: &'a SharedHealth,
    health: MutexGuard<'a, Health>,
}

impl Deref for HealthGuard<'_> {
    type Target = Health;
    fn deref(&self) -> &Health {
        &self.health
    }
}

impl DerefMut for HealthGuard<'_> {
    fn deref_mut(&mut self) -> &mut Health {
        &mut self.health
    }
}

impl Drop for HealthGuard<'_> {
    fn drop(&mut self) {
        // Runs before the mutex guard (a field) is dropped: published under the lock, so
        // publications happen in the order of the changes.
        self.shared.publish(&self.health);
    }
}

impl SharedHealth {
    pub fn new(health: Health) -> Self {
        let vendors = health.vendors.len();
        let shared = Self {
            health: Mutex::new(health),
            route: AtomicU64::new(0),
            probe_from: AtomicI64::new(i64::MIN),
            period_start: AtomicI64::new(0),
            period_end: AtomicI64::new(0),
            vendors,
            usage: (0..USAGE_SHARDS * (vendors + SHARD_GAP))
                .map(|_| AtomicU64::new(0))
                .collect(),
        };
        drop(shared.lock());
        shared
    }

    /// Takes the lock, with every per-thread count folded in.
    pub fn lock(&self) -> HealthGuard<'_> {
        let mut health = lock(&self.health);
        for shard in 0..USAGE_SHARDS {
            for idx in 0..self.vendors {
                let counter = self.usage_counter(shard, idx);
                // Loading first leaves untouched lines shared.
                if counter.load(Ordering::Relaxed) != 0 {
                    let billed = counter.swap(0, Ordering::AcqRel);
                    health.count_usage(idx, billed);
                }
            }
        }
        HealthGuard {
            shared: self,
            health,
        }
    }

    /// Billed messages of vendor `idx` counted by the threads using set `shard`.
    fn usage_counter(&self, shard: usize, idx: usize) -> &AtomicU64 {
        &self.usage[shard * (self.vendors + SHARD_GAP) + idx]
    }

    fn publish(&self, health: &Health) {
        let current = &health.vendors[health.current];
        let steady = !current.disabled && current.consecutive_failures == 0;
        let probe_from = health
            .probe_from()
            .map_or(i64::MAX, |at| at.timestamp_micros());
        let (start, end) = health.period_bounds();
        self.probe_from.store(probe_from, Ordering::Release);
        self.period_start
            .store(start.timestamp_micros(), Ordering::Release);
        self.period_end
            .store(end.timestamp_micros(), Ordering::Release);
        self.route.store(
            route_word(health.current, steady, health.epoch),
            Ordering::Release,
        );
    }

    /// The ticket of a send starting at `now_us` (microseconds since the Unix epoch) when
    /// the route is steady and no probe is possible; `None` sends it through the lock.
    pub fn steady_ticket(&self, now_us: i64) -> Option<Ticket> {
        let route = self.route.load(Ordering::Acquire);
        if route & STEADY == 0 || now_us >= self.probe_from.load(Ordering::Acquire) {
            return None;
        }
        Some(Ticket {
            idx: (route & IDX_BITS) as usize,
            epoch: route >> EPOCH_SHIFT,
            probe: false,
        })
    }

    /// Accounts a fast success of `ticket` billed `billed` messages at `now_us`, when
    /// the route is still the steady one the ticket names and `now_us` is inside the
    /// billing month. Returns false, having changed nothing, otherwise: the caller then
    /// takes the lock.
    pub fn steady_success(&self, ticket: Ticket, billed: u64, now_us: i64) -> bool {
        if ticket.probe
            || self.route.load(Ordering::Acquire) != route_word(ticket.idx, true, ticket.epoch)
            || now_us < self.period_start.load(Ordering::Acquire)
            || now_us >= self.period_end.load(Ordering::Acquire)
        {
            return false;
        }
        self.usage_counter(thread_shard(USAGE_SHARDS), ticket.idx)
            .fetch_add(billed, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{DateTime, FixedOffset, TimeZone, Utc};
    use sms_core::{FeeSchedule, Money};

    use super::*;
    use crate::config::FailoverConfig;
    use crate::health::Verdict;

    struct Flat(i64);

    impl FeeSchedule for Flat {
        fn price_at(&self, _billed_volume: u64) -> Money {
            Money::from_micros(self.0)
        }
    }

    /// 0.040 until 100 billed, 0.030 from then on.
    struct Tiered;

    impl FeeSchedule for Tiered {
        fn price_at(&self, billed_volume: u64) -> Money {
            Money::from_micros(if billed_volume < 100 { 40_000 } else { 30_000 })
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 10, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn shared(fees: Vec<Arc<dyn FeeSchedule>>) -> SharedHealth {
        let config = FailoverConfig {
            consecutive_failures: 3,
            cooldown: Duration::from_secs(60),
            ..FailoverConfig::default()
        };
        SharedHealth::new(Health::new(
            fees,
            &config,
            FixedOffset::east_opt(0).unwrap(),
            t(0),
        ))
    }

    fn us(at: DateTime<Utc>) -> i64 {
        at.timestamp_micros()
    }

    #[test]
    fn a_healthy_gateway_routes_without_the_lock_and_a_failure_ends_that() {
        let shared = shared(vec![Arc::new(Flat(40_000)), Arc::new(Flat(45_000))]);
        let ticket = shared.steady_ticket(us(t(1))).expect("steady at start");
        assert_eq!((ticket.idx, ticket.probe), (0, false));
        assert!(shared.steady_success(ticket, 1, us(t(1))));

        let failed = shared.lock().record(ticket, Verdict::Failure, t(2));
        assert_eq!(failed, None, "one failure of three switches nothing");
        assert_eq!(shared.steady_ticket(us(t(2))), None, "a streak is open");
        assert!(
            !shared.steady_success(ticket, 1, us(t(2))),
            "its reset must take the lock"
        );
        let ticket = shared.lock().begin(t(3)).unwrap();
        shared.lock().record(ticket, Verdict::Fast, t(3));
        assert_eq!(shared.steady_ticket(us(t(3))), Some(ticket), "steady again");
    }

    #[test]
    fn a_ticket_of_an_older_epoch_takes_the_lock() {
        let shared = shared(vec![Arc::new(Flat(40_000)), Arc::new(Flat(45_000))]);
        let old = shared.steady_ticket(us(t(1))).unwrap();
        for _ in 0..3 {
            let ticket = shared.lock().begin(t(1)).unwrap();
            shared.lock().record(ticket, Verdict::Failure, t(1));
        }
        let new = shared
            .steady_ticket(us(t(1)))
            .expect("steady on the next vendor");
        assert_eq!(new.idx, 1);
        assert_ne!(new.epoch, old.epoch);
        assert!(!shared.steady_success(old, 1, us(t(1))));
        assert!(shared.steady_success(new, 1, us(t(1))));
    }

    #[test]
    fn counts_from_every_thread_are_folded_before_anyone_reads_them() {
        let shared = Arc::new(shared(vec![Arc::new(Tiered), Arc::new(Flat(45_000))]));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let ticket = shared.steady_ticket(us(t(1))).unwrap();
                        assert!(shared.steady_success(ticket, 1, us(t(1))));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let health = shared.lock();
        assert_eq!(health.vendors[0].billed, 200);
        // Priced in the tiers in order: 100 at 0.040, then 100 at 0.030.
        assert_eq!(health.vendors[0].spend, Money::from_micros(7_000_000));
        assert_eq!(health.price(0), Money::from_micros(30_000));
    }

    #[test]
    fn a_rested_cheaper_vendor_sends_every_send_through_the_lock_to_be_probed() {
        let shared = shared(vec![Arc::new(Flat(40_000)), Arc::new(Flat(45_000))]);
        for _ in 0..3 {
            let ticket = shared.lock().begin(t(0)).unwrap();
            shared.lock().record(ticket, Verdict::Failure, t(0));
        }
        assert_eq!(shared.steady_ticket(us(t(59))).map(|t| t.idx), Some(1));
        assert_eq!(shared.steady_ticket(us(t(60))), None, "vendor 0 has rested");
        let probes = (0..20)
            .filter(|_| shared.lock().begin(t(60)).unwrap().probe)
            .count();
        assert_eq!(probes, 2, "one in ten sends through the lock is a probe");
    }

    #[test]
    fn counts_outside_the_billing_month_take_the_lock() {
        let shared = shared(vec![Arc::new(Flat(40_000))]);
        let ticket = shared.steady_ticket(us(t(1))).unwrap();
        let next_month = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        assert!(!shared.steady_success(ticket, 1, us(next_month)));
        assert!(shared.steady_success(ticket, 1, us(next_month) - 1));
        let before = Utc.with_ymd_and_hms(2026, 4, 30, 23, 59, 59).unwrap();
        assert!(!shared.steady_success(ticket, 1, us(before)));
        assert_eq!(shared.lock().vendors[0].billed, 1);
    }
}
