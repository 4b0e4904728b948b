//! Tiered per-message price lists, and the built-in lists of the three vendors.
//!
//! A schedule is a list of tiers, each covering the billed volume from the previous
//! tier's `up_to` (or 0) up to its own `up_to`, exclusive; the last tier has no `up_to`
//! and covers everything beyond. In TOML:
//!
//! ```toml
//! tiers = [
//!     { up_to = 100000, price = "0.045" },
//!     { up_to = 300000, price = "0.040" },
//!     { price = "0.036" },
//! ]
//! ```
//!
//! Schedules are checked when they are loaded. A list with a gap, such as one that ends
//! at a bound with no tier after it, would price every message past the gap at 0, and
//! its vendor would then win every cheapest-vendor comparison; such a list is refused
//! instead of silently costing nothing.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use sms_core::{FeeSchedule, Money, NextTier};

use crate::ConfigError;

/// One tier of a schedule: the price of each message billed while the period's volume
/// is below `up_to` (and at or above the previous tier's `up_to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Exclusive upper bound of the billed volume this tier covers; `None` for the last,
    /// open-ended tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<u64>,
    /// Price of one message in this tier. Written as a string (`"0.045"`) so no float
    /// rounding creeps in; whole numbers are accepted too.
    #[serde(deserialize_with = "deserialize_price")]
    pub price: Money,
}

impl Tier {
    /// A tier ending (exclusively) at `up_to`.
    pub const fn bounded(up_to: u64, price: Money) -> Self {
        Self {
            up_to: Some(up_to),
            price,
        }
    }

    /// The last tier, covering every volume from the previous bound on.
    pub const fn open_ended(price: Money) -> Self {
        Self { up_to: None, price }
    }
}

/// A validated tiered price list.
///
/// Cheap to query: [`price_at`](FeeSchedule::price_at) is a binary search over the
/// tiers and [`cost_of`](FeeSchedule::cost_of) is two of them, whatever the count,
/// because the cost of every whole tier below each bound is computed once at load time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FeeScheduleSpec", into = "FeeScheduleSpec")]
pub struct TieredFeeSchedule {
    tiers: Vec<Tier>,
    /// `cost_before[i]`: cost in millionths of billing every message from 0 up to the start
    /// of tier `i`. `i128` so that no realistic (or unrealistic) volume overflows.
    cost_before: Vec<i128>,
}

/// The on-disk shape: `tiers = [...]`. Kept apart from [`TieredFeeSchedule`] so that
/// deserialising always goes through validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeeScheduleSpec {
    tiers: Vec<Tier>,
}

impl TieredFeeSchedule {
    /// Validates `tiers` (in order of volume) and builds the schedule.
    ///
    /// Refused, with the offending tier named: no tiers; a negative price; an `up_to`
    /// that is not above the previous one (or is 0); a tier without `up_to` that is not the
    /// last; a last tier with `up_to` (volumes beyond it would have no price).
    pub fn from_tiers(tiers: Vec<Tier>) -> Result<Self, ConfigError> {
        validate(&tiers)?;
        let mut cost_before = Vec::with_capacity(tiers.len());
        let mut cost = 0i128;
        let mut start = 0u64;
        for tier in &tiers {
            cost_before.push(cost);
            if let Some(end) = tier.up_to {
                cost += i128::from(end - start) * i128::from(tier.price.micros());
                start = end;
            }
        }
        Ok(Self { tiers, cost_before })
    }

    /// The tiers, in order of volume; the last is open-ended.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Index of the tier containing `volume`. Always valid: the last tier is open-ended.
    fn tier_index(&self, volume: u128) -> usize {
        self.tiers
            .partition_point(|t| t.up_to.is_some_and(|end| u128::from(end) <= volume))
    }

    /// Cost in millionths of billing messages number 0 to `volume - 1`.
    fn cumulative_cost(&self, volume: u128) -> i128 {
        let index = self.tier_index(volume);
        let start = match index {
            0 => 0,
            _ => self.tiers[index - 1].up_to.map_or(0, u128::from),
        };
        // `volume - start` fits: both are below 2^65.
        let in_tier = (volume - start) as i128;
        self.cost_before[index] + in_tier * i128::from(self.tiers[index].price.micros())
    }
}

