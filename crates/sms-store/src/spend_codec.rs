//! Conversions between the `client_spend` table's columns and domain types, shared by
//! both backends so they store and read spend identically.

use std::collections::BTreeMap;

use sms_core::{BillingPeriod, ClientId, Money, StoreError};

/// The `client` column of the unnamed client. A client name is never empty, so the
/// empty string names no one else.
const UNNAMED_CLIENT: &str = "";

/// The `client` column of `client`.
pub(crate) fn client_column(client: Option<&ClientId>) -> &str {
    client.map_or(UNNAMED_CLIENT, ClientId::as_str)
}

/// A stored `client` column back as the client it was.
pub(crate) fn client(value: String) -> Result<Option<ClientId>, StoreError> {
    if value == UNNAMED_CLIENT {
        return Ok(None);
    }
    ClientId::try_from(value)
        .map(Some)
        .map_err(|e| crate::codec::corrupt("client", e))
}

/// The increments of one `add_spend`: one per client, its amounts summed, ordered by
/// the `client` column. One statement may not touch a row twice, hence one per client;
/// the fixed order makes concurrent adds take their row locks in the same order, so
/// they wait for one another instead of deadlocking.
pub(crate) fn increments<'a>(
    period: &BillingPeriod,
    amounts: &'a [(Option<ClientId>, Money)],
) -> Result<Vec<(&'a str, i64)>, StoreError> {
    let mut summed: BTreeMap<&str, Money> = BTreeMap::new();
    for (client, amount) in amounts {
        let total = summed.entry(client_column(client.as_ref())).or_default();
        *total = total
            .checked_add(*amount)
            .ok_or_else(|| overflow(client.as_ref(), period, *amount))?;
    }
    Ok(summed
        .into_iter()
        .map(|(client, total)| (client, total.micros()))
        .collect())
}

/// A total that would leave the range the ledger holds (±9.2 × 10¹² units).
fn overflow(client: Option<&ClientId>, period: &BillingPeriod, amount: Money) -> StoreError {
    StoreError::backend(format!(
        "spend of {} in {} overflows adding {amount}",
        client.map_or("the unnamed client", ClientId::as_str),
        period.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Option<ClientId> {
        Some(ClientId::new(name).unwrap())
    }

    #[test]
    fn the_unnamed_client_is_the_empty_column_and_back() {
        assert_eq!(client_column(None), "");
        assert_eq!(client(String::new()).unwrap(), None);
        assert_eq!(client("shop".to_owned()).unwrap(), named("shop"));
        let e = client("Shop!".to_owned()).unwrap_err();
        assert!(matches!(e, StoreError::Backend(_)));
        assert!(e.to_string().contains("stored client"), "{e}");
    }

    #[test]
    fn increments_sum_each_client_once_in_column_order() {
        let period = BillingPeriod::from_label("2026-03");
        let amounts = [
            (named("shop"), Money::from_micros(45_000)),
            (None, Money::from_micros(1)),
            (named("auth"), Money::from_micros(36_500)),
            (named("shop"), Money::from_micros(5_000)),
        ];
        assert_eq!(
            increments(&period, &amounts).unwrap(),
            [("", 1), ("auth", 36_500), ("shop", 50_000)]
        );
        let too_much = [
            (None, Money::from_micros(i64::MAX)),
            (None, Money::from_micros(1)),
        ];
        let e = increments(&period, &too_much).unwrap_err();
        assert!(e.to_string().contains("unnamed client"), "{e}");
    }
}
