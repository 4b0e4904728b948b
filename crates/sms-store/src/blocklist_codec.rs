//! Conversions between the `blocklist` table's columns and domain types, shared by both
//! backends so they read entries back identically.

use std::collections::HashSet;

use sms_core::{BlockReason, PhoneNumber, StoreError};

use crate::codec::corrupt;

/// The distinct numbers of a look-up, as the `number` column holds them: the query
/// asks about each once.
pub(crate) fn lookup_columns(numbers: &[PhoneNumber]) -> Vec<&str> {
    let mut seen = HashSet::new();
    numbers
        .iter()
        .map(PhoneNumber::as_str)
        .filter(|n| seen.insert(*n))
        .collect()
}

/// The numbers of `numbers` found in `blocked` (the numbers the look-up's rows name, in
/// whatever order the table gave them), each once, in the order given.
pub(crate) fn in_given_order(
    numbers: &[PhoneNumber],
    blocked: &HashSet<String>,
) -> Vec<PhoneNumber> {
    let mut answered: HashSet<&str> = HashSet::new();
    numbers
        .iter()
        .filter(|n| blocked.contains(n.as_str()) && answered.insert(n.as_str()))
        .cloned()
        .collect()
}

/// A stored reason back as the reason it was.
pub(crate) fn reason(value: &str) -> Result<BlockReason, StoreError> {
    value.parse().map_err(|e| corrupt("reason", e))
}

/// A stored number back as the number it was.
pub(crate) fn number(value: &str) -> Result<PhoneNumber, StoreError> {
    PhoneNumber::parse(value).map_err(|e| corrupt("number", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(list: &[&str]) -> Vec<PhoneNumber> {
        list.iter()
            .map(|n| PhoneNumber::parse(n).unwrap())
            .collect()
    }

    #[test]
    fn answers_follow_the_given_order_once_each() {
        let asked = numbers(&["+8613800000003", "+8613800000001", "+8613800000003"]);
        assert_eq!(lookup_columns(&asked), ["+8613800000003", "+8613800000001"]);
        let blocked: HashSet<String> = ["+8613800000001", "+8613800000003"]
            .map(str::to_owned)
            .into();
        assert_eq!(
            in_given_order(&asked, &blocked),
            numbers(&["+8613800000003", "+8613800000001"])
        );
    }

    #[test]
    fn corrupt_columns_are_backend_errors_naming_the_column() {
        let e = reason("stopped").unwrap_err();
        assert!(matches!(e, StoreError::Backend(_)));
        assert!(e.to_string().contains("stored reason"), "{e}");
        assert_eq!(reason("opted_out").unwrap(), BlockReason::OptedOut);
    }
}