fn validate(tiers: &[Tier]) -> Result<(), ConfigError> {
    if tiers.is_empty() {
        return Err(ConfigError::FeeSchedule(
            "expected at least one tier, found none; the last one must be open-ended, like { price = \"0.04\" }"
                .into(),
        ));
    }
    let last = tiers.len() - 1;
    let mut previous_bound = 0u64;
    for (index, tier) in tiers.iter().enumerate() {
        let problem = |problem: String| ConfigError::FeeTier {
            tier: index,
            problem,
        };
        if tier.price.is_negative() {
            return Err(problem(format!(
                "price must not be negative, found {}",
                tier.price
            )));
        }
        match (tier.up_to, index == last) {
            (None, true) => {}
            (None, false) => {
                return Err(problem(format!(
                    "only the last tier may be open-ended, but this one has no up_to and {} more follow",
                    last - index
                )));
            }
            (Some(bound), true) => {
                return Err(problem(format!(
                    "the last tier must be open-ended (no up_to), found up_to = {bound}: volumes from {bound} on would have no price"
                )));
            }
            (Some(bound), false) => {
                if bound <= previous_bound {
                    let expected = if index == 0 {
                        "above 0".to_owned()
                    } else {
                        format!("above the previous tier's up_to ({previous_bound})")
                    };
                    return Err(problem(format!("up_to must be {expected}, found {bound}")));
                }
                previous_bound = bound;
            }
        }
    }
    Ok(())
}

impl FeeSchedule for TieredFeeSchedule {
    fn price_at(&self, billed_volume: u64) -> Money {
        self.tiers[self.tier_index(u128::from(billed_volume))].price
    }

    /// Exact marginal cost: each message is priced at its own position, so a batch that
    /// crosses a bound pays both tiers' prices. Saturates at the largest [`Money`] rather
    /// than panicking (it would take some 10¹⁴ messages to get there).
    fn cost_of(&self, billed_volume: u64, count: u64) -> Money {
        let start = u128::from(billed_volume);
        let cost = self.cumulative_cost(start + u128::from(count)) - self.cumulative_cost(start);
        Money::from_micros(i64::try_from(cost).unwrap_or(i64::MAX))
    }

    fn next_tier(&self, billed_volume: u64) -> Option<NextTier> {
        let index = self.tier_index(u128::from(billed_volume));
        let from_volume = self.tiers[index].up_to?;
        let next = self.tiers.get(index + 1)?;
        Some(NextTier {
            from_volume,
            price: next.price,
        })
    }
}

/// An optional schedule written as a bare list of tiers, the way a vendor's entry in a
/// configuration file gives its prices (`fees = [{ up_to = 100000, price = "0.045" },
/// { price = "0.040" }]`); absent means none. For fields of type
/// `Option<TieredFeeSchedule>` with `#[serde(default, with = "optional_tier_list")]`.
pub mod optional_tier_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Tier, TieredFeeSchedule};

    /// Writes the tiers, or nothing.
    pub fn serialize<S: Serializer>(
        schedule: &Option<TieredFeeSchedule>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        schedule
            .as_ref()
            .map(TieredFeeSchedule::tiers)
            .serialize(serializer)
    }

    /// Reads the tiers and validates them: a schedule with a gap is refused here, naming
    /// the tier.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<TieredFeeSchedule>, D::Error> {
        Option::<Vec<Tier>>::deserialize(deserializer)?
            .map(TieredFeeSchedule::from_tiers)
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

impl TryFrom<FeeScheduleSpec> for TieredFeeSchedule {
    type Error = ConfigError;
    fn try_from(spec: FeeScheduleSpec) -> Result<Self, Self::Error> {
        Self::from_tiers(spec.tiers)
    }
}

impl From<TieredFeeSchedule> for FeeScheduleSpec {
    fn from(schedule: TieredFeeSchedule) -> Self {
        Self {
            tiers: schedule.tiers,
        }
    }
}

