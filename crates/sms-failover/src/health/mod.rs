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
//! `cooldown_max`), so a vendor that keeps failing is tried less and less often. Each
//! probe belongs to the rest it ends: when many probes are in flight at once, the first
//! failure demotes the vendor and the others' answers are stale, so one episode doubles
//! the cooldown once.
//!
//! A resting vendor gets no attempts. When every vendor rests at once, nothing is
//! attempted until the first rest ends: the gateway reports the outage once (a
//! [`Notice`]) and keeps the demoted vendor current; once a rest ends, the cheapest
//! vendor whose rest is over takes over. The outage ends with the first delivered attempt.
//! This keeps an outage of every vendor from spending each message's retries on vendors
//! known to be down, and from cycling through them.
//!
//! Prices come from the billed volumes ([`Usage`]), kept under the same lock so that a
//! switch compares the prices of every message billed so far.
//!
//! With a board, this state (all but the billed usage and the probe counter) is a copy
//! of the deployment's: see the gateway's `shared` module and [`board`].
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

mod board;

pub(crate) use board::{HealthDoc, HealthOp, SwitchDoc};

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
    /// How many times the vendor had been demoted when the attempt began: a probe's
    /// answer counts only for the rest it probed, so many probes in flight at once end
    /// one rest, once.
    pub rests: u64,
    /// With a board: the number of this probe's claim on it (0: none), given back when
    /// its answer is recorded.
    pub claim: u64,
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

/// Why no attempt can begin now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// No enabled vendor is on the route.
    NoVendor,
    /// Every enabled vendor on the route rests; the first rest ends at `until`.
    Resting { until: DateTime<Utc> },
}

/// A change in whether any vendor can be used, for the log and the observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The current vendor was put to rest and every other one rests or is disabled:
    /// nothing is attempted until `until`.
    AllUnavailable { until: DateTime<Utc> },
    /// Vendor `idx` delivered again after every vendor was unavailable since `since`.
    AvailableAgain { idx: usize, since: DateTime<Utc> },
}

