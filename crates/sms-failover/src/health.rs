//! Vendor health: who is current, failure counting, switching, cooldown and recovery.
//!
//! All of it lives in one small struct that the gateway keeps behind one short mutex
//! (never held across an await). The vendor index and the failure count change
//! together, in one critical section, which is what makes the rules below hold under
//! concurrent sends:
//!
//! - Every attempt is stamped with a [`Ticket`]: the vendor it went to and the *epoch*
//!   (a counter bumped on every change of current vendor). A failure is charged only when
//!   the ticket's vendor is still current and its epoch still matches, so failures of
//!   requests still running on the previous vendor are never charged to the new one.
//! - The switch happens in the same critical section as the N-th failure, which resets
//!   the count and bumps the epoch: concurrent failures of one episode switch exactly
//!   once, and never skip a vendor.
//! - The switch happens on exactly the N-th consecutive failure, not the one after it.
//!
//! Recovery and flapping: a demoted vendor rests for `cooldown`. Once rested, if it is
//! cheaper than the current vendor, one attempt in `probe_every` is sent to it as a
//! probe; after `probe_successes` consecutive fast probe successes it becomes current
//! again. A failed or slow probe demotes it again. A vendor demoted again within
//! `flap_window` of its previous demotion rests twice as long as the previous time (up to
//! `cooldown_max`), so a vendor that keeps failing is tried less and less often.
//!
//! Prices come from the billed volumes ([`Usage`]), kept under the same lock so that a
//! switch compares the prices of every message billed so far.
//!
//! Not every vendor can send every message: a vendor without an approved template for
//! it, or whose mapping for it was found broken, is left out by the message's [`Route`].
//! When the current vendor cannot send a message, the cheapest healthy vendor that can
//! takes it as a *detour*: its failures count against it (it rests after N in a row)
//! but never move the current vendor. A message pinned to a vendor (whose per-number
//! limit refused it) goes back to that vendor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use sms_core::{FeeSchedule, Money};

use crate::backoff::after;
use crate::config::FailoverConfig;
use crate::selection::{Candidate, cheaper, choose_vendor, price_rank};
use crate::usage::Usage;

/// The vendors one message may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    /// Bit `i` set: vendor `i` can send the message.
    pub eligible: u64,
    /// The vendor the message must go to, while it can.
    pub pinned: Option<usize>,
}

impl Route {
    /// Any vendor.
    pub const ANY: Route = Route {
        eligible: u64::MAX,
        pinned: None,
    };

    /// Whether vendor `idx` can send the message.
    pub fn allows(&self, idx: usize) -> bool {
        self.eligible & (1 << idx) != 0
    }
}

/// The vendor an attempt went to, and the epoch it started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// Index of the vendor.
    pub idx: usize,
    /// The epoch when the attempt started.
    pub epoch: u64,
    /// Whether the attempt is a recovery probe of a non-current vendor.
    pub probe: bool,
    /// Whether the attempt went to another vendor than the current one because the
    /// current one cannot send the message.
    pub detour: bool,
}

/// What an attempt says about its vendor's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Accepted within the slow threshold.
    Fast,
    /// Accepted, but slowly: one failure.
    Slow,
    /// Timed out, throttled or failed: one failure.
    Failure,
    /// Refused for good: says nothing about health.
    Neutral,
}

/// A change of current vendor, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Switch {
    pub from: usize,
    pub to: usize,
    pub reason: String,
}

/// One vendor's health.
#[derive(Debug, Clone, Default)]
pub(crate) struct VendorState {
    pub consecutive_failures: u32,
    pub cooling_until: Option<DateTime<Utc>>,
    pub disabled: bool,
    /// Demotions in a row, each within `flap_window` of the previous one.
    demotion_streak: u32,
    last_demoted_at: Option<DateTime<Utc>>,
    probe_successes: u32,
}