/// Accepts `"0.045"` and whole numbers; refuses floats with a hint, because `0.045` as a
/// TOML float is not exactly 0.045 and prices must be exact.
fn deserialize_price<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
    struct PriceVisitor;

    impl serde::de::Visitor<'_> for PriceVisitor {
        type Value = Money;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a price as a decimal string like \"0.045\"")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
            v.parse().map_err(E::custom)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Money, E> {
            v.checked_mul(1_000_000)
                .map(Money::from_micros)
                .ok_or_else(|| E::custom(format!("price {v} is too large")))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Money, E> {
            let v = i64::try_from(v).map_err(|_| E::custom(format!("price {v} is too large")))?;
            self.visit_i64(v)
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Money, E> {
            Err(E::custom(format!(
                "expected the price as a string like \"{v}\", found the number {v}: floats are not exact"
            )))
        }
    }

    deserializer.deserialize_any(PriceVisitor)
}

/// `micros` millionths: the built-in lists are written in these to stay `const`-simple.
const fn micros(micros: i64) -> Money {
    Money::from_micros(micros)
}

fn built_in(tiers: Vec<Tier>) -> TieredFeeSchedule {
    TieredFeeSchedule::from_tiers(tiers).expect("built-in fee schedules are valid")
}

/// Aliyun's list: <100k 0.045, <300k 0.040, <500k 0.039, <1M 0.038, <3M 0.037, then
/// 0.036.
pub fn aliyun() -> TieredFeeSchedule {
    built_in(vec![
        Tier::bounded(100_000, micros(45_000)),
        Tier::bounded(300_000, micros(40_000)),
        Tier::bounded(500_000, micros(39_000)),
        Tier::bounded(1_000_000, micros(38_000)),
        Tier::bounded(3_000_000, micros(37_000)),
        Tier::open_ended(micros(36_000)),
    ])
}

/// Tencent Cloud's list. Only its ends are given: <10k 0.047, falling in steps to
/// 0.038. The intermediate steps here (<50k 0.045, <100k 0.043, <300k 0.041,
/// <1M 0.040) are an assumption, not Tencent's published prices. Configure the real
/// list when it matters.
pub fn tencent() -> TieredFeeSchedule {
    built_in(vec![
        Tier::bounded(10_000, micros(47_000)),
        Tier::bounded(50_000, micros(45_000)),
        Tier::bounded(100_000, micros(43_000)),
        Tier::bounded(300_000, micros(41_000)),
        Tier::bounded(1_000_000, micros(40_000)),
        Tier::open_ended(micros(38_000)),
    ])
}

/// Cloopen's list: <10,417 0.048, <22,222 0.045, <47,619 0.042, <125,000 0.040, and
/// from 125,000 on still 0.040. The list as given stops at 125,000; taken as it is, it
/// would price every message beyond at 0 and Cloopen would always look cheapest. No
/// lower price is known for that volume, so the last price simply continues.
pub fn cloopen() -> TieredFeeSchedule {
    built_in(vec![
        Tier::bounded(10_417, micros(48_000)),
        Tier::bounded(22_222, micros(45_000)),
        Tier::bounded(47_619, micros(42_000)),
        Tier::bounded(125_000, micros(40_000)),
        Tier::open_ended(micros(40_000)),
    ])
}

