//! Exact money: integer millionths of the currency unit, never floats.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Mul};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Millionths per unit: fine enough for per-message prices like 0.0365.
const MICROS_PER_UNIT: i64 = 1_000_000;

/// An exact amount of money (in the vendors' billing currency), stored as whole
/// millionths. `0.045 × 1,000,000` is exactly `45000`.
///
/// Parsed from and shown as a decimal string (`"0.045"`); serialised as that string
/// so no JSON reader turns it into a float.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Money {
    micros: i64,
}

impl Money {
    /// Zero.
    pub const ZERO: Money = Money { micros: 0 };

    /// An amount of `micros` millionths.
    pub const fn from_micros(micros: i64) -> Self {
        Self { micros }
    }

    /// The amount in millionths.
    pub const fn micros(self) -> i64 {
        self.micros
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.micros < 0
    }

    /// `self × count`, or `None` on overflow.
    pub fn checked_mul(self, count: u64) -> Option<Self> {
        let count = i64::try_from(count).ok()?;
        self.micros.checked_mul(count).map(Self::from_micros)
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.micros.checked_add(other.micros).map(Self::from_micros)
    }
}

impl Add for Money {
    type Output = Money;
    /// Panics on overflow, which needs more than 9 × 10¹² units.
    fn add(self, rhs: Self) -> Self {
        self.checked_add(rhs).expect("money overflow")
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

impl Mul<u64> for Money {
    type Output = Money;
    /// Panics on overflow, which needs more than 9 × 10¹² units.
    fn mul(self, rhs: u64) -> Self {
        self.checked_mul(rhs).expect("money overflow")
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Self {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

/// Why a money string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a decimal amount with at most 6 decimal places like \"0.045\", found {0:?}")]
pub struct MoneyParseError(String);

impl FromStr for Money {
    type Err = MoneyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MoneyParseError(s.to_owned());
        let t = s.trim();
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(err());
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        if frac.len() > 6 {
            return Err(err());
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err())?
        };
        let mut frac_micros: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| err())?
        };
        for _ in frac.len()..6 {
            frac_micros *= 10;
        }
        let micros = whole
            .checked_mul(MICROS_PER_UNIT)
            .and_then(|w| w.checked_add(frac_micros))
            .ok_or_else(err)?;
        Ok(Self::from_micros(if negative { -micros } else { micros }))
    }
}

impl fmt::Display for Money {
    /// Shows the shortest exact decimal, with at least two decimal places (`45000.00`, `0.045`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.micros < 0 { "-" } else { "" };
        let abs = self.micros.unsigned_abs();
        let whole = abs / MICROS_PER_UNIT as u64;
        let frac = format!("{:06}", abs % MICROS_PER_UNIT as u64);
        let trimmed = frac.trim_end_matches('0');
        let frac = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "{sign}{whole}.{frac}")
    }
}

impl TryFrom<String> for Money {
    type Error = MoneyParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Money> for String {
    fn from(value: Money) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_million_messages_at_0_045_cost_exactly_45000() {
        let price: Money = "0.045".parse().unwrap();
        let total: Money = std::iter::repeat_n(price, 1_000_000).sum();
        assert_eq!(total, "45000".parse().unwrap());
        assert_eq!(total.to_string(), "45000.00");
        assert_eq!(price * 1_000_000, total);
    }

    #[test]
    fn parses_and_prints_exact_decimals() {
        for (text, micros, shown) in [
            ("0.045", 45_000, "0.045"),
            ("0.0365", 36_500, "0.0365"),
            ("1", 1_000_000, "1.00"),
            ("12.5", 12_500_000, "12.50"),
            (".5", 500_000, "0.50"),
            ("0.000001", 1, "0.000001"),
            ("-0.25", -250_000, "-0.25"),
        ] {
            let m: Money = text.parse().unwrap();
            assert_eq!(m.micros(), micros, "{text}");
            assert_eq!(m.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_an_exact_amount() {
        for text in [
            "",
            ".",
            "abc",
            "1.2.3",
            "0.0000001",
            "1e3",
            "--1",
            "9223372036854775807",
        ] {
            assert!(text.parse::<Money>().is_err(), "{text}");
        }
    }

    #[test]
    fn serialises_as_a_string() {
        let m: Money = "0.045".parse().unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"0.045\"");
        assert_eq!(serde_json::from_str::<Money>("\"0.045\"").unwrap(), m);
    }

    proptest! {
        #[test]
        fn display_round_trips(micros in -1_000_000_000_000i64..1_000_000_000_000) {
            let m = Money::from_micros(micros);
            prop_assert_eq!(m.to_string().parse::<Money>().unwrap(), m);
        }

        #[test]
        fn sums_equal_products(micros in 0i64..1_000_000, n in 0u64..10_000) {
            let m = Money::from_micros(micros);
            prop_assert_eq!(std::iter::repeat_n(m, n as usize).sum::<Money>(), m * n);
        }
    }
}