/// One vendor's health.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct VendorState {
    pub consecutive_failures: u32,
    pub cooling_until: Option<DateTime<Utc>>,
    pub disabled: bool,
    /// Demotions in a row, each within `flap_window` of the previous one.
    demotion_streak: u32,
    /// Demotions ever: the rest a probe's ticket belongs to.
    rests: u64,
    last_demoted_at: Option<DateTime<Utc>>,
    probe_successes: u32,
    /// With a board: receipts the deployment's instances have tallied for it since its
    /// last full window, and how many of them said delivered.
    receipts_total: u32,
    receipts_delivered: u32,
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
    /// Receipts a deployment's delivery rate is judged over, and the rate under which
    /// the vendor is demoted (see [`HealthOp::Receipts`]).
    receipt_window: u32,
    min_delivery_rate: f64,
    /// Since when, and from which epoch on, every vendor has been unavailable, until an
    /// attempt begun since then delivers.
    unavailable_since: Option<(DateTime<Utc>, u64)>,
    /// A change of availability not yet reported.
    notice: Option<Notice>,
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
            receipt_window: config.receipt_window,
            min_delivery_rate: config.min_delivery_rate,
            unavailable_since: None,
            notice: None,
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
    /// when no vendor can be used now.
    #[cfg(test)]
    pub fn begin(&mut self, now: DateTime<Utc>) -> Option<Ticket> {
        self.begin_on(&Route::ANY, now).ok()
    }

    /// Whether vendor `idx` can take an attempt of a message on `route` at `now`: on
    /// the route, enabled and not resting.
    fn usable(&self, idx: usize, route: &Route, now: DateTime<Utc>) -> bool {
        let v = &self.vendors[idx];
        route.allows(idx) && !v.disabled && v.cooling_until.is_none_or(|until| until <= now)
    }

    /// The cheapest vendor usable for `route` at `now`, other than `exclude`.
    fn cheapest_usable(
        &self,
        route: &Route,
        exclude: Option<usize>,
        now: DateTime<Utc>,
    ) -> Option<usize> {
        (0..self.vendors.len())
            .filter(|&i| Some(i) != exclude && self.usable(i, route, now))
            .min_by_key(|&i| (price_rank(self.price(i)), i))
    }

    /// Why nothing on `route` can be attempted now (when nothing can).
    fn blocked(&self, route: &Route) -> Blocked {
        (0..self.vendors.len())
            .filter(|&i| route.allows(i) && !self.vendors[i].disabled)
            .filter_map(|i| self.vendors[i].cooling_until)
            .min()
            .map_or(Blocked::NoVendor, |until| Blocked::Resting { until })
    }

    /// When no vendor at all can take an attempt at `now`, why.
    pub fn unavailable(&self, now: DateTime<Utc>) -> Option<Blocked> {
        match self.cheapest_usable(&Route::ANY, None, now) {
            Some(_) => None,
            None => Some(self.blocked(&Route::ANY)),
        }
    }

    /// While the current vendor rests and another one has ended its rest (every vendor
    /// rested at once), makes the cheapest such vendor current.
    pub fn wake(&mut self, now: DateTime<Utc>) -> Option<Switch> {
        let current = &self.vendors[self.current];
        if current.disabled || current.cooling_until.is_none_or(|until| until <= now) {
            return None;
        }
        let next = self.cheapest_usable(&Route::ANY, Some(self.current), now)?;
        self.make_current(
            next,
            "its rest ended first while every vendor was unavailable".into(),
        )
    }

    /// Picks the vendor for the next attempt of a message on `route`: its pinned vendor
    /// while enabled, else the current vendor (or, one attempt in `probe_every`, a rested
    /// cheaper one to probe), else the cheapest usable vendor on the route as a detour.
    /// A resting vendor takes no attempt: when every vendor on the route rests, the
    /// answer says until when.
    pub fn begin_on(&mut self, route: &Route, now: DateTime<Utc>) -> Result<Ticket, Blocked> {
        if let Some(pinned) = route.pinned {
            if pinned < self.vendors.len() && route.allows(pinned) && !self.vendors[pinned].disabled
            {
                // Another vendor would get around the number's limit: wait for this one.
                return match self.vendors[pinned].cooling_until {
                    Some(until) if until > now => Err(Blocked::Resting { until }),
                    _ => Ok(self.ticket(pinned, false)),
                };
            }
        }
        if !self.usable(self.current, route, now) {
            return match self.cheapest_usable(route, None, now) {
                Some(idx) => Ok(self.ticket(idx, false)),
                None => Err(self.blocked(route)),
            };
        }
        self.attempts = self.attempts.wrapping_add(1);
        if self.attempts % self.probe_every == 0 {
            if let Some(idx) = self.probe_candidate(route, now) {
                return Ok(self.ticket(idx, true));
            }
        }
        Ok(self.ticket(self.current, false))
    }

    /// The ticket of an attempt on vendor `idx` begun now.
    fn ticket(&self, idx: usize, probe: bool) -> Ticket {
        Ticket {
            idx,
            epoch: self.epoch,
            probe,
            detour: !probe && idx != self.current,
            rests: self.vendors[idx].rests,
            claim: 0,
        }
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
        v.rests += 1;
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
        if let (Verdict::Fast | Verdict::Slow, Some((since, epoch))) =
            (verdict, self.unavailable_since)
        {
            // An attempt begun before the outage says nothing about the vendors now.
            if ticket.epoch >= epoch {
                self.unavailable_since = None;
                self.notice = Some(Notice::AvailableAgain {
                    idx: ticket.idx,
                    since,
                });
            }
        }
        if ticket.probe && ticket.idx != self.current {
            if ticket.rests != self.vendors[ticket.idx].rests {
                // A probe of a rest that already ended (another probe failed first).
                return None;
            }
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
                self.demote_current(from, format!("{failures} consecutive failures"), now)
            }
        }
    }

    /// Puts vendor `idx` to rest for a reason other than its calls' failures (its
    /// delivery receipts), as a failing vendor is: when current, the gateway switches
    /// to the cheapest usable vendor. A vendor that rests already, or is disabled,
    /// is left alone.
    pub fn demote_for(&mut self, idx: usize, reason: String, now: DateTime<Utc>) -> Option<Switch> {
        let v = &self.vendors[idx];
        if v.disabled || v.cooling_until.is_some_and(|until| until > now) {
            return None;
        }
        if idx != self.current {
            self.demote(idx, now);
            return None;
        }
        self.demote_current(idx, reason, now)
    }

    /// Demotes the current vendor `from` and makes the cheapest usable one current.
    fn demote_current(
        &mut self,
        from: usize,
        reason: String,
        now: DateTime<Utc>,
    ) -> Option<Switch> {
        self.demote(from, now);
        if let Some(next) = self.cheapest_usable(&Route::ANY, Some(from), now) {
            return self.make_current(next, reason);
        }
        // Nowhere to go: every vendor rests or is disabled. The demoted vendor stays
        // current and a new episode starts; nothing is attempted until a rest ends.
        self.epoch += 1;
        if self.unavailable_since.is_none() {
            self.unavailable_since = Some((now, self.epoch));
            if let Blocked::Resting { until } = self.blocked(&Route::ANY) {
                self.notice = Some(Notice::AllUnavailable { until });
            }
        }
        None
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

    /// The change of availability the last [`record`](Self::record) made, once.
    pub fn take_notice(&mut self) -> Option<Notice> {
        self.notice.take()
    }

    /// Adds `messages` billed by vendor `idx` at `now` and returns their cost (see
    /// [`Usage::add`]).
    pub fn add_usage(&mut self, idx: usize, messages: u64, now: DateTime<Utc>) -> Money {
        self.usage.add(idx, messages, now)
    }
}

#[cfg(test)]
mod tests;
