//! Health's rules, case by case: switching, stale failures, probes, flapping, routes.
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
    assert!(h.begin_on(&only(&[1, 2]), t(1)).is_err());
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
fn when_every_vendor_rests_nothing_is_attempted_until_the_first_rest_ends() {
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
    assert_eq!(h.take_notice(), None);
    // Vendor 2 fails at t=2 too: 0 rests until 30, 1 until 31, 2 until 32.
    let begun_before = h.begin(t(2)).unwrap();
    for _ in 0..2 {
        let a = h.begin(t(2)).unwrap();
        h.record(a, Verdict::Failure, t(2));
    }
    assert_eq!(h.current, 2, "no switch to a vendor that rests");
    assert_eq!(
        h.take_notice(),
        Some(Notice::AllUnavailable { until: t(30) })
    );
    assert_eq!(h.begin(t(10)), None, "a resting vendor takes no attempt");
    // A delivery of an attempt begun before says nothing about the vendors now.
    h.record(begun_before, Verdict::Fast, t(3));
    assert_eq!(h.take_notice(), None);
    assert_eq!(
        h.unavailable(t(10)),
        Some(Blocked::Resting { until: t(30) })
    );
    assert_eq!(h.wake(t(10)), None);
    // The first rest ends: that vendor takes over and gets the attempts.
    let switch = h.wake(t(30)).expect("a switch");
    assert_eq!((switch.from, switch.to), (2, 0));
    assert_eq!(h.unavailable(t(30)), None);
    let a = h.begin(t(30)).unwrap();
    assert_eq!(a.idx, 0);
    h.record(a, Verdict::Fast, t(30));
    assert_eq!(
        h.take_notice(),
        Some(Notice::AvailableAgain {
            idx: 0,
            since: t(2)
        })
    );
    assert_eq!(h.take_notice(), None, "each notice is given once");
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
                    let current = h.current;
                    if let Some(switch) = h.wake(t(now)) {
                        // Only away from a resting vendor, to one whose rest is over.
                        proptest::prop_assert_eq!(switch.from, current);
                        proptest::prop_assert!(h.vendors[current].is_cooling(t(now)));
                        proptest::prop_assert!(!h.vendors[switch.to].is_cooling(t(now)));
                    }
                    if let Some(ticket) = h.begin(t(now)) {
                        proptest::prop_assert!(!h.vendors[ticket.idx].disabled);
                        // A resting vendor takes no attempt.
                        proptest::prop_assert!(!h.vendors[ticket.idx].is_cooling(t(now)));
                        in_flight.push(ticket);
                    } else {
                        let now = t(now);
                        proptest::prop_assert!(h.vendors.iter().all(|v| v.disabled || v.is_cooling(now)));
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

#[test]
fn concurrent_failed_probes_of_one_rest_demote_it_once() {
    let mut h = health(&[40, 45]);
    for _ in 0..2 {
        let a = h.begin(t(0)).unwrap();
        h.record(a, Verdict::Failure, t(0));
    }
    assert_eq!(h.current, 1);
    assert_eq!(h.vendors[0].cooling_until, Some(t(30)));
    // Rested: at 1,000 requests a second many probes are in flight at once.
    let probes: Vec<Ticket> = (0..6).map(|_| h.begin(t(31)).unwrap()).collect();
    assert!(probes.iter().all(|p| p.probe && p.idx == 0));
    for p in probes {
        h.record(p, Verdict::Failure, t(32));
    }
    // One episode, one demotion: twice the cooldown (flapping), not 2^6 times.
    assert_eq!(h.vendors[0].cooling_until, Some(t(32 + 60)));
}