/// The health of every vendor, which one is current, and the billed usage that prices
/// them.
pub(crate) struct Health {
    pub vendors: Vec<VendorState>,
    pub usage: Usage,
    /// By template name: bit `i` set when vendor `i` answered that its template or
    /// signature for it is not approved. Cleared when an operator enables the vendor.
    broken: HashMap<String, u64>,
    pub current: usize,
    pub epoch: u64,
    /// Attempts begun, to send one in `probe_every` to a probe.
    attempts: u64,
    threshold: u32,
    cooldown: Duration,
    cooldown_max: Duration,
    flap_window: Duration,
    probe_successes: u32,
    probe_every: u64,
}

impl Health {
    /// Every vendor healthy with nothing billed; the cheapest at volume 0 is current.
    pub fn new(
        fees: Vec<Arc<dyn FeeSchedule>>,
        config: &FailoverConfig,
        billing_offset: FixedOffset,
        now: DateTime<Utc>,
    ) -> Self {
        let mut health = Self {
            vendors: vec![VendorState::default(); fees.len()],
            usage: Usage::new(fees, billing_offset, now),
            broken: HashMap::new(),
            current: 0,
            epoch: 0,
            attempts: 0,
            threshold: config.consecutive_failures.max(1),
            cooldown: config.cooldown,
            cooldown_max: config.cooldown_max.max(config.cooldown),
            flap_window: config.flap_window,
            probe_successes: config.probe_successes.max(1),
            probe_every: u64::from(config.probe_every.max(1)),
        };
        health.current = choose_vendor(&health.candidates(), None, now).unwrap_or(0);
        health
    }

    /// The per-message price of vendor `idx` now.
    pub fn price(&self, idx: usize) -> Money {
        self.usage.price(idx)
    }

    /// Whether an operator switched every vendor off.
    pub fn all_disabled(&self) -> bool {
        self.vendors.iter().all(|v| v.disabled)
    }

    /// The vendors whose mapping for `template` was found broken, as a bit set.
    pub fn broken_mask(&self, template: &str) -> u64 {
        if self.broken.is_empty() {
            return 0;
        }
        self.broken.get(template).copied().unwrap_or(0)
    }

    /// Records that vendor `idx` refused `template`; returns whether this is news.
    pub fn mark_broken(&mut self, template: &str, idx: usize) -> bool {
        let mask = self.broken.entry(template.to_owned()).or_insert(0);
        let news = *mask & (1 << idx) == 0;
        *mask |= 1 << idx;
        news
    }