/// The built-in schedule of a vendor by name (`aliyun`, `tencent`, `cloopen`), or `None`
/// for a vendor this crate has no list for.
pub fn default_for(vendor: &str) -> Option<TieredFeeSchedule> {
    match vendor {
        "aliyun" => Some(aliyun()),
        "tencent" => Some(tencent()),
        "cloopen" => Some(cloopen()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn money(text: &str) -> Money {
        text.parse().unwrap()
    }

    #[test]
    fn price_follows_the_tier_containing_the_volume() {
        let aliyun = aliyun();
        assert_eq!(aliyun.price_at(0), money("0.045"));
        assert_eq!(aliyun.price_at(99_999), money("0.045"));
        // A bound is exclusive: message number 100,000 is the first of the next tier.
        assert_eq!(aliyun.price_at(100_000), money("0.040"));
        assert_eq!(aliyun.price_at(2_999_999), money("0.037"));
        assert_eq!(aliyun.price_at(3_000_000), money("0.036"));
        assert_eq!(aliyun.price_at(u64::MAX), money("0.036"));
    }

    #[test]
    fn the_next_tier_is_where_the_price_changes_and_the_last_has_none() {
        let aliyun = aliyun();
        let next = |volume| aliyun.next_tier(volume);
        assert_eq!(
            next(0),
            Some(NextTier {
                from_volume: 100_000,
                price: money("0.040")
            })
        );
        assert_eq!(next(99_999).map(|t| t.from_volume), Some(100_000));
        assert_eq!(
            next(100_000).map(|t| t.price),
            Some(aliyun.price_at(next(100_000).unwrap().from_volume))
        );
        assert_eq!(next(3_000_000), None, "the open-ended tier has no next");
        let flat = TieredFeeSchedule::from_tiers(vec![Tier::open_ended(money("0.05"))]).unwrap();
        assert_eq!(flat.next_tier(0), None);
    }

    #[test]
    fn cloopen_past_125000_is_not_free() {
        // The list as given stops at 125,000: beyond it the last price continues.
        let cloopen = cloopen();
        for volume in [124_999, 125_000, 125_001, 10_000_000, u64::MAX] {
            assert_eq!(cloopen.price_at(volume), money("0.040"), "at {volume}");
        }
        assert_eq!(cloopen.cost_of(125_000, 1_000), money("40"));
        // So past 125,000 Cloopen no longer undercuts the others for free.
        assert!(cloopen.price_at(200_000) >= aliyun().price_at(200_000));
    }

    #[test]
    fn a_batch_crossing_a_bound_pays_both_tiers() {
        let aliyun = aliyun();
        // 10 messages at 0.045 and 10 at 0.040.
        assert_eq!(aliyun.cost_of(99_990, 20), money("0.85"));
        assert_eq!(aliyun.cost_of(0, 0), Money::ZERO);
        // The whole first tier, exactly.
        assert_eq!(aliyun.cost_of(0, 100_000), money("4500"));
        // Every tier at once: 4500 + 8000 + 7800 + 19000 + 74000 + 1000 × 0.036.
        assert_eq!(aliyun.cost_of(0, 3_001_000), money("113336"));
    }

    #[test]
    fn enormous_volumes_saturate_instead_of_panicking() {
        let cost = aliyun().cost_of(u64::MAX, u64::MAX);
        assert_eq!(cost, Money::from_micros(i64::MAX));
    }

    #[test]
    fn default_for_knows_the_three_vendors() {
        assert_eq!(default_for("aliyun"), Some(aliyun()));
        assert_eq!(default_for("tencent"), Some(tencent()));
        assert_eq!(default_for("cloopen"), Some(cloopen()));
        assert_eq!(default_for("twilio"), None);
        assert_eq!(tencent().price_at(9_999), money("0.047"));
        assert_eq!(tencent().price_at(5_000_000), money("0.038"));
    }

    #[test]
    fn an_empty_list_is_refused() {
        let e = TieredFeeSchedule::from_tiers(vec![]).unwrap_err();
        assert!(matches!(e, ConfigError::FeeSchedule(_)), "{e}");
        assert!(e.to_string().contains("at least one tier"), "{e}");
    }

    #[test]
    fn a_gap_at_the_end_is_refused_naming_the_tier() {
        // Cloopen's list as given: four bounded tiers and nothing after.
        let e = TieredFeeSchedule::from_tiers(vec![
            Tier::bounded(10_417, money("0.048")),
            Tier::bounded(22_222, money("0.045")),
            Tier::bounded(47_619, money("0.042")),
            Tier::bounded(125_000, money("0.040")),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            ConfigError::FeeTier {
                tier: 3,
                problem: "the last tier must be open-ended (no up_to), found up_to = 125000: \
                          volumes from 125000 on would have no price"
                    .into()
            }
        );
    }

    #[test]
    fn misordered_bounds_negative_prices_and_early_open_tiers_are_refused() {
        let cases = [
            (
                vec![
                    Tier::bounded(100, money("0.05")),
                    Tier::bounded(100, money("0.04")),
                    Tier::open_ended(money("0.03")),
                ],
                1,
                "up_to must be above the previous tier's up_to (100), found 100",
            ),
            (
                vec![
                    Tier::bounded(0, money("0.05")),
                    Tier::open_ended(money("0.03")),
                ],
                0,
                "up_to must be above 0, found 0",
            ),
            (
                vec![
                    Tier::bounded(100, money("-0.01")),
                    Tier::open_ended(money("0.03")),
                ],
                0,
                "price must not be negative, found -0.01",
            ),
            (
                vec![
                    Tier::open_ended(money("0.05")),
                    Tier::open_ended(money("0.03")),
                ],
                0,
                "only the last tier may be open-ended",
            ),
        ];
        for (tiers, tier, expected) in cases {
            match TieredFeeSchedule::from_tiers(tiers) {
                Err(ConfigError::FeeTier { tier: t, problem }) => {
                    assert_eq!(t, tier, "{problem}");
                    assert!(problem.starts_with(expected), "{problem}");
                }
                other => panic!("expected a FeeTier error for tier {tier}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_single_open_tier_is_a_flat_price() {
        let flat = TieredFeeSchedule::from_tiers(vec![Tier::open_ended(money("0.05"))]).unwrap();
        assert_eq!(flat.price_at(123_456_789), money("0.05"));
        assert_eq!(flat.cost_of(7, 1_000), money("50"));
    }

    #[test]
    fn loads_from_toml() {
        let schedule = toml::from_str::<TieredFeeSchedule>(
            r#"
            tiers = [
                { up_to = 100000, price = "0.045" },
                { up_to = 300000, price = "0.040" },
                { price = 0 },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(schedule.tiers().len(), 3);
        assert_eq!(schedule.price_at(100_000), money("0.040"));
        assert_eq!(schedule.price_at(300_000), Money::ZERO);

        // The array-of-tables spelling is the same document.
        let same = toml::from_str::<TieredFeeSchedule>(
            "[[tiers]]\nup_to = 100000\nprice = \"0.045\"\n\
             [[tiers]]\nup_to = 300000\nprice = \"0.040\"\n\
             [[tiers]]\nprice = \"0\"\n",
        )
        .unwrap();
        assert_eq!(same, schedule);
    }

    #[test]
    fn toml_errors_say_what_was_expected() {
        let e = toml::from_str::<TieredFeeSchedule>(r#"tiers = [{ price = 0.045 }]"#).unwrap_err();
        assert!(e.to_string().contains("as a string"), "{e}");

        let e = toml::from_str::<TieredFeeSchedule>(r#"tiers = [{ upto = 5, price = "1" }]"#)
            .unwrap_err();
        assert!(e.to_string().contains("upto"), "{e}");

        let e = toml::from_str::<TieredFeeSchedule>(r#"tiers = [{ up_to = 5, price = "1" }]"#)
            .unwrap_err();
        assert!(e.to_string().contains("fee tier 0: "), "{e}");
    }

    #[test]
    fn embedded_in_a_config_it_is_validated_too() {
        #[derive(Debug, Deserialize)]
        struct VendorConfig {
            #[allow(dead_code)] // Only here to show the schedule sits among other keys.
            name: String,
            fees: TieredFeeSchedule,
        }
        let ok: VendorConfig = toml::from_str(
            "name = \"cloopen\"\n[fees]\ntiers = [{ up_to = 10, price = \"1\" }, { price = \"0.5\" }]\n",
        )
        .unwrap();
        assert_eq!(ok.fees.cost_of(8, 4), money("3"));

        let e = toml::from_str::<VendorConfig>(
            "name = \"cloopen\"\n[fees]\ntiers = [{ up_to = 10, price = \"1\" }]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("fee tier 0"), "{e}");
    }

    #[test]
    fn a_bare_list_of_tiers_reads_as_an_optional_schedule() {
        #[derive(Debug, Deserialize, Serialize)]
        struct Vendor {
            #[serde(default, with = "optional_tier_list")]
            fees: Option<TieredFeeSchedule>,
        }
        let v: Vendor =
            toml::from_str("fees = [{ up_to = 10, price = \"1\" }, { price = \"0.5\" }]").unwrap();
        assert_eq!(v.fees.as_ref().unwrap().cost_of(8, 4), money("3"));
        let back: Vendor = toml::from_str(&toml::to_string(&v).unwrap()).unwrap();
        assert_eq!(back.fees, v.fees);
        assert!(toml::from_str::<Vendor>("").unwrap().fees.is_none());
        let e = toml::from_str::<Vendor>("fees = [{ up_to = 10, price = \"1\" }]").unwrap_err();
        assert!(e.to_string().contains("fee tier 0"), "{e}");
    }

    #[test]
    fn serialises_back_to_the_same_schedule() {
        for schedule in [aliyun(), tencent(), cloopen()] {
            let text = toml::to_string(&schedule).unwrap();
            assert_eq!(
                toml::from_str::<TieredFeeSchedule>(&text).unwrap(),
                schedule
            );
        }
    }

    /// Valid schedules with tiers up to `max_width` messages wide and prices that never
    /// rise with volume.
    fn schedules_up_to(max_width: u64) -> impl Strategy<Value = TieredFeeSchedule> {
        (
            proptest::collection::vec(1u64..max_width, 0..7),
            proptest::collection::vec(0i64..100_000, 7),
        )
            .prop_map(|(widths, mut prices)| {
                prices.sort_unstable_by(|a, b| b.cmp(a));
                let mut bound = 0;
                let mut tiers: Vec<Tier> = widths
                    .iter()
                    .zip(&prices)
                    .map(|(width, price)| {
                        bound += width;
                        Tier::bounded(bound, Money::from_micros(*price))
                    })
                    .collect();
                tiers.push(Tier::open_ended(Money::from_micros(prices[widths.len()])));
                TieredFeeSchedule::from_tiers(tiers).unwrap()
            })
    }

    fn schedules() -> impl Strategy<Value = TieredFeeSchedule> {
        schedules_up_to(2_000_000)
    }

    fn built_ins() -> impl Strategy<Value = TieredFeeSchedule> {
        prop_oneof![Just(aliyun()), Just(tencent()), Just(cloopen())]
    }

    proptest! {
        #[test]
        fn built_in_prices_never_rise_with_volume(
            schedule in built_ins(),
            volume in 0u64..10_000_000,
            more in 0u64..10_000_000,
        ) {
            prop_assert!(schedule.price_at(volume + more) <= schedule.price_at(volume));
            prop_assert!(schedule.price_at(volume) > Money::ZERO);
        }

        #[test]
        fn cost_splits_at_any_point(
            schedule in prop_oneof![built_ins(), schedules()],
            volume in 0u64..20_000_000,
            a in 0u64..5_000_000,
            b in 0u64..5_000_000,
        ) {
            prop_assert_eq!(
                schedule.cost_of(volume, a + b),
                schedule.cost_of(volume, a) + schedule.cost_of(volume + a, b)
            );
        }

        #[test]
        fn the_cost_of_one_message_is_its_price(
            schedule in prop_oneof![built_ins(), schedules()],
            volume in 0u64..20_000_000,
        ) {
            prop_assert_eq!(schedule.cost_of(volume, 1), schedule.price_at(volume));
        }

        #[test]
        fn cost_matches_pricing_message_by_message(
            // Narrow tiers, so that a batch often crosses several of them.
            schedule in schedules_up_to(300),
            volume in 0u64..2_000,
            count in 0u64..2_000,
        ) {
            let naive: Money = (0..count).map(|i| schedule.price_at(volume + i)).sum();
            prop_assert_eq!(schedule.cost_of(volume, count), naive);
        }
    }
}
