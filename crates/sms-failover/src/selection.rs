//! Which vendor to use next: the cheapest healthy one, as a pure function.
//!
//! Taking the vendor *after* the current one in fee order could land on a vendor known
//! to be down, would never come back to the cheap one, and would order equal fees
//! arbitrarily. The rule is:
//!
//! 1. Among vendors that can send the message (an approved template), are neither
//!    disabled nor excluded (the one being left) and are not cooling down at `now`, take
//!    the cheapest at its current billed volume.
//! 2. Equal prices go to the vendor configured first.
//! 3. If every such vendor is cooling down, take the one whose cooldown ends first
//!    (equal ends: configured first).
//! 4. A price of zero or below is treated as a broken price list, not as free: such a
//!    vendor ranks after every vendor with a real price (a gap in a tier table once made
//!    one vendor cost 0 and win every comparison).

use chrono::{DateTime, Utc};
use sms_core::Money;

/// One vendor as the selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Per-message price at the vendor's billed volume this period.
    pub price: Money,
    /// End of its cooldown, if it was demoted.
    pub cooling_until: Option<DateTime<Utc>>,
    /// Switched off by an operator.
    pub disabled: bool,
    /// Has a working template for the message (always, for a choice for every message).
    pub can_send: bool,
}

impl Candidate {
    /// Whether the vendor is resting at `now`.
    pub fn is_cooling(&self, now: DateTime<Utc>) -> bool {
        self.cooling_until.is_some_and(|until| until > now)
    }
}

/// Sort key of a price: real prices first (cheapest first), then non-positive ones.
pub fn price_rank(price: Money) -> (bool, Money) {
    (price <= Money::ZERO, price)
}

/// Whether `a` is strictly cheaper than `b` by [`price_rank`].
pub fn cheaper(a: Money, b: Money) -> bool {
    price_rank(a) < price_rank(b)
}

/// The index of the vendor to use, by the rule in the module docs; `None` when every
/// vendor that can send the message is disabled or excluded.
pub fn choose_vendor(
    candidates: &[Candidate],
    exclude: Option<usize>,
    now: DateTime<Utc>,
) -> Option<usize> {
    let usable = || {
        candidates
            .iter()
            .enumerate()
            .filter(move |(i, c)| Some(*i) != exclude && !c.disabled && c.can_send)
    };
    // `min_by_key` keeps the first of equal keys; the index in the key makes that explicit.
    usable()
        .filter(|(_, c)| !c.is_cooling(now))
        .min_by_key(|(i, c)| (price_rank(c.price), *i))
        .map(|(i, _)| i)
        .or_else(|| {
            usable()
                .min_by_key(|(i, c)| (c.cooling_until, *i))
                .map(|(i, _)| i)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn healthy(micros: i64) -> Candidate {
        Candidate {
            price: Money::from_micros(micros),
            cooling_until: None,
            disabled: false,
            can_send: true,
        }
    }

    #[test]
    fn takes_the_cheapest_healthy_vendor_not_the_next_in_price_order() {
        // Prices: a 0.045, b 0.047, c 0.040. Leaving c (the cheapest), the old design
        // took "the one after c in price order" = a; here that is also the cheapest
        // remaining. But when a is cooling down, the old design still took a.
        let mut vendors = vec![healthy(45_000), healthy(47_000), healthy(40_000)];
        assert_eq!(choose_vendor(&vendors, Some(2), at(0)), Some(0));
        vendors[0].cooling_until = Some(at(30));
        assert_eq!(choose_vendor(&vendors, Some(2), at(0)), Some(1));
        // Once a's cooldown has ended it is eligible again.
        assert_eq!(choose_vendor(&vendors, Some(2), at(30)), Some(0));
    }

    #[test]
    fn prices_decide_not_round_robin() {
        // With the fee type mismatch every fee became 1.0 and switching degraded to
        // round-robin; real, distinct prices must decide.
        let vendors = vec![healthy(48_000), healthy(47_000), healthy(36_000)];
        assert_eq!(choose_vendor(&vendors, None, at(0)), Some(2));
        assert_eq!(choose_vendor(&vendors, Some(2), at(0)), Some(1));
        assert_eq!(choose_vendor(&vendors, Some(1), at(0)), Some(2));
    }

    #[test]
    fn a_zero_price_from_a_tier_gap_never_wins() {
        let vendors = vec![healthy(45_000), healthy(0), healthy(47_000)];
        assert_eq!(choose_vendor(&vendors, None, at(0)), Some(0));
        assert!(!cheaper(Money::ZERO, Money::from_micros(45_000)));
        // But it is still usable when nothing else is.
        assert_eq!(choose_vendor(&vendors, Some(0), at(0)), Some(2));
        let only_zero = vec![healthy(45_000), healthy(0)];
        assert_eq!(choose_vendor(&only_zero, Some(0), at(0)), Some(1));
    }

    #[test]
    fn disabled_and_excluded_vendors_are_never_chosen() {
        let mut vendors = vec![healthy(1), healthy(2)];
        vendors[1].disabled = true;
        assert_eq!(choose_vendor(&vendors, Some(0), at(0)), None);
        assert_eq!(choose_vendor(&vendors, None, at(0)), Some(0));
    }

    fn candidate() -> impl Strategy<Value = Candidate> {
        (
            0i64..6,
            proptest::option::of(-5i64..5),
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.7),
        )
            .prop_map(|(price, cooling, disabled, can_send)| Candidate {
                // Few distinct prices, so ties are common.
                price: Money::from_micros(price * 1000),
                cooling_until: cooling.map(at),
                disabled,
                can_send,
            })
    }

    proptest! {
        #[test]
        fn choice_is_the_cheapest_healthy_then_first_configured(
            vendors in proptest::collection::vec(candidate(), 1..6),
            exclude in proptest::option::of(0usize..6),
        ) {
            let now = at(0);
            let chosen = choose_vendor(&vendors, exclude, now);
            let usable: Vec<usize> = (0..vendors.len())
                .filter(|i| Some(*i) != exclude && !vendors[*i].disabled && vendors[*i].can_send)
                .collect();
            let healthy: Vec<usize> = usable.iter().copied()
                .filter(|i| !vendors[*i].is_cooling(now))
                .collect();
            match chosen {
                None => prop_assert!(usable.is_empty()),
                Some(c) => {
                    prop_assert!(vendors[c].can_send, "never a vendor without the template");
                    prop_assert!(usable.contains(&c));
                    if healthy.is_empty() {
                        // All cooling: the earliest end, ties by order.
                        for &i in &usable {
                            let (ci, ii) = (vendors[c].cooling_until, vendors[i].cooling_until);
                            prop_assert!(ci < ii || (ci == ii && c <= i));
                        }
                    } else {
                        prop_assert!(healthy.contains(&c));
                        for &i in &healthy {
                            // Nobody healthy is cheaper; equal prices go to the first configured.
                            prop_assert!(!cheaper(vendors[i].price, vendors[c].price));
                            if price_rank(vendors[i].price) == price_rank(vendors[c].price) {
                                prop_assert!(c <= i);
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn cheaper_is_a_strict_order_with_real_prices_first(a in -100i64..100, b in -100i64..100) {
            let (a, b) = (Money::from_micros(a), Money::from_micros(b));
            prop_assert!(!(cheaper(a, b) && cheaper(b, a)));
            prop_assert!(!cheaper(a, a));
            if a > Money::ZERO && b > Money::ZERO {
                prop_assert_eq!(cheaper(a, b), a < b);
            }
            if a > Money::ZERO && b <= Money::ZERO {
                prop_assert!(cheaper(a, b));
            }
        }
    }
}