    /// The templates vendor `idx` was found unable to send, sorted.
    pub fn broken_templates(&self, idx: usize) -> Vec<String> {
        let mut names: Vec<String> = self
            .broken
            .iter()
            .filter(|(_, mask)| *mask & (1 << idx) != 0)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Whether some enabled vendor on `route` can take a message.
    pub fn can_route(&self, route: &Route) -> bool {
        (0..self.vendors.len()).any(|i| route.allows(i) && !self.vendors[i].disabled)
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.candidates_for(&Route::ANY)
    }

    fn candidates_for(&self, route: &Route) -> Vec<Candidate> {
        self.vendors
            .iter()
            .enumerate()
            .map(|(i, v)| Candidate {
                price: self.price(i),
                cooling_until: v.cooling_until,
                disabled: v.disabled,
                can_send: route.allows(i),
            })
            .collect()
    }

    /// Sets the billed volumes read from the ledger at start-up and picks the cheapest
    /// vendor as current.
    pub fn load_totals(&mut self, billed: &[u64], now: DateTime<Utc>) -> Option<Switch> {
        self.usage.load_totals(billed, now);
        let next = choose_vendor(&self.candidates(), None, now)?;
        self.make_current(next, "cheapest at start-up".into())
    }

    fn make_current(&mut self, next: usize, reason: String) -> Option<Switch> {
        let from = self.current;
        self.epoch += 1;
        if next == from {
            return None;
        }
        self.current = next;
        self.vendors[next].consecutive_failures = 0;
        self.vendors[next].probe_successes = 0;
        self.vendors[from].consecutive_failures = 0;
        Some(Switch {
            from,
            to: next,
            reason,
        })
    }

    /// A cheaper enabled vendor on `route` that has rested and may be probed.
    fn probe_candidate(&self, route: &Route, now: DateTime<Utc>) -> Option<usize> {
        let current_price = self.price(self.current);
        (0..self.vendors.len())
            .filter(|&i| {
                let v = &self.vendors[i];
                i != self.current
                    && route.allows(i)
                    && !v.disabled
                    && cheaper(self.price(i), current_price)
                    && v.cooling_until.is_none_or(|until| until <= now)
            })
            .min_by_key(|&i| (price_rank(self.price(i)), i))
    }

    /// Picks the vendor for the next attempt of a message any vendor can send; `None`
    /// when every vendor is disabled.
    #[cfg(test)]
    pub fn begin(&mut self, now: DateTime<Utc>) -> Option<Ticket> {
        self.begin_on(&Route::ANY, now)
    }

    /// Picks the vendor for the next attempt of a message on `route`: its pinned vendor
    /// while enabled, else the current vendor (or, one attempt in `probe_every`, a rested
    /// cheaper one to probe), else the cheapest healthy vendor on the route as a detour.
    /// `None` when no enabled vendor is on the route.
    pub fn begin_on(&mut self, route: &Route, now: DateTime<Utc>) -> Option<Ticket> {
        let ticket = |idx: usize, epoch: u64, probe: bool, current: usize| Ticket {
            idx,
            epoch,
            probe,
            detour: !probe && idx != current,
        };
        if let Some(pinned) = route.pinned {
            if pinned < self.vendors.len() && route.allows(pinned) && !self.vendors[pinned].disabled
            {
                return Some(ticket(pinned, self.epoch, false, self.current));
            }
        }
        if self.vendors[self.current].disabled || !route.allows(self.current) {
            let idx = choose_vendor(&self.candidates_for(route), None, now)?;
            return Some(ticket(idx, self.epoch, false, self.current));
        }
        self.attempts = self.attempts.wrapping_add(1);
        if self.attempts % self.probe_every == 0 {
            if let Some(idx) = self.probe_candidate(route, now) {
                return Some(ticket(idx, self.epoch, true, self.current));
            }
        }
        Some(ticket(self.current, self.epoch, false, self.current))
    }

    /// Puts vendor `idx` to rest, longer when it was demoted recently too.
    fn demote(&mut self, idx: usize, now: DateTime<Utc>) {
        let flap_window = self.flap_window;
        let v = &mut self.vendors[idx];
        let recently = v
            .last_demoted_at
            .is_some_and(|t| (now - t).to_std().unwrap_or(Duration::ZERO) < flap_window);
        v.demotion_streak = if recently {
            v.demotion_streak.saturating_add(1)
        } else {
            0
        };
        let rest = self
            .cooldown
            .checked_mul(1u32 << v.demotion_streak.min(20))
            .unwrap_or(self.cooldown_max)
            .min(self.cooldown_max);
        v.cooling_until = Some(after(now, rest));
        v.last_demoted_at = Some(now);
        v.probe_successes = 0;
        v.consecutive_failures = 0;
    }

    /// Records what an attempt said about its vendor; returns the switch it caused.
    pub fn record(
        &mut self,
        ticket: Ticket,
        verdict: Verdict,
        now: DateTime<Utc>,
    ) -> Option<Switch> {
        if ticket.probe && ticket.idx != self.current {
            return self.record_probe(ticket.idx, verdict, now);
        }
        if ticket.detour && ticket.idx != self.current {
            self.record_detour(ticket.idx, verdict, now);
            return None;
        }
        if ticket.idx != self.current || ticket.epoch != self.epoch {
            // Stale: the attempt began before the last switch. Charging it now would
            // blame the new vendor (or start a second switch for the same episode).
            return None;
        }
        let threshold = self.threshold;
        let v = &mut self.vendors[ticket.idx];
        match verdict {
            Verdict::Fast => {
                v.consecutive_failures = 0;
                None
            }
            Verdict::Neutral => None,
            Verdict::Slow | Verdict::Failure => {
                v.consecutive_failures += 1;
                if v.consecutive_failures < threshold {
                    return None;
                }
                let failures = v.consecutive_failures;
                let from = self.current;
                self.demote(from, now);
                match choose_vendor(&self.candidates(), Some(from), now) {
                    Some(next) => {
                        self.make_current(next, format!("{failures} consecutive failures"))
                    }
                    None => {
                        // Nowhere to go: keep the only vendor, start a new episode.
                        self.epoch += 1;
                        None
                    }
                }
            }
        }
    }

    /// A detour's answer: failures in a row count against the vendor and put it to rest
    /// at the threshold, like a current vendor's, but the current vendor stays.
    fn record_detour(&mut self, idx: usize, verdict: Verdict, now: DateTime<Utc>) {
        let threshold = self.threshold;
        let v = &mut self.vendors[idx];
        match verdict {
            Verdict::Fast => v.consecutive_failures = 0,
            Verdict::Neutral => {}
            Verdict::Slow | Verdict::Failure => {
                if v.cooling_until.is_some_and(|until| until > now) {
                    // Already resting: a failure of an attempt begun before changes nothing.
                    return;
                }
                v.consecutive_failures += 1;
                if v.consecutive_failures >= threshold {
                    self.demote(idx, now);
                }
            }
        }
    }

    fn record_probe(&mut self, idx: usize, verdict: Verdict, now: DateTime<Utc>) -> Option<Switch> {
        match verdict {
            Verdict::Neutral => None,
            Verdict::Slow | Verdict::Failure => {
                self.demote(idx, now);
                None
            }
            Verdict::Fast => {
                let v = &mut self.vendors[idx];
                v.probe_successes += 1;
                let passed = v.probe_successes >= self.probe_successes;
                let still_worth_it = !v.disabled
                    && v.cooling_until.is_none_or(|until| until <= now)
                    && cheaper(self.price(idx), self.price(self.current));
                if passed && still_worth_it {
                    let probes = self.probe_successes;
                    self.make_current(idx, format!("recovered after {probes} good probes"))
                } else {
                    None
                }
            }
        }
    }

    /// Switches vendor `idx` off; leaves it if it was current.
    pub fn disable(&mut self, idx: usize, now: DateTime<Utc>) -> Option<Switch> {
        self.vendors[idx].disabled = true;
        if idx != self.current {
            return None;
        }
        match choose_vendor(&self.candidates(), Some(idx), now) {
            Some(next) => self.make_current(next, "disabled by operator".into()),
            None => {
                self.epoch += 1;
                None
            }
        }
    }

    /// Switches vendor `idx` back on and forgets its broken mappings (the operator fixed
    /// them); it becomes current if every other one is disabled.
    pub fn enable(&mut self, idx: usize) -> Option<Switch> {
        self.vendors[idx].disabled = false;
        for mask in self.broken.values_mut() {
            *mask &= !(1 << idx);
        }
        self.broken.retain(|_, mask| *mask != 0);
        if self.vendors[self.current].disabled {
            return self.make_current(idx, "enabled by operator".into());
        }
        None
    }

    /// Adds `messages` billed by vendor `idx` at `now` and returns their cost (see
    /// [`Usage::add`]).
    pub fn add_usage(&mut self, idx: usize, messages: u64, now: DateTime<Utc>) -> Money {
        self.usage.add(idx, messages, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{flat, t, utc8};

    impl VendorState {
        fn is_cooling(&self, now: DateTime<Utc>) -> bool {
            self.cooling_until.is_some_and(|until| until > now)
        }
    }

    fn health(prices: &[i64]) -> Health {
        let config = FailoverConfig {
            probe_every: 1,
            ..FailoverConfig::default()
        };
        Health::new(
            prices.iter().map(|p| flat(*p)).collect(),
            &config,
            utc8(),
            t(0),
        )
    }

    fn only(vendors: &[usize]) -> Route {
        Route {
            eligible: vendors.iter().fold(0, |mask, i| mask | 1 << i),
            pinned: None,
        }
    }

    #[test]
    fn a_route_without_the_current_vendor_detours_to_the_cheapest_that_can_send() {
        let mut h = health(&[40, 50, 45]);
        assert_eq!(h.current, 0);
        let ticket = h.begin_on(&only(&[1, 2]), t(0)).unwrap();
        assert_eq!((ticket.idx, ticket.detour, ticket.probe), (2, true, false));
        // Failures of a detour rest its vendor at the threshold; the current one stays.
        for _ in 0..2 {
            let ticket = h.begin_on(&only(&[1, 2]), t(0)).unwrap();
            assert_eq!(h.record(ticket, Verdict::Failure, t(0)), None);
        }
        assert!(h.vendors[2].is_cooling(t(1)));
        assert_eq!(h.current, 0);
        let ticket = h.begin_on(&only(&[1, 2]), t(1)).unwrap();
        assert_eq!(ticket.idx, 1, "the resting detour vendor is passed over");
        // No enabled vendor on the route: no ticket.
        h.disable(1, t(1));
        h.disable(2, t(1));
        assert!(h.begin_on(&only(&[1, 2]), t(1)).is_none());
        assert!(!h.can_route(&only(&[1, 2])));
        assert!(h.can_route(&Route::ANY));
    }

    #[test]
    fn a_pinned_message_goes_to_its_vendor_while_that_vendor_can_take_it() {
        let mut h = health(&[40, 50]);
        let pinned = Route {
            pinned: Some(1),
            ..Route::ANY
        };
        let ticket = h.begin_on(&pinned, t(0)).unwrap();
        assert_eq!((ticket.idx, ticket.detour), (1, true));
        // Broken for the message's template, or disabled: the pin gives way.
        let broken = Route {
            eligible: 1,
            pinned: Some(1),
        };
        assert_eq!(h.begin_on(&broken, t(0)).unwrap().idx, 0);
        h.disable(1, t(0));
        assert_eq!(h.begin_on(&pinned, t(0)).unwrap().idx, 0);
    }

    #[test]
    fn broken_mappings_are_news_once_and_enabling_the_vendor_clears_them() {
        let mut h = health(&[40, 50]);
        assert!(h.mark_broken("login", 1));
        assert!(!h.mark_broken("login", 1));
        assert!(h.mark_broken("notice", 1));
        assert_eq!(h.broken_mask("login"), 0b10);
        assert_eq!(h.broken_templates(1), ["login", "notice"]);
        assert!(h.broken_templates(0).is_empty());
        h.enable(1);
        assert_eq!(h.broken_mask("login"), 0);
        assert!(h.broken_templates(1).is_empty());
    }

    #[test]
    fn starts_on_the_cheapest_vendor() {
        assert_eq!(health(&[45, 40, 47]).current, 1);
    }

    #[test]
    fn switches_on_exactly_the_nth_failure() {
        let mut h = health(&[40, 45, 47]);
        let a = h.begin(t(0)).unwrap();
        assert_eq!(h.record(a, Verdict::Failure, t(0)), None);
        let b = h.begin(t(0)).unwrap();
        let switch = h.record(b, Verdict::Failure, t(0)).unwrap();
        assert_eq!((switch.from, switch.to), (0, 1));
        assert_eq!(h.vendors[0].cooling_until, Some(t(30)));
    }

    #[test]
    fn a_fast_success_breaks_the_streak_and_a_slow_one_counts() {
        let mut h = health(&[40, 45]);
        let a = h.begin(t(0)).unwrap();
        h.record(a, Verdict::Failure, t(0));
        let b = h.begin(t(0)).unwrap();
        h.record(b, Verdict::Fast, t(0));
        let c = h.begin(t(0)).unwrap();
        assert_eq!(h.record(c, Verdict::Slow, t(0)), None);
        let d = h.begin(t(0)).unwrap();
        assert!(h.record(d, Verdict::Slow, t(0)).is_some());
    }

    #[test]
    fn rejections_say_nothing_about_health() {
        let mut h = health(&[40, 45]);
        for _ in 0..5 {
            let a = h.begin(t(0)).unwrap();
            assert_eq!(h.record(a, Verdict::Neutral, t(0)), None);
        }
        assert_eq!(h.vendors[0].consecutive_failures, 0);
    }

    #[test]
    fn failures_started_before_a_switch_are_not_charged_to_the_new_vendor() {
        let mut h = health(&[40, 45, 47]);
        // Three attempts in flight on vendor 0.
        let tickets: Vec<Ticket> = (0..3).map(|_| h.begin(t(0)).unwrap()).collect();
        h.record(tickets[0], Verdict::Failure, t(0));
        assert!(h.record(tickets[1], Verdict::Failure, t(0)).is_some());
        assert_eq!(h.current, 1);
        // The third one fails late: vendor 1 is not blamed and nothing switches again.
        assert_eq!(h.record(tickets[2], Verdict::Failure, t(0)), None);
        assert_eq!(h.vendors[1].consecutive_failures, 0);
        assert_eq!(h.current, 1);
    }

    #[test]
    fn when_all_others_cool_down_the_earliest_end_is_taken() {
        let mut h = health(&[40, 45, 47]);
        for _ in 0..2 {
            let a = h.begin(t(0)).unwrap();
            h.record(a, Verdict::Failure, t(0));
        }
        assert_eq!(h.current, 1);
        for _ in 0..2 {
            let a = h.begin(t(1)).unwrap();
            h.record(a, Verdict::Failure, t(1));
        }
        assert_eq!(h.current, 2);
        // Vendor 2 fails at t=2: 0 rests until 30, 1 until 31: 0 ends first.
        for _ in 0..2 {
            let a = h.begin(t(2)).unwrap();
            h.record(a, Verdict::Failure, t(2));
        }
        assert_eq!(h.current, 0);
    }

    #[test]
    fn a_rested_cheaper_vendor_comes_back_after_good_probes() {
        let mut h = health(&[40, 45]);
        for _ in 0..2 {
            let a = h.begin(t(0)).unwrap();
            h.record(a, Verdict::Failure, t(0));
        }
        assert_eq!(h.current, 1);
        // Still resting: no probe goes to it.
        assert!(!h.begin(t(10)).unwrap().probe);
        // Rested: probes (probe_every = 1 here) go to it; three good ones promote it.
        for i in 0..3 {
            let p = h.begin(t(31)).unwrap();
            assert!(p.probe && p.idx == 0, "probe {i}");
            let switched = h.record(p, Verdict::Fast, t(31));
            assert_eq!(switched.is_some(), i == 2);
        }
        assert_eq!(h.current, 0);
    }

    #[test]
    fn a_failed_probe_rests_twice_as_long_so_it_does_not_flap() {
        let mut h = health(&[40, 45]);
        for _ in 0..2 {
            let a = h.begin(t(0)).unwrap();
            h.record(a, Verdict::Failure, t(0));
        }
        let p = h.begin(t(30)).unwrap();
        assert!(p.probe);
        assert_eq!(h.record(p, Verdict::Failure, t(30)), None);
        assert_eq!(
            h.current, 1,
            "a failed probe does not touch the current vendor"
        );
        assert_eq!(h.vendors[1].consecutive_failures, 0);
        assert_eq!(h.vendors[0].cooling_until, Some(t(30 + 60)));
        let p = h.begin(t(90)).unwrap();
        h.record(p, Verdict::Slow, t(90));
        assert_eq!(h.vendors[0].cooling_until, Some(t(90 + 120)));
        // Long after the flap window a demotion starts from the base cooldown again.
        let p = h.begin(t(5000)).unwrap();
        h.record(p, Verdict::Failure, t(5000));
        assert_eq!(h.vendors[0].cooling_until, Some(t(5030)));
    }

    #[test]
    fn once_a_cheaper_vendor_has_rested_one_attempt_in_probe_every_probes_it() {
        let config = FailoverConfig {
            consecutive_failures: 3,
            cooldown: Duration::from_secs(60),
            probe_every: 10,
            ..FailoverConfig::default()
        };
        let mut h = Health::new(
            vec![flat(40), flat(45)],
            &config,
            FixedOffset::east_opt(0).unwrap(),
            t(0),
        );
        for _ in 0..3 {
            let a = h.begin(t(0)).unwrap();
            h.record(a, Verdict::Failure, t(0));
        }
        assert_eq!(h.current, 1);
        let early = (0..20).filter(|_| h.begin(t(59)).unwrap().probe).count();
        assert_eq!(early, 0, "vendor 0 is still resting");
        let probes = (0..20).filter(|_| h.begin(t(60)).unwrap().probe).count();
        assert_eq!(probes, 2, "one in ten attempts is a probe");
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Start an attempt and keep its ticket.
        Begin,
        /// Finish the kept ticket number `n` (mod how many are kept) with a verdict.
        Finish(usize, u8),
        /// Let time pass.
        Wait(u16),
        Disable(usize),
        Enable(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Op::Begin),
            6 => (0usize..8, 0u8..4).prop_map(|(n, v)| Op::Finish(n, v)),
            1 => (0u16..120).prop_map(Op::Wait),
            1 => (0usize..3).prop_map(Op::Disable),
            1 => (0usize..3).prop_map(Op::Enable),
        ]
    }

    proptest::proptest! {
        #[test]
        fn health_invariants_hold_under_any_interleaving(
            ops in proptest::collection::vec(op(), 1..200),
            threshold in 1u32..4,
        ) {
            let config = FailoverConfig {
                consecutive_failures: threshold,
                probe_every: 3,
                ..FailoverConfig::default()
            };
            let mut h = Health::new(
                vec![flat(40), flat(45), flat(47)],
                &config,
                FixedOffset::east_opt(8 * 3600).unwrap(),
                t(0),
            );
            let mut now = 0i64;
            let mut in_flight: Vec<Ticket> = Vec::new();
            for op in ops {
                match op {
                    Op::Begin => {
                        if let Some(ticket) = h.begin(t(now)) {
                            proptest::prop_assert!(!h.vendors[ticket.idx].disabled);
                            in_flight.push(ticket);
                        } else {
                            proptest::prop_assert!(h.vendors.iter().all(|v| v.disabled));
                        }
                    }
                    Op::Finish(n, v) if !in_flight.is_empty() => {
                        let ticket = in_flight.remove(n % in_flight.len());
                        let verdict = [Verdict::Fast, Verdict::Slow, Verdict::Failure, Verdict::Neutral][v as usize];
                        let (current, epoch) = (h.current, h.epoch);
                        let before = h.vendors[current].consecutive_failures;
                        let switch = h.record(ticket, verdict, t(now));
                        if let Some(switch) = &switch {
                            // A switch leaves the vendor that was current and lands elsewhere.
                            proptest::prop_assert_eq!(switch.from, current);
                            proptest::prop_assert_ne!(switch.to, current);
                            proptest::prop_assert!(!h.vendors[switch.to].disabled);
                            proptest::prop_assert_eq!(h.epoch, epoch + 1);
                            if !ticket.probe {
                                // Failure switches happen on exactly the N-th failure.
                                proptest::prop_assert_eq!(before + 1, threshold);
                                proptest::prop_assert!(h.vendors[current].is_cooling(t(now)));
                            }
                        }
                        let stale = ticket.idx != current || ticket.epoch != epoch;
                        if stale && !ticket.probe {
                            // Stale results never change anybody's count.
                            proptest::prop_assert!(switch.is_none());
                            proptest::prop_assert_eq!(h.vendors[current].consecutive_failures, before);
                        }
                    }
                    Op::Finish(..) => {}
                    Op::Wait(secs) => now += i64::from(secs),
                    Op::Disable(i) => {
                        h.disable(i, t(now));
                    }
                    Op::Enable(i) => {
                        h.enable(i);
                    }
                }
                proptest::prop_assert!(h.vendors[h.current].consecutive_failures < threshold);
                if h.vendors.iter().any(|v| !v.disabled) {
                    proptest::prop_assert!(!h.vendors[h.current].disabled);
                }
            }
        }
    }
}
